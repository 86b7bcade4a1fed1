"""Alembic migrations: env.py and versions/ (one file per revision, date-prefixed)."""
