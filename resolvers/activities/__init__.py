"""Writes of activities and their participants (resolvers/activities/mutations.py)."""
