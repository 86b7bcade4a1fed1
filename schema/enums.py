"""Every value set of models/enums.py registered once as a GraphQL enum.

A class can be registered with strawberry only once; registering all of them here, imported by
every domain module before its types, keeps the SDL independent of which module loads first.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

import strawberry

from models import enums as e

__all__: list[str] = ["describe_values"]

_DESCRIPTIONS = {
    e.PipelineStage: "The capture lifecycle phase (Shipley-style 0..6).",
    e.ProjectStatus: "Whether and how the pursuit goes on.",
    e.Priority: "How urgent the work is.",
    e.SyncStatus: "The state of the project's last refresh from its external source.",
    e.ConnectionStatus: "A source's health as the poller sees it.",
    e.ChangeType: "What the external source did to the opportunity.",
    e.ImpactLevel: "How much a change matters.",
    e.PollingPriority: "Which due polls are served first.",
    e.ActivityStatus: "Where an activity stands.",
    e.ParticipantType: "What an activity participant is: a user or a contact.",
    e.ProcessingStatus: "Text extraction and indexing of a document's stored object.",
    e.ScanStatus: "The malware scan of a document's stored file.",
    e.AccessLevel: "Who in the tenant may read a document.",
    e.CapturePlanStatus: "Where a capture plan is in its review.",
    e.GoNoGoDecision: "The bid decision of a capture plan.",
    e.ProposalStatus: "A proposal's progress through the colour-team reviews to award.",
    e.EntityType: "The entity kinds a polymorphic reference can name.",
    e.ChangeSource: "Who or what made a change.",
    e.RiskLevel: "The risk of an audited action.",
    e.CandidateStatus: "What became of a notice a saved search found.",
}

# The meaning of every value, from docs/enums.md (tests/test_schema_descriptions.py holds the two
# together): GraphiQL shows it next to the value.
_VALUES: dict[type[Enum], dict[str, str]] = {
    e.PipelineStage: {
        "PHASE_0": "Identified: a lead from SAM.gov, a forecast or intelligence, not yet qualified."
        " Exit gate: opportunity qualification.",
        "PHASE_1": "Positioning: pre-RFP customer engagement, RFI / sources-sought responses."
        " Exit gate: bid pursuit decision.",
        "PHASE_2": "Assessment: pursuit approved, Pwin and fit being scored. Exit gate: bid/no-bid"
        " (go/no-go).",
        "PHASE_3": "Capture planning: capture plan, teaming, price-to-win, Blue / Black Hat reviews."
        " Exit gate: proposal kickoff.",
        "PHASE_4": "Proposal planning: compliance matrix, outline, storyboards, kickoff. Exit gate:"
        " bid validation (final RFP).",
        "PHASE_5": "Proposal development: Pink / Red / Gold / White Glove reviews. Exit gate: final"
        " review, approval to submit.",
        "PHASE_6": "Post-submittal: submitted, evaluation notices, orals, final proposal revision,"
        " awaiting award. Exit gate: award decision.",
    },
    e.ProjectStatus: {
        "ACTIVE": "Being pursued.",
        "ON_HOLD": "Paused by the tenant; may resume.",
        "WON": "Awarded to the tenant (or its team).",
        "LOST": "Awarded to someone else.",
        "NO_BID": "The tenant decided not to bid.",
        "CANCELLED_BY_GOVERNMENT": "The government cancelled the opportunity.",
        "WITHDRAWN": "The tenant withdrew after bidding or committing to bid.",
    },
    e.Priority: {
        "LOW": "Do when convenient.",
        "MEDIUM": "Normal (the default).",
        "HIGH": "Ahead of normal work.",
        "CRITICAL": "Needs attention now (e.g. a deadline at risk).",
    },
    e.PollingPriority: {
        "LOW": "Served after the others (e.g. a project in post-submittal).",
        "NORMAL": "Served in due order (the default).",
        "HIGH": "Served first (e.g. a response deadline is near).",
    },
    e.SyncStatus: {
        "PENDING": "Never synced yet, or a refresh is due.",
        "SYNCING": "A worker is refreshing it now.",
        "SYNCED": "The last refresh succeeded (`lastSyncedAt`).",
        "ERROR": "The last refresh failed (`syncErrorMessage`).",
        "MANUAL": "Not synced: the project belongs to the tenant's \"Manual entry\" source.",
    },
    e.ConnectionStatus: {
        "UNKNOWN": "No call made yet.",
        "HEALTHY": "Recent calls succeed.",
        "DEGRADED": "Some calls fail or are slow / rate-limited.",
        "FAILING": "Calls fail consecutively (`consecutiveErrors`, `lastErrorMessage`).",
        "DISABLED": "Switched off by an administrator or after too many failures.",
    },
    e.ActivityStatus: {
        "PENDING": "Not started.",
        "IN_PROGRESS": "Started (`completionPercentage` tracks how far).",
        "COMPLETED": "Done (`completedDate`).",
        "CANCELLED": "Will not be done.",
        "DEFERRED": "Postponed to a later date.",
    },
    e.CapturePlanStatus: {
        "DRAFT": "Being written.",
        "IN_REVIEW": "Under review (e.g. the Blue team).",
        "APPROVED": "Approved; the plan of record.",
        "SUPERSEDED": "Replaced by a newer plan for the same project.",
    },
    e.GoNoGoDecision: {
        "PENDING": "The decision is scheduled or under discussion (null: no decision recorded yet).",
        "GO": "Bid.",
        "NO_GO": "Do not bid (the project's status usually becomes NO_BID).",
    },
    e.ProposalStatus: {
        "DRAFT": "Created, not yet planned.",
        "PLANNING": "Proposal planning: compliance matrix, outline, storyboards.",
        "PINK_TEAM": "In or after the Pink team review (early draft: structure, compliance, themes).",
        "RED_TEAM": "In or after the Red team review (near-final draft scored against Section M).",
        "GOLD_TEAM": "In or after the Gold team review (executive approval of price, risk, terms).",
        "FINAL_REVIEW": "Final production and compliance check (White Glove).",
        "SUBMITTED": "Submitted to the government (`submissionDate`).",
        "AWARDED": "The government awarded the contract to this proposal.",
        "NOT_AWARDED": "The government awarded it elsewhere.",
        "WITHDRAWN": "Withdrawn by the tenant.",
    },
    e.ProcessingStatus: {
        "PENDING": "Waiting for a worker.",
        "PROCESSING": "A worker is extracting its text now.",
        "COMPLETED": "`extractedText` is filled: the document is searchable by content.",
        "FAILED": "Extraction failed; the file is stored but not searchable by content.",
        "NO_OBJECT": "The storage object was not found (e.g. an upload that never completed).",
    },
    e.ScanStatus: {
        "QUARANTINED": "Not yet found clean by the scanner: the file is not served.",
        "CLEAN": "The scanner found nothing (or none is configured: then `scanReason` says so); the file can be"
        " downloaded.",
        "INFECTED": "The scanner found a threat (named in `scanReason`); the file is kept but never served.",
    },
    e.ImpactLevel: {
        "INFORMATIONAL": "Cosmetic: whitespace, case, punctuation, typo-level edits.",
        "LOW": "Administrative fields: archive date, office address, links.",
        "MEDIUM": "Substantive text: description, points of contact, place of performance, title.",
        "HIGH": "A new amendment, a deadline extension, attachments added or removed, notice type or"
        " NAICS changed. Needs acknowledgement.",
        "CRITICAL": "Response deadline moved earlier, notice cancelled or withdrawn, set-aside changed,"
        " notice disappeared. Needs acknowledgement.",
    },
    e.ChangeType: {
        "CREATED": "First seen.",
        "AMENDED": "A new amendment (new version in the notice's lineage).",
        "UPDATED": "Fields changed without a new amendment.",
        "TYPE_CHANGED": "The notice type changed (e.g. presolicitation to solicitation: the RFP is out).",
        "AWARDED": "An award notice was posted.",
        "ARCHIVED": "The source archived the notice.",
        "CANCELLED": "The source cancelled the notice.",
        "REMOVED": "The notice no longer appears at the source.",
    },
    e.AccessLevel: {
        "TENANT": "Every user of the tenant holding document:read, on any project or tenant-wide.",
        "PROJECT_TEAM": "Users holding document:read on the document's project, or tenant-wide (a document"
        " without a project: tenant-wide only).",
        "RESTRICTED": "As project_team, and only its named readers and its uploader: no one else, whatever"
        " their roles.",
        "CONFIDENTIAL": "As restricted; every content read and download of it is logged at elevated risk.",
    },
    e.RiskLevel: {
        "LOW": "Routine reads and writes.",
        "MEDIUM": "Changes to shared or external-facing data, failed sign-ins.",
        "HIGH": "Security-relevant: role or permission changes, credential changes, denials of sensitive"
        " data.",
        "CRITICAL": "Possible attack or breach: lockouts, cross-tenant attempts, secret exports.",
    },
    e.ChangeSource: {
        "USER": "A person, through the API (`changedBy`).",
        "EXTERNAL_SYNC": "The sync worker applying the external source's data.",
        "SYSTEM": "Automated logic of the gateway (`changedBySystemProcess`), e.g. the tenant's system"
        " user.",
        "IMPORT": "A bulk import or seed.",
    },
    e.ParticipantType: {
        "USER": "A user of the tenant.",
        "CONTACT": "An external contact.",
    },
    e.CandidateStatus: {
        "NEW": "Found, waiting for a decision.",
        "DISMISSED": "Dismissed: not worth pursuing; it is not listed as new again.",
        "TRACKED": "Tracked: it became an opportunity project (or one already tracks its lineage).",
    },
}
_ENTITY_TYPES = {
    "TENANT": "The tenant itself (its account and settings) (table tenants).",
    "TENANT_CONFIGURATION": "A tenant configuration setting (table tenant_configurations).",
    "USER": "A user account (table users).",
    "ROLE": "A role (a named set of permissions) (table roles).",
    "USER_ROLE": "A role assignment of a user, tenant-wide or on one project (table user_roles).",
    "USER_SESSION": "A sign-in session (table user_sessions).",
    "EXTERNAL_OPPORTUNITY_SOURCE": "An external opportunity source (e.g. SAM.gov)"
    " (table external_opportunity_sources).",
    "OPPORTUNITY_PROJECT": "An opportunity project (a pursuit) (table opportunity_projects).",
    "EXTERNAL_OPPORTUNITY_DATA": "A version of an opportunity as its external source published it"
    " (table external_opportunity_data).",
    "OPPORTUNITY_PROJECT_OVERRIDE": "A local override of one field of a project"
    " (table opportunity_project_overrides).",
    "ORGANIZATION": "An organization (agency, prime, partner, competitor) (table organizations).",
    "CONTACT": "A contact person (table contacts).",
    "OPPORTUNITY_PROJECT_CONTACT": "A contact's role on a project (table opportunity_project_contacts).",
    "DOCUMENT_CATEGORY": "A document category (table document_categories).",
    "DOCUMENT": "A document (table documents).",
    "DOCUMENT_ASSOCIATION": "A link of a document to a record (table document_associations).",
    "DOCUMENT_ACCESS_LOG": "A logged access to a document (table document_access_logs).",
    "ACTIVITY": "An activity (task, meeting, call...) (table activities).",
    "ACTIVITY_PARTICIPANT": "A participant of an activity (table activity_participants).",
    "CAPTURE_PLAN": "A capture plan (table capture_plans).",
    "PROPOSAL": "A proposal (table proposals).",
    "AUDIT_LOG": "An audit log entry (table audit_logs).",
    "CHANGE_HISTORY": "A change history entry (table change_history).",
    "PERMISSION_AUDIT": "A permission audit entry (a refused access) (table permission_audit).",
    "POLLING_CONFIGURATION": "The polling schedule of a project's external source (table polling_configurations).",
    "API_INTEGRATION_LOG": "A logged call to an external source's API (table api_integration_logs).",
    "EXTERNAL_DATA_CHANGE": "A detected change of an external opportunity (table external_data_changes).",
    "SAVED_SEARCH": "A saved opportunity search of the tenant (table saved_searches).",
    "SAVED_SEARCH_CANDIDATE": "A notice a saved search found (table saved_search_candidates).",
}
_ATTACHABLE = " Activities and documents can be attached to it."
_VALUES[e.EntityType] = {
    name: what + (_ATTACHABLE if e.EntityType[name] in e.ACTIVITY_ENTITY_TYPES else "")
    for name, what in _ENTITY_TYPES.items()
}

for _enum, _description in _DESCRIPTIONS.items():
    strawberry.enum(_enum, description=_description)


def describe_values(enum: type[Enum], descriptions: Mapping[str, str]) -> None:
    """Give the GraphQL values of a registered enum their descriptions, by member name.

    Every member needs one (a KeyError names the first without), so a new value cannot reach the
    schema undescribed.
    """
    definition = enum.__strawberry_definition__  # type: ignore[attr-defined]
    for value in definition.values:
        value.description = descriptions[enum(value.value).name]


for _value_set, _values in _VALUES.items():
    describe_values(_value_set, _values)
