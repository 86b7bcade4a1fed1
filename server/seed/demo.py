"""The demo tenant (subdomain ``demo``): a small, realistic capture pipeline a newcomer can explore.

Demo Federal Solutions, a mid-size government contractor, tracks 25 pursuits across the seven
Shipley phases (``phase_0`` identified .. ``phase_6`` post-submittal) and every project status,
fed by SAM.gov (v2 records, with amendments as new versions), an agency forecast JSON feed and
manual entry. Around them: an agency -> sub-agency -> office hierarchy, teaming partners and
competitors, their contacts, document metadata (no file behind it: ``processing_status =
'no_object'``), activities, capture plans, color-team proposals, change alerts and polling
schedules.

Everything is a pure function of constants: ids are uuid5 names in :data:`NAMESPACE`, instants are
offsets from :data:`AS_OF`. Inserts do nothing when the row exists, so seeding twice leaves every
table exactly as it was. Only the tenant's system user and "Manual entry" source come from the
tenants trigger; they are looked up, never created here.

Every demo person signs in with :data:`DEMO_PASSWORD` (``gwm db seed`` prints the table of emails,
roles and the password). It is public, so never seed the demo tenant into a database real users
reach. The hashes use the production PBKDF2 count and are written only where ``password_hash`` is
NULL, so seeding again changes nothing (a new salt would change every hash).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.passwords import PRODUCTION_MIN_ITERATIONS, PasswordHasher
from server.seed._db import (
    INSERT_ORDER,
    Row,
    bootstrap_ids,
    count_rows,
    insert_rows,
    insert_tenant,
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
    "AS_OF",
    "DEMO_PASSWORD",
    "NAMESPACE",
    "SUBDOMAIN",
    "TENANT_ID",
    "DemoSummary",
    "build_demo",
    "demo_id",
    "seed_demo",
]

#: Never change: every demo id is derived from it.
NAMESPACE = uuid.UUID("5b2f4f7e-9a51-4c1e-8a3c-6f0d2c9e1a47")
SUBDOMAIN = "demo"
#: The demo's "today" (start of federal FY2027). Every timestamp is an offset from it.
AS_OF = dt.datetime(2026, 10, 1, 14, 0, tzinfo=dt.UTC)
EMAIL_DOMAIN = "demofederal.example"
#: The demo people's password: public, documented, and accepted by the password policy (four
#: unrelated words, none from the tenant's name or an email address).
DEMO_PASSWORD = "copper kettle harbor lantern"  # noqa: S105 - a published demo credential


def demo_id(*parts: object) -> uuid.UUID:
    """The fixed id of a demo row, e.g. ``demo_id("project", "cisa_zta")``."""
    return uuid.uuid5(NAMESPACE, "/".join(str(p) for p in parts))


TENANT_ID = demo_id("tenant")


def _at(days: float, hours: float = 0.0) -> dt.datetime:
    return AS_OF + dt.timedelta(days=days, hours=hours)


def _hex(*parts: object) -> str:
    return demo_id(*parts).hex


def _dec(value: float | int) -> Decimal:
    return Decimal(f"{value:.2f}")


@dataclass(frozen=True)
class DemoSummary:
    """What ``seed_demo`` left in the database."""

    tenant_id: uuid.UUID
    subdomain: str
    #: False when the demo tenant already existed (the run inserted only rows it lacked).
    created: bool
    #: (email, role name) of every person in the demo; each signs in with ``password``.
    users: tuple[tuple[str, str], ...]
    #: Rows per table in the demo tenant after seeding (trigger-made rows included).
    counts: Mapping[str, int]
    #: The demo people's password (:data:`DEMO_PASSWORD`).
    password: str = DEMO_PASSWORD

    def __str__(self) -> str:
        state = "created" if self.created else "already present (missing rows added)"
        tables = ", ".join(f"{name} {n}" for name, n in self.counts.items() if n)
        header = f"  {'email':40s} {'role':18s} password"
        people = "\n".join(f"  {email:40s} {role:18s} {self.password}" for email, role in self.users)
        return (
            f"demo tenant {self.subdomain!r} ({self.tenant_id}): {state}\n"
            f"rows: {tables}\n"
            f"sign in at tenant {self.subdomain!r} (public demo credentials: never where real users are):\n"
            f"{header}\n{people}"
        )


# --------------------------------------------------------------------------------------------------
# The cast
# --------------------------------------------------------------------------------------------------


class _Person(NamedTuple):
    key: str
    first: str
    last: str
    title: str
    role: str  # SystemRole.key
    phone: str

    @property
    def email(self) -> str:
        return f"{self.first.lower()}.{self.last.lower()}@{EMAIL_DOMAIN}"


_PEOPLE: tuple[_Person, ...] = (
    _Person("admin", "Dana", "Whitfield", "Director, Business Systems", "tenant_admin", "703-555-0140"),
    _Person("capture", "Marcus", "Okafor", "Senior Capture Manager", "capture_manager", "703-555-0141"),
    _Person("capture2", "Jordan", "Ellis", "Capture Manager", "capture_manager", "703-555-0142"),
    _Person("proposal", "Priya", "Raman", "Proposal Manager", "proposal_manager", "703-555-0143"),
    _Person("analyst", "Elena", "Kowalski", "Business Development Analyst", "bd_analyst", "703-555-0144"),
    _Person("viewer", "Tom", "Nguyen", "Vice President, Federal Programs", "viewer", "703-555-0145"),
    _Person("auditor", "Grace", "Holloway", "Compliance Auditor", "auditor", "703-555-0146"),
)
_PERSON = {p.key: p for p in _PEOPLE}


class _Org(NamedTuple):
    key: str
    name: str
    org_type: str
    parent: str | None
    city: str
    state: str
    postal: str
    address: str
    website: str | None
    size: str | None = None
    certs: tuple[str, ...] = ()


# fmt: off
_ORGS: tuple[_Org, ...] = (
    # departments
    _Org("dod", "Department of Defense", "federal_department", None, "Washington", "DC", "20301",
         "1400 Defense Pentagon", "https://www.defense.gov"),
    _Org("dhs", "Department of Homeland Security", "federal_department", None, "Washington", "DC", "20528",
         "2707 Martin Luther King Jr Ave SE", "https://www.dhs.gov"),
    _Org("va", "Department of Veterans Affairs", "federal_department", None, "Washington", "DC", "20420",
         "810 Vermont Avenue NW", "https://www.va.gov"),
    _Org("hhs", "Department of Health and Human Services", "federal_department", None, "Washington", "DC",
         "20201", "200 Independence Avenue SW", "https://www.hhs.gov"),
    _Org("gsa", "General Services Administration", "federal_department", None, "Washington", "DC", "20405",
         "1800 F Street NW", "https://www.gsa.gov"),
    _Org("nasa", "National Aeronautics and Space Administration", "federal_department", None, "Washington",
         "DC", "20546", "300 E Street SW", "https://www.nasa.gov"),
    # sub-agencies
    _Org("navy", "Department of the Navy", "federal_agency", "dod", "Washington", "DC", "20350",
         "1000 Navy Pentagon", "https://www.navy.mil"),
    _Org("usaf", "Department of the Air Force", "federal_agency", "dod", "Washington", "DC", "20330",
         "1670 Air Force Pentagon", "https://www.af.mil"),
    _Org("disa", "Defense Information Systems Agency", "federal_agency", "dod", "Fort Meade", "MD", "20755",
         "6910 Cooper Avenue", "https://www.disa.mil"),
    _Org("cisa", "Cybersecurity and Infrastructure Security Agency", "federal_agency", "dhs", "Arlington",
         "VA", "20598", "1110 N Glebe Road", "https://www.cisa.gov"),
    _Org("uscis", "U.S. Citizenship and Immigration Services", "federal_agency", "dhs", "Camp Springs", "MD",
         "20588", "5900 Capital Gateway Drive", "https://www.uscis.gov"),
    _Org("va_opal", "VA Office of Procurement, Acquisition and Logistics", "federal_agency", "va",
         "Washington", "DC", "20420", "810 Vermont Avenue NW", "https://www.va.gov/opal"),
    _Org("nih", "National Institutes of Health", "federal_agency", "hhs", "Bethesda", "MD", "20892",
         "9000 Rockville Pike", "https://www.nih.gov"),
    _Org("fas", "Federal Acquisition Service", "federal_agency", "gsa", "Washington", "DC", "20405",
         "1800 F Street NW", "https://www.gsa.gov/fas"),
    _Org("gsfc", "Goddard Space Flight Center", "federal_agency", "nasa", "Greenbelt", "MD", "20771",
         "8800 Greenbelt Road", "https://www.nasa.gov/goddard"),
    # contracting offices
    _Org("navsea", "NAVSEA HQ Contracts Directorate (SEA 02)", "contracting_office", "navy", "Washington",
         "DC", "20376", "1333 Isaac Hull Avenue SE", "https://www.navsea.navy.mil"),
    _Org("aflcmc", "AFLCMC Hanscom Contracting", "contracting_office", "usaf", "Hanscom AFB", "MA", "01731",
         "9 Eglin Street", "https://www.aflcmc.af.mil"),
    _Org("ditco", "DITCO-Scott", "contracting_office", "disa", "Scott AFB", "IL", "62225",
         "2300 East Drive", "https://www.disa.mil/about/ditco"),
    _Org("cisa_op", "CISA Office of Procurement Operations", "contracting_office", "cisa", "Arlington", "VA",
         "20598", "1110 N Glebe Road", None),
    _Org("uscis_co", "USCIS Contracting Office", "contracting_office", "uscis", "Williston", "VT", "05495",
         "70 Kimball Avenue", None),
    _Org("va_tac", "Technology Acquisition Center (TAC)", "contracting_office", "va_opal", "Eatontown", "NJ",
         "07724", "23 Christopher Way", "https://www.va.gov/opal/about/tac.asp"),
    _Org("nitaac", "NIH Information Technology Acquisition and Assessment Center (NITAAC)",
         "contracting_office", "nih", "Rockville", "MD", "20852", "6011 Executive Boulevard",
         "https://nitaac.nih.gov"),
    _Org("fas_itc", "FAS IT Category (ITC)", "contracting_office", "fas", "Washington", "DC", "20405",
         "1800 F Street NW", None),
    _Org("gsfc_proc", "GSFC Procurement Operations Division", "contracting_office", "gsfc", "Greenbelt", "MD",
         "20771", "8800 Greenbelt Road", None),
    # contractors: teaming partners and competitors
    _Org("bluewater", "Bluewater Analytics LLC", "teaming_partner", None, "Norfolk", "VA", "23510",
         "150 W Main Street, Suite 1200", "https://bluewater-analytics.example", "small", ("SDVOSB",)),
    _Org("keystone", "Keystone Cyber Group, Inc.", "teaming_partner", None, "Columbia", "MD", "21044",
         "10480 Little Patuxent Parkway", "https://keystonecyber.example", "small", ("8(a)", "SDB")),
    _Org("northpoint", "Northpoint Engineering Corp.", "teaming_partner", None, "Huntsville", "AL", "35806",
         "4905 Research Drive", "https://northpoint-eng.example", "small", ("WOSB", "EDWOSB")),
    _Org("ironclad", "Ironclad Federal Systems", "competitor", None, "Reston", "VA", "20190",
         "11955 Freedom Drive", "https://ironclad-federal.example", "large"),
    _Org("ironclad_def", "Ironclad Federal Systems - Defense Sector", "competitor", "ironclad",
         "Colorado Springs",
         "CO", "80920", "1670 Newport Road", "https://ironclad-federal.example/defense", "large"),
    _Org("summit", "Summit Ridge Technologies", "competitor", None, "Colorado Springs", "CO", "80903",
         "90 S Cascade Avenue", "https://summitridge.example", "small", ("HUBZone",)),
    _Org("vector", "Vector Mission Partners", "competitor", None, "Chantilly", "VA", "20151",
         "4501 Singer Court", "https://vectormission.example", "large"),
)
_ORG = {o.key: o for o in _ORGS}


class _Office(NamedTuple):
    sam_path: str
    sam_code: str
    co: str  # contact key of the contracting officer
    customer: str  # contact key of the program-side customer


_OFFICES: dict[str, _Office] = {
    "navsea": _Office("DEPT OF DEFENSE.DEPT OF THE NAVY.NAVSEA.NAVSEA HQ", "017.1700.NAVSEA.N00024",
                      "whitaker", "castellano"),
    "aflcmc": _Office("DEPT OF DEFENSE.DEPT OF THE AIR FORCE.AIR FORCE MATERIEL COMMAND.FA8726 AFLCMC HBKK",
                      "057.5700.AFMC.FA8726", "park", "dunn"),
    "ditco": _Office("DEPT OF DEFENSE.DEFENSE INFORMATION SYSTEMS AGENCY (DISA).DITCO-SCOTT",
                     "097.97AK.HC1028", "grant", "kim"),
    "cisa_op": _Office("HOMELAND SECURITY, DEPARTMENT OF.CYBERSECURITY AND INFRASTRUCTURE SECURITY AGENCY"
                       ".CISA OFFICE OF PROCUREMENT OPERATIONS", "070.7022.70QS01", "brooks", "mensah"),
    "uscis_co": _Office("HOMELAND SECURITY, DEPARTMENT OF.US CITIZENSHIP AND IMMIGRATION SERVICES"
                        ".USCIS CONTRACTING OFFICE", "070.7003.70SBUR", "foley", "rivera"),
    "va_tac": _Office("VETERANS AFFAIRS, DEPARTMENT OF.VETERANS AFFAIRS, DEPARTMENT OF"
                      ".TECHNOLOGY ACQUISITION CENTER NJ (36C10B)", "036.3600.36C10B", "lowe", "obrien"),
    "nitaac": _Office("HEALTH AND HUMAN SERVICES, DEPARTMENT OF.NATIONAL INSTITUTES OF HEALTH.NITAAC",
                      "075.7529.75N980", "patel", "chen"),
    "fas_itc": _Office("GENERAL SERVICES ADMINISTRATION.FEDERAL ACQUISITION SERVICE.GSA/FAS IT CATEGORY",
                       "047.4732.47QTCB", "jenkins", "torres"),
    "gsfc_proc": _Office("NATIONAL AERONAUTICS AND SPACE ADMINISTRATION.NASA GODDARD SPACE FLIGHT CENTER"
                         ".GSFC PROCUREMENT OPERATIONS DIVISION", "080.8000.80GSFC", "alvarez", "reyes"),
}


class _Contact(NamedTuple):
    key: str
    first: str
    last: str
    title: str
    org: str
    contact_type: str
    decision_level: int
    clearance: str | None
    strength: int
    frequency: str
    email_domain: str
    tags: tuple[str, ...] = ()


_CONTACTS: tuple[_Contact, ...] = (
    _Contact("whitaker", "Karen", "Whitaker", "Contracting Officer", "navsea", "government", 3, None, 3,
             "monthly", "navsea.example", ("contracting_officer",)),
    _Contact("castellano", "Brian", "Castellano", "Program Manager, Digital Shipyard", "navy", "government",
             5,
             "Secret", 4, "monthly", "navsea.example", ("decision_maker",)),
    _Contact("park", "Steven", "Park", "Contracting Officer", "aflcmc", "government", 3, None, 3, "quarterly",
             "aflcmc.example", ("contracting_officer",)),
    _Contact("dunn", "Rachel", "Dunn", "Program Manager (Maj, USAF)", "usaf", "government", 5, "Top Secret",
             4,
             "monthly", "aflcmc.example", ("decision_maker", "industry_day")),
    _Contact("grant", "Lisa", "Grant", "Contracting Officer", "ditco", "government", 3, None, 2, "quarterly",
             "ditco.example", ("contracting_officer",)),
    _Contact("kim", "Howard", "Kim", "Division Chief, Enterprise Services", "disa", "government", 4,
             "Top Secret", 2, "quarterly", "disa.example", ()),
    _Contact("brooks", "Angela", "Brooks", "Contracting Officer", "cisa_op", "government", 3, None, 3,
             "monthly",
             "cisa.example", ("contracting_officer",)),
    _Contact("mensah", "David", "Mensah", "Branch Chief, Threat Hunting", "cisa", "government", 5,
             "Top Secret",
             4, "monthly", "cisa.example", ("decision_maker", "zero_trust")),
    _Contact("foley", "Megan", "Foley", "Contracting Officer", "uscis_co", "government", 3, None, 3,
             "quarterly",
             "uscis.example", ("contracting_officer",)),
    _Contact("rivera", "Carlos", "Rivera", "Chief, Digital Services Division", "uscis", "government", 5, None,
             3,
             "monthly", "uscis.example", ("decision_maker",)),
    _Contact("lowe", "Patricia", "Lowe", "Contracting Officer", "va_tac", "government", 3, None, 4, "monthly",
             "va.example", ("contracting_officer",)),
    _Contact("obrien", "Kevin", "O'Brien", "Program Manager, Enterprise Cloud", "va_opal", "government", 4,
             None, 4, "weekly", "va.example", ("decision_maker", "cloud")),
    _Contact("patel", "Susan", "Patel", "Contracting Officer", "nitaac", "government", 3, None, 3,
             "quarterly",
             "nih.example", ("contracting_officer",)),
    _Contact("chen", "Michael", "Chen", "Director, Research Data Systems", "nih", "government", 5, None, 3,
             "quarterly", "nih.example", ("decision_maker",)),
    _Contact("jenkins", "Robert", "Jenkins", "Contracting Officer", "fas_itc", "government", 3, None, 2,
             "quarterly", "gsa.example", ("contracting_officer",)),
    _Contact("torres", "Amanda", "Torres", "IT Category Manager", "fas", "government", 4, None, 3,
             "quarterly",
             "gsa.example", ()),
    _Contact("alvarez", "Linda", "Alvarez", "Contracting Officer", "gsfc_proc", "government", 3, None, 3,
             "quarterly", "nasa.example", ("contracting_officer",)),
    _Contact("reyes", "Thomas", "Reyes", "Ground Systems Project Manager", "gsfc", "government", 4, None, 4,
             "monthly", "nasa.example", ("technical",)),
    _Contact("morgan", "Chris", "Morgan", "VP, Business Development", "bluewater", "partner", 4, "Secret", 5,
             "weekly", "bluewater-analytics.example", ("teaming",)),
    _Contact("hughes", "Natalie", "Hughes", "Chief Executive Officer", "keystone", "partner", 5, "Top Secret",
             4,
             "weekly", "keystonecyber.example", ("teaming", "8a")),
    _Contact("wallace", "Derek", "Wallace", "Director of Capture", "northpoint", "partner", 4, "Secret", 4,
             "monthly", "northpoint-eng.example", ("teaming",)),
    _Contact("fletcher", "Ryan", "Fletcher", "Capture Lead, Defense Sector", "ironclad_def", "competitor", 3,
             "Secret", 1, "rarely", "ironclad-federal.example", ("competitor_intel",)),
    _Contact("sanders", "Julia", "Sanders", "Director, Business Development", "vector", "competitor", 4, None,
             2,
             "rarely", "vectormission.example", ("competitor_intel",)),
)
_CONTACT = {c.key: c for c in _CONTACTS}


def _contact_email(c: _Contact) -> str:
    return f"{c.first.lower()}.{c.last.lower().replace(chr(39), '')}@{c.email_domain}"


def _contact_phone(index: int) -> str:
    return f"202-555-{100 + index:04d}"


# --------------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------------


class _Project(NamedTuple):
    key: str
    name: str
    title: str
    office: str
    source: str  # "sam" | "feed" | "manual"
    solnum: str | None
    stage: str
    status: str
    priority: str
    scores: tuple[int, int, int]  # win probability, strategic value, pursuit health
    capture: str | None
    notices: tuple[str, ...]  # notice type of each external data version, oldest first
    age: int  # days before AS_OF the project was created
    due: int | None  # days from AS_OF to the current response deadline (negative: past)
    naics: str
    psc: str
    set_aside: str | None
    value: tuple[int, int] | None  # estimated value range (feeds and manual entry only)
    partner: str | None
    competitor: str | None
    summary: str


_FC = "Forecast"
_MANUAL = "Manual"

_PROJECTS: tuple[_Project, ...] = (
    # phase_0: identified
    _Project(
        "navsea_analytics", name="NAVSEA Digital Shipyard Analytics",
        title="Digital Shipyard Analytics and Decision Support",
        office="navsea", source="sam", solnum="N00024-27-SN-0107", notices=("Sources Sought",),
        stage="phase_0", status="active", priority="medium", scores=(25, 60, 55),
        capture=None, age=6, due=14, value=None,
        naics="541512", psc="DA01", set_aside="SBA", partner=None, competitor=None,
        summary="Market research for analytics that fuse shipyard maintenance, supply and workforce data into"
        " availability forecasts for public shipyards.",
    ),
    _Project(
        "cisa_cdm_dashboard", name="CISA CDM Dashboard Refresh",
        title="Continuous Diagnostics and Mitigation (CDM) Dashboard Ecosystem Refresh - RFI",
        office="cisa_op", source="sam", solnum="70QS0127I00000003", notices=("Special Notice",),
        stage="phase_0", status="active", priority="high", scores=(20, 80, 50),
        capture="capture", age=9, due=21, value=None,
        naics="541519", psc="DJ01", set_aside="NONE", partner="keystone", competitor="ironclad",
        summary="Request for information on next-generation CDM dashboards, data quality automation and "
        "agency onboarding.",
    ),
    _Project(
        "nih_research_data", name="NIH Research Data Platform",
        title="Research Data Platform Modernization",
        office="nitaac", source="sam", solnum="75N98027R00004", notices=("Presolicitation",),
        stage="phase_0", status="active", priority="medium", scores=(15, 65, 50),
        capture=None, age=4, due=35, value=None,
        naics="518210", psc="DA10", set_aside="NONE", partner=None, competitor="vector",
        summary="Cloud-native research data platform for intramural investigators; full and open recompete.",
    ),
    _Project(
        "gsa_training", name="GSA Acquisition Workforce Training",
        title="FAS Acquisition Workforce Training and Curriculum Support",
        office="fas_itc", source="feed", solnum=None, notices=(_FC,),
        stage="phase_0", status="active", priority="low", scores=(10, 30, 45),
        capture="capture2", age=12, due=75, value=(4_000_000, 6_500_000),
        naics="611430", psc="U099", set_aside="WOSB", partner="northpoint", competitor=None,
        summary="Forecast: curriculum development and delivery for the contracting workforce certification "
        "program.",
    ),
    # phase_1: positioning
    _Project(
        "aflcmc_mission_planning", name="AFLCMC Mission Planning Cloud Migration",
        title="Mission Planning Enterprise Cloud Migration Support",
        office="aflcmc", source="sam", solnum="FA8726-27-R-0012",
        notices=("Sources Sought", "Sources Sought"),
        stage="phase_1", status="active", priority="high", scores=(35, 85, 65),
        capture="capture", age=40, due=10, value=None,
        naics="541512", psc="DA01", set_aside="SBA", partner="bluewater", competitor="summit",
        summary="Migration of legacy mission planning applications to the Air Force cloud hosting "
        "environment.",
    ),
    _Project(
        "va_scheduling", name="VA Enterprise Scheduling Support",
        title="Enterprise Scheduling Sustainment and Support",
        office="va_tac", source="feed", solnum=None, notices=(_FC, _FC),
        stage="phase_1", status="active", priority="medium", scores=(30, 70, 60),
        capture="capture2", age=45, due=60, value=(18_000_000, 25_000_000),
        naics="541511", psc="DA01", set_aside="SDVOSBC", partner="bluewater", competitor="vector",
        summary="Forecast: sustainment of the enterprise scheduling system across VA medical centers.",
    ),
    _Project(
        "disa_netops", name="DISA NetOps Tier II Support",
        title="Network Operations Tier II Support Services",
        office="ditco", source="manual", solnum=None, notices=(_MANUAL,),
        stage="phase_1", status="on_hold", priority="low", scores=(20, 40, 35),
        capture="capture2", age=55, due=None, value=(30_000_000, 45_000_000),
        naics="541513", psc="DD01", set_aside=None, partner=None, competitor="ironclad",
        summary="From a customer conversation; on hold until DISA decides whether the work moves to an "
        "existing IDIQ.",
    ),
    _Project(
        "uscis_lowcode", name="USCIS Case Management Low-Code",
        title="Case Management Low-Code Platform Services",
        office="uscis_co", source="feed", solnum=None, notices=(_FC,),
        stage="phase_1", status="active", priority="medium", scores=(30, 60, 55),
        capture="capture", age=35, due=90, value=(12_000_000, 20_000_000),
        naics="541511", psc="DA10", set_aside="8A", partner="keystone", competitor=None,
        summary="Forecast: low-code case management platform configuration and support for benefits "
        "adjudication.",
    ),
    # phase_2: qualified
    _Project(
        "gsfc_software_assurance", name="Goddard Mission Software Assurance",
        title="Mission Software Assurance and Independent Verification Services",
        office="gsfc_proc", source="sam", solnum="80GSFC27R0021",
        notices=("Presolicitation", "Presolicitation"),
        stage="phase_2", status="active", priority="high", scores=(45, 80, 70),
        capture="capture", age=75, due=30, value=None,
        naics="541330", psc="R425", set_aside="SBA", partner="northpoint", competitor="summit",
        summary="Software assurance, IV&V support and safety-critical code analysis for flight projects.",
    ),
    _Project(
        "navsea_rmf", name="NAVSEA RMF Cybersecurity Support",
        title="Cybersecurity Risk Management Framework (RMF) Support Services",
        office="navsea", source="sam", solnum="N00024-27-R-3121",
        notices=("Sources Sought", "Presolicitation"),
        stage="phase_2", status="active", priority="critical", scores=(55, 90, 75),
        capture="capture", age=70, due=25, value=None,
        naics="541519", psc="DJ01", set_aside="SDVOSBC", partner="bluewater", competitor="ironclad",
        summary="Assessment and authorization support (RMF steps 1-6) for shipboard and shore systems.",
    ),
    _Project(
        "gsa_dco_bpa", name="GSA Data Center Optimization BPA",
        title="Data Center Optimization Blanket Purchase Agreement",
        office="fas_itc", source="sam", solnum="47QTCB26R0044", notices=("Presolicitation",),
        stage="phase_2", status="no_bid", priority="low", scores=(15, 35, 20),
        capture="capture2", age=95, due=-20, value=None,
        naics="541519", psc="DH01", set_aside="NONE", partner=None, competitor="vector",
        summary="No bid: incumbent-shaped scope and no relevant past performance on the hardware refresh "
        "work.",
    ),
    _Project(
        "nih_clinical_reporting", name="NIH Clinical Trials Reporting",
        title="Clinical Trials Reporting System Modernization",
        office="nitaac", source="feed", solnum=None, notices=(_FC, _FC, _FC),
        stage="phase_2", status="on_hold", priority="medium", scores=(35, 55, 40),
        capture="capture2", age=88, due=120, value=(8_000_000, 15_000_000),
        naics="541511", psc="DA01", set_aside="SBA", partner="northpoint", competitor=None,
        summary="On hold: NIH moved the anticipated RFP date twice.",
    ),
    # phase_3: capture planning
    _Project(
        "cisa_zta", name="CISA Zero Trust Architecture Engineering",
        title="Zero Trust Architecture Engineering and Integration Services",
        office="cisa_op", source="sam", solnum="70QS0127R00000011",
        notices=("Sources Sought", "Presolicitation", "Presolicitation"),
        stage="phase_3", status="active", priority="critical", scores=(50, 95, 70),
        capture="capture", age=130, due=40, value=None,
        naics="541512", psc="DJ01", set_aside="NONE", partner="keystone", competitor="ironclad",
        summary="Engineering and integration of zero trust capabilities across CISA's enterprise and mission "
        "systems.",
    ),
    _Project(
        "va_interop", name="VA Health Data Interoperability",
        title="Health Data Interoperability and FHIR Services",
        office="va_tac", source="sam", solnum="36C10B27R0008", notices=("Presolicitation", "Presolicitation"),
        stage="phase_3", status="active", priority="high", scores=(40, 85, 65),
        capture="capture2", age=110, due=35, value=None,
        naics="541512", psc="DA01", set_aside="SDVOSBC", partner="bluewater", competitor="vector",
        summary="FHIR API development and health information exchange with community care partners.",
    ),
    _Project(
        "aflcmc_logistics", name="AFLCMC Logistics Data Analytics",
        title="Logistics Data Analytics and Predictive Maintenance",
        office="aflcmc", source="manual", solnum=None, notices=(_MANUAL,),
        stage="phase_3", status="active", priority="medium", scores=(40, 70, 60),
        capture="capture", age=100, due=None, value=(20_000_000, 28_000_000),
        naics="541512", psc="DA01", set_aside="SBA", partner="northpoint", competitor="summit",
        summary="Pre-RFP intelligence from the AFLCMC industry day; no notice posted yet.",
    ),
    _Project(
        "disa_identity", name="DISA Enterprise Identity Recompete",
        title="Enterprise Identity, Credential and Access Management Services (Recompete)",
        office="ditco", source="sam", solnum="HC1028-26-R-0047",
        notices=("Presolicitation", "Solicitation", "Solicitation"),
        stage="phase_3", status="cancelled_by_government", priority="high", scores=(35, 75, 30),
        capture="capture2", age=160, due=-5, value=None,
        naics="541519", psc="DJ01", set_aside="NONE", partner=None, competitor="ironclad",
        summary="Cancelled by DISA (amendment 0002); the work is to be re-scoped under an enterprise IDIQ.",
    ),
    # phase_4: proposal planning
    _Project(
        "navsea_shipboard_it", name="NAVSEA Shipboard IT Lifecycle Support",
        title="Shipboard IT Systems Lifecycle Engineering and Support",
        office="navsea", source="sam", solnum="N00024-27-R-3088", notices=("Presolicitation", "Solicitation"),
        stage="phase_4", status="active", priority="high", scores=(55, 80, 70),
        capture="capture", age=150, due=28, value=None,
        naics="541512", psc="DF01", set_aside="SBA", partner="bluewater", competitor="ironclad",
        summary="Lifecycle engineering, installation and sustainment of shipboard networks and hosting "
        "environments.",
    ),
    _Project(
        "uscis_digital_intake", name="USCIS Digital Intake Modernization",
        title="Digital Intake Modernization Agile Services",
        office="uscis_co", source="sam", solnum="70SBUR27R00000019",
        notices=("Combined Synopsis/Solicitation",),
        stage="phase_4", status="active", priority="high", scores=(50, 75, 65),
        capture="capture2", age=125, due=21, value=None,
        naics="541511", psc="DA01", set_aside="8A", partner="keystone", competitor=None,
        summary="Agile teams modernizing online filing and intake for benefit requests.",
    ),
    _Project(
        "gsfc_ground_systems", name="GSFC Ground Systems Sustainment",
        title="Ground Systems Sustainment and Engineering Services",
        office="gsfc_proc", source="sam", solnum="80GSFC26R0057",
        notices=("Presolicitation", "Solicitation", "Solicitation"),
        stage="phase_4", status="active", priority="medium", scores=(45, 70, 60),
        capture="capture", age=170, due=45, value=None,
        naics="541330", psc="R425", set_aside="NONE", partner="northpoint", competitor="vector",
        summary="Sustainment engineering for mission operations centers and ground station networks.",
    ),
    # phase_5: proposal development
    _Project(
        "va_cloud_ops", name="VA Cloud Operations and Engineering",
        title="Enterprise Cloud Operations and Engineering Services",
        office="va_tac", source="sam", solnum="36C10B26R0142",
        notices=("Presolicitation", "Solicitation", "Solicitation"),
        stage="phase_5", status="active", priority="critical", scores=(60, 95, 75),
        capture="capture", age=200, due=12, value=None,
        naics="541512", psc="DH01", set_aside="SDVOSBC", partner="bluewater", competitor="vector",
        summary="Operations, engineering and FinOps for VA's enterprise cloud landing zones.",
    ),
    _Project(
        "cisa_threat_hunting", name="CISA Threat Hunting Analytics",
        title="Threat Hunting Analytics Support Services",
        office="cisa_op", source="sam", solnum="70QS0126R00000031", notices=("Solicitation", "Solicitation"),
        stage="phase_5", status="active", priority="high", scores=(50, 85, 70),
        capture="capture2", age=180, due=6, value=None,
        naics="541519", psc="DJ01", set_aside="NONE", partner="keystone", competitor="ironclad",
        summary="Hunt operations, analytic development and detection engineering for federal civilian "
        "networks.",
    ),
    _Project(
        "gsa_contract_writing", name="GSA Contract Writing System Support",
        title="Contract Writing System Sustainment Support",
        office="fas_itc", source="sam", solnum="47QTCB26R0061", notices=("Solicitation",),
        stage="phase_5", status="withdrawn", priority="medium", scores=(30, 50, 25),
        capture="capture2", age=190, due=3, value=None,
        naics="541511", psc="DA01", set_aside="SBA", partner=None, competitor="summit",
        summary="Withdrawn: key personnel requirements we cannot staff before the deadline.",
    ),
    # phase_6: post-submittal
    _Project(
        "nih_itsm", name="NIH ITSM Consolidation",
        title="IT Service Management Consolidation",
        office="nitaac", source="sam", solnum="75N98026R00031", notices=("Solicitation", "Solicitation"),
        stage="phase_6", status="active", priority="high", scores=(55, 80, 70),
        capture="capture", age=240, due=-18, value=None,
        naics="541512", psc="DD01", set_aside="SBA", partner="northpoint", competitor="summit",
        summary="Consolidation of institute service desks onto one ITSM platform; proposal submitted, "
        "awaiting award.",
    ),
    _Project(
        "aflcmc_cyber_resiliency", name="AFLCMC Cyber Resiliency Engineering",
        title="Weapon System Cyber Resiliency Engineering Support",
        office="aflcmc", source="sam", solnum="FA8726-26-R-0031",
        notices=("Presolicitation", "Solicitation", "Award Notice"),
        stage="phase_6", status="won", priority="critical", scores=(70, 90, 85),
        capture="capture", age=300, due=-70, value=None,
        naics="541330", psc="R425", set_aside="SBA", partner="bluewater", competitor="summit",
        summary="Cyber resiliency engineering for fielded weapon systems. Won: five-year single-award IDIQ.",
    ),
    _Project(
        "disa_devsecops", name="DISA DevSecOps Platform Engineering",
        title="DevSecOps Platform Engineering Services",
        office="ditco", source="sam", solnum="HC1028-26-R-0019", notices=("Solicitation", "Award Notice"),
        stage="phase_6", status="lost", priority="high", scores=(45, 80, 40),
        capture="capture2", age=270, due=-60, value=None,
        naics="541511", psc="DA01", set_aside="NONE", partner=None, competitor="ironclad",
        summary="Lost to the incumbent on price; debrief requested.",
    ),
)

# fmt: on

# Status of each proposal, keyed by project (projects in phase_4 and later have one).
_PROPOSAL_STATUS = {
    "navsea_shipboard_it": "planning",
    "uscis_digital_intake": "draft",
    "gsfc_ground_systems": "planning",
    "va_cloud_ops": "red_team",
    "cisa_threat_hunting": "gold_team",
    "gsa_contract_writing": "withdrawn",
    "nih_itsm": "submitted",
    "aflcmc_cyber_resiliency": "awarded",
    "disa_devsecops": "not_awarded",
}

# Proposal status -> (color reviews completed, is the next one under way).
_REVIEW_PROGRESS = {
    "draft": (0, False),
    "planning": (0, False),
    "pink_team": (0, True),
    "red_team": (1, True),
    "gold_team": (2, True),
    "final_review": (3, True),
    "submitted": (4, False),
    "awarded": (4, False),
    "not_awarded": (4, False),
    "withdrawn": (1, False),
}

_PRIORITY_POLLING = {
    "critical": (30, "high"),
    "high": (60, "high"),
    "medium": (240, "normal"),
    "low": (1440, "low"),
}
_TERMINAL = {"won", "lost", "no_bid", "cancelled_by_government", "withdrawn"}
_OUR_COMPANY = {
    "name": "DEMO FEDERAL SOLUTIONS LLC",
    "uei": "DFS7K2M9Q4L1",
    "cage": "8DF52",
    "city": "Arlington",
    "state": "VA",
    "zip": "22203",
    "street": "4100 N Fairfax Drive",
}


def _agency(p: _Project) -> _Org:
    """The sub-agency (or department) above the project's contracting office."""
    return _ORG[_ORG[p.office].parent or p.office]


def _stage_index(p: _Project) -> int:
    return int(p.stage.removeprefix("phase_"))


def _uei(key: str) -> str:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    n = demo_id("uei", key).int
    return "".join(alphabet[(n >> (6 * i)) % len(alphabet)] for i in range(12))


def _cage(key: str) -> str:
    n = demo_id("cage", key).int
    alphabet = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
    return "".join(alphabet[(n >> (6 * i)) % len(alphabet)] for i in range(5))


def _canonical_hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# --------------------------------------------------------------------------------------------------
# Building the rows
# --------------------------------------------------------------------------------------------------


def demo_tenant_row() -> Row:
    created = _at(-420)
    return {
        "id": TENANT_ID,
        "name": "Demo Federal Solutions",
        "subdomain": SUBDOMAIN,
        "plan_type": "enterprise",
        "max_users": 100,
        "max_opportunity_projects": 500,
        "is_active": True,
        "fedramp_compliant": False,
        "subscription_status": "active",
        "subscription_expires_at": _at(365),
        "billing_email": f"billing@{EMAIL_DOMAIN}",
        "created_at": created,
        "updated_at": created,
        "created_by": None,
        "updated_by": None,
    }


class _Builder:
    """Accumulates the demo's rows table by table (one instance per build)."""

    def __init__(self, system_user: uuid.UUID, manual_source: uuid.UUID) -> None:
        self.system_user = system_user
        self.manual_source = manual_source
        self.t: dict[str, list[Row]] = {name: [] for name in INSERT_ORDER}
        self.user = {p.key: demo_id("user", p.key) for p in _PEOPLE}
        self.org = {o.key: demo_id("organization", o.key) for o in _ORGS}
        self.contact = {c.key: demo_id("contact", c.key) for c in _CONTACTS}
        self.pid = {p.key: demo_id("project", p.key) for p in _PROJECTS}
        self.source = {
            "sam": demo_id("source", "sam"),
            "feed": demo_id("source", "feed"),
            "manual": manual_source,
        }
        self.category: dict[str, uuid.UUID] = {}
        self.versions: dict[str, list[dict[str, Any]]] = {}
        self.created: dict[str, dt.datetime] = {}
        self.deadline: dict[str, dt.datetime | None] = {}

    def add(self, table: str, row: Row) -> Row:
        self.t[table].append(row)
        return row

    # -- tenant setup ------------------------------------------------------------------------------

    def configuration(self) -> None:
        created = _at(-420)
        for key, value, kind in (
            (
                "pipeline.stage_labels",
                {
                    "phase_0": "Identified",
                    "phase_1": "Positioning",
                    "phase_2": "Qualified",
                    "phase_3": "Capture planning",
                    "phase_4": "Proposal planning",
                    "phase_5": "Proposal development",
                    "phase_6": "Post-submittal",
                },
                "json",
            ),
            ("fiscal_year.start_month", 10, "integer"),
            # The demo's people sign in rarely; at the default 90 days the nightly job (AC-2(3))
            # would disable them all, since the demo's clock (AS_OF) stands still.
            ("security.inactive_disable_days", 3650, "integer"),
            ("seed.demo", {"version": 1, "as_of": AS_OF.isoformat()}, "json"),
        ):
            self.add(
                "tenant_configurations",
                {
                    "id": demo_id("config", key),
                    "tenant_id": TENANT_ID,
                    "config_key": key,
                    "config_value": value,
                    "config_type": kind,
                    "is_encrypted": False,
                    "created_at": created,
                    "updated_at": created,
                },
            )

    def people(self) -> None:
        for i, p in enumerate(_PEOPLE):
            created = _at(-419, i)
            self.add(
                "users",
                {
                    "id": self.user[p.key],
                    "tenant_id": TENANT_ID,
                    "email": p.email,
                    "password_hash": None,
                    "first_name": p.first,
                    "last_name": p.last,
                    "title": p.title,
                    "phone": p.phone,
                    "is_active": True,
                    "email_verified": True,
                    "password_changed_at": created,
                    "created_at": created,
                    "updated_at": created,
                    "created_by": self.system_user if p.key == "admin" else self.user["admin"],
                },
            )
        for r in SYSTEM_ROLES:
            created = _at(-420, 1)
            self.add(
                "roles",
                {
                    "id": demo_id("role", r.key),
                    "tenant_id": TENANT_ID,
                    "name": r.name,
                    "description": r.description,
                    "is_system_role": True,
                    "permissions": r.permissions,
                    "created_at": created,
                    "updated_at": created,
                },
            )
        for i, p in enumerate(_PEOPLE):
            self.add(
                "user_roles",
                {
                    "id": demo_id("user_role", p.key, p.role),
                    "tenant_id": TENANT_ID,
                    "user_id": self.user[p.key],
                    "role_id": demo_id("role", p.role),
                    "opportunity_project_id": None,
                    "assigned_at": _at(-419, i),
                    "assigned_by": self.system_user if p.key == "admin" else self.user["admin"],
                    "expires_at": None,
                },
            )
        # A project-scoped grant: the BD analyst helps the proposal team on one pursuit, until award.
        self.add(
            "user_roles",
            {
                "id": demo_id("user_role", "analyst", "proposal_manager", "uscis_digital_intake"),
                "tenant_id": TENANT_ID,
                "user_id": self.user["analyst"],
                "role_id": demo_id("role", "proposal_manager"),
                "opportunity_project_id": self.pid["uscis_digital_intake"],
                "assigned_at": _at(-60),
                "assigned_by": self.user["admin"],
                "expires_at": _at(120),
            },
        )

    def sources(self) -> None:
        created = _at(-418)
        common = {
            "tenant_id": TENANT_ID,
            "api_credentials_encrypted": {},
            "timeout_seconds": 30,
            "retry_attempts": 3,
            "is_active": True,
            "created_at": created,
            "updated_at": created,
            "created_by": self.user["admin"],
        }
        self.add(
            "external_opportunity_sources",
            {
                **common,
                "id": self.source["sam"],
                "source_name": "SAM.gov",
                "api_endpoint": "https://api.sam.gov/opportunities/v2/search",
                "api_version": "v2",
                "authentication_type": "api_key",
                "rate_limit_per_hour": 41,
                "connection_status": "healthy",
                "last_successful_call": _at(0, -1),
                "last_error_message": None,
                "consecutive_errors": 0,
            },
        )
        self.add(
            "external_opportunity_sources",
            {
                **common,
                "id": self.source["feed"],
                "source_name": "Agency Forecast Feed",
                "api_endpoint": "https://forecasts.acquisition.example/api/v1/opportunities.json",
                "api_version": "1.0",
                "authentication_type": "bearer_token",
                "rate_limit_per_hour": 120,
                "connection_status": "degraded",
                "last_successful_call": _at(0, -7),
                "last_error_message": "HTTP 503 Service Unavailable (retry 2 of 3 scheduled with backoff)",
                "consecutive_errors": 2,
            },
        )

    # -- organizations and contacts -------------------------------------------------------------------

    def organizations(self) -> None:
        for i, o in enumerate(_ORGS):  # parents precede children in _ORGS
            created = _at(-410, i)
            self.add(
                "organizations",
                {
                    "id": self.org[o.key],
                    "tenant_id": TENANT_ID,
                    "name": o.name,
                    "duns_number": None,
                    "sam_unique_id": _uei(o.key) if o.size else None,
                    "cage_code": _cage(o.key) if o.size else None,
                    "address_line1": o.address,
                    "address_line2": None,
                    "city": o.city,
                    "state_province": o.state,
                    "postal_code": o.postal,
                    "country": "United States",
                    "phone": f"571-555-{200 + i:04d}",
                    "email": None,
                    "website": o.website,
                    "organization_type": o.org_type,
                    "business_size": o.size,
                    "socioeconomic_certifications": list(o.certs),
                    "parent_organization_id": self.org[o.parent] if o.parent else None,
                    "is_active": True,
                    "created_at": created,
                    "updated_at": created,
                    "created_by": self.user["analyst"],
                    "updated_by": None,
                },
            )
        for i, c in enumerate(_CONTACTS):
            created = _at(-400, i)
            self.add(
                "contacts",
                {
                    "id": self.contact[c.key],
                    "tenant_id": TENANT_ID,
                    "organization_id": self.org[c.org],
                    "first_name": c.first,
                    "last_name": c.last,
                    "title": c.title,
                    "email": _contact_email(c),
                    "phone": _contact_phone(i),
                    "linkedin_url": (
                        f"https://www.linkedin.example/in/{c.first.lower()}-{c.last.lower()}"
                        if c.contact_type != "government"
                        else None
                    ),
                    "contact_type": c.contact_type,
                    "decision_maker_level": c.decision_level,
                    "security_clearance": c.clearance,
                    "last_contact_date": (AS_OF - dt.timedelta(days=3 + 5 * i)).date(),
                    "interaction_frequency": c.frequency,
                    "relationship_strength": c.strength,
                    "notes": None,
                    "tags": list(c.tags),
                    "is_active": True,
                    "created_at": created,
                    "updated_at": created,
                    "created_by": self.user["capture"] if i % 2 else self.user["analyst"],
                    "updated_by": None,
                },
            )

    # -- projects and their external data --------------------------------------------------------------

    def project(self, idx: int, p: _Project) -> None:
        pid = self.pid[p.key]
        created = _at(-p.age, idx % 7)
        versions = self._versions(p, created)
        self.versions[p.key] = versions
        self.deadline[p.key] = next((v["deadline"] for v in reversed(versions) if v["deadline"]), None)
        self.created[p.key] = created
        current = versions[-1]
        capture = self.user[p.capture] if p.capture else None
        proposal = self.user["proposal"] if _stage_index(p) >= 4 else None
        team = [str(u) for u in (capture, proposal, self.user["analyst"]) if u is not None]
        synced = p.source != "manual"
        sync_error = p.key == "nih_clinical_reporting"
        agency = _agency(p).name
        override_agency = "NAVSEA 03 - Cyber Engineering and Digital Transformation"
        self.add(
            "opportunity_projects",
            {
                "id": pid,
                "tenant_id": TENANT_ID,
                "project_name": p.name,
                "internal_reference_number": f"DFS-CAP-{2026 if p.age > 92 else 2027}-{idx + 101:03d}",
                "external_source_id": self.source[p.source],
                # The lineage's first notice id (SAM's parentOpportunityId): stable across amendments.
                "external_opportunity_id": versions[0]["external_id"],
                "external_opportunity_url": current["url"],
                "solicitation_number": p.solnum,
                "agency_name": override_agency if p.key == "navsea_shipboard_it" else agency,
                "contracting_office": _ORG[p.office].name,
                "title": current["row"]["title"],
                "description": current["row"]["description"],
                "project_status": p.status,
                "pipeline_stage": p.stage,
                "priority_level": p.priority,
                "win_probability_score": _dec(p.scores[0]),
                "strategic_value_score": _dec(p.scores[1]),
                "pursuit_health_score": _dec(p.scores[2]),
                "assigned_capture_manager": capture,
                "assigned_proposal_manager": proposal,
                "assigned_team_members": team,
                "last_synced_at": _at(0, -(1 + idx % 5)) if synced else None,
                "sync_status": ("error" if sync_error else "synced") if synced else "manual",
                "sync_error_message": "HTTP 503 Service Unavailable from Agency Forecast Feed"
                if sync_error
                else None,
                "version_hash": _canonical_hash(current["row"]["raw_json_data"]),
                "created_at": created,
                "updated_at": max(created, current["row"]["created_at"]),
                "created_by": self.user[p.capture] if p.capture else self.user["analyst"],
            },
        )
        previous: dict[str, Any] | None = None
        for n, v in enumerate(versions, start=1):
            self.add("external_opportunity_data", v["row"])
            if previous is not None:
                self._change(p, n, previous, v, len(versions))
            previous = v
        self._project_contacts(p, created)
        if (p.source == "sam" and p.status == "active") or p.key == "va_scheduling":
            self._polling(idx, p)

    def _versions(self, p: _Project, created: dt.datetime) -> list[dict[str, Any]]:
        """One dict per external data version: its row plus what related rows need."""
        n = len(p.notices)
        first_post = created - dt.timedelta(days=2)
        last_deadline = _at(p.due) if p.due is not None else None
        # The latest version appeared 2 to 20 days ago (spread per project), and before the deadline.
        latest = _at(-(2 + int(demo_id("latest", p.key).int % 19)))
        if p.source == "sam" and p.notices[-1] != "Award Notice" and last_deadline is not None:
            last_post = min(latest, last_deadline - dt.timedelta(days=5))
        else:
            last_post = latest
        step = (last_post - first_post) / (n - 1) if n > 1 else dt.timedelta(0)
        nonaward = [i for i, t in enumerate(p.notices) if t != "Award Notice"]
        last_type = p.notices[nonaward[-1]]
        shift = dt.timedelta(days=30 if p.source == "feed" else 7)
        out = []
        files: list[dict[str, Any]] = []
        posts = [
            (first_post + step * i).replace(hour=13, minute=30, second=0, microsecond=0) for i in range(n)
        ]
        for i, notice in enumerate(p.notices):
            posted = posts[i]
            snapshot = posted + dt.timedelta(hours=3, minutes=12)
            deadline = None
            if notice != "Award Notice" and last_deadline is not None:
                if i == nonaward[-1]:  # the project's own deadline, as given
                    deadline = last_deadline
                elif (
                    notice != last_type
                ):  # an earlier notice (sources sought, presolicitation): its own window
                    deadline = posted + dt.timedelta(days=21)
                else:  # an amendment extended it; a deadline never passes before the next version
                    deadline = max(
                        last_deadline - shift * (nonaward[-1] - i),
                        posted + dt.timedelta(days=10),
                        posts[i + 1] + dt.timedelta(days=3),
                    )
                deadline = deadline.replace(hour=20, minute=0, second=0, microsecond=0)
            if p.source == "sam":
                out.append(self._sam_version(p, i + 1, notice, posted, snapshot, deadline, files))
            elif p.source == "feed":
                out.append(self._feed_version(p, i + 1, posted, snapshot, deadline))
            else:
                out.append(self._manual_version(p, snapshot))
        out[-1]["row"]["is_current_version"] = True
        return out

    def _eod_row(self, p: _Project, version: int, snapshot: dt.datetime, **fields: Any) -> Row:
        row: Row = {
            "id": demo_id("external_data", p.key, version),
            "tenant_id": TENANT_ID,
            "opportunity_project_id": self.pid[p.key],
            "data_snapshot_timestamp": snapshot,
            "version_number": version,
            "is_current_version": False,
            "change_detected_at": snapshot if version > 1 else None,
            "changed_fields": None,
            "created_at": snapshot,
            "amendment_number": version - 1,
        }
        row.update(fields)
        return row

    def _sam_version(
        self,
        p: _Project,
        version: int,
        notice: str,
        posted: dt.datetime,
        snapshot: dt.datetime,
        deadline: dt.datetime | None,
        files: list[dict[str, Any]],
    ) -> dict[str, Any]:
        office = _OFFICES[p.office]
        org = _ORG[p.office]
        notice_id = _hex("notice", p.key, version)
        cancelled = p.status == "cancelled_by_government" and version == len(p.notices)
        title = (
            p.title
            if notice in ("Solicitation", "Combined Synopsis/Solicitation")
            else f"{p.title} - {notice}"
        )
        if cancelled:
            title = f"CANCELLED - {p.title}"
        new_files = _attachments(p, version, notice)
        for name in new_files:
            files.append({"name": name, "file_id": _hex("file", p.key, version, name), "version": version})
        co, customer = _CONTACT[office.co], _CONTACT[office.customer]
        award = None
        if notice == "Award Notice":
            if p.status == "won":
                winner = {
                    "name": _OUR_COMPANY["name"],
                    "uei": _OUR_COMPANY["uei"],
                    "cage": _OUR_COMPANY["cage"],
                    "city": _OUR_COMPANY["city"],
                    "state": _OUR_COMPANY["state"],
                    "zip": _OUR_COMPANY["zip"],
                    "street": _OUR_COMPANY["street"],
                }
                amount = "48250000.00"
            else:
                w = _ORG[p.competitor or "ironclad"]
                winner = {
                    "name": w.name.upper(),
                    "uei": _uei(w.key),
                    "cage": _cage(w.key),
                    "city": w.city,
                    "state": w.state,
                    "zip": w.postal,
                    "street": w.address,
                }
                amount = "61730000.00"
            award = {
                "date": posted.date().isoformat(),
                "number": p.solnum.replace("-R-", "-D-") if p.solnum else None,
                "amount": amount,
                "awardee": {
                    "name": winner["name"],
                    "location": {
                        "streetAddress": winner["street"],
                        "streetAddress2": None,
                        "city": {"code": None, "name": winner["city"]},
                        "state": {"code": winner["state"], "name": None},
                        "zip": winner["zip"],
                        "country": {"code": "USA", "name": "UNITED STATES"},
                    },
                    "ueiSAM": winner["uei"],
                    "cageCode": winner["cage"],
                },
            }
        base_type = p.notices[0]
        active = not cancelled
        raw = {
            "noticeId": notice_id,
            "title": title,
            "solicitationNumber": p.solnum,
            "fullParentPathName": office.sam_path,
            "fullParentPathCode": office.sam_code,
            "postedDate": posted.date().isoformat(),
            "type": notice,
            "baseType": base_type,
            "archiveType": "manual" if cancelled else "autocustom",
            "archiveDate": (posted if cancelled else (deadline or posted) + dt.timedelta(days=30))
            .date()
            .isoformat(),
            "typeOfSetAsideDescription": SET_ASIDES[p.set_aside],
            "typeOfSetAside": p.set_aside,
            "responseDeadLine": eastern_iso(deadline) if deadline else None,
            "naicsCode": p.naics,
            "naicsCodes": [p.naics],
            "classificationCode": p.psc,
            "active": "Yes" if active else "No",
            "award": award,
            "pointOfContact": [
                sam_point_of_contact(
                    f"{co.first} {co.last}",
                    _contact_email(co),
                    _contact_phone(_CONTACTS.index(co)),
                    co.title,
                    "primary",
                ),
                sam_point_of_contact(
                    f"{customer.first} {customer.last}",
                    _contact_email(customer),
                    None,
                    customer.title,
                    "secondary",
                ),
            ],
            "description": f"https://api.sam.gov/prod/opportunities/v1/noticedesc?noticeid={notice_id}",
            "organizationType": "OFFICE",
            "officeAddress": {
                "zipcode": org.postal,
                "city": org.city.upper(),
                "countryCode": "USA",
                "state": org.state,
            },
            "placeOfPerformance": {
                "streetAddress": org.address,
                "streetAddress2": None,
                "city": {"code": None, "name": org.city},
                "state": {"code": org.state, "name": None},
                "zip": org.postal,
                "country": {"code": "USA", "name": "UNITED STATES"},
            },
            "additionalInfoLink": None,
            "uiLink": f"https://sam.gov/workspace/contract/opp/{notice_id}/view",
            "links": [
                {
                    "rel": "self",
                    "href": f"https://api.sam.gov/prod/opportunities/v2/search?noticeid={notice_id}&limit=1",
                }
            ],
            "resourceLinks": [
                f"https://sam.gov/api/prod/opps/v3/opportunities/resources/files/{f['file_id']}/download"
                for f in files
            ]
            or None,
        }
        description = p.summary if version == 1 else f"{p.summary} Amendment {version - 1:04d} posted."
        if cancelled:
            description = f"The Government cancels this solicitation. {p.summary}"
        row = self._eod_row(
            p,
            version,
            snapshot,
            title=title,
            description=description,
            opportunity_type=notice,
            set_aside_type=p.set_aside,
            naics_codes=p.naics,
            estimated_value_min=None,
            estimated_value_max=None,
            posting_date=posted.date(),
            response_due_date=deadline,
            place_of_performance=f"{org.address}, {org.city}, {org.state} {org.postal}, USA",
            solicitation_status="cancelled"
            if cancelled
            else solicitation_status(notice, active, deadline, snapshot),
            raw_json_data=raw,
        )
        return {
            "row": row,
            "raw": raw,
            "external_id": notice_id,
            "url": raw["uiLink"],
            "files": list(files),
            "new_files": [f for f in files if f["version"] == version],
            "notice": notice,
            "deadline": deadline,
            "active": active,
        }

    def _feed_version(
        self,
        p: _Project,
        version: int,
        posted: dt.datetime,
        snapshot: dt.datetime,
        deadline: dt.datetime | None,
    ) -> dict[str, Any]:
        org = _ORG[p.office]
        forecast_id = f"FC-{p.office.upper().replace('_', '')}-2027-{sum(map(ord, p.key)) % 900 + 100:04d}"
        assert p.value is not None
        raw = {
            "id": forecast_id,
            "revision": version,
            "title": p.title,
            "agency": _agency(p).name,
            "office": org.name,
            "naics": p.naics,
            "psc": p.psc,
            "setAside": SET_ASIDES[p.set_aside],
            "contractType": "Firm-Fixed-Price" if p.key == "gsa_training" else "Time-and-Materials",
            "estimatedValue": {"min": p.value[0], "max": p.value[1], "currency": "USD"},
            "anticipatedSolicitationDate": deadline.date().isoformat() if deadline else None,
            "anticipatedAwardQuarter": "FY2027 Q3",
            "incumbent": _ORG[p.competitor].name if p.competitor else None,
            "status": "forecast",
            "lastUpdated": posted.isoformat(),
        }
        row = self._eod_row(
            p,
            version,
            snapshot,
            title=p.title,
            description=p.summary,
            opportunity_type="Forecast",
            set_aside_type=p.set_aside,
            naics_codes=p.naics,
            estimated_value_min=_dec(p.value[0]),
            estimated_value_max=_dec(p.value[1]),
            posting_date=posted.date(),
            response_due_date=None,
            place_of_performance=f"{org.city}, {org.state}",
            solicitation_status="pre_rfp",
            raw_json_data=raw,
        )
        return {
            "row": row,
            "raw": raw,
            "external_id": forecast_id,
            "url": f"https://forecasts.acquisition.example/opportunities/{forecast_id}",
            "files": [],
            "new_files": [],
            "notice": "Forecast",
            "deadline": deadline,
            "active": True,
        }

    def _manual_version(self, p: _Project, snapshot: dt.datetime) -> dict[str, Any]:
        org = _ORG[p.office]
        external_id = f"MANUAL-{self.pid[p.key].hex[:8].upper()}"
        assert p.value is not None and p.capture is not None
        raw = {
            "source": "manual",
            "enteredBy": _PERSON[p.capture].email,
            "title": p.title,
            "agency": _agency(p).name,
            "office": org.name,
            "naics": p.naics,
            "estimatedValue": {"min": p.value[0], "max": p.value[1]},
            "notes": p.summary,
        }
        row = self._eod_row(
            p,
            1,
            snapshot,
            title=p.title,
            description=p.summary,
            opportunity_type=None,
            set_aside_type=p.set_aside,
            naics_codes=p.naics,
            estimated_value_min=_dec(p.value[0]),
            estimated_value_max=_dec(p.value[1]),
            posting_date=None,
            response_due_date=None,
            place_of_performance=f"{org.city}, {org.state}",
            solicitation_status=None,
            raw_json_data=raw,
        )
        return {
            "row": row,
            "raw": raw,
            "external_id": external_id,
            "url": None,
            "files": [],
            "new_files": [],
            "notice": None,
            "deadline": None,
            "active": True,
        }

    def _change(self, p: _Project, n: int, prev: dict[str, Any], cur: dict[str, Any], count: int) -> None:
        """external_data_changes row for version n (> 1) and the version's changed_fields."""
        ignored = {"noticeId", "description", "uiLink", "links", "lastUpdated", "revision"}
        fields = sorted(k for k in cur["raw"] if k not in ignored and cur["raw"].get(k) != prev["raw"].get(k))
        cur["row"]["changed_fields"] = fields
        if cur["notice"] == "Award Notice":
            change_type, impact = "awarded", "high"
        elif not cur["active"]:
            change_type, impact = "cancelled", "critical"
        elif cur["notice"] != prev["notice"]:
            change_type, impact = "type_changed", "high"
        elif p.source == "feed":
            change_type, impact = "updated", "medium"
        else:
            change_type, impact = "amended", "high"
        if cur["deadline"] and prev["deadline"] and cur["deadline"] < prev["deadline"]:
            impact = "critical"
        ts = cur["row"]["data_snapshot_timestamp"]
        recent = p.status == "active" and n == count and ts > _at(-7)
        acknowledger = self.user[p.capture] if p.capture else self.user["analyst"]
        change_id = demo_id("external_change", p.key, n)
        self.add(
            "external_data_changes",
            {
                "id": change_id,
                "tenant_id": TENANT_ID,
                "opportunity_project_id": self.pid[p.key],
                "change_timestamp": ts,
                "changed_fields": fields,
                "previous_values": {k: prev["raw"].get(k) for k in fields},
                "new_values": {k: cur["raw"].get(k) for k in fields},
                "change_type": change_type,
                "impact_level": impact,
                "notification_sent": True,
                "acknowledged_by": None if recent else acknowledger,
                "acknowledged_at": None if recent else ts + dt.timedelta(hours=20),
                "acknowledgment_notes": None if recent else _ack_note(change_type, n),
                "external_source_id": self.source[p.source],
                "external_change_id": cur["external_id"],
                "created_at": ts,
            },
        )
        # The triage task the change alert opened (created by the system user, not a person).
        self.add(
            "activities",
            {
                **self._activity_base(p, f"external_change/{n}"),
                "activity_type": "task",
                "subject": f"Assess {_change_label(change_type, n)} impact: {p.name}",
                "description": f"{impact.capitalize()}-impact change detected in {', '.join(fields[:6])}.",
                "activity_date": ts,
                "due_date": ts + dt.timedelta(days=2),
                "completed_date": None if recent else ts + dt.timedelta(hours=20),
                "assigned_to": acknowledger,
                "status": "pending" if recent else "completed",
                "priority": "critical" if impact == "critical" else "high",
                "completion_percentage": 0 if recent else 100,
                "triggered_by_external_change": True,
                "external_change_reference": change_id,
                "tags": ["external_change", change_type],
                "custom_fields": {"versionNumber": n},
                "created_at": ts,
                "updated_at": ts if recent else ts + dt.timedelta(hours=20),
                "created_by": self.system_user,
                "updated_by": None if recent else acknowledger,
            },
        )

    def _project_contacts(self, p: _Project, created: dt.datetime) -> None:
        office = _OFFICES[p.office]
        links = [(office.co, "contracting_officer", 3), (office.customer, "decision_maker", 5)]
        if p.partner:
            partner_contact = next(c.key for c in _CONTACTS if c.org == p.partner)
            links.append((partner_contact, "teaming_partner", 3))
        if p.competitor in ("ironclad", "vector") and _stage_index(p) >= 3:
            rival = "fletcher" if p.competitor == "ironclad" else "sanders"
            links.append((rival, "competitor", 2))
        for i, (contact, relationship, influence) in enumerate(links):
            self.add(
                "opportunity_project_contacts",
                {
                    "id": demo_id("project_contact", p.key, contact, relationship),
                    "tenant_id": TENANT_ID,
                    "opportunity_project_id": self.pid[p.key],
                    "contact_id": self.contact[contact],
                    "relationship_type": relationship,
                    "influence_level": influence,
                    "notes": "Named in the notice as point of contact."
                    if relationship == "contracting_officer"
                    else None,
                    "created_at": created + dt.timedelta(hours=1 + i),
                    "updated_at": created + dt.timedelta(hours=1 + i),
                    "created_by": self.user[p.capture] if p.capture else self.user["analyst"],
                },
            )

    def _polling(self, idx: int, p: _Project) -> None:
        minutes, level = _PRIORITY_POLLING[p.priority]
        last = _at(0, -(idx % 4 + 1) / 6)
        failing = p.source == "feed"
        self.add(
            "polling_configurations",
            {
                "id": demo_id("polling", p.key),
                "tenant_id": TENANT_ID,
                "opportunity_project_id": self.pid[p.key],
                "external_source_id": self.source[p.source],
                "polling_frequency_minutes": minutes,
                "is_active": True,
                "priority_level": level,
                "last_poll_timestamp": last,
                "next_poll_timestamp": last + dt.timedelta(minutes=minutes * (4 if failing else 1)),
                "consecutive_errors": 2 if failing else 0,
                "max_retries": 3,
                "backoff_multiplier": Decimal("2.00"),
                "average_response_time_ms": 1840 if failing else 420 + 37 * idx,
                "success_rate_percentage": Decimal("81.50") if failing else Decimal("99.60"),
                "created_at": _at(-p.age),
                "updated_at": last,
                "created_by": self.system_user,
            },
        )

    def overrides(self) -> None:
        def eod(key: str) -> Row:
            return next(
                r
                for r in self.t["external_opportunity_data"]
                if r["opportunity_project_id"] == self.pid[key] and r["is_current_version"]
            )

        va = eod("va_cloud_ops")
        for key, field, original, value, reason, active, by, when in (
            (
                "cisa_zta",
                "estimated_value_max",
                None,
                95_000_000,
                "Industry day briefing (FY27 budget request) puts the ceiling at $95M.",
                True,
                "capture",
                -40,
            ),
            (
                "va_cloud_ops",
                "response_due_date",
                va["response_due_date"].isoformat(),
                (va["response_due_date"] + dt.timedelta(days=7)).isoformat(),
                "Contracting officer confirmed a one-week extension by email; no amendment posted yet.",
                True,
                "proposal",
                -2,
            ),
            (
                "navsea_shipboard_it",
                "agency_name",
                "Department of the Navy",
                "NAVSEA 03 - Cyber Engineering and Digital Transformation",
                "Track under the requiring directorate, not the department.",
                True,
                "capture",
                -120,
            ),
            (
                "aflcmc_cyber_resiliency",
                "description",
                None,
                "Cyber resiliency engineering for fielded weapon systems (single-award IDIQ, 5 years).",
                "Summary for the pipeline review; superseded by the award notice.",
                False,
                "capture",
                -200,
            ),
        ):
            self.add(
                "opportunity_project_overrides",
                {
                    "id": demo_id("override", key, field),
                    "tenant_id": TENANT_ID,
                    "opportunity_project_id": self.pid[key],
                    "field_name": field,
                    "original_external_value": original,
                    "override_value": value,
                    "override_reason": reason,
                    "is_active": active,
                    "created_at": _at(when),
                    "updated_at": _at(when),
                    "created_by": self.user[by],
                },
            )

    # -- documents ---------------------------------------------------------------------------------------

    def categories(self) -> None:
        created = _at(-420, 2)
        for key, name, parent, description in (
            (
                "market_research",
                "Market Research",
                None,
                "Sources sought, RFIs, forecasts and industry day material.",
            ),
            ("solicitation", "Solicitation", None, "RFP/RFQ documents as published by the Government."),
            ("amendments", "Amendments", "solicitation", "SF-30 amendments and revised attachments."),
            ("capture", "Capture", None, "Bid/no-bid, capture plans, price-to-win and competitor analysis."),
            ("proposal", "Proposal", None, "Proposal volumes, compliance matrices and review comments."),
            ("volumes", "Volumes", "proposal", "Technical, management, past performance and price volumes."),
            ("contract", "Contract", None, "Awards, debriefs and contract modifications."),
        ):
            self.category[key] = demo_id("category", key)
            self.add(
                "document_categories",
                {
                    "id": self.category[key],
                    "tenant_id": TENANT_ID,
                    "name": name,
                    "description": description,
                    "parent_category_id": self.category[parent] if parent else None,
                    "is_system_category": True,
                    "created_at": created,
                    "updated_at": created,
                },
            )

    def document(
        self,
        p: _Project,
        key: str,
        name: str,
        *,
        category: str,
        doc_type: str,
        uploaded_by: uuid.UUID,
        created: dt.datetime,
        access: str = "project_team",
        external: dict[str, Any] | None = None,
        version: int = 1,
        current: bool = True,
        parent: uuid.UUID | None = None,
        tags: tuple[str, ...] = (),
    ) -> uuid.UUID:
        doc_id = demo_id("document", p.key, key)
        ext = name.rsplit(".", 1)[-1].lower()
        mime = {
            "pdf": "application/pdf",
            "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        }[ext]
        self.add(
            "documents",
            {
                "id": doc_id,
                "tenant_id": TENANT_ID,
                "opportunity_project_id": self.pid[p.key],
                "name": name,
                "original_filename": name,
                "file_extension": ext,
                "mime_type": mime,
                "file_size_bytes": 40_000 + doc_id.int % 4_000_000,
                "storage_provider": "s3",
                "storage_region": None,
                "storage_bucket": None,
                "storage_key": f"tenants/{TENANT_ID}/documents/{doc_id}/{name}",
                "storage_url": None,
                "file_hash_md5": None,
                "file_hash_sha256": None,
                "is_encrypted": False,
                "encryption_key_id": None,
                "category_id": self.category[category],
                "document_type": doc_type,
                "document_source": "external" if external else "internal",
                "external_document_id": external["file_id"] if external else None,
                "external_sync_timestamp": created if external else None,
                "is_synced_from_external": bool(external),
                "version_number": version,
                "is_current_version": current,
                "parent_document_id": parent,
                "access_level": access,
                "is_searchable": True,
                "extracted_text": None,
                "content_preview": None,
                "page_count": None,
                "tags": list(tags),
                "custom_metadata": {"samFileId": external["file_id"], "noticeVersion": external["version"]}
                if external
                else {},
                "processing_status": "no_object",
                "is_deleted": False,
                "deleted_at": None,
                "deleted_by": None,
                "uploaded_by": uploaded_by,
                "created_at": created,
                "updated_at": created,
            },
        )
        return doc_id

    def associate(
        self,
        doc_id: uuid.UUID,
        entity_type: str,
        entity_id: uuid.UUID,
        kind: str,
        by: uuid.UUID,
        when: dt.datetime,
    ) -> None:
        self.add(
            "document_associations",
            {
                "id": demo_id("document_association", doc_id, entity_type, entity_id, kind),
                "tenant_id": TENANT_ID,
                "document_id": doc_id,
                "entity_type": entity_type,
                "entity_id": entity_id,
                "association_type": kind,
                "notes": None,
                "created_at": when,
                "created_by": by,
            },
        )

    # -- capture work --------------------------------------------------------------------------------------

    def _review_at(self, p: _Project, stage: str) -> dt.datetime:
        """When a color review happens: a fixed lead time before the response deadline."""
        deadline = self.deadline[p.key]
        assert deadline is not None, p.key
        days = {"pink_team": 24, "red_team": 14, "gold_team": 7, "final_review": 3}[stage]
        return deadline.replace(hour=14) - dt.timedelta(days=days)

    def _submitted_at(self, p: _Project) -> dt.datetime:
        deadline = self.deadline[p.key]
        assert deadline is not None, p.key
        return deadline - dt.timedelta(hours=26)

    def _activity_base(self, p: _Project, key: str) -> Row:
        return {
            "id": demo_id("activity", p.key, key),
            "tenant_id": TENANT_ID,
            "entity_type": "opportunity_project",
            "entity_id": self.pid[p.key],
        }

    def pursuit(self, idx: int, p: _Project) -> None:
        """Documents, activities, capture plan and proposal of one project."""
        stage = _stage_index(p)
        created = _at(-p.age, idx % 7)
        span = AS_OF - created
        owner = self.user[p.capture] if p.capture else self.user["analyst"]
        office = _OFFICES[p.office]
        eods = [v["row"] for v in self.versions[p.key]]
        closed = p.status in _TERMINAL

        # Synced attachments: one document per SAM file, uploaded by the system user.
        for v in self.versions[p.key]:
            for f in v["new_files"]:
                amendment = f["name"].startswith("Amendment")
                if amendment:
                    category = "amendments"
                elif v["notice"] in ("Solicitation", "Combined Synopsis/Solicitation"):
                    category = "solicitation"
                else:
                    category = "market_research"
                self.document(
                    p,
                    f"sam/{f['file_id']}",
                    f["name"],
                    category=category,
                    doc_type="amendment" if amendment else _doc_type(f["name"]),
                    uploaded_by=self.system_user,
                    created=v["row"]["data_snapshot_timestamp"] + dt.timedelta(minutes=5),
                    access="tenant",
                    external=f,
                    tags=("sam.gov",),
                )
        if p.source != "sam":
            self.document(
                p,
                "intel",
                "Customer Meeting Notes.docx",
                category="market_research",
                doc_type="meeting_notes",
                uploaded_by=owner,
                created=created + dt.timedelta(days=1),
                tags=("intel",),
            )

        # Activities along the Shipley lifecycle.
        co = self.contact[office.co]
        customer = self.contact[office.customer]
        self._activity(
            p,
            "qualify",
            "task",
            f"Review notice and qualify: {p.name}",
            "Screen NAICS, set-aside, size standard and past performance fit.",
            created,
            created + dt.timedelta(days=3),
            self.user["analyst"],
            "completed",
            "medium",
        )
        if stage >= 1:
            self._activity(
                p,
                "co_call",
                "call",
                f"Introductory call with {_CONTACT[office.co].first} {_CONTACT[office.co].last} (CO)",
                "Confirmed acquisition strategy and timeline.",
                created + span * 0.15,
                None,
                owner,
                "completed",
                "medium",
                participants=[("user", owner, "organizer"), ("contact", co, "attendee")],
            )
        if stage >= 2:
            decision = "no_go" if p.status == "no_bid" else ("pending" if stage == 2 else "go")
            self._activity(
                p,
                "bid_no_bid",
                "gate_review",
                f"Bid/no-bid gate review: {p.name}",
                f"Gate outcome: {decision.replace('_', ' ')}.",
                created + span * 0.3,
                None,
                owner,
                "completed" if decision != "pending" else "in_progress",
                p.priority,
                participants=[
                    ("user", owner, "presenter"),
                    ("user", self.user["admin"], "approver"),
                    ("user", self.user["viewer"], "attendee"),
                ],
                custom={"gate": "bid_no_bid", "decision": decision},
            )
        if stage >= 3:
            done = stage >= 4 or closed
            self._activity(
                p,
                "blue_team",
                "color_team_review",
                f"Blue team review: {p.name} capture plan",
                "Win strategy, discriminators and teaming reviewed against the customer's hot buttons.",
                created + span * 0.5 if done else _at(10),
                None,
                owner,
                "completed" if done else "pending",
                p.priority,
                participants=[("user", owner, "presenter"), ("contact", customer, "subject")]
                if stage == 3
                else [("user", owner, "presenter")],
            )
        if stage >= 5:
            review = _PROPOSAL_STATUS.get(p.key, "")
            pm = self.user["proposal"]
            self._activity(
                p,
                "pink_team",
                "color_team_review",
                f"Pink team review: {p.name}",
                "Storyboards and annotated outline checked for compliance and win themes.",
                self._review_at(p, "pink_team"),
                None,
                pm,
                "completed",
                p.priority,
                participants=[("user", pm, "organizer"), ("user", owner, "reviewer")],
            )
            red_status = "in_progress" if review == "red_team" else "completed"
            if p.status == "withdrawn":
                red_status = "cancelled"
            self._activity(
                p,
                "red_team",
                "color_team_review",
                f"Red team review: {p.name}",
                "Full draft scored against Section M like the evaluators.",
                self._review_at(p, "red_team"),
                None,
                pm,
                red_status,
                p.priority,
                completion=50 if red_status == "in_progress" else None,
                participants=[
                    ("user", pm, "organizer"),
                    ("user", owner, "reviewer"),
                    ("user", self.user["admin"], "reviewer"),
                ],
            )
        if stage == 5 and p.status == "active":
            self._activity(
                p,
                "gold_team",
                "color_team_review",
                f"Gold team review: {p.name}",
                "Executive approval of price, risk and terms.",
                self._review_at(p, "gold_team"),
                None,
                self.user["proposal"],
                "in_progress" if _PROPOSAL_STATUS[p.key] == "gold_team" else "pending",
                "critical",
            )
        if stage == 6:
            submitted = self._submitted_at(p)
            self._activity(
                p,
                "submitted",
                "milestone",
                f"Proposal submitted: {p.name}",
                "Electronic submission confirmed by the contracting officer.",
                submitted,
                None,
                self.user["proposal"],
                "completed",
                "high",
            )
            if p.status == "lost":
                self._activity(
                    p,
                    "debrief",
                    "meeting",
                    f"Post-award debrief: {p.name}",
                    "Written debrief requested within 3 days of notification (FAR 15.506).",
                    _at(5),
                    None,
                    owner,
                    "pending",
                    "medium",
                    participants=[("user", owner, "organizer"), ("contact", co, "attendee")],
                )
            if p.status == "won":
                self._activity(
                    p,
                    "kickoff",
                    "meeting",
                    f"Post-award kickoff: {p.name}",
                    "Kickoff with the program office and the teaming partner.",
                    _at(12),
                    None,
                    owner,
                    "pending",
                    "high",
                    participants=[("user", owner, "organizer"), ("contact", customer, "attendee")],
                )
        if not closed and stage <= 4:
            nxt = {
                0: "Decide whether to pursue",
                1: "Schedule customer engagement",
                2: "Complete Pwin assessment",
                3: "Finalize teaming agreement",
                4: "Proposal kickoff meeting",
            }[stage]
            self._activity(
                p,
                "next_step",
                "task",
                f"{nxt}: {p.name}",
                None,
                _at(-1),
                _at(7 + idx % 10),
                owner,
                "deferred" if p.status == "on_hold" else "pending",
                p.priority,
            )

        # Capture plan (phase_2 onwards).
        if stage >= 2:
            self._capture_plan(p, created, span, owner)
            bnb = self.document(
                p,
                "bid_no_bid",
                "Bid-No Bid Assessment.xlsx",
                category="capture",
                doc_type="bid_no_bid",
                uploaded_by=self.user["analyst"],
                created=created + span * 0.28,
            )
            self.associate(
                bnb,
                "capture_plan",
                demo_id("capture_plan", p.key, 1),
                "supporting_analysis",
                self.user["analyst"],
                created + span * 0.3,
            )
        if stage >= 3:
            plan_versions = 2 if p.key == "va_cloud_ops" else 1
            parent = None
            for pv in range(1, plan_versions + 1):
                doc = self.document(
                    p,
                    f"capture_plan_v{pv}",
                    f"Capture Plan v{pv}.docx",
                    category="capture",
                    doc_type="capture_plan",
                    uploaded_by=owner,
                    created=created + span * (0.45 + 0.1 * pv),
                    version=pv,
                    current=pv == plan_versions,
                    parent=parent,
                )
                parent = doc
                self.associate(
                    doc,
                    "capture_plan",
                    demo_id("capture_plan", p.key, pv),
                    "primary",
                    owner,
                    created + span * (0.45 + 0.1 * pv),
                )
            if p.priority in ("critical", "high"):
                self.document(
                    p,
                    "ptw",
                    "Price-to-Win Analysis.xlsx",
                    category="capture",
                    doc_type="price_to_win",
                    uploaded_by=owner,
                    created=created + span * 0.55,
                    access="confidential",
                    tags=("ptw", "sensitive"),
                )
        # Proposal (phase_4 onwards).
        if stage >= 4:
            proposal_id = self._proposal(p, created, span, eods)
            matrix = self.document(
                p,
                "compliance_matrix",
                "Compliance Matrix.xlsx",
                category="proposal",
                doc_type="compliance_matrix",
                uploaded_by=self.user["proposal"],
                created=created + span * 0.62,
            )
            self.associate(
                matrix, "proposal", proposal_id, "primary", self.user["proposal"], created + span * 0.62
            )
            if stage >= 5:
                draft = self.document(
                    p,
                    "tech_volume",
                    "Volume I - Technical (Pink Team Draft).docx",
                    category="volumes",
                    doc_type="technical_volume",
                    uploaded_by=self.user["proposal"],
                    created=self._review_at(p, "pink_team") - dt.timedelta(days=2),
                    access="restricted",
                    tags=("pink_team",),
                )
                self.associate(
                    draft,
                    "proposal",
                    proposal_id,
                    "volume",
                    self.user["proposal"],
                    self._review_at(p, "pink_team") - dt.timedelta(days=2),
                )
            if stage == 6:
                final = self.document(
                    p,
                    "final_package",
                    "Final Proposal Package.pdf",
                    category="volumes",
                    doc_type="final_proposal",
                    uploaded_by=self.user["proposal"],
                    created=self._submitted_at(p) - dt.timedelta(hours=1),
                    access="confidential",
                    tags=("submitted",),
                )
                self.associate(
                    final,
                    "proposal",
                    proposal_id,
                    "submission",
                    self.user["proposal"],
                    self._submitted_at(p) - dt.timedelta(hours=1),
                )
                if p.status == "lost":
                    self.document(
                        p,
                        "debrief",
                        "Debrief Request Letter.docx",
                        category="contract",
                        doc_type="debrief",
                        uploaded_by=owner,
                        created=_at(-2),
                    )

    def _activity(
        self,
        p: _Project,
        key: str,
        kind: str,
        subject: str,
        description: str | None,
        when: dt.datetime,
        due: dt.datetime | None,
        assignee: uuid.UUID,
        status: str,
        priority: str,
        *,
        participants: tuple[tuple[str, uuid.UUID, str], ...] | list[tuple[str, uuid.UUID, str]] = (),
        custom: dict[str, Any] | None = None,
        completion: int | None = None,
    ) -> None:
        if status in ("pending", "in_progress") and p.status in _TERMINAL - {"won", "lost"}:
            status = "cancelled"
        if status in ("pending", "in_progress") and p.status == "on_hold":
            status = "deferred"
        pct = completion if completion is not None else {"completed": 100, "in_progress": 50}.get(status, 0)
        updated = when if status == "completed" and when < AS_OF else min(when, AS_OF - dt.timedelta(hours=2))
        created = max(self.created[p.key], min(when, updated) - dt.timedelta(days=2))
        creator = assignee
        row = {
            **self._activity_base(p, key),
            "activity_type": kind,
            "subject": subject[:255],
            "description": description,
            "activity_date": when,
            "due_date": due,
            "completed_date": when if status == "completed" else None,
            "assigned_to": assignee,
            "status": status,
            "priority": priority,
            "completion_percentage": pct,
            "triggered_by_external_change": False,
            "external_change_reference": None,
            "tags": [kind],
            "custom_fields": custom or {},
            "created_at": created,
            "updated_at": max(created, updated),
            "created_by": creator,
            "updated_by": creator if status != "pending" else None,
        }
        self.add("activities", row)
        for ptype, pid, role in participants:
            self.add(
                "activity_participants",
                {
                    "id": demo_id("activity_participant", row["id"], pid),
                    "tenant_id": TENANT_ID,
                    "activity_id": row["id"],
                    "participant_type": ptype,
                    "participant_id": pid,
                    "role": role,
                    "response_status": "accepted"
                    if status == "completed" or ptype == "user"
                    else "tentative",
                    "added_at": row["created_at"],
                    "added_by": creator,
                },
            )

    def _capture_plan(self, p: _Project, created: dt.datetime, span: dt.timedelta, owner: uuid.UUID) -> None:
        stage = _stage_index(p)
        versions = 2 if p.key == "va_cloud_ops" else 1
        competitor = _ORG[p.competitor].name if p.competitor else "no strong incumbent identified"
        partner = _ORG[p.partner].name if p.partner else "no teaming partner"
        for v in range(1, versions + 1):
            superseded = v < versions
            if p.status == "no_bid":
                status, decision = "approved", "no_go"
            elif superseded:
                status, decision = "superseded", "go"
            elif stage == 2:
                status, decision = "draft", "pending"
            elif stage == 3 and p.status == "active":
                status, decision = "in_review", "go"
            else:
                status, decision = "approved", "go"
            made = created + span * (0.3 + 0.1 * v)
            self.add(
                "capture_plans",
                {
                    "id": demo_id("capture_plan", p.key, v),
                    "tenant_id": TENANT_ID,
                    "opportunity_project_id": self.pid[p.key],
                    "plan_name": f"{p.name} Capture Plan" + (f" (v{v})" if versions > 1 else ""),
                    "status": status,
                    "go_no_go_decision": decision,
                    "decision_date": made.date() if decision != "pending" else None,
                    "decision_rationale": {
                        "no_go": p.summary,
                        "go": "Customer access, relevant past performance and a credible teaming partner.",
                        "pending": None,
                    }[decision],
                    "win_strategy": f"Lead with mission outcomes for {_agency(p).name}; "
                    f"team with {partner}; ghost the incumbent's transition risk.",
                    "competitive_analysis": f"Primary competitor: {competitor}; expect pressure on rates.",
                    "external_data_considerations": "Track amendments on SAM.gov; set-aside "
                    f"{p.set_aside or 'none'}, NAICS {p.naics}.",
                    "resource_requirements": "Capture lead 50%, solution architect 25%, pricing analyst 10%.",
                    "timeline": "Blue team -> proposal kickoff -> pink -> red -> gold -> submit.",
                    "external_deadlines": f"Response due {_at(p.due).date().isoformat()}"
                    if p.due is not None
                    else None,
                    "last_external_sync": _at(0, -2) if p.source != "manual" else None,
                    "external_data_impact_notes": "Amendments reviewed; no change to the bid decision."
                    if len(p.notices) > 1
                    else None,
                    "created_at": made,
                    "updated_at": made + dt.timedelta(days=5),
                    "created_by": owner,
                    "updated_by": self.user["admin"] if status == "approved" else None,
                },
            )

    def _proposal(self, p: _Project, created: dt.datetime, span: dt.timedelta, eods: list[Row]) -> uuid.UUID:
        status = _PROPOSAL_STATUS[p.key]
        pid = demo_id("proposal", p.key)
        due = self.deadline[p.key]
        stages = ("pink_team", "red_team", "gold_team", "final_review")
        done, active = _REVIEW_PROGRESS[status]
        reached = done
        reviews = []
        for i, s in enumerate(stages):
            when = self._review_at(p, s)
            state = "completed" if i < done else ("in_progress" if i == done and active else "scheduled")
            if status == "withdrawn" and i >= done:
                state = "cancelled"
            reviews.append({"stage": s, "scheduled": when.date().isoformat(), "status": state})
        matrix = (
            None
            if status == "draft"
            else {
                "rows": [
                    {
                        "ref": "L.3.1",
                        "requirement": "Technical approach, 30-page limit",
                        "volume": "I",
                        "status": "compliant",
                    },
                    {
                        "ref": "L.3.2",
                        "requirement": "Management approach and key personnel",
                        "volume": "II",
                        "status": "compliant" if reached >= 2 else "in_progress",
                    },
                    {
                        "ref": "L.3.3",
                        "requirement": "Three recent and relevant past performance references",
                        "volume": "III",
                        "status": "compliant" if reached >= 3 else "open",
                    },
                    {
                        "ref": "M.2",
                        "requirement": "Technical factor more important than price",
                        "volume": "I",
                        "status": "addressed",
                    },
                ]
            }
        )
        made = created + span * 0.6
        self.add(
            "proposals",
            {
                "id": pid,
                "tenant_id": TENANT_ID,
                "opportunity_project_id": self.pid[p.key],
                "proposal_title": f"{p.title} - Proposal",
                "status": status,
                "proposal_manager": self.user["proposal"],
                "team_members": [
                    str(self.user["proposal"]),
                    str(self.user[p.capture or "capture"]),
                    str(self.user["analyst"]),
                ],
                "submission_date": self._submitted_at(p)
                if status in ("submitted", "awarded", "not_awarded")
                else None,
                "final_submittal_date": due,
                "compliance_matrix": matrix,
                "review_stages": reviews,
                "external_deadline_sync": _at(0, -2),
                "amendment_impact_log": [
                    {
                        "versionNumber": e["version_number"],
                        "changedFields": e["changed_fields"],
                        "impact": "reviewed; outline and compliance matrix updated",
                    }
                    for e in eods
                    if e["version_number"] > 1
                ],
                "created_at": made,
                "updated_at": max(
                    made, _at(-1) if status not in ("awarded", "not_awarded", "withdrawn") else made
                ),
                "created_by": self.user["proposal"],
                "updated_by": self.user["proposal"],
            },
        )
        return pid


def _attachments(p: _Project, version: int, notice: str) -> list[str]:
    """File names the notice version adds to ``resourceLinks``."""
    first_solicitation = notice in ("Solicitation", "Combined Synopsis/Solicitation") and (
        version == 1 or p.notices[version - 2] not in ("Solicitation", "Combined Synopsis/Solicitation")
    )
    if notice == "Sources Sought":
        return ["Sources Sought Notice.pdf"] if version == 1 else [f"Sources Sought Update {version - 1}.pdf"]
    if notice == "Special Notice":
        return ["RFI Questionnaire.docx"]
    if notice == "Presolicitation":
        return (
            ["Draft Performance Work Statement.pdf"]
            if version == 1 or p.notices[version - 2] != notice
            else [f"Draft RFP Q&A Round {version - 1}.pdf"]
        )
    if notice == "Combined Synopsis/Solicitation":
        return ["Combined Synopsis-Solicitation.pdf", "Attachment 1 - Statement of Work.pdf"]
    if first_solicitation:
        return ["RFP.pdf", "Attachment J-1 - Performance Work Statement.pdf", "Sections L and M.pdf"]
    if notice == "Solicitation":
        return [f"Amendment {version - 1:04d} (SF-30).pdf"]
    return []


def _doc_type(name: str) -> str:
    lowered = name.lower()
    for needle, kind in (
        ("sources sought", "sources_sought"),
        ("rfi", "rfi"),
        ("performance work", "pws"),
        ("statement of work", "sow"),
        ("q&a", "questions_and_answers"),
        ("sections l and m", "instructions_and_evaluation"),
        ("synopsis", "solicitation"),
        ("rfp", "solicitation"),
    ):
        if needle in lowered:
            return kind
    return "attachment"


def _change_label(change_type: str, version: int) -> str:
    if change_type == "amended":
        return f"amendment {version - 1:04d}"
    return {
        "type_changed": "notice type change",
        "awarded": "award notice",
        "cancelled": "cancellation",
        "updated": "forecast update",
    }[change_type]


def _ack_note(change_type: str, version: int) -> str:
    return {
        "amended": f"Amendment {version - 1:04d} reviewed; compliance matrix updated, SF-30 acknowledged.",
        "type_changed": "Notice moved to the next stage; pursuit plan updated.",
        "awarded": "Award notice logged; debrief or kickoff scheduled.",
        "cancelled": "Cancellation confirmed with the contracting officer; pursuit closed.",
        "updated": "Forecast revision reviewed; dates updated in the capture plan.",
    }[change_type]


def build_demo(system_user_id: uuid.UUID, manual_source_id: uuid.UUID) -> dict[str, list[Row]]:
    """Every demo row except the tenants row, by table, in insert order (pure, no database)."""
    b = _Builder(system_user_id, manual_source_id)
    b.configuration()
    b.people()
    b.sources()
    b.organizations()
    for i, p in enumerate(_PROJECTS):
        b.project(i, p)
    b.overrides()
    b.categories()
    for i, p in enumerate(_PROJECTS):
        b.pursuit(i, p)
    return b.t


async def seed_demo(engine: AsyncEngine, hasher: PasswordHasher | None = None) -> DemoSummary:
    """Create (or complete) the demo tenant. ``engine`` connects as the schema owner role.

    One transaction: the tenants row (its trigger makes the system user and "Manual entry" source),
    then every other row with ON CONFLICT DO NOTHING. Then the people without a password get
    :data:`DEMO_PASSWORD`, hashed by ``hasher`` (default: the production iteration count). Running
    it again changes nothing.
    """
    async with engine.begin() as conn:
        await set_tenant(conn, TENANT_ID)
        created = await insert_tenant(conn, demo_tenant_row())
        system_user, manual_source = await bootstrap_ids(conn, TENANT_ID)
        tables = build_demo(system_user, manual_source)
        for name in INSERT_ORDER:
            await insert_rows(conn, name, tables[name])
        counts = await count_rows(conn)
    await _set_demo_passwords(engine, hasher or PasswordHasher(PRODUCTION_MIN_ITERATIONS))
    roles = {r.key: r.name for r in SYSTEM_ROLES}
    return DemoSummary(
        tenant_id=TENANT_ID,
        subdomain=SUBDOMAIN,
        created=created,
        users=tuple((p.email, roles[p.role]) for p in _PEOPLE),
        counts=counts,
    )


async def _set_demo_passwords(engine: AsyncEngine, hasher: PasswordHasher) -> None:
    """Give every demo person without a password :data:`DEMO_PASSWORD` (KDF outside the transaction)."""
    people = [demo_id("user", p.key) for p in _PEOPLE]
    async with engine.begin() as conn:
        await set_tenant(conn, TENANT_ID)
        missing = (
            await conn.execute(
                text("SELECT id FROM users WHERE id = ANY(:ids) AND password_hash IS NULL"), {"ids": people}
            )
        ).scalars().all()
    if not missing:
        return
    hashes = await asyncio.gather(*(hasher.hash(DEMO_PASSWORD) for _ in missing))
    async with engine.begin() as conn:
        await set_tenant(conn, TENANT_ID)
        for user_id, password_hash in zip(missing, hashes, strict=True):
            await conn.execute(
                text("UPDATE users SET password_hash = :h WHERE id = :u AND password_hash IS NULL"),
                {"u": user_id, "h": password_hash},
            )
