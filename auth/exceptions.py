"""Exceptions raised by the `auth` package.

    AuthError                   base of everything below; catch it at the HTTP/GraphQL boundary
    ├── ConfigurationError      a setting is unusable (key length, key id, iteration count, policy);
    │                           also a ValueError so settings validation that catches ValueError sees it
    └── DecryptionError         a SecretBox token failed: tampered, truncated, unknown key id, wrong
                                associated data. One type on purpose: callers must not tell the cases apart.

Messages never contain secrets, tokens or key material: they may reach logs.
"""

from __future__ import annotations

__all__ = ["AuthError", "ConfigurationError", "DecryptionError"]


class AuthError(Exception):
    """Base class of the authentication package's exceptions."""


class ConfigurationError(AuthError, ValueError):
    """A setting handed to an auth component cannot be used as given."""


class DecryptionError(AuthError):
    """A ciphertext could not be authenticated and decrypted."""


# auth.oidc (bearer-token verification):
#     AuthError
#     └── TokenRejected(reason_code)   a bearer token failed verification; reason_code is a stable
#         │                            string (auth.oidc.RejectReason) for logs and audit rows only:
#         │                            users always see one generic 401 message
#         └── JwksUnavailable          the issuer's key set could not be fetched or is unusable;
#                                      not the caller's fault, a caller may answer 503 instead of 401
__all__ += ["JwksUnavailable", "TokenRejected"]


class TokenRejected(AuthError):
    """A bearer token failed verification. Carries a stable reason code, never token material."""

    def __init__(self, reason_code: str, detail: str = "") -> None:
        self.reason_code = str(reason_code)
        self.detail = detail
        super().__init__(f"{self.reason_code}: {detail}" if detail else self.reason_code)


class JwksUnavailable(TokenRejected):
    """The JSON Web Key Set needed to verify a token could not be fetched or parsed."""


# SAML (auth.saml), appended:
#     AuthError
#     └── SamlRejected(reason_code)    a SAML response was refused; reason_code is a stable string
#         │                            (auth.saml.SamlReason) for logs and audit rows only: users see
#         │                            one generic message, python3-saml's text goes to debug logs
#         └── SamlConfigError          the tenant's SAML settings are unusable (NO_IDP_CERT, CONFIG):
#                                      SAML login stays off for that tenant (fail closed); also a
#                                      ConfigurationError, so settings validation sees it
__all__ += ["SamlConfigError", "SamlRejected"]


class SamlRejected(AuthError):
    """A SAML response was refused. Carries a stable reason code, never assertion content."""

    def __init__(self, reason_code: str, detail: str = "") -> None:
        self.reason_code = str(reason_code)
        self.detail = detail
        super().__init__(f"{self.reason_code}: {detail}" if detail else self.reason_code)


class SamlConfigError(SamlRejected, ConfigurationError):
    """A tenant's SAML configuration cannot be used as given (for example: no IdP certificate)."""


# Request-level failures (auth/service.py, auth/login.py):
#   AuthError
#   ├── Unauthenticated      no valid credential: 401 with a stable code
#   ├── LoginFailed          password sign-in refused; one answer whatever the cause
#   └── AuthRequestError     the request itself is wrong (400/403/409 with a code and a message)


class Unauthenticated(AuthError):
    """The request carries no credential the server accepts; `code` goes to the client."""

    def __init__(self, code: str, message: str = "Authentication required.") -> None:
        super().__init__(code)
        self.code = code
        self.message = message


class LoginFailed(AuthError):
    """Wrong password, unknown email, unknown tenant, locked or disabled account: never said which."""


class AuthRequestError(AuthError):
    """A request the user can correct; `status`, `code` and `message` go to the client."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


__all__ += ["AuthRequestError", "LoginFailed", "Unauthenticated"]
