"""The API side of external opportunity sync: source health, poll-now and test-connection, saved
searches and their candidates, and the per-project count of unacknowledged changes."""
