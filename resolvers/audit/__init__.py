"""Reads of the audit domain: audit logs, change history, permission audit."""
