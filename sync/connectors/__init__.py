"""Connectors: one per kind of external source, each behind `sync.connectors.base.Connector`."""
