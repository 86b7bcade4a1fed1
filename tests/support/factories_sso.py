"""Matrix factory of the single sign-on settings mutation (tests/support/mutation_matrix.py), and
the IdP metadata the SSO tests send.
"""

from __future__ import annotations

import json
import uuid

from tests.auth.saml_fixtures import make_idp
from tests.support.mutation_matrix import Case, MatrixContext, matrix

_SSO_ROWS = (
    "SELECT * FROM tenant_configurations WHERE tenant_id = :t AND (config_key LIKE 'auth.%'"
    " OR config_key LIKE 'security.sso_%') ORDER BY id"
)
IDP_ENTITY_ID = "https://idp.example.com/saml/metadata"
IDP_SSO_URL = "https://idp.example.com/saml/sso"
_MD = "urn:oasis:names:tc:SAML:2.0:metadata"
_DS = "http://www.w3.org/2000/09/xmldsig#"
_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"


def idp_metadata(
    *certificates: str, entity_id: str = IDP_ENTITY_ID, sso_url: str | None = IDP_SSO_URL, binding: str = _REDIRECT
) -> str:
    """An IdP's SAML metadata XML with these signing certificates (bare base64 DER)."""
    keys = "".join(
        f'<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{c}'
        "</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"
        for c in certificates
    )
    sso = f'<md:SingleSignOnService Binding="{binding}" Location="{sso_url}"/>' if sso_url else ""
    return (
        f'<md:EntityDescriptor xmlns:md="{_MD}" xmlns:ds="{_DS}" entityID="{entity_id}">'
        '<md:IDPSSODescriptor WantAuthnRequestsSigned="false" '
        'protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">'
        f"{keys}{sso}</md:IDPSSODescriptor></md:EntityDescriptor>"
    )


IDP = make_idp("sso-settings-idp")
OIDC = {
    "issuer": "https://login.example.com/realms/acme",
    "clientId": "gwm-crm",
    "jwksUri": "https://login.example.com/realms/acme/certs",
}


async def _sso_elsewhere(ctx: MatrixContext) -> None:
    """The settings are the caller's tenant's only (the input names no row): a version read
    elsewhere is no version of them, CONFLICT, and nothing changes."""
    actor = await ctx.caller("Tenant Admin")
    before = await ctx.all(_SSO_ROWS)
    body = await ctx.call(actor, {"input": {"updatedAt": "2026-01-01T00:00:00.000000Z", "oidc": OIDC}})
    payload = body["data"]["tenantSsoSettingsUpdate"]
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [("CONFLICT", ["input", "updatedAt"])]
    assert payload["ssoSettings"] is None
    assert await ctx.all(_SSO_ROWS) == before


@matrix("tenantSsoSettingsUpdate", kind="update", table="tenant_configurations",
        entity_type="tenant_configuration", action="tenant.sso_settings.changed", permission="tenant:admin",
        denied_role="Capture Manager", history={"config_value"}, foreign=_sso_elsewhere)
async def sso_settings_update(ctx: MatrixContext) -> Case:
    rows = await ctx.all(_SSO_ROWS)
    if not any(r.config_key == "auth.oidc" for r in rows):
        await ctx.make("tenant_configurations", config_key="auth.oidc", config_type="json", config_value=json.dumps({
            "issuer": OIDC["issuer"], "client_id": OIDC["clientId"], "audience": OIDC["clientId"],
            "jwks_uri": OIDC["jwksUri"]}))
        rows = await ctx.all(_SSO_ROWS)
    version = max(rows, key=lambda r: r.updated_at)
    row = next(r for r in rows if r.config_key == "auth.oidc")
    oidc = {**OIDC, "displayName": f"Acme {uuid.uuid4().hex[:6]}"}
    return Case({"input": {**ctx.updated_at(version), "oidc": oidc}}, entity_id=row.id,
                stale={"input": {"updatedAt": "2020-01-01T00:00:00.000000Z", "oidc": oidc}})
