"""The exported SDL (graphql/schema.graphql) is the served schema, and holds no secret field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from graphql import GraphQLInputObjectType, GraphQLObjectType, build_schema, get_named_type

from schema.scalars import parse_datetime, serialize_datetime
from schema.schema import SDL_PATH, schema, sdl
from server.cli import main as gwm

ROOT = Path(__file__).resolve().parent.parent

# Values shown once, to the caller who just created them; nowhere else in the schema.
SHOWN_ONCE = {
    ("ApiKeyCreatePayload", "key"),
    ("MfaEnrollment", "secret"),
    ("MfaEnrollment", "provisioningUri"),
    ("MfaEnrollmentConfirmPayload", "recoveryCodes"),
}
# Fields whose names look like secrets but are not: public content digests and flags.
NOT_SECRETS = {
    ("OpportunityProject", "versionHash"),  # the digest of the synced public payload (change detection)
    ("Document", "fileHashMd5"),  # integrity digests of the file's content
    ("Document", "fileHashSha256"),
    ("Document", "isEncrypted"),  # a flag: whether the stored object is encrypted
    ("Document", "encryptionKeyId"),  # a key's identifier in the KMS, never key material
    ("TenantConfiguration", "isEncrypted"),  # a flag; encrypted values themselves read as null
    ("OidcProviderSettings", "clientSecretSet"),  # a flag: whether a client secret is stored, never the secret
    ("TrustedDocument", "sha256Hash"),  # the digest of a registered GraphQL document, which clients send by it
}
# Stored secrets and anything named like one: password hashes, TOTP secrets, token and key hashes.
SECRET_NAME = re.compile(r"hash|secret|encrypted|token|recovery|^password$|^key$|otp", re.I)
STORED_SECRET_COLUMNS = [
    "passwordHash",
    "mfaSecretEncrypted",
    "mfaSecret",
    "sessionTokenHash",
    "tokenHash",
    "keyHash",
    "codeHash",
    "totpLastStep",
]


def test_exported_sdl_is_the_served_schema() -> None:
    exported = (ROOT / SDL_PATH).read_text(encoding="utf-8")
    assert exported == sdl(), "graphql/schema.graphql is stale: run `gwm schema export`"


def test_gwm_schema_export_writes_the_served_sdl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "schema.graphql"
    assert gwm(["schema", "export", "--output", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == sdl()
    assert gwm(["schema", "export", "--output", "-"]) == 0
    assert capsys.readouterr().out.endswith(sdl())


def test_the_sdl_parses_and_names_every_permission_it_requires() -> None:
    parsed = build_schema(sdl())
    assert parsed.query_type is not None and parsed.mutation_type is not None
    mutations = sdl().split("type Mutation {", 1)[1].split("\n}", 1)[0] + "\n"

    def definition(name: str) -> str:
        """The field's definition: its arguments (one per line once they are described) and directives."""
        start = mutations.index(f"\n  {name}(")
        close = mutations.index("\n  )", start)
        return mutations[start : mutations.index("\n", close + 1)]

    for name in ("apiKeyCreate", "apiKeyRevoke", "userInvite", "userUnlock", "userDeactivate",
                 "userSetTemporaryPassword"):
        assert "@requiresPermission(permission: " in definition(name), definition(name)
    # Self-service: anyone may end their own session; another user's, without user:admin, is answered
    # as missing (and audited) rather than refused, so the field declares no permission of its own.
    revoke = definition("sessionRevoke")
    assert "@requiresPermission" not in revoke
    assert "another user's session is answered as missing" in mutations.split("\n  sessionRevoke(")[0][-400:]


def test_no_secret_field_in_the_schema() -> None:
    parsed = build_schema(sdl())
    offenders = []
    for type_name, named in parsed.type_map.items():
        if type_name.startswith("__") or not isinstance(named, GraphQLObjectType | GraphQLInputObjectType):
            continue
        for field_name, field in named.fields.items():
            if isinstance(named, GraphQLObjectType) and (type_name, field_name) in SHOWN_ONCE | NOT_SECRETS:
                continue
            if isinstance(named, GraphQLObjectType) and SECRET_NAME.search(field_name):
                offenders.append(f"{type_name}.{field_name}")
            if field_name in STORED_SECRET_COLUMNS:
                offenders.append(f"{type_name}.{field_name}")
            for arg_name in getattr(field, "args", {}) or {}:
                if arg_name in STORED_SECRET_COLUMNS:
                    offenders.append(f"{type_name}.{field_name}({arg_name})")
    assert offenders == []
    for column in STORED_SECRET_COLUMNS:
        assert column not in sdl()
    # The shown-once values live only in their creating payloads.
    for type_name, field_name in SHOWN_ONCE:
        owner = parsed.type_map[type_name]
        assert isinstance(owner, GraphQLObjectType) and field_name in owner.fields
    mfa_enrollment = parsed.type_map["MfaEnrollment"]
    assert [
        (t, f) for t, n in parsed.type_map.items() if isinstance(n, GraphQLObjectType)
        for f, fld in n.fields.items() if get_named_type(fld.type) is mfa_enrollment
    ] == [("MfaEnrollmentStartPayload", "enrollment")]


def test_types_expose_no_stored_secret_of_their_rows() -> None:
    parsed = build_schema(sdl())
    for type_name in (
        "User", "UserSession", "UserRole", "ApiKey", "Tenant", "TenantConfiguration", "Viewer", "Role",
        "AuditLog", "ChangeHistory", "PermissionAudit",
    ):
        named = parsed.type_map[type_name]
        assert isinstance(named, GraphQLObjectType)
        assert not [
            f for f in named.fields if SECRET_NAME.search(f) and (type_name, f) not in NOT_SECRETS
        ], type_name


def test_datetime_scalar_is_utc_with_microseconds_and_z() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    eastern = timezone(timedelta(hours=-5))
    assert serialize_datetime(datetime(2026, 11, 25, 4, 30, tzinfo=eastern)) == "2026-11-25T09:30:00.000000Z"
    assert serialize_datetime(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)) == "2026-01-02T03:04:05.000006Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        serialize_datetime(datetime(2026, 1, 1))
    assert parse_datetime("2026-11-25T04:30:00-05:00") == datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="offset"):
        parse_datetime("2026-11-25T04:30:00")


async def test_introspection_is_allowed_and_subscriptions_are_served() -> None:
    # The schema runs asynchronously (the compiled read path reads the database in an async hook).
    result = await schema.execute("{ __schema { queryType { name } subscriptionType { name } } }")
    assert result.errors is None
    assert result.data == {"__schema": {"queryType": {"name": "Query"}, "subscriptionType": {"name": "Subscription"}}}


def test_parsing_and_validation_are_cached_and_unexpected_errors_masked() -> None:
    from schema.errors import MaskUnexpectedErrors
    from schema.limits import OperationLimits

    # OperationLimits parses (cached once a document passed) and validates (cached by printed form).
    built = {type(extension) for extension in schema.get_extensions()}
    assert {OperationLimits, MaskUnexpectedErrors} <= built
