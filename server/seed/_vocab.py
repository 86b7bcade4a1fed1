"""Vocabulary shared by the demo and the synthetic seeds: system roles and SAM.gov value sets."""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple

from auth import permissions

__all__ = [
    "NOTICE_TYPE_CODES",
    "PRE_RFP_TYPES",
    "SET_ASIDES",
    "SYSTEM_ROLES",
    "SystemRole",
    "eastern_iso",
    "sam_point_of_contact",
    "solicitation_status",
]


class SystemRole(NamedTuple):
    key: str
    name: str
    description: str

    @property
    def permissions(self) -> list[str]:
        """The role's permission set (auth.permissions.SYSTEM_ROLES), sorted as provisioning stores it."""
        return sorted(permissions.SYSTEM_ROLES[permissions.SystemRole(self.name)])


#: The built-in roles every seeded tenant gets (is_system_role = true), with the permission sets
#: that `gwm db upgrade` keeps current for every tenant.
SYSTEM_ROLES: tuple[SystemRole, ...] = (
    SystemRole("tenant_admin", "Tenant Admin", "Manages users, roles, sources and tenant settings."),
    SystemRole("capture_manager", "Capture Manager", "Owns pursuits: pipeline, capture plans, contacts."),
    SystemRole("proposal_manager", "Proposal Manager", "Runs proposals: schedule, color teams, compliance."),
    SystemRole("bd_analyst", "BD Analyst", "Qualifies new opportunities and keeps external data current."),
    SystemRole("viewer", "Viewer", "Reads the pipeline; changes nothing."),
    SystemRole("auditor", "Auditor", "Reads everything including audit trails; changes nothing."),
)

#: SAM.gov set-aside codes and their descriptions (Get Opportunities v2).
SET_ASIDES: dict[str | None, str | None] = {
    None: None,
    "NONE": "No Set aside used",
    "SBA": "Total Small Business Set-Aside (FAR 19.5)",
    "8A": "8(a) Set-Aside (FAR 19.8)",
    "HZC": "Historically Underutilized Business (HUBZone) Set-Aside (FAR 19.13)",
    "SDVOSBC": "Service-Disabled Veteran-Owned Small Business (SDVOSB) Set-Aside (FAR 19.14)",
    "WOSB": "Women-Owned Small Business (WOSB) Program Set-Aside (FAR 19.15)",
}

#: Notice type (SAM ``type``) -> ptype code.
NOTICE_TYPE_CODES: dict[str, str] = {
    "Presolicitation": "p",
    "Solicitation": "o",
    "Combined Synopsis/Solicitation": "k",
    "Sources Sought": "r",
    "Special Notice": "s",
    "Award Notice": "a",
}
PRE_RFP_TYPES = frozenset({"Presolicitation", "Sources Sought", "Special Notice"})


def eastern_iso(instant: dt.datetime) -> str:
    """``responseDeadLine`` as SAM.gov writes it: ISO-8601 in US Eastern time with its offset.

    DST approximated by month (April-October) so no tz database is needed.
    """
    offset = -4 if 4 <= instant.month <= 10 else -5
    return instant.astimezone(dt.timezone(dt.timedelta(hours=offset))).isoformat()


def solicitation_status(notice_type: str, active: bool, deadline: dt.datetime | None, at: dt.datetime) -> str:
    """Derived status of a notice version, as the sync will compute it."""
    if notice_type == "Award Notice":
        return "awarded"
    if not active:
        return "archived"
    if deadline is not None and deadline < at:
        return "closed"
    if notice_type in PRE_RFP_TYPES:
        return "pre_rfp"
    return "open"


def sam_point_of_contact(
    full_name: str, email: str | None, phone: str | None, title: str, kind: str
) -> dict[str, Any]:
    return {
        "fax": None,
        "type": kind,
        "email": email,
        "phone": phone,
        "title": title,
        "fullName": full_name,
        "additionalInfo": None,
    }
