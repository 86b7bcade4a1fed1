"""Behaviour behind the GraphQL schema, one package per domain.

Resolvers take the service, the principal and plain arguments, and return rows or records; the
Strawberry types in `schema/` turn those into GraphQL objects (imports run schema -> resolvers).
"""
