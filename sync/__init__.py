"""External opportunity data: connectors to outside sources (SAM.gov v2, generic JSON endpoints).

`sync.connectors` turns a source's HTTP API into normalised notices (`NormalisedNotice`) behind one
small protocol. The package uses `auth` and `models` (the import-linter contracts in pyproject.toml).
Every outbound call of a job goes through `sync.calls` (budget slot first, the outbound guard of
auth/outbound.py, retries and backoff, the call log and the source's health); connectors fetch
through the client it gives them (`sync.calls.CallClient`).
"""
