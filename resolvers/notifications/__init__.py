"""The inbox: reading a user's notifications (queries.py) and marking them read, setting the
preference (mutations.py). docs/decisions.md D20-D22; docs/api.md "Notifications"."""
