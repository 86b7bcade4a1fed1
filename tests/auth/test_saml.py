"""SAML SP core (auth.saml): a good response, and every refusal with its reason code.

Responses are built and signed in tests/auth/saml_fixtures.py with signxml, independently of
python3-saml. No database: `MemoryStateStore` below is a dict-backed stand-in for these tests only
(the shared, DB-backed `SamlStateStore` is auth/saml_store.py, tested in test_sso_saml.py).
"""

from __future__ import annotations

import base64
import logging
import zlib
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from lxml import etree
from onelogin.saml2.response import OneLogin_Saml2_Response
from onelogin.saml2.settings import OneLogin_Saml2_Settings
from signxml.verifier import XMLVerifier

from auth.exceptions import AuthError, ConfigurationError, SamlConfigError, SamlRejected
from auth.saml import (
    SamlIdentity,
    SamlReason,
    SamlTenantConfig,
    build_login_request,
    request_url_data_from,
    saml_settings,
    sp_metadata,
    validate_response,
)
from tests.auth.saml_fixtures import (
    ACS_URL,
    EVIL_NAME_ID,
    IDP_ENTITY_ID,
    IDP_SSO_URL,
    MFA_CONTEXT,
    PASSWORD_CONTEXT,
    SP_ENTITY_ID,
    TENANT,
    XSW_ATTACKS,
    ResponseSpec,
    Sha1XMLSigner,
    TestIdp,
    b64,
    comment_in_name_id,
    doctype_payload,
    make_idp,
    sign_assertion,
    sign_response,
    signature_stripped_keyinfo_kept,
    unsigned,
)

URL_DATA = request_url_data_from(ACS_URL)


class MemoryStateStore:
    """Test-only `SamlStateStore` backed by dicts (the real one is a shared DB table)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], datetime] = {}
        self.assertions: dict[tuple[str, str], datetime] = {}

    def issue(self, tenant: str, request_id: str, ttl: timedelta = timedelta(minutes=5)) -> None:
        self.requests[(tenant, request_id)] = datetime.now(UTC) + ttl

    async def consume_request_id(self, tenant: str, request_id: str) -> bool:
        expires = self.requests.pop((tenant, request_id), None)
        return expires is not None and expires > datetime.now(UTC)

    async def remember_assertion(self, tenant: str, assertion_id: str, not_on_or_after: datetime) -> bool:
        if (tenant, assertion_id) in self.assertions:
            return False
        self.assertions[(tenant, assertion_id)] = not_on_or_after
        return True


@pytest.fixture(scope="module")
def idp() -> TestIdp:
    return make_idp()


@pytest.fixture(scope="module")
def other_idp() -> TestIdp:
    return make_idp("attacker-idp")


def make_config(idp: TestIdp, **overrides: object) -> SamlTenantConfig:
    values: dict[str, object] = {
        "tenant": TENANT,
        "sp_entity_id": SP_ENTITY_ID,
        "acs_url": ACS_URL,
        "idp_entity_id": IDP_ENTITY_ID,
        "idp_sso_url": IDP_SSO_URL,
        "idp_x509_cert": idp.cert_pem,
    }
    values.update(overrides)
    return SamlTenantConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
def config(idp: TestIdp) -> SamlTenantConfig:
    return make_config(idp)


@pytest.fixture
def store() -> MemoryStateStore:
    return MemoryStateStore()


@pytest.fixture
def request_id(store: MemoryStateStore) -> str:
    # A request id as build_login_request would have issued and the caller persisted.
    issued = "_req-0123456789abcdef"
    store.issue(TENANT, issued)
    return issued


def good_xml(idp: TestIdp, request_id: str | None, **spec: object) -> str:
    return sign_assertion(ResponseSpec(in_response_to=request_id, **spec).to_xml(), idp)  # type: ignore[arg-type]


async def validate(config: SamlTenantConfig, store: MemoryStateStore, xml: str) -> SamlIdentity:
    return await validate_response(config, b64(xml), request_url_data=URL_DATA, store=store)


async def refusal(config: SamlTenantConfig, store: MemoryStateStore, xml: str) -> str:
    with pytest.raises(SamlRejected) as caught:
        await validate(config, store, xml)
    return caught.value.reason_code


# --- the good path ---------------------------------------------------------------------------------


async def test_good_response_validates_and_yields_the_identity(
    config: SamlTenantConfig, store: MemoryStateStore, request_id: str, idp: TestIdp
) -> None:
    spec = ResponseSpec(in_response_to=request_id)
    identity = await validate(config, store, sign_assertion(spec.to_xml(), idp))

    assert identity.name_id == "alice@acme.test"
    assert identity.name_id_format == "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
    assert identity.issuer == IDP_ENTITY_ID
    assert identity.session_index == "_session-1"
    assert dict(identity.attributes) == {"email": ("alice@acme.test",), "groups": ("capture", "bd")}
    assert identity.authn_context == PASSWORD_CONTEXT
    assert identity.assertion_id == spec.assertion_id
    assert identity.in_response_to == request_id
    now = datetime.now(UTC)
    assert now < identity.not_on_or_after <= now + timedelta(minutes=6)
    # The request id is used up and the assertion id is remembered at least until it expires.
    assert store.requests == {}
    assert store.assertions[(TENANT, spec.assertion_id)] >= identity.not_on_or_after


@pytest.mark.parametrize("form", ["pem", "base64"])
async def test_good_response_with_the_certificate_in_either_form(
    form: str, store: MemoryStateStore, request_id: str, idp: TestIdp
) -> None:
    config = make_config(idp, idp_x509_cert=idp.cert_pem if form == "pem" else idp.cert_b64)
    identity = await validate(config, store, good_xml(idp, request_id))
    assert identity.name_id == "alice@acme.test"


async def test_good_response_signed_on_response_and_assertion(
    config: SamlTenantConfig, store: MemoryStateStore, request_id: str, idp: TestIdp
) -> None:
    identity = await validate(config, store, sign_response(good_xml(idp, request_id), idp))
    assert identity.name_id == "alice@acme.test"


async def test_good_response_with_the_required_mfa_context(
    store: MemoryStateStore, request_id: str, idp: TestIdp
) -> None:
    config = make_config(idp, required_authn_contexts=(MFA_CONTEXT,))
    identity = await validate(config, store, good_xml(idp, request_id, authn_context=MFA_CONTEXT))
    assert identity.authn_context == MFA_CONTEXT


# --- signatures ------------------------------------------------------------------------------------


async def test_unsigned_response_is_refused(
    config: SamlTenantConfig, store: MemoryStateStore, request_id: str
) -> None:
    xml = unsigned(ResponseSpec(in_response_to=request_id).to_xml())
    assert await refusal(config, store, xml) == SamlReason.SIGNATURE
    assert store.assertions == {}  # nothing recorded for a refused response


async def test_response_signed_with_another_key_is_refused(
    config: SamlTenantConfig, store: MemoryStateStore, request_id: str, other_idp: TestIdp
) -> None:
    # The attacker's certificate rides along in KeyInfo; only the configured one may be trusted.
    xml = good_xml(other_idp, request_id)
    assert other_idp.cert_b64 in "".join(xml.split())
    assert await refusal(config, store, xml) == SamlReason.SIGNATURE


@pytest.mark.parametrize("attack", sorted(XSW_ATTACKS))
async def test_signature_wrapping_is_refused(
    attack: str, config: SamlTenantConfig, store: MemoryStateStore, request_id: str, idp: TestIdp
) -> None:
    build, response_signed = XSW_ATTACKS[attack]
    signed = good_xml(idp, request_id)
    xml = build(sign_response(signed, idp) if response_signed else signed)
    assert EVIL_NAME_ID in xml
    if attack in {"XSW1", "XSW3", "XSW4", "XSW5", "XSW7"}:
        # Live payloads: an independent verifier still finds a valid IdP signature in them, so the
        # refusal below is not an accident of a broken signature.
        assert XMLVerifier().verify(xml, x509_cert=idp.cert_pem, id_attribute="ID") is not None
    assert await refusal(config, store, xml) == SamlReason.MULTIPLE_ASSERTIONS


async def test_two_assertions_are_refused(
    config: SamlTenantConfig, store: MemoryStateStore, request_id: str, idp: TestIdp
) -> None:
    # Two assertions, each correctly signed by the IdP, in one Response.
    first = etree.fromstring(good_xml(idp, request_id).encode())
    second = etree.fromstring(good_xml(idp, request_id, name_id=EVIL_NAME_ID).encode())
    first.append(second.find("{urn:oasis:names:tc:SAML:2.0:assertion}Assertion"))
    xml = etree.tostring(first, encoding="unicode")
    assert await refusal(config, store, xml) == SamlReason.MULTIPLE_ASSERTIONS


async def test_comment_injected_in_name_id_is_refused(
    config: SamlTenantConfig, store: MemoryStateStore, request_id: str, idp: TestIdp
) -> None:
    # The IdP signed "alice@acme.test.evil.example"; a truncating reader would see "alice@acme.test".
    signed_name = "alice@acme.test.evil.example"
    xml = comment_in_name_id(good_xml(idp, request_id, name_id=signed_name), signed_name, "alice@acme.test")
    assert "alice@acme.test<!---->.evil.example" in xml
    assert await refusal(config, store, xml) == SamlReason.NAMEID_COMMENT


@pytest.mark.parametrize("variant", ["in_signature", "in_subject"])
async def test_signature_removed_with_certificate_left_in_keyinfo_is_refused(
    variant: str, config: SamlTenantConfig, store: MemoryStateStore, request_id: str, idp: TestIdp
) -> None:
    xml = signature_stripped_keyinfo_kept(good_xml(idp, request_id), idp, variant=variant)
    assert "SignatureValue" not in xml
    assert await refusal(config, store, xml) == SamlReason.SIGNATURE


async def test_sha1_signature_is_refused(
    config: SamlTenantConfig, store: MemoryStateStore, request_id: str, idp: TestIdp
) -> None:
    signer = Sha1XMLSigner(
        signature_algorithm="rsa-sha1",
        digest_algorithm="sha1",
        c14n_algorithm="http://www.w3.org/2001/10/xml-exc-c14n#",
    )
    xml = sign_assertion(ResponseSpec(in_response_to=request_id).to_xml(), idp, signer=signer)
    assert "xmldsig#rsa-sha1" in xml
    assert await refusal(config, store, xml) == SamlReason.DEPRECATED_ALGORITHM


# --- parsing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["xxe", "billion_laughs", "external_dtd"])
async def test_doctype_payloads_are_refused(
    kind: str, config: SamlTenantConfig, store: MemoryStateStore, request_id: str, idp: TestIdp
) -> None:
    xml = doctype_payload(good_xml(idp, request_id), kind)
    assert await refusal(config, store, xml) == SamlReason.DOCTYPE


async def test_encrypted_assertion_is_refused(
    config: SamlTenantConfig, store: MemoryStateStore, request_id: str, idp: TestIdp
) -> None:
    root = etree.fromstring(good_xml(idp, request_id).encode())
    assertion = root.find("{urn:oasis:names:tc:SAML:2.0:assertion}Assertion")
    encrypted = etree.Element("{urn:oasis:names:tc:SAML:2.0:assertion}EncryptedAssertion")
    etree.SubElement(encrypted, "{http://www.w3.org/2001/04/xmlenc#}EncryptedData").text = "AAAA"
    root.replace(assertion, encrypted)
    xml = etree.tostring(root, encoding="unicode")
    assert await refusal(config, store, xml) == SamlReason.ENCRYPTED_ASSERTION


@pytest.mark.parametrize("payload", ["not base64 at all!", base64.b64encode(b"<samlp:Response").decode(), ""])
async def test_garbage_is_refused_as_invalid(
    payload: str, config: SamlTenantConfig, store: MemoryStateStore
) -> None:
    with pytest.raises(SamlRejected) as caught:
        await validate_response(config, payload, request_url_data=URL_DATA, store=store)
    assert caught.value.reason_code == SamlReason.INVALID


async def test_idp_failure_status_is_reported_as_such(
    config: SamlTenantConfig, store: MemoryStateStore, request_id: str
) -> None:
    root = etree.fromstring(ResponseSpec(in_response_to=request_id).to_xml().encode())
    root.remove(root.find("{urn:oasis:names:tc:SAML:2.0:assertion}Assertion"))
    status = root.find(
        "{urn:oasis:names:tc:SAML:2.0:protocol}Status/{urn:oasis:names:tc:SAML:2.0:protocol}StatusCode"
    )
    status.set("Value", "urn:oasis:names:tc:SAML:2.0:status:Responder")
    assert await refusal(config, store, etree.tostring(root, encoding="unicode")) == SamlReason.IDP_STATUS


# --- conditions, audience, recipient, issuer ---------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(
            {"not_on_or_after": timedelta(hours=-1), "confirmation_not_on_or_after": timedelta(hours=-1)},
            id="assertion-expired",
        ),
        pytest.param({"confirmation_not_on_or_after": timedelta(seconds=-30)}, id="confirmation-expired"),
        # Inside python3-saml's fixed 300 s drift, outside this tenant's 60 s skew.
        pytest.param({"not_on_or_after": timedelta(seconds=-120)}, id="beyond-tenant-skew"),
    ],
)
async def test_expired_response_is_refused(
    spec: dict[str, timedelta], store: MemoryStateStore, request_id: str, idp: TestIdp
) -> None:
    config = make_config(idp, clock_skew_seconds=60)
    assert await refusal(config, store, good_xml(idp, request_id, **spec)) == SamlReason.EXPIRED


async def test_not_yet_valid_response_is_refused(
    config: SamlTenantConfig, store: MemoryStateStore, request_id: str, idp: TestIdp
) -> None:
    xml = good_xml(idp, request_id, not_before=timedelta(minutes=10), not_on_or_after=timedelta(minutes=20))
    assert await refusal(config, store, xml) == SamlReason.NOT_YET_VALID


@pytest.mark.parametrize("audience", ["https://other-sp.example/metadata", None], ids=["other", "missing"])
async def test_wrong_audience_is_refused(
    audience: str | None, config: SamlTenantConfig, store: MemoryStateStore, request_id: str, idp: TestIdp
) -> None:
    xml = good_xml(idp, request_id, audience=audience)
    assert await refusal(config, store, xml) == SamlReason.WRONG_AUDIENCE


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"recipient": "https://evil.example/acs"}, id="other-recipient"),
        # python3-saml only asks that the ACS URL occur somewhere in the Recipient.
        pytest.param(
            {"recipient": f"https://evil.example/acs?next={ACS_URL}"}, id="recipient-containing-acs"
        ),
        pytest.param({"destination": "https://evil.example/acs"}, id="other-destination"),
        pytest.param({"destination": f"{ACS_URL}/../../other/acs"}, id="destination-prefixed-by-acs"),
    ],
)
async def test_wrong_recipient_is_refused(
    spec: dict[str, str], config: SamlTenantConfig, store: MemoryStateStore, request_id: str, idp: TestIdp
) -> None:
    assert await refusal(config, store, good_xml(idp, request_id, **spec)) == SamlReason.WRONG_RECIPIENT


async def test_wrong_issuer_is_refused(
    config: SamlTenantConfig, store: MemoryStateStore, request_id: str, idp: TestIdp
) -> None:
    xml = good_xml(idp, request_id, issuer="https://other-idp.example/metadata")
    assert await refusal(config, store, xml) == SamlReason.WRONG_ISSUER


# --- request binding and replay ----------------------------------------------------------------------


async def test_unsolicited_response_is_refused(
    config: SamlTenantConfig, store: MemoryStateStore, request_id: str, idp: TestIdp
) -> None:
    assert await refusal(config, store, good_xml(idp, None)) == SamlReason.UNSOLICITED
    assert store.assertions == {}


async def test_in_response_to_only_on_the_unsigned_envelope_counts_as_unsolicited(
    config: SamlTenantConfig, store: MemoryStateStore, request_id: str, idp: TestIdp
) -> None:
    # Only the assertion is signed, so a Response@InResponseTo could have been added by anyone
    # replaying an IdP-initiated assertion.
    xml = good_xml(idp, request_id, assertion_in_response_to_omitted=True)
    assert await refusal(config, store, xml) == SamlReason.UNSOLICITED
    assert (TENANT, request_id) in store.requests  # not consumed


async def test_unknown_in_response_to_is_refused(
    config: SamlTenantConfig, store: MemoryStateStore, request_id: str, idp: TestIdp
) -> None:
    xml = good_xml(idp, "_never-issued")
    assert await refusal(config, store, xml) == SamlReason.UNKNOWN_REQUEST


async def test_expired_request_id_is_refused(
    config: SamlTenantConfig, store: MemoryStateStore, idp: TestIdp
) -> None:
    store.issue(TENANT, "_stale", ttl=timedelta(seconds=-1))
    assert await refusal(config, store, good_xml(idp, "_stale")) == SamlReason.UNKNOWN_REQUEST


async def test_replayed_response_is_refused(
    config: SamlTenantConfig, store: MemoryStateStore, request_id: str, idp: TestIdp
) -> None:
    xml = good_xml(idp, request_id)
    await validate(config, store, xml)
    store.issue(TENANT, request_id)  # even were the request id still open, the assertion is spent
    assert await refusal(config, store, xml) == SamlReason.REPLAY


async def test_replay_is_refused_without_reissuing_the_request(
    config: SamlTenantConfig, store: MemoryStateStore, request_id: str, idp: TestIdp
) -> None:
    xml = good_xml(idp, request_id)
    await validate(config, store, xml)
    assert await refusal(config, store, xml) == SamlReason.REPLAY


# --- MFA (AuthnContextClassRef) ----------------------------------------------------------------------


@pytest.mark.parametrize("context", [PASSWORD_CONTEXT, None], ids=["password-only", "no-classref"])
async def test_missing_required_authn_context_is_refused(
    context: str | None, store: MemoryStateStore, request_id: str, idp: TestIdp
) -> None:
    config = make_config(idp, required_authn_contexts=(MFA_CONTEXT,))
    xml = good_xml(idp, request_id, authn_context=context)
    assert await refusal(config, store, xml) == SamlReason.AUTHN_CONTEXT


# --- configuration -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cert", [None, "", "   \n", "not a certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n"]
)
def test_config_without_a_usable_idp_certificate_is_refused(cert: str | None, idp: TestIdp) -> None:
    with pytest.raises(SamlConfigError) as caught:
        make_config(idp, idp_x509_cert=cert)
    assert caught.value.reason_code == SamlReason.NO_IDP_CERT
    assert isinstance(caught.value, SamlRejected)
    assert isinstance(caught.value, ConfigurationError)
    assert isinstance(caught.value, AuthError)


def test_settings_refuse_a_config_whose_certificate_was_bypassed(config: SamlTenantConfig) -> None:
    object.__setattr__(config, "_idp_cert_pem", "")
    with pytest.raises(SamlConfigError) as caught:
        saml_settings(config)
    assert caught.value.reason_code == SamlReason.NO_IDP_CERT


@pytest.mark.parametrize(
    "overrides",
    [
        {"acs_url": "https://acme.gwm.test/auth/saml/other/acs"},
        {"acs_url": "http://acme.gwm.test/auth/saml/acme/acs"},
        {"idp_sso_url": "javascript:alert(1)"},
        {"tenant": "Acme Corp"},
        {"clock_skew_seconds": 301},
        {"required_authn_contexts": ("",)},
        {"required_authn_contexts": MFA_CONTEXT},
    ],
)
def test_unusable_config_is_refused(overrides: dict[str, object], idp: TestIdp) -> None:
    with pytest.raises(SamlConfigError) as caught:
        make_config(idp, **overrides)
    assert caught.value.reason_code == SamlReason.CONFIG


def test_settings_are_strict(config: SamlTenantConfig) -> None:
    settings = saml_settings(replace(config, required_authn_contexts=(MFA_CONTEXT,)))
    security = settings["security"]
    assert settings["strict"] is True
    assert security["wantAssertionsSigned"] is True
    assert security["wantMessagesSigned"] is False
    assert security["rejectDeprecatedAlgorithm"] is True
    assert security["wantNameId"] is True
    assert security["allowRepeatAttributeName"] is False
    assert security["requestedAuthnContext"] == [MFA_CONTEXT]
    assert security["failOnAuthnContextMismatch"] is True
    assert settings["sp"]["assertionConsumerService"]["url"] == ACS_URL
    assert "certFingerprint" not in settings["idp"]
    assert saml_settings(config)["security"]["requestedAuthnContext"] is False


def test_sp_metadata(config: SamlTenantConfig) -> None:
    root = etree.fromstring(sp_metadata(config).encode())
    md = "urn:oasis:names:tc:SAML:2.0:metadata"
    assert root.tag == f"{{{md}}}EntityDescriptor"
    assert root.get("entityID") == SP_ENTITY_ID
    descriptor = root.find(f"{{{md}}}SPSSODescriptor")
    assert descriptor is not None
    assert descriptor.get("WantAssertionsSigned") == "true"
    acs = descriptor.find(f"{{{md}}}AssertionConsumerService")
    assert acs is not None
    assert acs.get("Location") == ACS_URL
    assert acs.get("Binding") == "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"


@pytest.mark.parametrize("required", [(), (MFA_CONTEXT,)], ids=["no-context", "mfa"])
def test_build_login_request(required: tuple[str, ...], idp: TestIdp) -> None:
    config = make_config(idp, required_authn_contexts=required)
    url, request_id = build_login_request(config, "k3y")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == IDP_SSO_URL
    query = parse_qs(parts.query)
    assert query["RelayState"] == ["k3y"]
    xml = zlib.decompress(base64.b64decode(query["SAMLRequest"][0]), -15)
    request = etree.fromstring(xml)
    assert request.get("ID") == request_id
    assert request.get("Destination") == IDP_SSO_URL
    assert request.get("AssertionConsumerServiceURL") == ACS_URL
    assert request.findtext("{urn:oasis:names:tc:SAML:2.0:assertion}Issuer") == SP_ENTITY_ID
    class_refs = request.findall(".//{urn:oasis:names:tc:SAML:2.0:assertion}AuthnContextClassRef")
    assert [node.text for node in class_refs] == list(required)
    assert build_login_request(config, None)[1] != request_id  # fresh id each time


def test_relay_state_longer_than_80_bytes_is_refused(config: SamlTenantConfig) -> None:
    with pytest.raises(ValueError, match="80 bytes"):
        build_login_request(config, "x" * 81)


# --- errors stay out of user-visible text -------------------------------------------------------------


async def test_python3_saml_text_goes_to_debug_log_only(
    config: SamlTenantConfig,
    store: MemoryStateStore,
    request_id: str,
    other_idp: TestIdp,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="auth.saml")
    with pytest.raises(SamlRejected) as caught:
        await validate(config, store, good_xml(other_idp, request_id))
    assert str(caught.value) == "SIGNATURE: python3-saml validation failed"
    library_lines = [r for r in caplog.records if "python3-saml:" in r.getMessage()]
    assert library_lines and all(r.levelno == logging.DEBUG for r in library_lines)
    assert "Signature validation failed" in library_lines[0].getMessage()


# --- what python3-saml catches on its own ------------------------------------------------------------
# The same fixtures against python3-saml 1.16 alone (strict settings, request_id=None): a record of
# which defences are the library's and which are ours, that fails loudly if an upgrade changes them.


def _build_wrapped(attack: str) -> Callable[[TestIdp], str]:
    def build(idp: TestIdp) -> str:
        xsw, response_signed = XSW_ATTACKS[attack]
        signed = good_xml(idp, "_r")
        return xsw(sign_response(signed, idp) if response_signed else signed)

    return build


_LIBRARY_CASES: dict[str, tuple[Callable[[TestIdp], str], bool]] = {
    "good": (lambda idp: good_xml(idp, "_r"), True),
    "unsigned": (lambda idp: unsigned(ResponseSpec(in_response_to="_r").to_xml()), False),
    "wrong-key": (lambda idp: good_xml(make_idp("other"), "_r"), False),
    **{f"xsw{n}": (_build_wrapped(f"XSW{n}"), False) for n in range(1, 9)},
    "sha1": (
        lambda idp: sign_assertion(
            ResponseSpec(in_response_to="_r").to_xml(),
            idp,
            signer=Sha1XMLSigner(signature_algorithm="rsa-sha1", digest_algorithm="sha1"),
        ),
        False,
    ),
    "expired": (lambda idp: good_xml(idp, "_r", not_on_or_after=timedelta(hours=-1)), False),
    "wrong-audience": (lambda idp: good_xml(idp, "_r", audience="https://other.example/sp"), False),
    "keyinfo-only": (
        lambda idp: signature_stripped_keyinfo_kept(good_xml(idp, "_r"), idp, variant="in_signature"),
        False,
    ),
    # Accepted by the library alone; refused by our layers:
    "comment-in-nameid": (
        lambda idp: comment_in_name_id(
            good_xml(idp, "_r", name_id="alice@acme.test.evil.example"),
            "alice@acme.test.evil.example",
            "alice@acme.test",
        ),
        True,
    ),
    "unsolicited": (lambda idp: good_xml(idp, None), True),
    "no-audience": (lambda idp: good_xml(idp, "_r", audience=None), True),
    "recipient-containing-acs": (
        lambda idp: good_xml(idp, "_r", recipient=f"https://evil.example/acs?next={ACS_URL}"),
        True,
    ),
    "no-confirmation-expiry": (lambda idp: good_xml(idp, "_r", confirmation_not_on_or_after=None), True),
    "unsigned-envelope-in-response-to": (
        lambda idp: good_xml(idp, "_r", assertion_in_response_to_omitted=True),
        True,
    ),
}


@pytest.mark.parametrize("case", list(_LIBRARY_CASES))
def test_python3_saml_alone(case: str, config: SamlTenantConfig, idp: TestIdp) -> None:
    build, library_accepts = _LIBRARY_CASES[case]
    response = OneLogin_Saml2_Response(OneLogin_Saml2_Settings(saml_settings(config)), b64(build(idp)))
    assert response.is_valid(URL_DATA) is library_accepts, response.get_error()
    if case == "comment-in-nameid":
        # The library strips comments before reading, so it sees the full signed value (no truncation).
        assert response.get_nameid() == "alice@acme.test.evil.example"


@pytest.mark.parametrize("kind", ["xxe", "billion_laughs"])
def test_python3_saml_alone_refuses_doctype(kind: str, config: SamlTenantConfig, idp: TestIdp) -> None:
    # DTDForbidden (a ValueError) for the DOCTYPE; libxml2's amplification limit may fire first.
    with pytest.raises((ValueError, etree.XMLSyntaxError)):
        OneLogin_Saml2_Response(
            OneLogin_Saml2_Settings(saml_settings(config)), b64(doctype_payload(good_xml(idp, "_r"), kind))
        )


async def test_no_authn_context_passes_python3_saml_alone(idp: TestIdp) -> None:
    config = make_config(idp, required_authn_contexts=(MFA_CONTEXT,))
    response = OneLogin_Saml2_Response(
        OneLogin_Saml2_Settings(saml_settings(config)), b64(good_xml(idp, "_r", authn_context=None))
    )
    assert response.is_valid(URL_DATA) is True  # failOnAuthnContextMismatch only compares what is there
