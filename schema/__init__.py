"""The GraphQL schema (Strawberry declarations; no SQL): types per domain, scalars, errors,
declared permissions, the request context. `schema.schema` assembles it and builds the ASGI app.

Imported as a package by server/app.py and server/cli.py; nothing is re-exported here so that
importing `schema.scalars` or `schema.errors` does not build the whole schema.
"""
