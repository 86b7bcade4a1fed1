"""tenantSsoSettingsUpdate and tenantSsoSettings: the SAML IdP from its metadata, the OpenID provider
with its write-only encrypted client secret, the linking and provisioning switches; high-risk audit;
every refusal a tenant administrator can meet.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import text
from starlette.applications import Starlette

from auth.oidc_login import provider_from_config
from auth.policy import policy_from
from auth.routes_saml import tenant_config
from models.db import set_tenant
from resolvers.identity.sso_settings import certificate_fingerprint
from resolvers.identity.tenant_settings import open_configuration_value
from server.app import create_app
from tests.auth.saml_fixtures import make_idp
from tests.conftest import Database
from tests.support import http as support_http
from tests.support.audit_trail import expect_audit
from tests.support.factories_sso import IDP, IDP_ENTITY_ID, IDP_SSO_URL, OIDC, idp_metadata
from tests.support.secrets import remember
from tests.writes.conftest import Rows, SignIn, codes, mutate, refused
from tests.writes.test_admin_mutations import _enroll_mfa

SECRET = "SEKRET-sso-client-4b9e"
remember(SECRET)  # tests/test_zz_secrets.py looks for it in every audit row and log line
OTHER_SECRET = "SEKRET-sso-client-rotated-77d0"
remember(OTHER_SECRET)

SETTINGS = (
    "updatedAt ssoAllowEmailLinking ssoJitProvisioning ssoJitRole"
    " saml { idpEntityId idpSsoUrl signingCertificateSha256 requiredAuthnContexts clockSkewSeconds }"
    " oidc { issuer clientId audience jwksUri displayName algorithms clientSecretSet }"
)
UPDATE = (
    "mutation($input: TenantSsoSettingsUpdateInput!) { tenantSsoSettingsUpdate(input: $input) {"
    f" ssoSettings {{ {SETTINGS} }} errors {{ code field message }} }} }}"
)
QUERY = f"{{ tenantSsoSettings {{ {SETTINGS} }} }}"
MFA_CONTEXT = "https://refeds.org/profile/mfa"


def _errors(data: dict[str, Any]) -> list[tuple[str, list[str] | None]]:
    return [(e["code"], e["field"]) for e in data["tenantSsoSettingsUpdate"]["errors"]]


async def _trail_text(rows: Rows) -> str:
    found = []
    for table in ("audit_logs", "change_history", "idempotency_keys"):
        found += [str(dict(r._mapping)) for r in await rows.all(f"SELECT * FROM {table} WHERE tenant_id = :t")]
    return "\n".join(found)


async def _entries(rows: Rows) -> dict[str, Any]:
    found = await rows.all(
        "SELECT * FROM tenant_configurations WHERE tenant_id = :t"
        " AND (config_key LIKE 'auth.%' OR config_key LIKE 'security.sso_%')"
    )
    return {r.config_key: r for r in found}


@pytest.mark.audits("tenantSsoSettingsUpdate")
async def test_sso_settings_are_stored_where_sign_in_reads_them_and_audited_as_high_risk(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, write_app: Starlette
) -> None:
    admin = await sign_in_as("Tenant Admin")
    assert (await mutate(client, admin, QUERY))["tenantSsoSettings"] == {
        "updatedAt": None,
        "ssoAllowEmailLinking": False,
        "ssoJitProvisioning": False,
        "ssoJitRole": "Viewer",
        "saml": None,
        "oidc": None,
    }

    data = await mutate(
        client,
        admin,
        UPDATE,
        {
            "input": {
                "updatedAt": None,
                "saml": {
                    "metadataXml": idp_metadata(IDP.cert_b64),
                    "requiredAuthnContexts": [MFA_CONTEXT],
                    "clockSkewSeconds": 60,
                },
                "oidc": {**OIDC, "displayName": "Acme Login", "algorithms": ["RS256"], "clientSecret": SECRET},
                "ssoAllowEmailLinking": True,
                "ssoJitProvisioning": True,
                "ssoJitRole": "BD Analyst",
            }
        },
    )
    assert _errors(data) == []
    settings = data["tenantSsoSettingsUpdate"]["ssoSettings"]
    assert settings["saml"] == {
        "idpEntityId": IDP_ENTITY_ID,
        "idpSsoUrl": IDP_SSO_URL,
        "signingCertificateSha256": certificate_fingerprint(IDP.cert_b64),
        "requiredAuthnContexts": [MFA_CONTEXT],
        "clockSkewSeconds": 60,
    }
    assert settings["oidc"] == {
        "issuer": OIDC["issuer"],
        "clientId": "gwm-crm",
        "audience": "gwm-crm",
        "jwksUri": OIDC["jwksUri"],
        "displayName": "Acme Login",
        "algorithms": ["RS256"],
        "clientSecretSet": True,
    }
    assert (settings["ssoAllowEmailLinking"], settings["ssoJitProvisioning"], settings["ssoJitRole"]) == (
        True,
        True,
        "BD Analyst",
    )
    assert (await mutate(client, admin, QUERY))["tenantSsoSettings"] == settings
    assert SECRET not in str(data)

    # Stored where sign-in reads them, usable as it uses them.
    entries = await _entries(rows)
    assert set(entries) == {
        "auth.saml",
        "auth.oidc",
        "auth.oidc.client_secret",
        "security.sso_allow_email_linking",
        "security.sso_jit_provisioning",
        "security.sso_jit_role",
    }
    sealed = entries["auth.oidc.client_secret"]
    assert sealed.is_encrypted and SECRET not in str(sealed.config_value)
    assert open_configuration_value(write_app.state.auth.secret_box, sealed) == SECRET
    provider = provider_from_config(entries["auth.oidc"].config_value)
    assert (provider.issuer, provider.audience, provider.allowed_algorithms) == (OIDC["issuer"], "gwm-crm", ("RS256",))
    policy = policy_from(rows.tenant.id, "t", False, 10, True, {})
    saml = tenant_config("https://gwm.example.com", "acme", entries["auth.saml"].config_value, policy)
    assert (saml.idp_entity_id, saml.idp_sso_url, saml.clock_skew_seconds) == (IDP_ENTITY_ID, IDP_SSO_URL, 60)

    # One high-risk audit row per row written; the secret appears nowhere in the trail.
    for key, entry in entries.items():
        log, _ = await expect_audit(
            rows.engine,
            rows.tenant.id,
            "tenantSsoSettingsUpdate",
            action="tenant.sso_settings.changed",
            entity_id=entry.id,
            history={"config_key", "config_value"},
            user_id=admin.id,
        )
        assert log.risk_level == "high" and log.permission_used == "tenant:admin", key
    trail = await _trail_text(rows)
    assert SECRET not in trail and sealed.config_value["sealed_secret"] not in trail
    assert "[redacted]" in trail

    # Left out, the secret stays; given, it is replaced; null removes it.
    version = settings["updatedAt"]
    data = await mutate(client, admin, UPDATE, {"input": {"updatedAt": version, "oidc": OIDC}})
    assert _errors(data) == []
    kept = data["tenantSsoSettingsUpdate"]["ssoSettings"]
    assert kept["oidc"]["clientSecretSet"] is True and kept["oidc"]["displayName"] is None
    assert kept["saml"] == settings["saml"]  # a part not given is left as it is
    data = await mutate(
        client,
        admin,
        UPDATE,
        {"input": {"updatedAt": kept["updatedAt"], "oidc": {**OIDC, "clientSecret": OTHER_SECRET}}},
    )
    assert _errors(data) == []
    entries = await _entries(rows)
    assert open_configuration_value(write_app.state.auth.secret_box, entries["auth.oidc.client_secret"]) == (
        OTHER_SECRET
    )
    assert OTHER_SECRET not in await _trail_text(rows)
    version = data["tenantSsoSettingsUpdate"]["ssoSettings"]["updatedAt"]
    data = await mutate(
        client, admin, UPDATE, {"input": {"updatedAt": version, "oidc": {**OIDC, "clientSecret": None}}}
    )
    assert data["tenantSsoSettingsUpdate"]["ssoSettings"]["oidc"]["clientSecretSet"] is False
    assert "auth.oidc.client_secret" not in await _entries(rows)

    # null removes a provider; the removal is audited too.
    version = data["tenantSsoSettingsUpdate"]["ssoSettings"]["updatedAt"]
    saml_id = entries["auth.saml"].id
    data = await mutate(client, admin, UPDATE, {"input": {"updatedAt": version, "saml": None, "oidc": None}})
    assert _errors(data) == []
    assert (
        data["tenantSsoSettingsUpdate"]["ssoSettings"]["saml"],
        data["tenantSsoSettingsUpdate"]["ssoSettings"]["oidc"],
    ) == (None, None)
    assert not {"auth.saml", "auth.oidc"} & set(await _entries(rows))
    removal = await rows.all("SELECT * FROM audit_logs WHERE tenant_id = :t AND entity_id = :e ORDER BY seq", e=saml_id)
    assert removal[-1].action_type == "tenant.sso_settings.changed" and removal[-1].risk_level == "high"
    assert removal[-1].after_values is None or removal[-1].after_values == {}


async def test_a_stale_version_is_a_conflict_and_changes_nothing(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    admin = await sign_in_as("Tenant Admin")
    data = await mutate(client, admin, UPDATE, {"input": {"updatedAt": None, "oidc": OIDC}})
    assert _errors(data) == []
    before = await _entries(rows)
    for version in (None, "2020-01-01T00:00:00.000000Z"):
        data = await mutate(client, admin, UPDATE, {"input": {"updatedAt": version, "ssoJitProvisioning": True}})
        assert _errors(data) == [("CONFLICT", ["input", "updatedAt"])]
        assert data["tenantSsoSettingsUpdate"]["ssoSettings"] is None
    assert await _entries(rows) == before


def _two_certificates() -> str:
    return idp_metadata(IDP.cert_b64, make_idp("second").cert_b64)


_OIDC_ISSUER = ["input", "oidc", "issuer"]
_METADATA = ["input", "saml", "metadataXml"]


@pytest.mark.parametrize(
    ("values", "field", "words"),
    [
        ({"oidc": {**OIDC, "issuer": "https://127.0.0.1/realms/a"}}, _OIDC_ISSUER, "127.0.0.1:443 is not a public"),
        ({"oidc": {**OIDC, "issuer": "http://login.example.com/"}}, _OIDC_ISSUER, "must use https"),
        ({"oidc": {**OIDC, "issuer": "https://[::1]:8443/"}}, _OIDC_ISSUER, "::1:8443 is not a public"),
        ({"oidc": {**OIDC, "issuer": "https://10.0.0.7/"}}, _OIDC_ISSUER, "10.0.0.7:443 is not a public"),
        ({"oidc": {**OIDC, "issuer": "https://user:pw@login.example.com/"}}, _OIDC_ISSUER, "credentials"),
        ({"oidc": {**OIDC, "jwksUri": "https://169.254.169.254/keys"}}, ["input", "oidc", "jwksUri"], "not a public"),
        ({"oidc": {**OIDC, "jwksUri": "https://localhost/keys"}}, ["input", "oidc", "jwksUri"], "not a public"),
        ({"oidc": {**OIDC, "algorithms": ["HS256"]}}, ["input", "oidc", "algorithms"], "one or more of RS256"),
        ({"oidc": {**OIDC, "algorithms": []}}, ["input", "oidc", "algorithms"], "one or more of RS256"),
        ({"oidc": {**OIDC, "displayName": "x" * 101}}, ["input", "oidc", "displayName"], "at most 100"),
        ({"saml": {"metadataXml": "<not metadata"}}, _METADATA, "not XML metadata"),
        (
            {"saml": {"metadataXml": '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>'}},
            _METADATA,
            "not XML metadata",
        ),
        ({"saml": {"metadataXml": "<x/>"}}, _METADATA, "no IDPSSODescriptor"),
        ({"saml": {"metadataXml": idp_metadata()}}, _METADATA, "exactly one signing certificate (it holds 0)"),
        ({"saml": {"metadataXml": "TWO"}}, _METADATA, "exactly one signing certificate (it holds 2)"),
        ({"saml": {"metadataXml": idp_metadata(IDP.cert_b64, sso_url=None)}}, _METADATA, "no HTTP-Redirect"),
        ({"saml": {"metadataXml": idp_metadata("bm90IGEgY2VydGlmaWNhdGU=")}}, _METADATA, "certificate"),
        (
            {"saml": {"metadataXml": idp_metadata(IDP.cert_b64, sso_url="javascript:alert(1)")}},
            _METADATA,
            "idp_sso_url",
        ),
        (
            {"saml": {"metadataXml": idp_metadata(IDP.cert_b64), "clockSkewSeconds": 301}},
            ["input", "saml", "clockSkewSeconds"],
            "300",
        ),
        (
            {"saml": {"metadataXml": idp_metadata(IDP.cert_b64), "requiredAuthnContexts": [" "]}},
            ["input", "saml", "requiredAuthnContexts"],
            "non-empty URIs",
        ),
        ({"ssoJitRole": "No Such Role"}, ["input", "ssoJitRole"], "no role named"),
        ({"ssoJitRole": "Tenant Admin"}, ["input", "ssoJitRole"], "grants administration"),
        ({"ssoJitProvisioning": None}, ["input", "ssoJitProvisioning"], "cannot be cleared"),
    ],
)
async def test_refusals_name_their_field_and_change_nothing(
    values: dict[str, Any], field: list[str], words: str, client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    if values.get("saml", {}).get("metadataXml") == "TWO":
        values = {"saml": {"metadataXml": _two_certificates()}}
    admin = await sign_in_as("Tenant Admin")
    data = await mutate(client, admin, UPDATE, {"input": {"updatedAt": None, **values}})
    payload = data["tenantSsoSettingsUpdate"]
    assert payload["ssoSettings"] is None
    [error] = payload["errors"]
    assert (error["code"], error["field"]) == ("VALIDATION", field)
    assert words in error["message"], error["message"]
    assert await _entries(rows) == {}
    assert await rows.audit() == []


@pytest.mark.parametrize(
    ("oidc", "field"),
    [
        ({**OIDC, "issuer": " "}, ["input", "oidc", "issuer"]),
        ({**OIDC, "clientId": ""}, ["input", "oidc", "clientId"]),
        ({**OIDC, "clientSecret": ""}, ["input", "oidc", "clientSecret"]),
    ],
)
async def test_empty_required_values_are_refused(
    oidc: dict[str, Any], field: list[str], client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    admin = await sign_in_as("Tenant Admin")
    data = await mutate(client, admin, UPDATE, {"input": {"updatedAt": None, "oidc": oidc}})
    assert _errors(data) == [("VALIDATION", field)]
    assert await _entries(rows) == {}


async def test_an_mfa_tenant_must_list_its_idp_mfa_contexts(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    admin = await sign_in_as("Tenant Admin")
    await _enroll_mfa(client, admin)  # an MFA tenant's password users need it
    async with rows.engine.begin() as conn:
        await set_tenant(conn, rows.tenant.id)
        await conn.execute(
            text(
                "INSERT INTO tenant_configurations (tenant_id, config_key, config_value, config_type)"
                " VALUES (:t, 'security.mfa_required', 'true', 'boolean')"
            ),
            {"t": rows.tenant.id},
        )
    data = await mutate(
        client, admin, UPDATE, {"input": {"updatedAt": None, "saml": {"metadataXml": idp_metadata(IDP.cert_b64)}}}
    )
    assert _errors(data) == [("VALIDATION", ["input", "saml", "requiredAuthnContexts"])]
    assert "MFA" in data["tenantSsoSettingsUpdate"]["errors"][0]["message"]


async def test_only_tenant_administrators_read_and_change_sso_settings(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    errors = await refused(
        client, manager, UPDATE, {"input": {"updatedAt": None, "oidc": {**OIDC, "clientSecret": SECRET}}}
    )
    assert codes(errors) == ["FORBIDDEN"]
    assert codes(await refused(client, manager, QUERY)) == ["FORBIDDEN"]
    assert await _entries(rows) == {}
    assert SECRET not in await _trail_text(rows)


async def test_generic_configuration_mutations_cannot_write_sso_entries(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    admin = await sign_in_as("Tenant Admin")
    document = (
        "mutation($input: TenantConfigurationCreateInput!) { tenantConfigurationCreate(input: $input) {"
        " errors { code field message } } }"
    )
    for key in ("auth.oidc", "auth.saml", "auth.oidc.client_secret"):
        data = await mutate(
            client,
            admin,
            document,
            {"input": {"configKey": key, "configType": "json", "configValue": {"issuer": "https://127.0.0.1/"}}},
        )
        errors = data["tenantConfigurationCreate"]["errors"]
        assert [(e["code"], e["field"]) for e in errors] == [("VALIDATION", ["input", "configKey"])], key
        assert "tenantSsoSettingsUpdate" in errors[0]["message"]
    assert await _entries(rows) == {}


async def test_an_allow_listed_destination_may_be_saved(
    database: Database, client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    """The static rules at write time follow the operator's allow-list (GWM_OUTBOUND_ALLOW)."""
    admin = await sign_in_as("Tenant Admin")
    private = {**OIDC, "issuer": "http://127.0.0.1:8443/realms/a", "jwksUri": "http://127.0.0.1:8443/realms/a/certs"}
    data = await mutate(client, admin, UPDATE, {"input": {"updatedAt": None, "oidc": private}})
    assert _errors(data) == [("VALIDATION", ["input", "oidc", "issuer"])]
    listed = create_app(support_http.test_settings(database.app_url, outbound_allow="127.0.0.1:8443"))
    async with support_http.app_client(listed) as other:
        data = await mutate(other, admin, UPDATE, {"input": {"updatedAt": None, "oidc": private}})
    assert _errors(data) == []
    assert (await _entries(rows))["auth.oidc"].config_value["issuer"] == private["issuer"]
