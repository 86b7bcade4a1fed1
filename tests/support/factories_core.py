"""Matrix factories of the mutations that existed before issue 11: projects, overrides, capture
plans, roles and role assignments, API keys, account administration, sessions and MFA.

Each builds what its mutation needs under `ctx.tenant` and returns a `Case`
(tests/support/mutation_matrix.py). Targets and references are named through `ctx.target` and
`ctx.ref`, so the inputs follow the Relay id shape (`id`/`rowId`, `xId`/`xRowId`) the schema has.
"""

from __future__ import annotations

import uuid
from typing import Any

import pyotp

from tests.support.mutation_matrix import Caller, Case, MatrixContext, matrix, served_mutations


def _name(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


# -- opportunity projects ----------------------------------------------------------------------------


@matrix("opportunityProjectCreate", kind="create", table="opportunity_projects", entity_type="opportunity_project",
        action="CREATE", permission="opportunity:write", denied_role="Viewer", history={"project_name", "title"},
        actor_roles=("Capture Manager",))
async def project_create(ctx: MatrixContext) -> Case:
    source = await ctx.make("external_opportunity_sources")
    return Case({"input": {
        "projectName": _name("Matrix project"), "title": "Matrix",
        **ctx.ref("externalSource", source.id, node="ExternalOpportunitySource"),
        "externalOpportunityId": f"MX-{uuid.uuid4().hex[:10]}",
    }}, tables=("external_opportunity_sources",))


@matrix("opportunityProjectUpdate", kind="update", table="opportunity_projects", entity_type="opportunity_project",
        action="UPDATE", permission="opportunity:write", denied_role="Viewer", history={"title"},
        actor_roles=("Capture Manager",))
async def project_update(ctx: MatrixContext) -> Case:
    row = await ctx.make("opportunity_projects", title="Before")
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row), "title": "After"}}, entity_id=row.id)


@matrix("opportunityProjectArchive", kind="archive", table="opportunity_projects", entity_type="opportunity_project",
        action="ARCHIVE", permission="opportunity:archive", denied_role="BD Analyst",
        history={"archived_at", "archived_by"}, actor_roles=("Capture Manager",))
async def project_archive(ctx: MatrixContext) -> Case:
    row = await ctx.make("opportunity_projects")
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row), "reason": "Matrix"}}, entity_id=row.id)


# -- overrides -----------------------------------------------------------------------------------------


@matrix("opportunityProjectOverrideCreate", kind="create", table="opportunity_project_overrides",
        entity_type="opportunity_project_override", action="CREATE", permission="opportunity:write",
        denied_role="Viewer", history={"field_name", "override_value"}, actor_roles=("BD Analyst",))
async def override_create(ctx: MatrixContext) -> Case:
    project = await ctx.make("opportunity_projects")
    return Case({"input": {**ctx.ref("opportunityProject", project.id), "fieldName": "title",
                           "overrideValue": "Overridden title", "overrideReason": "Matrix"}},
                tables=("opportunity_projects",))


@matrix("opportunityProjectOverrideUpdate", kind="update", table="opportunity_project_overrides",
        entity_type="opportunity_project_override", action="UPDATE", permission="opportunity:write",
        denied_role="Viewer", history={"override_reason"}, actor_roles=("BD Analyst",))
async def override_update(ctx: MatrixContext) -> Case:
    row = await _override(ctx)
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row), "overrideReason": "Changed"}},
                entity_id=row.id)


@matrix("opportunityProjectOverrideDelete", kind="delete", table="opportunity_project_overrides",
        entity_type="opportunity_project_override", action="DELETE", permission="opportunity:write",
        denied_role="Viewer", history={"field_name", "override_value"}, actor_roles=("BD Analyst",))
async def override_delete(ctx: MatrixContext) -> Case:
    row = await _override(ctx)
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row)}}, entity_id=row.id)


async def _override(ctx: MatrixContext) -> Any:
    project = await ctx.make("opportunity_projects")
    return await ctx.make("opportunity_project_overrides", {"opportunity_projects": project.id},
                          field_name="title", override_value='"Overridden"', override_reason="Before")


# -- capture plans -------------------------------------------------------------------------------------


@matrix("capturePlanCreate", kind="create", table="capture_plans", entity_type="capture_plan", action="CREATE",
        permission="capture_plan:write", denied_role="BD Analyst", history={"plan_name"},
        actor_roles=("Capture Manager",))
async def plan_create(ctx: MatrixContext) -> Case:
    project = await ctx.make("opportunity_projects")
    return Case({"input": {**ctx.ref("opportunityProject", project.id), "planName": _name("Plan")}},
                tables=("opportunity_projects",))


@matrix("capturePlanUpdate", kind="update", table="capture_plans", entity_type="capture_plan", action="UPDATE",
        permission="capture_plan:write", denied_role="BD Analyst", history={"win_strategy"},
        actor_roles=("Capture Manager",))
async def plan_update(ctx: MatrixContext) -> Case:
    row = await _plan(ctx)
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row), "winStrategy": "Matrix"}}, entity_id=row.id)


@matrix("capturePlanArchive", kind="archive", table="capture_plans", entity_type="capture_plan", action="ARCHIVE",
        permission="capture_plan:write", denied_role="BD Analyst", history={"archived_at"},
        actor_roles=("Capture Manager",))
async def plan_archive(ctx: MatrixContext) -> Case:
    row = await _plan(ctx)
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row)}}, entity_id=row.id)


async def _plan(ctx: MatrixContext) -> Any:
    project = await ctx.make("opportunity_projects")
    return await ctx.make("capture_plans", {"opportunity_projects": project.id})


# -- roles and role assignments ------------------------------------------------------------------------


@matrix("roleCreate", kind="create", table="roles", entity_type="role", action="auth.role.created",
        permission="role:admin", denied_role="Capture Manager", history={"name", "permissions"},
        cross_tenant="own_tenant")
async def role_create(ctx: MatrixContext) -> Case:
    return Case({"input": {"name": _name("Matrix role"), "permissions": ["user:read"]}})


@matrix("roleUpdate", kind="update", table="roles", entity_type="role", action="auth.role.updated",
        permission="role:admin", denied_role="Capture Manager", history={"name"})
async def role_update(ctx: MatrixContext) -> Case:
    row = await ctx.make("roles", permissions='["user:read"]')
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row), "name": _name("Renamed")}},
                entity_id=row.id)


@matrix("roleDelete", kind="delete", table="roles", entity_type="role", action="auth.role.deleted",
        permission="role:admin", denied_role="Capture Manager", history={"name", "permissions"})
async def role_delete(ctx: MatrixContext) -> Case:
    row = await ctx.make("roles", permissions='["user:read"]')
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row)}}, entity_id=row.id)


@matrix("userRoleGrant", kind="create", table="user_roles", entity_type="user_role",
        action="auth.role_assignment.granted", permission="user:admin", denied_role="Capture Manager",
        history={"user_id", "role_id", "assigned_by"})
async def role_grant(ctx: MatrixContext) -> Case:
    user = await ctx.user()
    role = await ctx.make("roles", permissions='["user:read"]')
    return Case({"input": {**ctx.ref("user", user.id), **ctx.ref("role", role.id)}}, tables=("users", "roles"))


@matrix("userRoleRevoke", kind="delete", table="user_roles", entity_type="user_role",
        action="auth.role_assignment.revoked", permission="user:admin", denied_role="Capture Manager",
        history={"user_id", "role_id"},
        immutable="a role assignment is granted and revoked, never changed: it cannot be stale")
async def role_revoke(ctx: MatrixContext) -> Case:
    user = await ctx.user()
    role = await ctx.make("roles", permissions='["user:read"]')
    row = await ctx.make("user_roles", {"users": user.id, "roles": role.id})
    return Case(ctx.args(row.id), entity_id=row.id)


# -- API keys ------------------------------------------------------------------------------------------


@matrix("apiKeyCreate", kind="create", table="api_keys", entity_type="api_key", action="auth.api_key.created",
        permission="api_key:admin", denied_role="Capture Manager", history=None)
async def api_key_create(ctx: MatrixContext) -> Case:
    # A custom role of this tenant: another tenant's role name is unknown here (missing).
    role = await ctx.make("roles", name=_name("Key role"), permissions='["opportunity:read"]')
    return Case({"input": {"name": _name("ci"), "roleName": role.name, "expiresInDays": 7}}, tables=("roles",))


@matrix("apiKeyRevoke", kind="action", table="api_keys", entity_type="api_key", action="auth.api_key.revoked",
        permission="api_key:admin", denied_role="Capture Manager", history=None)
async def api_key_revoke(ctx: MatrixContext) -> Case:
    role = await ctx.make("roles", permissions='["opportunity:read"]')
    row = await ctx.make("api_keys", {"roles": role.id})

    async def revoked(stored: Any, payload: dict[str, Any]) -> None:
        assert stored is not None and stored.revoked_at is not None

    return Case(ctx.args(row.id), entity_id=row.id, verify=revoked)


# -- account administration ----------------------------------------------------------------------------


@matrix("userInvite", kind="create", table="users", entity_type="user", action="auth.invitation.sent",
        permission="user:admin", denied_role="Capture Manager",
        history={"email", "first_name", "last_name", "is_active"},
        rows_in_request=2)  # the user and its role grant
async def user_invite(ctx: MatrixContext) -> Case:
    # A custom role of this tenant: another tenant's role is unknown here (missing).
    role = await ctx.make("roles", name=_name("Invite role"), permissions='["opportunity:read"]')
    return Case({"input": {"email": f"invited-{uuid.uuid4().hex[:10]}@example.test", "firstName": "Ida",
                           "lastName": "Invited", "roles": [role.name]}}, tables=("roles",))


@matrix("userUnlock", kind="action", table="users", entity_type="user", action="auth.account.unlocked",
        permission="user:admin", denied_role="Capture Manager", history=None, operational=True)
async def user_unlock(ctx: MatrixContext) -> Case:
    user = await ctx.user("Viewer")
    await ctx.execute("UPDATE users SET locked_until = now() + interval '1 hour', failed_login_attempts = 3"
                      " WHERE id = :u", u=user.id)

    async def unlocked(stored: Any, payload: dict[str, Any]) -> None:
        assert stored.locked_until is None and stored.failed_login_attempts == 0

    return Case(ctx.args(user.id), entity_id=user.id, verify=unlocked)


@matrix("userDeactivate", kind="action", table="users", entity_type="user", action="auth.user.deactivated",
        permission="user:admin", denied_role="Capture Manager", history={"is_active"})
async def user_deactivate(ctx: MatrixContext) -> Case:
    user = await ctx.user("Viewer")

    async def inactive(stored: Any, payload: dict[str, Any]) -> None:
        assert stored.is_active is False

    return Case(ctx.args(user.id), entity_id=user.id, verify=inactive)


@matrix("userSetTemporaryPassword", kind="action", table="users", entity_type="user",
        action="auth.password.temporary_set", permission="user:admin", denied_role="Capture Manager",
        history={"password_hash", "must_change_password"}, secrets={"password_hash"})
async def user_set_temporary_password(ctx: MatrixContext) -> Case:
    user = await ctx.user("Viewer")

    async def must_change(stored: Any, payload: dict[str, Any]) -> None:
        assert stored.must_change_password is True

    return Case(ctx.args(user.id, password=f"temporary passphrase {uuid.uuid4().hex[:8]}"),
                entity_id=user.id, verify=must_change)


# -- self-service: sessions and MFA --------------------------------------------------------------------


@matrix("sessionRevoke", kind="self-service", table="user_sessions", entity_type="session",
        action="auth.session.revoked", permission=None, denied_role="Viewer", history=None,
        actor_roles=("Viewer",))
async def session_revoke(ctx: MatrixContext) -> Case:
    """The subject's second session (the subject revokes it; another user may not)."""
    assert ctx.subject is not None
    before = {r.id for r in await ctx.all("SELECT id FROM user_sessions WHERE user_id = :u", u=ctx.subject.id)}
    await ctx.sign_in(ctx.subject.user)
    (session,) = [r for r in await ctx.all("SELECT id FROM user_sessions WHERE user_id = :u", u=ctx.subject.id)
                  if r.id not in before]

    async def ended(stored: Any, payload: dict[str, Any]) -> None:
        assert stored.termination_reason == "revoked"

    return Case(ctx.args(session.id), entity_id=session.id, verify=ended, owner=ctx.subject)


async def _mfa_state(ctx: MatrixContext, user_id: uuid.UUID) -> tuple[Any, ...]:
    row = await ctx.one("SELECT mfa_enabled, mfa_secret_encrypted, updated_at FROM users WHERE id = :u", u=user_id)
    return tuple(row)


async def _start(ctx: MatrixContext, caller: Caller) -> str:
    """The secret of a new pending enrolment of `caller` (mfaEnrollmentStart over HTTP)."""
    argument = served_mutations()["mfaEnrollmentStart"].args.get("input")
    head, call, variables = "mutation", "mfaEnrollmentStart", dict[str, Any]()
    if argument is not None:  # a mutation with one (empty) input
        head, call, variables = f"mutation($input: {argument.type})", "mfaEnrollmentStart(input: $input)", {"input": {}}
    response = await ctx.client.post(
        "/graphql", json={"query": f"{head} {{ {call} {{ enrollment {{ secret }} errors {{ code }} }} }}",
                          "variables": variables},
        headers={"authorization": f"Bearer {caller.token}"},
    )
    payload = response.json()["data"]["mfaEnrollmentStart"]
    assert payload["errors"] == [], payload
    secret: str = payload["enrollment"]["secret"]
    return secret


async def _mfa_start_denied(ctx: MatrixContext) -> None:
    """The mutation names no user: whoever calls it starts an enrolment of its own only. The
    subject's pending enrolment is untouched, and the call is audited as the caller's."""
    subject = await ctx.sign_in(await ctx.user("Viewer"))
    await _start(ctx, subject)
    kept = await _mfa_state(ctx, subject.id)
    other = await ctx.sign_in(await ctx.user("Viewer"))
    await _start(ctx, other)
    assert await _mfa_state(ctx, subject.id) == kept
    (log,) = await ctx.all("SELECT user_id FROM audit_logs WHERE tenant_id = :t AND entity_id = :u"
                           " AND action_type = 'auth.mfa.enrollment_started'", u=other.id)
    assert log.user_id == other.id
    assert len(await ctx.all("SELECT id FROM audit_logs WHERE tenant_id = :t AND entity_id = :u"
                             " AND action_type = 'auth.mfa.enrollment_started'", u=subject.id)) == 1


@matrix("mfaEnrollmentStart", kind="self-service", table="users", entity_type="user",
        action="auth.mfa.enrollment_started", permission=None, denied_role="Viewer",
        history={"mfa_secret_encrypted"}, secrets={"mfa_secret_encrypted"}, actor_roles=("Viewer",),
        cross_tenant="own_tenant", denied=_mfa_start_denied)
async def mfa_start(ctx: MatrixContext) -> Case:
    assert ctx.subject is not None
    return Case(ctx.args(), entity_id=ctx.subject.id, owner=ctx.subject)


async def _mfa_confirm_denied(ctx: MatrixContext) -> None:
    """Another user sends a valid code of the subject's pending enrolment: the caller has no pending
    enrolment of its own, so it is refused; the subject's enrolment stays pending, the caller's
    account is unchanged, and the refusal is an audit row of the caller."""
    subject = await ctx.sign_in(await ctx.user("Viewer"))
    secret = await _start(ctx, subject)
    kept = await _mfa_state(ctx, subject.id)
    other = await ctx.sign_in(await ctx.user("Viewer"))
    body = await ctx.call(other, ctx.args(code=pyotp.TOTP(secret).now()))
    payload = body["data"]["mfaEnrollmentConfirm"]
    # As missing: for the caller there is no enrolment to confirm (the subject's is not reachable).
    assert [e["code"] for e in payload["errors"]] == ["MFA_ENROLLMENT_NOT_STARTED"], payload
    assert payload.get("recoveryCodes") is None and payload.get("user") is None, payload
    assert await _mfa_state(ctx, subject.id) == kept
    assert (await ctx.one("SELECT mfa_enabled FROM users WHERE id = :u", u=other.id)).mfa_enabled is False
    assert await ctx.all("SELECT id FROM mfa_recovery_codes WHERE user_id IN (:u, :s)", u=other.id, s=subject.id) == []
    refusals = await ctx.all("SELECT access_granted FROM audit_logs WHERE tenant_id = :t AND user_id = :u"
                             " AND action_type = 'auth.mfa.failed'", u=other.id)
    assert len(refusals) == 1


@matrix("mfaEnrollmentConfirm", kind="self-service", table="users", entity_type="user", action="auth.mfa.enabled",
        permission=None, denied_role="Viewer", history={"mfa_enabled"}, actor_roles=("Viewer",),
        cross_tenant="own_tenant", denied=_mfa_confirm_denied)
async def mfa_confirm(ctx: MatrixContext) -> Case:
    assert ctx.subject is not None
    secret = await _start(ctx, ctx.subject)
    return Case(ctx.args(code=pyotp.TOTP(secret).now()), entity_id=ctx.subject.id, owner=ctx.subject)
