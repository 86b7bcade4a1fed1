"""Exports of the caller's rows as CSV and XLSX (docs/api.md "Exports")."""
