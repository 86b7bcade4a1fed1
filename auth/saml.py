"""Per-tenant SAML 2.0 service provider core: settings, SP metadata, AuthnRequests, response validation.

The HTTP routes (`/auth/saml/{tenant}/metadata`, `/login`, `/acs`), the database-backed
`SamlStateStore`, user linking and audit rows live elsewhere; this module holds the checks.

A response posted to the ACS passes three layers, and any failure raises `SamlRejected` with a
stable `SamlReason` code (python3-saml's own message goes to the debug log only):

1. Our structural pre-check, on a hardened lxml parse of the exact bytes python3-saml will see:
   no DOCTYPE (XXE, billion laughs), no encrypted assertion (not supported), exactly one
   `saml:Assertion` in the whole document and it a child of the root `samlp:Response`, no comment
   or processing instruction inside a NameID (comment-injection truncation), no duplicate or
   `xml:id` identifiers, at most one `ds:Signature` on the Response and exactly one on the
   Assertion, each with one same-document Reference to its parent, no `ds:Object`, no
   `RetrievalMethod`, and only allow-listed transforms and SHA-2 algorithms.
2. python3-saml 1.16 in strict mode (settings below), in a thread: schema, status, issuer,
   audience, timestamps, destination, subject confirmation, and the signature itself, verified
   with xmlsec against the configured IdP certificate only (KeyInfo is ignored).
3. Our checks on the document python3-saml verified, where the library is lax: an
   AudienceRestriction is required (python3-saml accepts none), the bearer SubjectConfirmationData
   Recipient and any Destination must equal the configured ACS URL exactly (python3-saml does a
   substring / prefix match and accepts a missing Recipient), SubjectConfirmationData NotOnOrAfter is
   required, Conditions are held to the tenant's clock skew (python3-saml allows a fixed 300 s), the
   AuthnContextClassRef must be present and allowed when the tenant requires one (python3-saml
   passes an assertion that has none), and the request binding comes from signed content only.
   Then InResponseTo (unsolicited responses refused), the assertion-ID replay cache, and the issued
   request id are checked through the caller's `SamlStateStore`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import calendar
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree
from onelogin.saml2.authn_request import OneLogin_Saml2_Authn_Request
from onelogin.saml2.constants import OneLogin_Saml2_Constants
from onelogin.saml2.errors import OneLogin_Saml2_Error, OneLogin_Saml2_ValidationError
from onelogin.saml2.response import OneLogin_Saml2_Response
from onelogin.saml2.settings import OneLogin_Saml2_Settings
from onelogin.saml2.utils import OneLogin_Saml2_Utils

from auth.exceptions import SamlConfigError, SamlRejected

__all__ = [
    "ACS_PATH_TEMPLATE",
    "SamlIdentity",
    "SamlReason",
    "SamlStateStore",
    "SamlTenantConfig",
    "build_login_request",
    "request_url_data_from",
    "saml_settings",
    "sp_metadata",
    "validate_response",
]

logger = logging.getLogger(__name__)

ACS_PATH_TEMPLATE: Final = "/auth/saml/{tenant}/acs"
"""The ACS route; a tenant's configured ACS URL must point at its own one."""


class SamlReason(StrEnum):
    """Why a SAML response (or a tenant's SAML setup) was refused. Stable strings for audit rows."""

    DOCTYPE = "DOCTYPE"  # a DOCTYPE / entity declaration: XXE or entity expansion attempt
    MULTIPLE_ASSERTIONS = "MULTIPLE_ASSERTIONS"  # two or more Assertions anywhere (XSW lands here)
    NAMEID_COMMENT = "NAMEID_COMMENT"  # comment or processing instruction inside a NameID
    SIGNATURE = "SIGNATURE"  # unsigned, bad signature, wrong key, or a signature in a wrapped shape
    DEPRECATED_ALGORITHM = "DEPRECATED_ALGORITHM"  # SHA-1 / MD5 signature or digest
    WRONG_AUDIENCE = "WRONG_AUDIENCE"  # no AudienceRestriction naming our SP entity id
    WRONG_RECIPIENT = "WRONG_RECIPIENT"  # SubjectConfirmationData Recipient or Destination is not our ACS
    WRONG_ISSUER = "WRONG_ISSUER"  # Response or Assertion Issuer is not the tenant's IdP
    EXPIRED = "EXPIRED"  # NotOnOrAfter (Conditions, SubjectConfirmationData, session) has passed
    NOT_YET_VALID = "NOT_YET_VALID"  # NotBefore in the future, beyond the allowed skew
    UNSOLICITED = "UNSOLICITED"  # no signed InResponseTo: IdP-initiated SSO is not accepted
    UNKNOWN_REQUEST = "UNKNOWN_REQUEST"  # InResponseTo is not an issued, unexpired, unused request id
    REPLAY = "REPLAY"  # this assertion ID was accepted before
    AUTHN_CONTEXT = "AUTHN_CONTEXT"  # the tenant requires an AuthnContextClassRef (MFA) that is absent
    ENCRYPTED_ASSERTION = "ENCRYPTED_ASSERTION"  # EncryptedAssertion: not supported, refused
    IDP_STATUS = "IDP_STATUS"  # the IdP answered with a non-Success status (login failed or cancelled)
    NO_IDP_CERT = "NO_IDP_CERT"  # the tenant has no usable IdP certificate: SAML is off (fail closed)
    CONFIG = "CONFIG"  # another unusable tenant setting
    INVALID = "INVALID"  # anything else: not base64, not XML, schema-invalid, missing elements


# python3-saml applies this fixed drift to Conditions; a tenant's skew may only be stricter.
_MAX_CLOCK_SKEW_SECONDS: Final = OneLogin_Saml2_Constants.ALLOWED_CLOCK_DRIFT
# Real responses are a few kB (a few dozen with large group lists); anything far bigger is refused
# before it is decoded or parsed.
_MAX_RESPONSE_B64_CHARS: Final = 512 * 1024
_RELAY_STATE_MAX_BYTES: Final = 80  # SAML bindings 3.4.3 / 3.5.3

_NS_SAMLP: Final = OneLogin_Saml2_Constants.NS_SAMLP
_NS_SAML: Final = OneLogin_Saml2_Constants.NS_SAML
_NS_DS: Final = OneLogin_Saml2_Constants.NS_DS
_NS_XENC: Final = OneLogin_Saml2_Constants.NS_XENC
_NS_EXC_C14N: Final = "http://www.w3.org/2001/10/xml-exc-c14n#"
_XML_ID: Final = "{http://www.w3.org/XML/1998/namespace}id"
_NS: Final = MappingProxyType({"samlp": _NS_SAMLP, "saml": _NS_SAML, "ds": _NS_DS})

_RESPONSE: Final = f"{{{_NS_SAMLP}}}Response"
_ASSERTION: Final = f"{{{_NS_SAML}}}Assertion"
_SIGNATURE: Final = f"{{{_NS_DS}}}Signature"

_C14N_ALGORITHMS: Final = frozenset(
    {
        _NS_EXC_C14N,
        _NS_EXC_C14N + "WithComments",
        "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
        "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments",
        "http://www.w3.org/2006/12/xml-c14n11",
        "http://www.w3.org/2006/12/xml-c14n11#WithComments",
    }
)
# Enveloped-signature plus canonicalization is all a SAML signature needs. XPath, XSLT and base64
# transforms would let a signature cover less than the element it names, or run code.
_TRANSFORMS: Final = _C14N_ALGORITHMS | {"http://www.w3.org/2000/09/xmldsig#enveloped-signature"}
_SIGNATURE_METHODS: Final = frozenset(
    {
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
    }
)
_DIGEST_METHODS: Final = frozenset(
    {
        "http://www.w3.org/2001/04/xmlenc#sha256",
        "http://www.w3.org/2001/04/xmldsig-more#sha384",
        "http://www.w3.org/2001/04/xmlenc#sha512",
    }
)
# python3-saml's rejectDeprecatedAlgorithm list covers only rsa-sha1, dsa-sha1 and sha1.
_DEPRECATED_ALGORITHMS: Final = frozenset(
    {
        *OneLogin_Saml2_Constants.DEPRECATED_ALGORITHMS,
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha1",
        "http://www.w3.org/2000/09/xmldsig#hmac-sha1",
        "http://www.w3.org/2007/05/xmldsig-more#sha1-rsa-MGF1",
        "http://www.w3.org/2001/04/xmldsig-more#rsa-md5",
        "http://www.w3.org/2001/04/xmldsig-more#hmac-md5",
        "http://www.w3.org/2001/04/xmldsig-more#md5",
    }
)
_KEY_INFO_CHILDREN: Final = frozenset(f"{{{_NS_DS}}}{name}" for name in ("X509Data", "KeyName", "KeyValue"))

_V = OneLogin_Saml2_ValidationError
_R = SamlReason
# python3-saml validation error code -> our reason. WRONG_SUBJECTCONFIRMATION is resolved separately
# (the library folds recipient, time and InResponseTo failures into that one code).
_PYTHON3_SAML_REASONS: Final[Mapping[int, SamlReason]] = MappingProxyType(
    {
        _V.WRONG_NUMBER_OF_ASSERTIONS: _R.MULTIPLE_ASSERTIONS,
        _V.STATUS_CODE_IS_NOT_SUCCESS: _R.IDP_STATUS,
        **dict.fromkeys(
            (
                _V.WRONG_SIGNED_ELEMENT,
                _V.ID_NOT_FOUND_IN_SIGNED_ELEMENT,
                _V.DUPLICATED_ID_IN_SIGNED_ELEMENTS,
                _V.INVALID_SIGNED_ELEMENT,
                _V.DUPLICATED_REFERENCE_IN_SIGNED_ELEMENTS,
                _V.UNEXPECTED_SIGNED_ELEMENTS,
                _V.WRONG_NUMBER_OF_SIGNATURES_IN_RESPONSE,
                _V.WRONG_NUMBER_OF_SIGNATURES_IN_ASSERTION,
                _V.WRONG_NUMBER_OF_SIGNATURES,
                _V.NO_SIGNED_MESSAGE,
                _V.NO_SIGNED_ASSERTION,
                _V.NO_SIGNATURE_FOUND,
                _V.INVALID_SIGNATURE,
            ),
            _R.SIGNATURE,
        ),
        _V.DEPRECATED_SIGNATURE_METHOD: _R.DEPRECATED_ALGORITHM,
        _V.DEPRECATED_DIGEST_METHOD: _R.DEPRECATED_ALGORITHM,
        _V.WRONG_AUDIENCE: _R.WRONG_AUDIENCE,
        _V.WRONG_DESTINATION: _R.WRONG_RECIPIENT,
        _V.EMPTY_DESTINATION: _R.WRONG_RECIPIENT,
        _V.WRONG_ISSUER: _R.WRONG_ISSUER,
        _V.ISSUER_MULTIPLE_IN_RESPONSE: _R.WRONG_ISSUER,
        _V.ISSUER_NOT_FOUND_IN_ASSERTION: _R.WRONG_ISSUER,
        _V.ASSERTION_EXPIRED: _R.EXPIRED,
        _V.RESPONSE_EXPIRED: _R.EXPIRED,
        _V.SESSION_EXPIRED: _R.EXPIRED,
        _V.ASSERTION_TOO_EARLY: _R.NOT_YET_VALID,
        _V.AUTHN_CONTEXT_MISMATCH: _R.AUTHN_CONTEXT,
        _V.WRONG_INRESPONSETO: _R.UNKNOWN_REQUEST,
    }
)

_TENANT_RE: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})
_REQUEST_DATA_KEYS: Final = ("https", "http_host", "script_name", "path_info")


@dataclass(frozen=True, slots=True)
class SamlTenantConfig:
    """One tenant's SAML setup. Construction validates it and fails closed.

    `idp_x509_cert` is the IdP's signing certificate, PEM or bare base64 DER; it is required and is
    the only key a signature is checked against (a certificate inside the response is ignored).
    A missing or unparsable one raises `SamlConfigError(NO_IDP_CERT)`, anything else unusable
    `SamlConfigError(CONFIG)`. `required_authn_contexts` lists the AuthnContextClassRef values
    accepted for a tenant that requires MFA at its IdP (empty: not checked). `clock_skew_seconds`
    (0..300) applies to the Assertion's Conditions.
    """

    tenant: str
    sp_entity_id: str
    acs_url: str
    idp_entity_id: str
    idp_sso_url: str
    idp_x509_cert: str | None
    required_authn_contexts: tuple[str, ...] = ()
    clock_skew_seconds: int = 120
    _idp_cert_pem: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        if not isinstance(self.tenant, str) or not _TENANT_RE.fullmatch(self.tenant):
            raise SamlConfigError(SamlReason.CONFIG, "tenant must be a DNS label (the tenant subdomain)")
        for name in ("sp_entity_id", "idp_entity_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or len(value) > 1024 or value != value.strip():
                raise SamlConfigError(
                    SamlReason.CONFIG, f"{name} must be a non-empty URI of at most 1024 chars"
                )
        _require_http_url("acs_url", self.acs_url)
        _require_http_url("idp_sso_url", self.idp_sso_url)
        if urlsplit(self.acs_url).path != ACS_PATH_TEMPLATE.format(tenant=self.tenant):
            raise SamlConfigError(SamlReason.CONFIG, "acs_url must point at this tenant's ACS route")
        object.__setattr__(self, "_idp_cert_pem", _load_idp_certificate(self.idp_x509_cert))
        if isinstance(self.required_authn_contexts, str):  # a bare string would become its characters
            raise SamlConfigError(SamlReason.CONFIG, "required_authn_contexts must be a tuple of URIs")
        contexts = tuple(self.required_authn_contexts)
        if any(not isinstance(c, str) or not c.strip() or c != c.strip() for c in contexts):
            raise SamlConfigError(SamlReason.CONFIG, "required_authn_contexts must be non-empty URIs")
        object.__setattr__(self, "required_authn_contexts", contexts)
        skew = self.clock_skew_seconds
        if isinstance(skew, bool) or not isinstance(skew, int) or not 0 <= skew <= _MAX_CLOCK_SKEW_SECONDS:
            raise SamlConfigError(
                SamlReason.CONFIG, f"clock_skew_seconds must be an int in 0..{_MAX_CLOCK_SKEW_SECONDS}"
            )


@dataclass(frozen=True, slots=True)
class SamlIdentity:
    """What a validated assertion says. `issuer` + `name_id` identify the user at the IdP."""

    name_id: str
    issuer: str
    session_index: str | None
    attributes: Mapping[str, tuple[str, ...]]
    authn_context: str | None  # the AuthnContextClassRef, when the IdP sent one
    assertion_id: str
    not_on_or_after: datetime  # the bearer SubjectConfirmationData's, UTC
    in_response_to: str  # the request id this answers, already consumed from the store
    name_id_format: str | None = None


class SamlStateStore(Protocol):
    """Request ids and seen assertion ids, shared by every process (auth/saml_store.py keeps them in PostgreSQL).

    Both methods must be atomic on their own (one `DELETE ... RETURNING` / one
    `INSERT ... ON CONFLICT DO NOTHING RETURNING`), so two processes racing on the same value
    cannot both get True.
    """

    async def consume_request_id(self, tenant: str, request_id: str) -> bool:
        """True exactly once for a request id issued to `tenant` that has not expired; then forget it."""
        ...

    async def remember_assertion(self, tenant: str, assertion_id: str, not_on_or_after: datetime) -> bool:
        """Record the id until at least `not_on_or_after`; False when it was already recorded (replay)."""
        ...


def saml_settings(config: SamlTenantConfig) -> dict[str, Any]:
    """The strict python3-saml settings dict for one tenant.

    Assertions must be signed; the Response envelope need not be (`wantMessagesSigned=False`),
    because many IdPs (Entra ID's default, Okta, ADFS's default) sign only the assertion, and all
    the identity data lives in the signed assertion. We never sign AuthnRequests and hold no SP key.
    """
    if not config._idp_cert_pem:  # unreachable through __init__; guards object.__new__ and the like
        raise SamlConfigError(SamlReason.NO_IDP_CERT, "no IdP certificate configured")
    requested: list[str] | bool = list(config.required_authn_contexts) or False
    return {
        "strict": True,
        "debug": False,
        "sp": {
            "entityId": config.sp_entity_id,
            "assertionConsumerService": {
                "url": config.acs_url,
                "binding": OneLogin_Saml2_Constants.BINDING_HTTP_POST,
            },
            "NameIDFormat": OneLogin_Saml2_Constants.NAMEID_UNSPECIFIED,
            "x509cert": "",
            "privateKey": "",
        },
        "idp": {
            "entityId": config.idp_entity_id,
            "singleSignOnService": {
                "url": config.idp_sso_url,
                "binding": OneLogin_Saml2_Constants.BINDING_HTTP_REDIRECT,
            },
            # Only the configured certificate. No certFingerprint: fingerprint mode would trust a
            # certificate carried in the response's KeyInfo (and defaults to SHA-1 fingerprints).
            "x509cert": config._idp_cert_pem,
        },
        "security": {
            "authnRequestsSigned": False,
            "logoutRequestSigned": False,
            "logoutResponseSigned": False,
            "signMetadata": False,
            "wantMessagesSigned": False,
            "wantAssertionsSigned": True,
            "wantAssertionsEncrypted": False,
            "wantNameIdEncrypted": False,
            "wantNameId": True,
            # Identity is the NameID; many IdPs send no attributes at all.
            "wantAttributeStatement": False,
            "allowRepeatAttributeName": False,
            "rejectDeprecatedAlgorithm": True,
            "signatureAlgorithm": OneLogin_Saml2_Constants.RSA_SHA256,
            "digestAlgorithm": OneLogin_Saml2_Constants.SHA256,
            "requestedAuthnContext": requested,
            "requestedAuthnContextComparison": "exact",
            "failOnAuthnContextMismatch": bool(config.required_authn_contexts),
        },
    }


def sp_metadata(config: SamlTenantConfig) -> str:
    """The tenant's SP metadata XML, checked with python3-saml's metadata validation."""
    settings = _settings(config)
    metadata = settings.get_sp_metadata()
    if isinstance(metadata, bytes):
        metadata = metadata.decode("utf-8")
    errors = settings.validate_metadata(metadata)
    if errors:
        raise SamlConfigError(SamlReason.CONFIG, "generated SP metadata is invalid: " + ", ".join(errors))
    return str(metadata)


def build_login_request(config: SamlTenantConfig, relay_state: str | None) -> tuple[str, str]:
    """An AuthnRequest for the HTTP-Redirect binding: `(redirect_url, request_id)`.

    The caller persists `request_id` with an expiry where every process can consume it once (the
    ACS checks it through `SamlStateStore.consume_request_id`). Binding it to the browser too (a
    short-lived cookie compared at the ACS) stops login CSRF with an attacker's own response.
    `relay_state` comes back from the IdP unauthenticated: keep it opaque (at most 80 bytes, for
    example a key to the return path stored with the request id), never a URL to follow blindly.
    """
    if relay_state is not None and (
        len(relay_state.encode("utf-8")) > _RELAY_STATE_MAX_BYTES or not relay_state.isprintable()
    ):
        raise ValueError("relay_state must be printable and at most 80 bytes")
    settings = _settings(config)
    request = OneLogin_Saml2_Authn_Request(settings)
    parameters = {"SAMLRequest": request.get_request()}
    if relay_state:
        parameters["RelayState"] = relay_state
    url = OneLogin_Saml2_Utils.redirect(config.idp_sso_url, parameters)
    return str(url), str(request.get_id())


def request_url_data_from(url: str) -> dict[str, str]:
    """python3-saml's request description (`https`, `http_host`, `script_name`) for the URL the ACS
    was reached at, e.g. `str(request.url)` behind a proxy that sets the scheme and host correctly."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an absolute http(s) URL is required")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if parts.port is not None and parts.port != (443 if parts.scheme == "https" else 80):
        host = f"{host}:{parts.port}"
    return {"https": "on" if parts.scheme == "https" else "off", "http_host": host, "script_name": parts.path}


async def validate_response(
    config: SamlTenantConfig,
    saml_response_b64: str | bytes,
    *,
    request_url_data: Mapping[str, str],
    store: SamlStateStore,
) -> SamlIdentity:
    """Validate the `SAMLResponse` form value posted to the tenant's ACS; raise `SamlRejected` if not valid.

    `request_url_data` describes the URL the POST arrived at, in python3-saml's form (see
    `request_url_data_from`); the Recipient is also compared with `config.acs_url` exactly.
    The replay cache is written before the request id is consumed, so a second delivery of the same
    response is reported as REPLAY rather than UNKNOWN_REQUEST.
    """
    request_data = {key: str(request_url_data[key]) for key in _REQUEST_DATA_KEYS if key in request_url_data}
    if "http_host" not in request_data or "script_name" not in request_data:
        raise ValueError("request_url_data needs http_host and script_name (see request_url_data_from)")
    identity, replay_until = await asyncio.to_thread(_validate_sync, config, saml_response_b64, request_data)
    if not await store.remember_assertion(config.tenant, identity.assertion_id, replay_until):
        raise _rejected(config, SamlReason.REPLAY, "assertion id seen before")
    if not await store.consume_request_id(config.tenant, identity.in_response_to):
        raise _rejected(
            config, SamlReason.UNKNOWN_REQUEST, "InResponseTo is not an issued, unused request id"
        )
    return identity


# --- configuration helpers ---------------------------------------------------------------------


def _require_http_url(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise SamlConfigError(SamlReason.CONFIG, f"{name} must be a URL")
    parts = urlsplit(value)
    loopback = parts.hostname is not None and (
        parts.hostname in _LOOPBACK_HOSTS or parts.hostname.endswith(".localhost")
    )
    if (
        not parts.hostname
        or parts.scheme not in ("https", "http")
        or (parts.scheme == "http" and not loopback)
    ):
        raise SamlConfigError(SamlReason.CONFIG, f"{name} must be an https URL (http only on localhost)")
    if parts.fragment or parts.username or parts.password:
        raise SamlConfigError(SamlReason.CONFIG, f"{name} must not carry credentials or a fragment")


def _load_idp_certificate(value: object) -> str:
    """The certificate as PEM, or SamlConfigError: absent or unusable means SAML stays off."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise SamlConfigError(
            SamlReason.NO_IDP_CERT, "no IdP signing certificate configured: SAML login is disabled"
        )
    if not isinstance(value, str):
        raise SamlConfigError(SamlReason.NO_IDP_CERT, "the IdP certificate must be PEM or base64 text")
    text = value.strip()
    try:
        if "-----BEGIN" in text:
            if text.count("-----BEGIN CERTIFICATE-----") != 1 or "PRIVATE KEY" in text:
                raise ValueError("expected exactly one certificate")
            certificate = x509.load_pem_x509_certificate(text.encode("ascii"))
        else:
            der = base64.b64decode("".join(text.split()), validate=True)
            certificate = x509.load_der_x509_certificate(der)
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise SamlConfigError(
            SamlReason.NO_IDP_CERT, "the IdP certificate is not one valid X.509 certificate"
        ) from None
    public_key = certificate.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < 2048:
            raise SamlConfigError(
                SamlReason.CONFIG, "the IdP certificate's RSA key is shorter than 2048 bits"
            )
    elif not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise SamlConfigError(SamlReason.CONFIG, "the IdP certificate must hold an RSA or EC key")
    # The certificate's validity dates are not enforced: IdPs routinely keep signing with expired
    # self-signed certificates, and trust comes from the tenant pinning this exact certificate.
    return certificate.public_bytes(Encoding.PEM).decode("ascii")


def _settings(config: SamlTenantConfig) -> OneLogin_Saml2_Settings:
    try:
        return OneLogin_Saml2_Settings(saml_settings(config))
    except OneLogin_Saml2_Error as error:
        logger.debug("python3-saml refused settings for tenant %r: %s", config.tenant, error)
        raise SamlConfigError(SamlReason.CONFIG, "python3-saml refused the settings") from None


# --- validation --------------------------------------------------------------------------------


def _rejected(
    config: SamlTenantConfig, reason: SamlReason, detail: str, library_error: str = ""
) -> SamlRejected:
    # Details here are our own fixed strings; python3-saml's text (which may quote the response)
    # goes to the debug log only.
    if library_error:
        logger.debug(
            "SAML response for tenant %r refused (%s): python3-saml: %r", config.tenant, reason, library_error
        )
    else:
        logger.debug("SAML response for tenant %r refused (%s): %s", config.tenant, reason, detail)
    return SamlRejected(reason, detail)


def _validate_sync(
    config: SamlTenantConfig, saml_response_b64: str | bytes, request_data: dict[str, str]
) -> tuple[SamlIdentity, datetime]:
    xml = _decode(config, saml_response_b64)
    _precheck(config, xml)
    settings = _settings(config)
    try:
        # Hand python3-saml the very bytes we checked, in canonical base64.
        response = OneLogin_Saml2_Response(settings, base64.b64encode(xml))
        response.is_valid(request_data, request_id=None, raise_exceptions=True)
    except OneLogin_Saml2_ValidationError as error:
        reason = _PYTHON3_SAML_REASONS.get(error.code, SamlReason.INVALID)
        if error.code == OneLogin_Saml2_ValidationError.WRONG_SUBJECTCONFIRMATION:
            reason = _subject_confirmation_failure(config, xml)
        raise _rejected(config, reason, "python3-saml validation failed", str(error)) from None
    except OneLogin_Saml2_Error as error:
        reason = (
            SamlReason.NO_IDP_CERT
            if error.code == OneLogin_Saml2_Error.CERT_NOT_FOUND
            else SamlReason.INVALID
        )
        raise _rejected(config, reason, "python3-saml validation failed", str(error)) from None
    except Exception as error:  # lxml, xmlsec or anything else: refuse, never fail open
        raise _rejected(config, SamlReason.INVALID, "python3-saml validation failed", repr(error)) from None
    try:
        return _identity(config, response)
    except OneLogin_Saml2_ValidationError as error:
        reason = _PYTHON3_SAML_REASONS.get(error.code, SamlReason.INVALID)
        raise _rejected(config, reason, "python3-saml extraction failed", str(error)) from None


def _decode(config: SamlTenantConfig, value: str | bytes) -> bytes:
    if isinstance(value, str):
        try:
            value = value.encode("ascii")
        except UnicodeEncodeError:
            raise _rejected(config, SamlReason.INVALID, "SAMLResponse is not base64") from None
    if len(value) > _MAX_RESPONSE_B64_CHARS:
        raise _rejected(config, SamlReason.INVALID, "SAMLResponse is too large")
    try:
        # IdPs wrap base64 at 64 or 76 columns; anything but whitespace outside the alphabet is refused.
        xml = base64.b64decode(b"".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _rejected(config, SamlReason.INVALID, "SAMLResponse is not base64") from None
    if not xml:
        raise _rejected(config, SamlReason.INVALID, "SAMLResponse is empty")
    return xml


def _parse_hardened(config: SamlTenantConfig, xml: bytes) -> etree._Element:
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        attribute_defaults=False,
        huge_tree=False,
        # Kept, unlike python3-saml's parser, so that a comment inside a NameID can be seen.
        remove_comments=False,
        remove_pis=False,
    )
    try:
        root = etree.fromstring(xml, parser)
    except etree.XMLSyntaxError:
        reason = SamlReason.DOCTYPE if b"<!DOCTYPE" in xml else SamlReason.INVALID
        raise _rejected(config, reason, "SAMLResponse is not well-formed XML") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise _rejected(config, SamlReason.DOCTYPE, "a DOCTYPE is never accepted")
    return root


def _precheck(config: SamlTenantConfig, xml: bytes) -> None:
    """Structural checks python3-saml either lacks or makes in a way we do not want to depend on."""
    root = _parse_hardened(config, xml)
    if root.tag != _RESPONSE:
        raise _rejected(config, SamlReason.INVALID, "the root element is not samlp:Response")
    if next(root.iter(f"{{{_NS_SAML}}}EncryptedAssertion"), None) is not None:
        raise _rejected(config, SamlReason.ENCRYPTED_ASSERTION, "encrypted assertions are not supported")
    if next(root.iter(f"{{{_NS_XENC}}}EncryptedData", f"{{{_NS_XENC}}}EncryptedKey"), None) is not None:
        raise _rejected(config, SamlReason.INVALID, "encrypted content is not supported")

    assertions = list(root.iter(_ASSERTION))
    if len(assertions) > 1:
        raise _rejected(config, SamlReason.MULTIPLE_ASSERTIONS, "more than one Assertion")
    if not assertions:
        status = root.find("samlp:Status/samlp:StatusCode", _NS)
        if status is not None and status.get("Value") != OneLogin_Saml2_Constants.STATUS_SUCCESS:
            raise _rejected(config, SamlReason.IDP_STATUS, "the IdP reported a failure status")
        raise _rejected(config, SamlReason.INVALID, "no Assertion")
    assertion = assertions[0]
    if assertion.getparent() is not root:
        raise _rejected(config, SamlReason.SIGNATURE, "the Assertion is not a child of the Response")

    for name_id in root.iter(f"{{{_NS_SAML}}}NameID"):
        if next(name_id.iter(etree.Comment, etree.ProcessingInstruction), None) is not None:
            raise _rejected(config, SamlReason.NAMEID_COMMENT, "comment or processing instruction in NameID")

    _check_identifiers(config, root)
    signatures = list(root.iter(_SIGNATURE))
    for signature in signatures:
        parent = signature.getparent()
        if parent is not root and parent is not assertion:
            raise _rejected(config, SamlReason.SIGNATURE, "a Signature outside the Response or Assertion")
    for parent in (root, assertion):
        own = [s for s in signatures if s.getparent() is parent]
        if len(own) > 1:
            raise _rejected(config, SamlReason.SIGNATURE, "more than one Signature on one element")
        if own:
            _check_signature(config, own[0], parent)
        elif parent is assertion:
            raise _rejected(config, SamlReason.SIGNATURE, "the Assertion is not signed")
    if (
        next(root.iter(f"{{{_NS_DS}}}RetrievalMethod", f"{{{_NS_DS}}}Object", f"{{{_NS_DS}}}Manifest"), None)
        is not None
    ):
        raise _rejected(config, SamlReason.SIGNATURE, "RetrievalMethod, Object or Manifest present")


def _check_identifiers(config: SamlTenantConfig, root: etree._Element) -> None:
    # xmlsec resolves "#id" by ID attribute; two elements sharing one, or an xml:id that libxml2
    # treats as an ID on its own, are how a reference gets pointed at the wrong element.
    seen: set[str] = set()
    for element in root.iter(etree.Element):
        if element.get(_XML_ID) is not None:
            raise _rejected(config, SamlReason.SIGNATURE, "xml:id attribute present")
        for attribute in ("ID", "Id"):
            value = element.get(attribute)
            if value is None:
                continue
            if value in seen:
                raise _rejected(config, SamlReason.SIGNATURE, "duplicate ID attribute")
            seen.add(value)


def _check_signature(config: SamlTenantConfig, signature: etree._Element, parent: etree._Element) -> None:
    def refuse(detail: str, reason: SamlReason = SamlReason.SIGNATURE) -> SamlRejected:
        return _rejected(config, reason, detail)

    children = [child.tag for child in signature.iterchildren(etree.Element)]
    if children not in (
        [f"{{{_NS_DS}}}SignedInfo", f"{{{_NS_DS}}}SignatureValue"],
        [f"{{{_NS_DS}}}SignedInfo", f"{{{_NS_DS}}}SignatureValue", f"{{{_NS_DS}}}KeyInfo"],
    ):
        raise refuse("Signature must hold SignedInfo, SignatureValue and optionally KeyInfo")
    value = signature.find("ds:SignatureValue", _NS)
    if value is None or not (value.text or "").strip():
        raise refuse("empty SignatureValue")
    key_info = signature.find("ds:KeyInfo", _NS)
    if key_info is not None and any(
        c.tag not in _KEY_INFO_CHILDREN for c in key_info.iterchildren(etree.Element)
    ):
        raise refuse("unexpected KeyInfo content")

    signed_info = signature.find("ds:SignedInfo", _NS)
    assert signed_info is not None
    c14n = signed_info.find("ds:CanonicalizationMethod", _NS)
    if c14n is None or c14n.get("Algorithm") not in _C14N_ALGORITHMS:
        raise refuse("canonicalization method not allowed")
    method = signed_info.find("ds:SignatureMethod", _NS)
    algorithm = method.get("Algorithm") if method is not None else None
    if algorithm in _DEPRECATED_ALGORITHMS:
        raise refuse("deprecated signature algorithm", SamlReason.DEPRECATED_ALGORITHM)
    if algorithm not in _SIGNATURE_METHODS:
        raise refuse("signature algorithm not allowed")

    references = signed_info.findall("ds:Reference", _NS)
    if len(references) != 1:
        raise refuse("exactly one Reference is required")
    reference = references[0]
    parent_id = parent.get("ID")
    if not parent_id or reference.get("URI") != f"#{parent_id}":
        raise refuse("the Reference does not point at the signed element")
    for transform in reference.findall("ds:Transforms/ds:Transform", _NS):
        if transform.get("Algorithm") not in _TRANSFORMS:
            raise refuse("transform not allowed")
        for child in transform.iterchildren(etree.Element):
            if child.tag != f"{{{_NS_EXC_C14N}}}InclusiveNamespaces":
                raise refuse("transform parameters not allowed")
    digest = reference.find("ds:DigestMethod", _NS)
    digest_algorithm = digest.get("Algorithm") if digest is not None else None
    if digest_algorithm in _DEPRECATED_ALGORITHMS:
        raise refuse("deprecated digest algorithm", SamlReason.DEPRECATED_ALGORITHM)
    if digest_algorithm not in _DIGEST_METHODS:
        raise refuse("digest algorithm not allowed")


def _parse_instant(config: SamlTenantConfig, value: str) -> int:
    try:
        return int(OneLogin_Saml2_Utils.parse_SAML_to_time(value))
    except Exception:
        raise _rejected(config, SamlReason.INVALID, "unparsable timestamp") from None


def _now() -> int:
    # python3-saml's clock: whole UTC seconds.
    return calendar.timegm(datetime.now(UTC).utctimetuple())


def _bearer_confirmation(config: SamlTenantConfig, assertion: etree._Element) -> etree._Element:
    """The bearer SubjectConfirmationData addressed to our ACS, still valid; or SamlRejected.

    Like python3-saml, no skew on SubjectConfirmationData times (IdPs give it minutes of validity),
    so both layers agree on which code a failure gets.
    """
    data = [
        scd
        for confirmation in assertion.findall("saml:Subject/saml:SubjectConfirmation", _NS)
        if confirmation.get("Method") == OneLogin_Saml2_Constants.CM_BEARER
        for scd in confirmation.findall("saml:SubjectConfirmationData", _NS)
    ]
    ours = [scd for scd in data if scd.get("Recipient") == config.acs_url]
    if not ours:
        raise _rejected(config, SamlReason.WRONG_RECIPIENT, "no bearer confirmation addressed to our ACS")
    if len(ours) > 1:
        raise _rejected(config, SamlReason.INVALID, "more than one bearer confirmation for our ACS")
    scd = ours[0]
    not_on_or_after = scd.get("NotOnOrAfter")
    if not not_on_or_after:
        raise _rejected(config, SamlReason.INVALID, "bearer confirmation without NotOnOrAfter")
    now = _now()
    if _parse_instant(config, not_on_or_after) <= now:
        raise _rejected(config, SamlReason.EXPIRED, "bearer confirmation expired")
    not_before = scd.get("NotBefore")
    if not_before and _parse_instant(config, not_before) > now:
        raise _rejected(config, SamlReason.NOT_YET_VALID, "bearer confirmation not yet valid")
    return scd


def _subject_confirmation_failure(config: SamlTenantConfig, xml: bytes) -> SamlReason:
    """Name the reason python3-saml's catch-all WRONG_SUBJECTCONFIRMATION stands for."""
    root = _parse_hardened(config, xml)
    assertion = root.find("saml:Assertion", _NS)
    if assertion is None:
        return SamlReason.INVALID
    try:
        scd = _bearer_confirmation(config, assertion)
    except SamlRejected as rejected:
        return SamlReason(rejected.reason_code)
    response_irt, scd_irt = root.get("InResponseTo"), scd.get("InResponseTo")
    if response_irt and scd_irt and response_irt != scd_irt:
        return SamlReason.INVALID
    # Ours was fine, so the URL python3-saml was given (request_url_data) is not the Recipient.
    return SamlReason.WRONG_RECIPIENT


def _identity(config: SamlTenantConfig, response: OneLogin_Saml2_Response) -> tuple[SamlIdentity, datetime]:
    """Checks on the document python3-saml verified, then the identity it carries."""
    root = response.get_xml_document()
    assertion = root.find("saml:Assertion", _NS)
    if assertion is None or len(root.findall("saml:Assertion", _NS)) != 1:
        raise _rejected(config, SamlReason.INVALID, "no single Assertion after validation")

    restrictions = assertion.findall("saml:Conditions/saml:AudienceRestriction", _NS)
    if not restrictions or any(
        config.sp_entity_id not in [(a.text or "").strip() for a in r.findall("saml:Audience", _NS)]
        for r in restrictions
    ):
        raise _rejected(config, SamlReason.WRONG_AUDIENCE, "every AudienceRestriction must name our SP")

    destination = root.get("Destination")
    if destination is not None and destination != config.acs_url:
        raise _rejected(config, SamlReason.WRONG_RECIPIENT, "Destination is not our ACS URL")
    scd = _bearer_confirmation(config, assertion)

    now = _now()
    conditions = assertion.find("saml:Conditions", _NS)
    assert conditions is not None
    conditions_end = conditions.get("NotOnOrAfter")
    if conditions_end and _parse_instant(config, conditions_end) + config.clock_skew_seconds <= now:
        raise _rejected(config, SamlReason.EXPIRED, "Conditions NotOnOrAfter has passed")
    conditions_start = conditions.get("NotBefore")
    if conditions_start and _parse_instant(config, conditions_start) - config.clock_skew_seconds > now:
        raise _rejected(config, SamlReason.NOT_YET_VALID, "Conditions NotBefore is in the future")

    class_refs = [
        (node.text or "").strip()
        for node in assertion.findall("saml:AuthnStatement/saml:AuthnContext/saml:AuthnContextClassRef", _NS)
    ]
    if config.required_authn_contexts and (
        not class_refs or any(ref not in config.required_authn_contexts for ref in class_refs)
    ):
        raise _rejected(config, SamlReason.AUTHN_CONTEXT, "the required AuthnContextClassRef is missing")

    # The request binding must come from signed content: the SubjectConfirmationData is inside the
    # signed assertion; the Response's InResponseTo counts only when the Response is signed too.
    response_irt = root.get("InResponseTo")
    scd_irt = scd.get("InResponseTo")
    response_signed = root.find("ds:Signature", _NS) is not None
    if response_irt and scd_irt and response_irt != scd_irt:
        raise _rejected(config, SamlReason.INVALID, "InResponseTo differs between Response and Assertion")
    in_response_to = scd_irt or (response_irt if response_signed else None)
    if not in_response_to:
        raise _rejected(config, SamlReason.UNSOLICITED, "no signed InResponseTo: unsolicited response")

    name_id_data = response.get_nameid_data()
    name_id = name_id_data.get("Value")
    if not name_id:
        raise _rejected(config, SamlReason.INVALID, "empty NameID")
    issuer_node = assertion.find("saml:Issuer", _NS)
    issuer = (issuer_node.text or "").strip() if issuer_node is not None else ""
    if issuer != config.idp_entity_id:  # python3-saml checked it; kept so the identity cannot drift
        raise _rejected(config, SamlReason.WRONG_ISSUER, "Assertion Issuer is not the tenant's IdP")
    assertion_id = response.get_assertion_id()
    if not assertion_id:
        raise _rejected(config, SamlReason.INVALID, "Assertion without ID")

    scd_end = _parse_instant(config, scd.get("NotOnOrAfter", ""))
    # Keep the id at least as long as any check here or in python3-saml could still accept it.
    replay_until = max(scd_end, _parse_instant(config, conditions_end) if conditions_end else scd_end)
    replay_until += _MAX_CLOCK_SKEW_SECONDS
    identity = SamlIdentity(
        name_id=str(name_id),
        issuer=issuer,
        session_index=response.get_session_index(),
        attributes=MappingProxyType(_attributes(response.get_attributes())),
        authn_context=class_refs[0] if class_refs else None,
        assertion_id=str(assertion_id),
        not_on_or_after=datetime.fromtimestamp(scd_end, UTC),
        in_response_to=in_response_to,
        name_id_format=name_id_data.get("Format"),
    )
    return identity, datetime.fromtimestamp(replay_until, UTC)


def _attributes(raw: Mapping[str, list[Any]]) -> dict[str, tuple[str, ...]]:
    attributes: dict[str, tuple[str, ...]] = {}
    for name, values in raw.items():
        flat: list[str] = []
        for value in values:
            if isinstance(value, str):
                flat.append(value)
            elif isinstance(value, dict) and isinstance(value.get("NameID"), dict):
                nested = value["NameID"].get("value")
                if isinstance(nested, str):
                    flat.append(nested)
        attributes[str(name)] = tuple(flat)
    return attributes
