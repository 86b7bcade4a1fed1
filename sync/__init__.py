"""External opportunity data: connectors to outside sources (SAM.gov v2, generic JSON endpoints).

`sync.connectors` turns a source's HTTP API into normalised notices (`NormalisedNotice`) behind one
small protocol. The package uses `models` only (the import-linter contracts in pyproject.toml): it
never imports `auth`; HTTP goes through an `httpx.AsyncClient` the caller injects, which is how the
worker passes the outbound guard (`auth.outbound.OutboundPolicy.client()`).
"""
