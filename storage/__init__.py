"""Document storage: where a document version's bytes live (the local filesystem or S3)."""
