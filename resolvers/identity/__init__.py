"""Identity: the viewer (user, tenant, roles, sessions), session revocation, MFA enrolment, API keys
and user administration. `queries` reads, `mutations` changes; both return rows or records."""
