"""External data: redaction of what the API logs and sources hold about credentials, and the
`externalDataChanges` root list (its `acknowledged` filter is not a column)."""
