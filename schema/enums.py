"""Every value set of models/enums.py registered once as a GraphQL enum.

A class can be registered with strawberry only once; registering all of them here, imported by
every domain module before its types, keeps the SDL independent of which module loads first.
"""

from __future__ import annotations

import strawberry

from models import enums as e

__all__: list[str] = []

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
    e.AccessLevel: "Who in the tenant may read a document.",
    e.CapturePlanStatus: "Where a capture plan is in its review.",
    e.GoNoGoDecision: "The bid decision of a capture plan.",
    e.ProposalStatus: "A proposal's progress through the colour-team reviews to award.",
    e.EntityType: "The entity kinds a polymorphic reference can name.",
    e.ChangeSource: "Who or what made a change.",
    e.RiskLevel: "The risk of an audited action.",
}

for _enum, _description in _DESCRIPTIONS.items():
    strawberry.enum(_enum, description=_description)
