"""Opportunity projects: the root list, effective values (override > external > local), the current
external version, and the pipeline summary. `loaders` batches, `effective` holds the precedence
rules, `queries` the root reads."""
