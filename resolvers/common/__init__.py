"""Read-path machinery shared by every domain: keyset pagination, filters, batched loaders."""
