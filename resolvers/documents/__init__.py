"""Documents: the read projection of the documents table, the extracted-text loader and the
full-text search. `queries` builds the root list (with or without `search`), `loaders` holds the
per-request loaders of the domain."""
