"""`gwm tenant create`: a new tenant and the invitation of its first administrator.

    gwm tenant create --subdomain S --name N --admin-email E --admin-first-name F --admin-last-name L
                      [--plan P] [--max-users N] [--max-opportunity-projects N] [--fedramp]

One unit of work acting as the new tenant's system user (auth/audited.py, change source "system",
process "gwm tenant create"), as the schema owner with the new tenant set (gwm_app may not insert
tenants, decision D9):

1. the tenant row; its bootstrap trigger creates the system user and the "Manual entry" source
   (decision D9), so the audit rows of this command already name the system user as their actor;
2. the system roles from the permission catalog (auth/provisioning.py `sync_system_roles`);
3. the first administrator, invited with the Tenant Admin role by the same code as the
   `userInvite` mutation (auth/accounts.py `invite_in`): a user without a password and a
   single-use invitation link valid for 24 hours.

With SMTP configured (GWM_SMTP_HOST...), the link is emailed before the commit: a mail server that
refuses it leaves nothing behind. Without SMTP, the link is printed for the operator to hand over
(it is the only copy: only its digest is stored). Everything commits together, with its audit rows
(`tenant.created`, `auth.role.created`, `auth.invitation.sent`, `auth.role_assignment.granted`) and
change_history rows, or nothing does.

Refusals exit 2 with one line: a subdomain that is not a lower-case DNS label (decision A8) or is
taken, a name or plan of the wrong length, limits out of range, an invalid email or name.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from auth import accounts
from auth.audit import RequestMeta
from auth.audited import system_unit
from auth.exceptions import AuthRequestError
from auth.mailer import Mailer, MailerError
from auth.permissions import SystemRole
from auth.provisioning import sync_system_roles
from models.audit_chain import AuditChain
from models.errors import Conflict
from models.identity import Role, User
from models.tenancy import Tenant, system_user_id

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_OPPORTUNITY_PROJECTS",
    "MAX_PLAN_LENGTH",
    "MAX_USERS",
    "PROCESS",
    "TENANT_CREATED",
    "CommandError",
    "Created",
    "NewTenant",
    "create_tenant",
    "deliver",
]

#: audit_logs.action_type of the tenant row's creation.
TENANT_CREATED = "tenant.created"
#: The system process recorded on the command's audit and history rows.
PROCESS = "gwm tenant create"
#: tenants.name and tenants.plan_type are varchar(255) and varchar(50).
MAX_NAME_LENGTH = 255
MAX_PLAN_LENGTH = 50
#: Upper bounds of the plan limits (both at least 1: the first administrator takes a seat).
MAX_USERS = 1_000_000
MAX_OPPORTUNITY_PROJECTS = 10_000_000
# Decision A8 (ck_tenants_subdomain_format): one lower-case DNS label.
_SUBDOMAIN = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


class CommandError(Exception):
    """A refusal the operator can act on; the message is printed as is."""


@dataclass(frozen=True, slots=True)
class NewTenant:
    """What the operator asked for (checked by `create_tenant`)."""

    subdomain: str
    name: str
    admin_email: str
    admin_first_name: str
    admin_last_name: str
    plan: str = "standard"
    max_users: int = 100
    max_opportunity_projects: int = 500
    fedramp: bool = False


@dataclass(frozen=True, slots=True)
class Created:
    """The tenant made, its first administrator, and the invitation link when no email carried it."""

    tenant_id: uuid.UUID
    subdomain: str
    admin_id: uuid.UUID
    admin_email: str
    link: str | None

    def report(self, wanted: NewTenant) -> str:
        """What the command prints: the tenant, its limits, and where the invitation went."""
        lines = [
            f"tenant {self.subdomain} created (id {self.tenant_id}): {wanted.name!r}, plan {wanted.plan},"
            f" max_users {wanted.max_users}, max_opportunity_projects {wanted.max_opportunity_projects},"
            f" FedRAMP {'yes' if wanted.fedramp else 'no'}",
        ]
        role = SystemRole.TENANT_ADMIN.value
        hours = int(accounts.ACCOUNT_TOKEN_TTL.total_seconds() // 3600)
        if self.link is None:
            lines.append(f"{self.admin_email} invited as {role!r}: the invitation was emailed (valid {hours} hours)")
        else:
            lines += [
                f"{self.admin_email} invited as {role!r}. SMTP is not configured (GWM_SMTP_HOST), so no email"
                f" was sent: give them this single-use link yourself (valid {hours} hours):",
                self.link,
            ]
        return "\n".join(lines)


def check(wanted: NewTenant) -> NewTenant:
    """`wanted` with its text trimmed (the subdomain lower-cased), or CommandError naming the fault."""
    subdomain = wanted.subdomain.strip().lower()
    if not _SUBDOMAIN.fullmatch(subdomain):
        raise CommandError(
            f"subdomain {wanted.subdomain!r} is not a DNS label: 1 to 63 letters, digits and hyphens,"
            " starting and ending with a letter or digit"
        )
    name = _text(wanted.name, "name", MAX_NAME_LENGTH)
    plan = _text(wanted.plan, "plan", MAX_PLAN_LENGTH)
    _limit(wanted.max_users, "max-users", MAX_USERS)
    _limit(wanted.max_opportunity_projects, "max-opportunity-projects", MAX_OPPORTUNITY_PROJECTS)
    try:
        email, first, last = accounts.invitee(wanted.admin_email, wanted.admin_first_name, wanted.admin_last_name)
    except AuthRequestError as exc:
        raise CommandError(f"{_option(exc.field)}: {exc.message}") from None
    return NewTenant(
        subdomain=subdomain,
        name=name,
        admin_email=email,
        admin_first_name=first,
        admin_last_name=last,
        plan=plan,
        max_users=wanted.max_users,
        max_opportunity_projects=wanted.max_opportunity_projects,
        fedramp=wanted.fedramp,
    )


async def create_tenant(
    engine: AsyncEngine, chain: AuditChain, wanted: NewTenant, *, public_url: str, mailer: Mailer | None
) -> Created:
    """Create the tenant, its system roles and its first administrator's invitation (see the module
    docstring); `engine` is the schema owner's. With `mailer`, the invitation is emailed before the
    commit; without, `Created.link` holds it."""
    wanted = check(wanted)
    tenant_id = uuid.uuid4()
    meta = RequestMeta(request_id=f"cli-{uuid.uuid4()}", endpoint=PROCESS, method="CLI")
    now = datetime.now(UTC)
    try:
        async with system_unit(engine, chain, tenant_id, process=PROCESS, meta=meta) as uow:
            # The system user exists once the tenant row is in (its trigger, decision D9); its id is
            # known beforehand, so the tenant's own audit row already names it.
            uow.set_actor(system_user_id(tenant_id))
            tenant = Tenant(
                id=tenant_id,
                name=wanted.name,
                subdomain=wanted.subdomain,
                plan_type=wanted.plan,
                max_users=wanted.max_users,
                max_opportunity_projects=wanted.max_opportunity_projects,
                fedramp_compliant=wanted.fedramp,
                is_active=True,
            )
            uow.add(tenant)
            uow.label(tenant, TENANT_CREATED, f"tenant {wanted.subdomain!r} created by the operator ({PROCESS})")
            await uow.flush()
            bootstrapped = await uow.session.scalar(
                select(User.id).where(User.tenant_id == tenant_id, User.is_system.is_(True))
            )
            if bootstrapped != uow.actor_id:
                raise RuntimeError("the tenant bootstrap trigger did not create the expected system user")
            await sync_system_roles(uow)
            role_name = SystemRole.TENANT_ADMIN.value
            admin_role = await uow.session.scalar(
                select(Role.id).where(Role.tenant_id == tenant_id, Role.name == role_name)
            )
            assert admin_role is not None  # sync_system_roles just created it
            try:
                invited = await accounts.invite_in(
                    uow,
                    email=wanted.admin_email,
                    first_name=wanted.admin_first_name,
                    last_name=wanted.admin_last_name,
                    roles={role_name: admin_role},
                    now=now,
                )
            except AuthRequestError as exc:  # the system user's address, or max_users below 1
                raise CommandError(f"{_option(exc.field)}: {exc.message}") from None
            # Before the commit: a refused email leaves no tenant behind.
            link = await deliver(invited, public_url=public_url, mailer=mailer, undone="nothing was created")
    except Conflict as exc:
        # Subdomains are lower-case (decision A8), so the unique key finds every tenant with this one,
        # active or not, whatever tenant the owner's session has set (row-level security hides them).
        if exc.field == "subdomain":
            raise CommandError(f"subdomain {wanted.subdomain!r} is taken: choose another") from None
        raise
    return Created(tenant_id, wanted.subdomain, invited.user_id, wanted.admin_email, link)


async def deliver(
    invited: accounts.Invitation, *, public_url: str, mailer: Mailer | None, undone: str
) -> str | None:
    """Email the invitation with `mailer` (None returned), or return its link to print when there is
    no mailer. Called inside the unit of work: a refused email raises CommandError (saying `undone`)
    and so rolls it back."""
    if mailer is None:
        return accounts.invitation_link(public_url, invited.token)
    subject, body = accounts.invitation_email(public_url, invited.first_name, invited.tenant_name, invited.token)
    try:
        await mailer.send(invited.email, subject, body)
    except MailerError:
        raise CommandError(
            f"the invitation email to {invited.email} could not be sent; {undone}"
            " (check GWM_SMTP_*, or unset GWM_SMTP_HOST to have the link printed)"
        ) from None
    return None


def _text(value: str, option: str, longest: int) -> str:
    value = value.strip()
    if not value or len(value) > longest or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise CommandError(f"--{option}: give 1 to {longest} characters without control characters")
    return value


def _limit(value: int, option: str, highest: int) -> None:
    if not 1 <= value <= highest:
        raise CommandError(f"--{option} must be between 1 and {highest} (got {value})")


def _option(field: str | None) -> str:
    """The command-line option of an invitation field (`email`, `firstName`, `lastName`)."""
    options = {"email": "--admin-email", "firstName": "--admin-first-name", "lastName": "--admin-last-name"}
    return options.get(field or "", "--admin-email")
