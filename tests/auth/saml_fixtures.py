"""A test IdP and SAML Response builders for tests/auth/test_saml.py.

Everything here is independent of python3-saml: keys and certificates come from `cryptography`,
responses are XML strings built from a template, and assertions are signed with signxml. The attack
builders (XSW1-XSW8 after Somorovsky et al., "On Breaking SAML", and SAML Raider's variants, plus
comment injection, signature stripping and DOCTYPE payloads) take a correctly signed response and
rearrange it the way an attacker holding one would.
"""

from __future__ import annotations

import base64
import copy
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from xml.sax.saxutils import escape, quoteattr

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml.algorithms import SignatureConstructionMethod
from signxml.signer import XMLSigner

__all__ = [
    "ACS_URL",
    "EVIL_NAME_ID",
    "IDP_ENTITY_ID",
    "IDP_SSO_URL",
    "MFA_CONTEXT",
    "PASSWORD_CONTEXT",
    "SP_ENTITY_ID",
    "TENANT",
    "XSW_ATTACKS",
    "ResponseSpec",
    "Sha1XMLSigner",
    "TestIdp",
    "b64",
    "comment_in_name_id",
    "doctype_payload",
    "make_idp",
    "sign_assertion",
    "sign_response",
    "signature_stripped_keyinfo_kept",
    "unsigned",
]

TENANT = "acme"
SP_ENTITY_ID = "https://acme.gwm.test/auth/saml/acme/metadata"
ACS_URL = "https://acme.gwm.test/auth/saml/acme/acs"
IDP_ENTITY_ID = "https://idp.example.test/saml/metadata"
IDP_SSO_URL = "https://idp.example.test/saml/sso"
PASSWORD_CONTEXT = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
MFA_CONTEXT = "https://refeds.org/profile/mfa"
EVIL_NAME_ID = "admin@acme.test"

NS_SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
NS_SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
NS_DS = "http://www.w3.org/2000/09/xmldsig#"
_EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
_STATUS_SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
_PLACEHOLDER = f'<ds:Signature xmlns:ds="{NS_DS}" Id="placeholder"/>'


def _q(local: str, ns: str = NS_SAML) -> str:
    return f"{{{ns}}}{local}"


@dataclass(frozen=True)
class TestIdp:
    """An IdP signing key and its self-signed certificate (PEM)."""

    __test__ = False  # not a pytest test class

    key: rsa.RSAPrivateKey
    cert_pem: str

    @property
    def cert_b64(self) -> str:
        """The certificate as bare base64 DER, the other form tenants paste."""
        return "".join(line for line in self.cert_pem.splitlines() if not line.startswith("-----"))


def make_idp(common_name: str = "test-idp") -> TestIdp:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return TestIdp(key=key, cert_pem=certificate.public_bytes(Encoding.PEM).decode("ascii"))


def _new_id() -> str:
    return f"_{uuid.uuid4().hex}"


def _instant(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ResponseSpec:
    """What the IdP asserts. The defaults describe a good response to request `in_response_to`."""

    in_response_to: str | None = None
    # None: same as in_response_to. Set separately to make the Response and the Assertion disagree.
    assertion_in_response_to: str | None = None
    assertion_in_response_to_omitted: bool = False
    name_id: str = "alice@acme.test"
    issuer: str = IDP_ENTITY_ID
    audience: str | None = SP_ENTITY_ID
    recipient: str = ACS_URL
    destination: str | None = ACS_URL
    not_before: timedelta = timedelta(seconds=-60)
    not_on_or_after: timedelta = timedelta(minutes=5)
    confirmation_not_on_or_after: timedelta | None = timedelta(minutes=5)
    authn_context: str | None = PASSWORD_CONTEXT
    session_index: str = "_session-1"
    attributes: dict[str, list[str]] = field(
        default_factory=lambda: {"email": ["alice@acme.test"], "groups": ["capture", "bd"]}
    )
    status: str = _STATUS_SUCCESS
    response_id: str = field(default_factory=_new_id)
    assertion_id: str = field(default_factory=_new_id)

    def to_xml(self) -> str:
        """The unsigned Response, with a signxml placeholder where the Assertion's signature goes."""
        now = datetime.now(UTC)
        response_irt = f" InResponseTo={quoteattr(self.in_response_to)}" if self.in_response_to else ""
        scd_irt_value = self.assertion_in_response_to or self.in_response_to
        scd_irt = (
            f" InResponseTo={quoteattr(scd_irt_value)}"
            if scd_irt_value and not self.assertion_in_response_to_omitted
            else ""
        )
        destination = f" Destination={quoteattr(self.destination)}" if self.destination is not None else ""
        scd_end = (
            f" NotOnOrAfter={quoteattr(_instant(now + self.confirmation_not_on_or_after))}"
            if self.confirmation_not_on_or_after is not None
            else ""
        )
        audience = (
            "<saml:AudienceRestriction>"
            f"<saml:Audience>{escape(self.audience)}</saml:Audience>"
            "</saml:AudienceRestriction>"
            if self.audience is not None
            else ""
        )
        context = (
            f"<saml:AuthnContextClassRef>{escape(self.authn_context)}</saml:AuthnContextClassRef>"
            if self.authn_context is not None
            # Schema-valid without a ClassRef: a declaration reference instead.
            else "<saml:AuthnContextDeclRef>https://idp.example.test/authn/decl</saml:AuthnContextDeclRef>"
        )
        attributes = "".join(
            f"<saml:Attribute Name={quoteattr(name)}>"
            + "".join(f"<saml:AttributeValue>{escape(v)}</saml:AttributeValue>" for v in values)
            + "</saml:Attribute>"
            for name, values in self.attributes.items()
        )
        statement = f"<saml:AttributeStatement>{attributes}</saml:AttributeStatement>" if attributes else ""
        return (
            f'<samlp:Response xmlns:samlp="{NS_SAMLP}" xmlns:saml="{NS_SAML}"'
            f' ID={quoteattr(self.response_id)} Version="2.0" IssueInstant="{_instant(now)}"'
            f"{destination}{response_irt}>"
            f"<saml:Issuer>{escape(self.issuer)}</saml:Issuer>"
            f"<samlp:Status><samlp:StatusCode Value={quoteattr(self.status)}/></samlp:Status>"
            f'<saml:Assertion ID={quoteattr(self.assertion_id)} Version="2.0" IssueInstant="{_instant(now)}">'
            f"<saml:Issuer>{escape(self.issuer)}</saml:Issuer>"
            f"{_PLACEHOLDER}"
            "<saml:Subject>"
            '<saml:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">'
            f"{escape(self.name_id)}</saml:NameID>"
            '<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer">'
            f"<saml:SubjectConfirmationData Recipient={quoteattr(self.recipient)}{scd_end}{scd_irt}/>"
            "</saml:SubjectConfirmation>"
            "</saml:Subject>"
            f'<saml:Conditions NotBefore="{_instant(now + self.not_before)}"'
            f' NotOnOrAfter="{_instant(now + self.not_on_or_after)}">{audience}</saml:Conditions>'
            f'<saml:AuthnStatement AuthnInstant="{_instant(now)}"'
            f" SessionIndex={quoteattr(self.session_index)}>"
            f"<saml:AuthnContext>{context}</saml:AuthnContext>"
            "</saml:AuthnStatement>"
            f"{statement}"
            "</saml:Assertion>"
            "</samlp:Response>"
        )


class Sha1XMLSigner(XMLSigner):
    """Test-only: signxml refuses SHA-1; the suite needs a SHA-1 signature to prove we refuse it."""

    def check_deprecated_methods(self) -> None:
        return None


def _signer() -> XMLSigner:
    return XMLSigner(
        method=SignatureConstructionMethod.enveloped,
        signature_algorithm="rsa-sha256",
        digest_algorithm="sha256",
        c14n_algorithm=_EXC_C14N,
    )


def _parse(xml: str) -> etree._Element:
    return etree.fromstring(xml.encode("utf-8"))


def _serialize(root: etree._Element) -> str:
    return str(etree.tostring(root, encoding="unicode"))


def sign_assertion(xml: str, idp: TestIdp, *, signer: XMLSigner | None = None) -> str:
    """Sign the (first) Assertion in place of its placeholder, enveloped, exclusive c14n."""
    root = _parse(xml)
    assertion = root.find(_q("Assertion"))
    assert assertion is not None
    signed = (signer or _signer()).sign(assertion, key=idp.key, cert=idp.cert_pem, id_attribute="ID")
    root.replace(assertion, signed)
    return _serialize(root)


def sign_response(xml: str, idp: TestIdp) -> str:
    """Also sign the Response envelope (after its Issuer), as IdPs set to "sign both" do."""
    root = _parse(xml)
    issuer = root.find(_q("Issuer"))
    assert issuer is not None
    issuer.addnext(etree.fromstring(_PLACEHOLDER))
    signed = _signer().sign(root, key=idp.key, cert=idp.cert_pem, id_attribute="ID")
    return _serialize(signed)


def unsigned(xml: str) -> str:
    """The response with the placeholder removed: no signature anywhere."""
    root = _parse(xml)
    for placeholder in root.iter(_q("Signature", NS_DS)):
        placeholder.getparent().remove(placeholder)
    return _serialize(root)


def b64(xml: str) -> str:
    return base64.b64encode(xml.encode("utf-8")).decode("ascii")


# --- attacks on a correctly signed response ------------------------------------------------------


def _assertion(root: etree._Element) -> etree._Element:
    found = root.find(_q("Assertion"))
    assert found is not None
    return found


def _own_signature(element: etree._Element) -> etree._Element:
    found = element.find(_q("Signature", NS_DS))
    assert found is not None
    return found


def _make_evil(assertion: etree._Element, *, new_id: str | None = "_evil_assertion") -> None:
    """Turn an assertion (in place) into the attacker's: another user, another ID."""
    name_id = assertion.find(f"{_q('Subject')}/{_q('NameID')}")
    assert name_id is not None
    name_id.text = EVIL_NAME_ID
    if new_id is not None:
        assertion.set("ID", new_id)


def _without_signature(element: etree._Element) -> etree._Element:
    clone = copy.deepcopy(element)
    clone.remove(_own_signature(clone))
    return clone


def _ds_object() -> etree._Element:
    return etree.Element(_q("Object", NS_DS), nsmap={"ds": NS_DS})


def xsw1(signed_both: str) -> str:
    """Response-level: the evil Response carries the original signature; the signed original
    Response (its own signature removed) hides inside that signature's ds:Object."""
    root = _parse(signed_both)
    original = _without_signature(root)
    _make_evil(_assertion(root), new_id=None)
    obj = _ds_object()
    obj.append(original)
    _own_signature(root).append(obj)
    root.set("ID", "_evil_response")
    return _serialize(root)


def xsw2(signed_both: str) -> str:
    """Response-level, detached: the signed original Response sits before the moved signature."""
    root = _parse(signed_both)
    original = _without_signature(root)
    _make_evil(_assertion(root), new_id=None)
    _own_signature(root).addprevious(original)
    root.set("ID", "_evil_response")
    return _serialize(root)


def xsw3(signed: str) -> str:
    """An unsigned evil Assertion placed before the signed original."""
    root = _parse(signed)
    assertion = _assertion(root)
    evil = _without_signature(assertion)
    _make_evil(evil)
    assertion.addprevious(evil)
    return _serialize(root)


def xsw4(signed: str) -> str:
    """An unsigned evil Assertion that wraps the signed original."""
    root = _parse(signed)
    assertion = _assertion(root)
    evil = _without_signature(assertion)
    _make_evil(evil)
    root.replace(assertion, evil)
    evil.append(assertion)
    return _serialize(root)


def xsw5(signed: str) -> str:
    """The evil Assertion keeps the signature; an unsigned copy of the original is appended, so the
    Reference still resolves to content whose digest matches."""
    root = _parse(signed)
    assertion = _assertion(root)
    original = _without_signature(assertion)
    _make_evil(assertion)
    root.append(original)
    return _serialize(root)


def xsw6(signed: str) -> str:
    """As XSW5, with the original copy inside the evil Assertion's signature."""
    root = _parse(signed)
    assertion = _assertion(root)
    original = _without_signature(assertion)
    _make_evil(assertion)
    _own_signature(assertion).append(original)
    return _serialize(root)


def xsw7(signed: str) -> str:
    """An unsigned evil Assertion inside samlp:Extensions, next to the untouched signed original."""
    root = _parse(signed)
    assertion = _assertion(root)
    evil = _without_signature(assertion)
    _make_evil(evil)
    extensions = etree.Element(_q("Extensions", NS_SAMLP))
    extensions.append(evil)
    issuer = root.find(_q("Issuer"))
    assert issuer is not None
    issuer.addnext(extensions)
    return _serialize(root)


def xsw8(signed: str) -> str:
    """The evil Assertion (same ID) keeps the signature; the original, unsigned, hides in a
    ds:Object inside it."""
    root = _parse(signed)
    assertion = _assertion(root)
    original = _without_signature(assertion)
    _make_evil(assertion, new_id=None)
    obj = _ds_object()
    obj.append(original)
    _own_signature(assertion).append(obj)
    return _serialize(root)


# name -> (builder, needs a Response signature too)
XSW_ATTACKS = {
    "XSW1": (xsw1, True),
    "XSW2": (xsw2, True),
    "XSW3": (xsw3, False),
    "XSW4": (xsw4, False),
    "XSW5": (xsw5, False),
    "XSW6": (xsw6, False),
    "XSW7": (xsw7, False),
    "XSW8": (xsw8, False),
}


def comment_in_name_id(signed: str, signed_name_id: str, cut_at: str) -> str:
    """CVE-2017-11427 style: `victim@x<!---->.evil` still digests as `victim@x.evil` under
    exclusive c14n, so the signature stays valid while a naive reader sees `victim@x`."""
    injected = signed_name_id.replace(cut_at, f"{cut_at}<!---->", 1)
    assert signed.count(f">{signed_name_id}<") == 1
    return signed.replace(f">{signed_name_id}<", f">{injected}<")


def signature_stripped_keyinfo_kept(signed: str, idp: TestIdp, *, variant: str) -> str:
    """The signature is gone but the IdP's certificate is still there, for a validator that takes
    "a trusted certificate is present" for "signed".

    `in_signature`: ds:Signature keeps only its KeyInfo. `in_subject`: the Signature is removed and
    the KeyInfo moves into the SubjectConfirmationData (where the schema allows it).
    """
    root = _parse(signed)
    assertion = _assertion(root)
    signature = _own_signature(assertion)
    key_info = signature.find(_q("KeyInfo", NS_DS))
    assert key_info is not None
    assert idp.cert_b64 in "".join("".join(key_info.itertext()).split())
    if variant == "in_signature":
        for local in ("SignedInfo", "SignatureValue"):
            child = signature.find(_q(local, NS_DS))
            assert child is not None
            signature.remove(child)
    elif variant == "in_subject":
        assertion.remove(signature)
        scd = assertion.find(f"{_q('Subject')}/{_q('SubjectConfirmation')}/{_q('SubjectConfirmationData')}")
        assert scd is not None
        scd.append(key_info)
    else:
        raise ValueError(variant)
    return _serialize(root)


def doctype_payload(signed: str, kind: str) -> str:
    """A signed response behind a DOCTYPE: external entity, entity expansion, or external DTD."""
    if kind == "xxe":
        doctype = '<!DOCTYPE samlp:Response [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        body = signed.replace(">alice@acme.test</saml:NameID>", ">&xxe;</saml:NameID>", 1)
    elif kind == "billion_laughs":
        entities = ['<!ENTITY lol0 "lol">'] + [
            f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">' for i in range(1, 10)
        ]
        doctype = f"<!DOCTYPE samlp:Response [{''.join(entities)}]>"
        body = signed.replace(">alice@acme.test</saml:NameID>", ">&lol9;</saml:NameID>", 1)
    elif kind == "external_dtd":
        doctype = '<!DOCTYPE samlp:Response SYSTEM "http://127.0.0.1:9/evil.dtd">'
        body = signed
    else:
        raise ValueError(kind)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{doctype}\n{body}'
