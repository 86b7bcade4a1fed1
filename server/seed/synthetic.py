"""Deterministic synthetic tenants for benchmarks (``gwm db seed --scale N [--tenants T] [--seed S]``).

Per tenant (subdomain ``scale-<seed>-<i>``), with ``scale`` projects, the proportions of the benchmark
harness (shared/bench/gen_data.py): per 1,000 projects 2,000 contacts, 200 organizations, 50 users and
3 external sources; per project 5 contacts, 6 documents, 1 capture plan and 1 current external data
version (a SAM.gov v2-shaped record). Each tenant also gets the six system roles, assigned to its users.

Same (seed, index, scale) -> the same rows, UUIDs included: everything is drawn from one
``random.Random`` per tenant, seeded with a string (stable across processes, unlike ``hash()``), and
instants are offsets from :data:`BASE`. Tenant ``i`` does not depend on how many tenants are made.
Nothing references the trigger-made system user or "Manual entry" source (their ids come from
``gen_random_uuid()``), so the rows the seed writes are identical in any database.

Re-running with the same arguments skips tenants that exist (the ``seed.synthetic`` configuration row
records the arguments); an existing tenant made with another ``scale`` is an error, not a silent mix.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import random
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from server.seed._db import (
    INSERT_ORDER,
    Row,
    SeedError,
    insert_rows,
    insert_tenant,
    metadata_tables,
    set_tenant,
)
from server.seed._vocab import (
    SET_ASIDES,
    SYSTEM_ROLES,
    eastern_iso,
    sam_point_of_contact,
    solicitation_status,
)

__all__ = [
    "BASE",
    "GENERATOR_VERSION",
    "SyntheticSummary",
    "SyntheticTenant",
    "build_synthetic_tenant",
    "rows_per_tenant",
    "seed_synthetic",
    "sizes",
    "subdomain",
]

#: Bump when the generated rows change, so an old tenant is not mistaken for a current one.
GENERATOR_VERSION = 1
BASE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
_CONFIG_KEY = "seed.synthetic"

_FIRST = (
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard Susan "
    "Joseph Jessica Thomas Sarah Charles Karen Daniel Nancy Matthew Lisa Anthony Betty Mark Sandra Kevin "
    "Ashley Brian Emily Jason Megan Carlos Priya Wei Fatima Omar Grace"
).split()
_LAST = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez "
    "Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Nguyen Patel Kim "
    "Okafor Chen Rivera Walker Young Allen King Wright Scott Green Baker Adams"
).split()
_USER_TITLES = (
    "Capture Manager",
    "Senior Capture Manager",
    "Proposal Manager",
    "BD Analyst",
    "Pricing Analyst",
    "Solution Architect",
    "Program Director",
    "Contracts Manager",
)
_CONTACT_TITLES = (
    "Contracting Officer",
    "Contract Specialist",
    "Program Manager",
    "Deputy Program Manager",
    "CTO",
    "Branch Chief",
    "Division Director",
    "Technical Lead",
    "BD Director",
    "VP Operations",
)
# (agency, sub-agency, office, SAM path code prefix, solicitation prefix)
_AGENCIES = (
    ("Department of Defense", "Department of the Navy", "NAVSEA HQ", "017.1700.NAVSEA", "N00024"),
    ("Department of Defense", "Department of the Air Force", "AFLCMC Hanscom", "057.5700.AFMC", "FA8726"),
    (
        "Department of Defense",
        "Department of the Army",
        "ACC Aberdeen Proving Ground",
        "021.2100.ACC",
        "W91CRB",
    ),
    ("Department of Defense", "Defense Information Systems Agency", "DITCO-Scott", "097.97AK", "HC1028"),
    (
        "Department of Homeland Security",
        "Cybersecurity and Infrastructure Security Agency",
        "CISA Procurement",
        "070.7022",
        "70QS01",
    ),
    (
        "Department of Homeland Security",
        "U.S. Citizenship and Immigration Services",
        "USCIS Contracting Office",
        "070.7003",
        "70SBUR",
    ),
    (
        "Department of Veterans Affairs",
        "Veterans Health Administration",
        "Technology Acquisition Center",
        "036.3600",
        "36C10B",
    ),
    (
        "Department of Health and Human Services",
        "National Institutes of Health",
        "NITAAC",
        "075.7529",
        "75N980",
    ),
    (
        "General Services Administration",
        "Federal Acquisition Service",
        "FAS IT Category",
        "047.4732",
        "47QTCB",
    ),
    (
        "National Aeronautics and Space Administration",
        "Goddard Space Flight Center",
        "GSFC Procurement",
        "080.8000",
        "80GSFC",
    ),
    (
        "Department of Energy",
        "National Nuclear Security Administration",
        "NNSA Albuquerque",
        "089.8900",
        "89233",
    ),
    (
        "Department of Justice",
        "Federal Bureau of Investigation",
        "FBI Procurement Section",
        "015.1549",
        "15F067",
    ),
)
_TOPICS = (
    "Enterprise",
    "Cloud",
    "Cyber",
    "Logistics",
    "Data",
    "Mission",
    "Digital",
    "Network",
    "Identity",
    "Analytics",
    "Training",
    "Engineering",
)
_SERVICES = (
    "Modernization",
    "Support Services",
    "Platform Engineering",
    "Operations",
    "Sustainment",
    "Integration",
    "Analytics",
    "Migration",
)
_NAICS_PSC = (
    ("541512", "DA01"),
    ("541511", "DA01"),
    ("541519", "DJ01"),
    ("541513", "DD01"),
    ("541330", "R425"),
    ("518210", "DH01"),
    ("541611", "R408"),
    ("611430", "U099"),
)
_NOTICE_TYPES = (
    "Sources Sought",
    "Presolicitation",
    "Solicitation",
    "Combined Synopsis/Solicitation",
    "Special Notice",
)
_CONTRACTOR_WORDS = (
    "Systems",
    "Technologies",
    "Federal",
    "Solutions",
    "Labs",
    "Analytics",
    "Group",
    "Engineering",
)
_CITIES = (
    ("Arlington", "VA", "22203"),
    ("Huntsville", "AL", "35806"),
    ("San Diego", "CA", "92101"),
    ("Colorado Springs", "CO", "80903"),
    ("Dayton", "OH", "45402"),
    ("Bethesda", "MD", "20814"),
    ("Austin", "TX", "78701"),
    ("Boston", "MA", "02110"),
    ("Reston", "VA", "20190"),
)
_SOURCES = (
    ("SAM.gov", "https://api.sam.gov/opportunities/v2/search", "v2", "api_key"),
    ("GovWin IQ", "https://api.govwin.example/v1/opportunities", "v1", "oauth2"),
    ("FPDS", "https://api.fpds.example/atom/v1", "1.5", "none"),
    (
        "Agency Forecast Feed",
        "https://forecasts.acquisition.example/api/v1/opportunities.json",
        "1.0",
        "bearer_token",
    ),
)
_USER_ROLE_CYCLE = (
    "capture_manager",
    "capture_manager",
    "proposal_manager",
    "bd_analyst",
    "capture_manager",
    "viewer",
    "auditor",
)
_STAGES = ("phase_0", "phase_1", "phase_2", "phase_3", "phase_4", "phase_5", "phase_6")
_STAGE_WEIGHTS = (20, 18, 16, 14, 12, 10, 10)
_PRIORITIES = ("low", "medium", "high", "critical")
_REL_TYPES = ("decision_maker", "influencer", "technical_evaluator", "contracting_officer", "end_user")
_DOC_KINDS = (
    "RFP",
    "Statement of Work",
    "Pricing Workbook",
    "Past Performance",
    "Technical Volume",
    "Amendment",
)
_MIME = (
    ("application/pdf", "pdf"),
    ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx"),
    ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx"),
    ("text/plain", "txt"),
)
_ACCESS = ("tenant", "project_team", "project_team", "project_team", "restricted", "confidential")
_PLAN_STATUS = ("draft", "in_review", "approved", "superseded")


def rows_per_tenant(scale: int) -> int:
    """How many rows one synthetic tenant gets (tenants row included; trigger-made rows excluded)."""
    n = sizes(scale)
    per_project = 1 + 1 + 5 + 6 + 1  # project, external data version, contacts, documents, capture plan
    return (
        1
        + 1
        + 2 * n["users"]
        + len(SYSTEM_ROLES)
        + n["sources"]
        + n["organizations"]
        + n["contacts"]
        + (per_project * scale)
    )


def subdomain(seed: int, index: int) -> str:
    return f"scale-{seed}-{index}"


def sizes(scale: int) -> dict[str, int]:
    """Tenant-wide row counts for ``scale`` projects (the benchmark ratios, with small-scale floors)."""

    def per_thousand(n: int, floor: int) -> int:
        return max(floor, math.ceil(n * scale / 1000))

    return {
        "users": per_thousand(50, 2),
        "organizations": per_thousand(200, 2),
        "contacts": per_thousand(2000, 5),
        "sources": per_thousand(3, 1),
    }


@dataclass(frozen=True)
class SyntheticTenant:
    tenant_id: uuid.UUID
    subdomain: str
    #: False when the tenant already existed with the same arguments and was left alone.
    created: bool
    rows: int


@dataclass(frozen=True)
class SyntheticSummary:
    seed: int
    scale: int
    tenants: tuple[SyntheticTenant, ...]
    seconds: float

    def __str__(self) -> str:
        lines = [
            f"{t.subdomain} ({t.tenant_id}): {t.rows} rows, {'created' if t.created else 'already present'}"
            for t in self.tenants
        ]
        return "\n".join([*lines, f"seed {self.seed}, scale {self.scale}: {self.seconds:.1f} s"])


class _Gen:
    def __init__(self, seed: int, index: int, scale: int) -> None:
        # Reproducible test data, not secrets: a seeded PRNG is the point.
        self.r = random.Random(f"gwm-synthetic/{seed}/{index}")  # noqa: S311
        self.seed, self.index, self.scale = seed, index, scale
        self.sub = subdomain(seed, index)

    def uid(self) -> uuid.UUID:
        return uuid.UUID(int=self.r.getrandbits(128), version=4)

    def hex32(self) -> str:
        return f"{self.r.getrandbits(128):032x}"

    def minutes(self, n: float) -> dt.datetime:
        return BASE + dt.timedelta(minutes=n)


def build_synthetic_tenant(seed: int, index: int, scale: int) -> tuple[Row, dict[str, list[Row]]]:
    """(tenants row, other rows by table in insert order) for one synthetic tenant. Pure."""
    if scale < 1:
        raise ValueError("scale must be at least 1")
    g = _Gen(seed, index, scale)
    r = g.r
    n = sizes(scale)
    tid = g.uid()
    t: dict[str, list[Row]] = {name: [] for name in INSERT_ORDER}
    tenant = {
        "id": tid,
        "name": f"Scale Test {seed}-{index}",
        "subdomain": g.sub,
        "plan_type": "enterprise",
        "max_users": max(100, 2 * n["users"]),
        "max_opportunity_projects": max(500, 2 * scale),
        "is_active": True,
        "fedramp_compliant": False,
        "subscription_status": "active",
        "subscription_expires_at": None,
        "billing_email": f"billing@{g.sub}.example",
        "created_at": BASE,
        "updated_at": BASE,
        "created_by": None,
        "updated_by": None,
    }
    t["tenant_configurations"].append(
        {
            "id": g.uid(),
            "tenant_id": tid,
            "config_key": _CONFIG_KEY,
            "config_value": {"seed": seed, "index": index, "scale": scale, "version": GENERATOR_VERSION},
            "config_type": "json",
            "is_encrypted": False,
            "created_at": BASE,
            "updated_at": BASE,
        }
    )

    # Users, roles and assignments: user 0 is the tenant admin and the creator of tenant-wide things.
    users: list[uuid.UUID] = []
    by_role: dict[str, list[uuid.UUID]] = {}
    for j in range(n["users"]):
        uid_ = g.uid()
        first, last = r.choice(_FIRST), r.choice(_LAST)
        at = g.minutes(j)
        role = "tenant_admin" if j == 0 else _USER_ROLE_CYCLE[(j - 1) % len(_USER_ROLE_CYCLE)]
        by_role.setdefault(role, []).append(uid_)
        users.append(uid_)
        t["users"].append(
            {
                "id": uid_,
                "tenant_id": tid,
                "email": f"{first.lower()}.{last.lower()}{j}@{g.sub}.example",
                "password_hash": None,
                "first_name": first,
                "last_name": last,
                "title": "Tenant Administrator" if j == 0 else r.choice(_USER_TITLES),
                "phone": f"703-555-{j % 10000:04d}",
                "is_active": True,
                "email_verified": True,
                "password_changed_at": at,
                "created_at": at,
                "updated_at": at,
                "created_by": users[0] if j else None,
            }
        )
    admin = users[0]
    role_ids = {}
    for system_role in SYSTEM_ROLES:
        role_ids[system_role.key] = g.uid()
        t["roles"].append(
            {
                "id": role_ids[system_role.key],
                "tenant_id": tid,
                "name": system_role.name,
                "description": system_role.description,
                "is_system_role": True,
                "permissions": system_role.permissions,
                "created_at": BASE,
                "updated_at": BASE,
            }
        )
    for role_key, members in by_role.items():
        for u in members:
            t["user_roles"].append(
                {
                    "id": g.uid(),
                    "tenant_id": tid,
                    "user_id": u,
                    "role_id": role_ids[role_key],
                    "opportunity_project_id": None,
                    "assigned_at": BASE + dt.timedelta(hours=1),
                    "assigned_by": admin,
                    "expires_at": None,
                }
            )
    capture_managers = by_role.get("capture_manager") or [admin]
    proposal_managers = by_role.get("proposal_manager") or capture_managers

    # External sources (besides the tenant's automatic "Manual entry").
    sources = []
    for k in range(n["sources"]):
        name, endpoint, version, auth = _SOURCES[k % len(_SOURCES)]
        if k >= len(_SOURCES):
            name = f"{name} #{k // len(_SOURCES) + 1}"
        sid = g.uid()
        sources.append((sid, name))
        t["external_opportunity_sources"].append(
            {
                "id": sid,
                "tenant_id": tid,
                "source_name": name,
                "api_endpoint": endpoint,
                "api_version": version,
                "authentication_type": auth,
                "api_credentials_encrypted": {},
                "rate_limit_per_hour": 1000,
                "timeout_seconds": 30,
                "retry_attempts": 3,
                "is_active": True,
                "connection_status": "healthy",
                "last_successful_call": BASE,
                "last_error_message": None,
                "consecutive_errors": 0,
                "created_at": BASE,
                "updated_at": BASE,
                "created_by": admin,
            }
        )

    # Organizations: agencies, their offices, contractors (some with a parent contractor).
    orgs: list[uuid.UUID] = []
    agencies: list[uuid.UUID] = []
    n_agencies = max(1, n["organizations"] // 10)
    n_offices = max(0, n["organizations"] // 4)
    for k in range(n["organizations"]):
        oid = g.uid()
        city, state, postal = r.choice(_CITIES)
        certs: list[str] = []
        size = None
        if k < n_agencies:
            a = _AGENCIES[k % len(_AGENCIES)]
            name, kind, parent = (
                f"{a[1]}" + (f" ({k // len(_AGENCIES) + 1})" if k >= len(_AGENCIES) else ""),
                "federal_agency",
                None,
            )
        elif k < n_agencies + n_offices:
            parent_idx = r.randrange(len(agencies))
            a = _AGENCIES[parent_idx % len(_AGENCIES)]
            name, kind, parent = f"{a[2]} Office {k}", "contracting_office", agencies[parent_idx]
        else:
            name = f"{r.choice(_LAST)} {r.choice(_CONTRACTOR_WORDS)} {k}"
            kind = r.choice(("teaming_partner", "competitor", "prime_contractor"))
            parent = (
                r.choice(orgs[n_agencies + n_offices :])
                if k > n_agencies + n_offices and r.random() < 0.1
                else None
            )
            size = r.choice(("small", "small", "large"))
            if size == "small":
                certs = r.sample(("8(a)", "HUBZone", "SDVOSB", "WOSB", "SDB"), r.randint(0, 2))
        at = g.minutes(60 + k)
        t["organizations"].append(
            {
                "id": oid,
                "tenant_id": tid,
                "name": name,
                "duns_number": None,
                "sam_unique_id": f"{r.getrandbits(60):012X}"[:12] if size else None,
                "cage_code": f"{r.randrange(36**5):05X}"[:5] if size else None,
                "address_line1": f"{r.randint(100, 9999)} {r.choice(_LAST)} Street",
                "address_line2": None,
                "city": city,
                "state_province": state,
                "postal_code": postal,
                "country": "United States",
                "phone": None,
                "email": None,
                "website": None,
                "organization_type": kind,
                "business_size": size,
                "socioeconomic_certifications": certs,
                "parent_organization_id": parent,
                "is_active": True,
                "created_at": at,
                "updated_at": at,
                "created_by": admin,
                "updated_by": None,
            }
        )
        orgs.append(oid)
        if k < n_agencies:
            agencies.append(oid)

    contacts: list[uuid.UUID] = []
    for k in range(n["contacts"]):
        cid = g.uid()
        first, last = r.choice(_FIRST), r.choice(_LAST)
        at = g.minutes(600 + k)
        t["contacts"].append(
            {
                "id": cid,
                "tenant_id": tid,
                "organization_id": r.choice(orgs),
                "first_name": first,
                "last_name": last,
                "title": r.choice(_CONTACT_TITLES),
                "email": f"{first.lower()}.{last.lower()}{k}@contact.example",
                "phone": f"202-555-{k % 10000:04d}",
                "linkedin_url": None,
                "contact_type": r.choice(("government", "government", "partner", "competitor")),
                "decision_maker_level": r.randint(1, 5),
                "security_clearance": r.choice((None, "Secret", "Top Secret")),
                "last_contact_date": None,
                "interaction_frequency": r.choice(("weekly", "monthly", "quarterly")),
                "relationship_strength": r.randint(1, 5),
                "notes": None,
                "tags": [],
                "is_active": True,
                "created_at": at,
                "updated_at": at,
                "created_by": r.choice(users),
                "updated_by": None,
            }
        )
        contacts.append(cid)

    # Projects and what hangs off them. Distinct creation minutes: ORDER BY created_at has no ties.
    start = 600 + n["contacts"] + 60  # minutes after BASE: after every user, organization and contact
    minutes = r.sample(range(scale * 60), scale)
    for i in range(scale):
        pid = g.uid()
        created = g.minutes(start + minutes[i])
        agency = r.randrange(len(_AGENCIES))
        dept, sub_agency, office, path_code, prefix = _AGENCIES[agency]
        naics, psc = r.choice(_NAICS_PSC)
        title = f"{r.choice(_TOPICS)} {r.choice(_SERVICES)}"
        stage_idx = r.choices(range(7), weights=_STAGE_WEIGHTS)[0]
        stage = _STAGES[stage_idx]
        if stage_idx == 6:
            status = r.choices(("active", "won", "lost"), weights=(40, 25, 35))[0]
        else:
            status = r.choices(
                ("active", "on_hold", "no_bid", "cancelled_by_government", "withdrawn"),
                weights=(85, 6, 4 if stage_idx <= 3 else 0, 3, 2 if stage_idx >= 4 else 0),
            )[0]
        fy = 24 + (minutes[i] * 3) // (scale * 60)
        solnum = f"{prefix}-{fy}-R-{r.randrange(10_000):04d}"
        notice = r.choice(_NOTICE_TYPES)
        set_aside = r.choice(tuple(SET_ASIDES))
        posted = created - dt.timedelta(days=r.randint(1, 10))
        deadline = (posted + dt.timedelta(days=r.randint(14, 60))).replace(minute=0, second=0, microsecond=0)
        notice_id = g.hex32()
        capture = r.choice(capture_managers)
        source_id = r.choice(sources)[0]
        raw = {
            "noticeId": notice_id,
            "title": title,
            "solicitationNumber": solnum,
            "fullParentPathName": f"{dept.upper()}.{sub_agency.upper()}.{office.upper()}",
            "fullParentPathCode": f"{path_code}.{prefix}",
            "postedDate": posted.date().isoformat(),
            "type": notice,
            "baseType": notice,
            "archiveType": "autocustom",
            "archiveDate": (deadline + dt.timedelta(days=30)).date().isoformat(),
            "typeOfSetAsideDescription": SET_ASIDES[set_aside],
            "typeOfSetAside": set_aside,
            "responseDeadLine": eastern_iso(deadline),
            "naicsCode": naics,
            "naicsCodes": [naics],
            "classificationCode": psc,
            "active": "Yes",
            "award": None,
            "pointOfContact": [
                sam_point_of_contact(
                    f"{r.choice(_FIRST)} {r.choice(_LAST)}", None, None, "Contracting Officer", "primary"
                )
            ],
            "description": f"https://api.sam.gov/prod/opportunities/v1/noticedesc?noticeid={notice_id}",
            "organizationType": "OFFICE",
            "uiLink": f"https://sam.gov/workspace/contract/opp/{notice_id}/view",
            "resourceLinks": None,
        }
        description = f"{title} for {sub_agency} ({office}). Synthetic benchmark record {g.sub}/{i}."
        t["opportunity_projects"].append(
            {
                "id": pid,
                "tenant_id": tid,
                "project_name": f"{prefix} {title} {i:05d}",
                "internal_reference_number": f"SYN-{index}-{i + 1:06d}",
                "external_source_id": source_id,
                "external_opportunity_id": notice_id,
                "external_opportunity_url": raw["uiLink"],
                "solicitation_number": solnum,
                "agency_name": sub_agency,
                "contracting_office": office,
                "title": title,
                "description": description,
                "project_status": status,
                "pipeline_stage": stage,
                "priority_level": r.choice(_PRIORITIES),
                "win_probability_score": Decimal(f"{r.uniform(0, 100):.2f}"),
                "strategic_value_score": Decimal(f"{r.uniform(0, 100):.2f}"),
                "pursuit_health_score": Decimal(f"{r.uniform(0, 100):.2f}"),
                "assigned_capture_manager": capture,
                "assigned_proposal_manager": r.choice(proposal_managers) if stage_idx >= 4 else None,
                "assigned_team_members": [],
                "last_synced_at": created,
                "sync_status": "synced",
                "sync_error_message": None,
                "version_hash": hashlib.sha256(
                    json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()
                ).hexdigest(),
                "created_at": created,
                "updated_at": created,
                "created_by": capture,
            }
        )
        t["external_opportunity_data"].append(
            {
                "id": g.uid(),
                "tenant_id": tid,
                "opportunity_project_id": pid,
                "data_snapshot_timestamp": created,
                "version_number": 1,
                "is_current_version": True,
                "title": title,
                "description": description,
                "opportunity_type": notice,
                "set_aside_type": set_aside,
                "naics_codes": naics,
                "estimated_value_min": None,
                "estimated_value_max": None,
                "posting_date": posted.date(),
                "response_due_date": deadline,
                "place_of_performance": None,
                "solicitation_status": solicitation_status(notice, True, deadline, created),
                "amendment_number": 0,
                "raw_json_data": raw,
                "change_detected_at": None,
                "changed_fields": None,
                "created_at": created,
            }
        )
        for c in r.sample(range(len(contacts)), 5):
            t["opportunity_project_contacts"].append(
                {
                    "id": g.uid(),
                    "tenant_id": tid,
                    "opportunity_project_id": pid,
                    "contact_id": contacts[c],
                    "relationship_type": r.choice(_REL_TYPES),
                    "influence_level": r.randint(1, 5),
                    "notes": None,
                    "created_at": created,
                    "updated_at": created,
                    "created_by": capture,
                }
            )
        for d in range(6):
            mime, ext = r.choice(_MIME)
            kind = _DOC_KINDS[d]
            doc_id = g.uid()
            name = f"{kind} - {solnum}.{ext}"
            at = created + dt.timedelta(minutes=d + 1)
            t["documents"].append(
                {
                    "id": doc_id,
                    "tenant_id": tid,
                    "opportunity_project_id": pid,
                    "name": name,
                    "original_filename": name,
                    "file_extension": ext,
                    "mime_type": mime,
                    "file_size_bytes": r.randrange(10_000, 50_000_000),
                    "storage_key": f"tenants/{tid}/documents/{doc_id}/{name}",
                    "document_type": kind.lower().replace(" ", "_"),
                    "access_level": r.choice(_ACCESS),
                    "processing_status": "no_object",
                    "uploaded_by": r.choice(users),
                    "created_at": at,
                    "updated_at": at,
                }
            )
        plan_status = r.choice(_PLAN_STATUS)
        decision = None if stage_idx < 2 else r.choice(("pending", "go", "no_go"))
        t["capture_plans"].append(
            {
                "id": g.uid(),
                "tenant_id": tid,
                "opportunity_project_id": pid,
                "plan_name": f"Capture plan {g.sub}-{i:05d}",
                "status": plan_status,
                "go_no_go_decision": decision,
                "created_at": created,
                "updated_at": created,
                "created_by": capture,
                "updated_by": None,
            }
        )
    return tenant, t


async def _existing_arguments(conn: Any) -> Any:
    configs = metadata_tables()["tenant_configurations"]
    return (
        await conn.execute(select(configs.c.config_value).where(configs.c.config_key == _CONFIG_KEY))
    ).scalar_one_or_none()


def _progress_bar(
    total: int, enabled: bool
) -> tuple[Callable[[int], object], Callable[[str], object], Callable[[], object]]:
    if not enabled:
        return (lambda _n: None), (lambda _s: None), (lambda: None)
    from tqdm import tqdm

    bar = tqdm(total=total, unit="rows", unit_scale=True, file=sys.stderr, dynamic_ncols=True, leave=True)
    return bar.update, bar.set_description, bar.close


async def seed_synthetic(
    engine: AsyncEngine, *, scale: int, tenants: int = 1, seed: int = 42, progress: bool = True
) -> SyntheticSummary:
    """Create ``tenants`` synthetic tenants of ``scale`` projects each. ``engine`` connects as the owner.

    One transaction per tenant. A progress bar goes to stderr when ``progress`` is true.
    """
    if tenants < 1:
        raise ValueError("tenants must be at least 1")
    started = time.perf_counter()
    per_tenant = rows_per_tenant(scale)
    update, describe, close = _progress_bar(per_tenant * tenants, progress)
    done: list[SyntheticTenant] = []
    try:
        for index in range(tenants):
            describe(subdomain(seed, index))
            tenant, tables = build_synthetic_tenant(seed, index, scale)
            rows = sum(len(v) for v in tables.values()) + 1
            assert rows == per_tenant, (rows, per_tenant)
            async with engine.begin() as conn:
                await set_tenant(conn, tenant["id"])
                created = await insert_tenant(conn, tenant)
                if not created:
                    existing = await _existing_arguments(conn)
                    wanted = tables["tenant_configurations"][0]["config_value"]
                    if existing != wanted:
                        raise SeedError(
                            f"tenant {tenant['subdomain']} exists but was seeded with {existing}, "
                            f"not {wanted}; delete it first"
                        )
                    update(per_tenant)
                    done.append(SyntheticTenant(tenant["id"], tenant["subdomain"], False, rows))
                    continue
                update(1)
                for name in INSERT_ORDER:
                    await insert_rows(conn, name, tables[name], on_progress=update)
            done.append(SyntheticTenant(tenant["id"], tenant["subdomain"], True, rows))
    finally:
        close()
    return SyntheticSummary(
        seed=seed, scale=scale, tenants=tuple(done), seconds=time.perf_counter() - started
    )
