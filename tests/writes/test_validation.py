"""The validation registry (resolvers/common/validation.py): every rule refuses with its code and
field path, before anything is written.

Rules with a `sample` (all the rules derived from the models, and the declared ones that carry
one) are shown here by a generated test each: directly through `validate`, and for the entities
that already have domain writes (projects, overrides, capture plans) through those functions too.
Rules without a sample (hierarchy cycles need rows) have their own tests marked `validates(...)`;
tests/writes/test_validation_meta.py fails when a rule has neither.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models import DocumentCategory
from models.audit_trail import AuditContext
from models.db import set_tenant
from models.enums import Priority
from models.errors import Invalid, NotFound
from models.unit_of_work import UnitOfWork
from resolvers.capture.mutations import create_plan, update_plan
from resolvers.common.validation import (
    Failure,
    ReferenceNotFound,
    Rule,
    RuleContext,
    ValidationFailed,
    date_order,
    declare,
    problems,
    range_rule,
    rules,
    validate,
)
from resolvers.opportunities.mutations import create_override, create_project, update_override, update_project
from schema.writes import REDACTION
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef, create_tenant
from tests.support.factories import make
from tests.support.validation import expect_refusal

_SAMPLED = [r for r in rules() if r.sample is not None]
_DOMAIN_ENTITIES = ("opportunity_projects", "opportunity_project_overrides", "capture_plans")
#: Columns a create sets itself whatever the input says (a manual project's sync status).
_SET_BY_CREATE = frozenset({"sync_status"})
_THROUGH_DOMAIN = [r for r in _SAMPLED if r.entity in _DOMAIN_ENTITIES and (r.derived or r.entity != "capture_plans")]


@dataclass(frozen=True, slots=True)
class Targets:
    """Committed rows of a tenant of this module's own, that the tests never change."""

    tenant: TenantRef
    project: Any
    override: Any
    plan: Any
    organizations: tuple[Any, Any, Any]  # root <- child <- grandchild
    categories: tuple[Any, Any]  # parent <- child
    documents: tuple[Any, Any]  # first version <- second version


@pytest.fixture(scope="module")
async def targets(owner_engine: AsyncEngine) -> Targets:
    tenant = await create_tenant(owner_engine, "Validation")
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        project = await make(conn, "opportunity_projects", tenant, external_source_id=tenant.manual_source_id)
        refs = {"opportunity_projects": project.id}
        override = await make(conn, "opportunity_project_overrides", tenant, refs, field_name="title")
        plan = await make(conn, "capture_plans", tenant, refs)
        root = await make(conn, "organizations", tenant)
        child = await make(conn, "organizations", tenant, parent_organization_id=root.id)
        grandchild = await make(conn, "organizations", tenant, parent_organization_id=child.id)
        parent_category = await make(conn, "document_categories", tenant)
        child_category = await make(conn, "document_categories", tenant, parent_category_id=parent_category.id)
        first = await make(conn, "documents", tenant, is_current_version=False)  # one current version per chain
        second = await make(conn, "documents", tenant, parent_document_id=first.id, version_number=2)
    return Targets(tenant, project, override, plan, (root, child, grandchild), (parent_category, child_category),
                   (first, second))


def _uow(engine: AsyncEngine, tenant: TenantRef) -> UnitOfWork:
    context = AuditContext(tenant_id=tenant.id, user_id=tenant.system_user_id, system_process="test",
                           request_id="validation-test")
    return UnitOfWork(engine, chain=TEST_AUDIT_CHAIN, context=context, redaction=REDACTION)


@pytest.fixture
async def uow(app_engine: AsyncEngine, targets: Targets) -> AsyncIterator[UnitOfWork]:
    """An open unit of work of the module's tenant, rolled back at the end (nothing is written)."""
    unit = _uow(app_engine, targets.tenant)
    await unit.__aenter__()
    try:
        yield unit
    finally:
        await unit.rollback()


async def _count(engine: AsyncEngine, tenant: TenantRef, table: str) -> int:
    async with engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        found: int = (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
        await conn.rollback()
    return found


@pytest.mark.parametrize("rule", _SAMPLED, ids=lambda r: r.id)
async def test_every_sampled_rule_refuses_its_sample(rule: Rule, uow: UnitOfWork) -> None:
    assert rule.sample is not None
    with pytest.raises((ValidationFailed, ReferenceNotFound)) as refused:
        await validate(uow, rule.entity, rule.sample)
    expect_refusal(refused, rule.id, field=rule.field, code=rule.code)
    # Under a prefix (an entry of a list), the path carries it.
    with pytest.raises((ValidationFailed, ReferenceNotFound)) as nested:
        await validate(uow, rule.entity, rule.sample, under="entries.3")
    expect_refusal(nested, rule.id, field=f"entries.3.{rule.field}", code=rule.code)


@pytest.mark.parametrize("rule", _THROUGH_DOMAIN, ids=lambda r: r.id)
async def test_the_domain_writes_refuse_before_writing(
    rule: Rule, app_engine: AsyncEngine, owner_engine: AsyncEngine, targets: Targets
) -> None:
    """Through the domain functions of the existing mutations: the same rule, code and field, and
    nothing written (a null goes through the update, as creates drop unset values, and so does a
    column the create sets itself)."""
    assert rule.sample is not None
    sample = dict(rule.sample)
    updating = any(v is None for v in sample.values()) or bool(_SET_BY_CREATE & set(sample))
    before = await _count(owner_engine, targets.tenant, rule.entity)
    with pytest.raises((ValidationFailed, ReferenceNotFound)) as refused:
        async with _uow(app_engine, targets.tenant) as unit:
            if rule.entity == "opportunity_projects":
                if updating:
                    await update_project(unit, targets.project.id, None, sample)
                else:
                    base = {"project_name": "Validated", "external_opportunity_id": "V-1"}
                    await create_project(unit, {**base, **sample})
            elif rule.entity == "opportunity_project_overrides":
                if updating:
                    await update_override(unit, targets.override.id, None, sample)
                else:
                    base = {"opportunity_project_id": targets.project.id, "field_name": "description",
                            "override_value": "text"}
                    await create_override(unit, {**base, **sample})
            elif updating:
                await update_plan(unit, targets.plan.id, None, sample)
            else:
                await create_plan(unit, {"opportunity_project_id": targets.project.id, "plan_name": "Plan", **sample})
    expect_refusal(refused, rule.id, field=rule.field, code=rule.code)
    assert await _count(owner_engine, targets.tenant, rule.entity) == before


@pytest.mark.validates("organizations.parent_organization_id.cycle")
async def test_an_organization_cannot_become_its_own_ancestor(uow: UnitOfWork, targets: Targets) -> None:
    root, child, grandchild = targets.organizations
    rule = "organizations.parent_organization_id.cycle"
    for row, parent in ((root, grandchild), (root, child), (child, grandchild), (root, root)):
        with pytest.raises(ValidationFailed) as refused:
            await validate(uow, "organizations", {"parent_organization_id": parent.id}, row=row)
        expect_refusal(refused, rule, field="parent_organization_id", code="VALIDATION")
    # Moving within the tree without closing a loop, detaching, and a new row are fine.
    await validate(uow, "organizations", {"parent_organization_id": root.id}, row=grandchild)
    await validate(uow, "organizations", {"parent_organization_id": None}, row=child)
    await validate(uow, "organizations", {"parent_organization_id": grandchild.id})


@pytest.mark.validates("document_categories.parent_category_id.cycle")
async def test_a_document_category_cannot_become_its_own_ancestor(uow: UnitOfWork, targets: Targets) -> None:
    parent, child = targets.categories
    for row, new_parent in ((parent, child), (child, child)):
        with pytest.raises(ValidationFailed) as refused:
            await validate(uow, "document_categories", {"parent_category_id": new_parent.id}, row=row)
        expect_refusal(refused, "document_categories.parent_category_id.cycle", field="parent_category_id",
                       code="VALIDATION")
    await validate(uow, "document_categories", {"parent_category_id": parent.id}, row=child)


@pytest.mark.validates("documents.parent_document_id.cycle")
async def test_a_document_version_chain_has_no_loop(uow: UnitOfWork, targets: Targets) -> None:
    first, second = targets.documents
    with pytest.raises(ValidationFailed) as refused:
        await validate(uow, "documents", {"parent_document_id": second.id}, row=first)
    expect_refusal(refused, "documents.parent_document_id.cycle", field="parent_document_id", code="VALIDATION")
    await validate(uow, "documents", {"parent_document_id": first.id}, row=second)


async def test_another_tenants_row_is_no_reference(
    uow: UnitOfWork, owner_engine: AsyncEngine, targets: Targets
) -> None:
    other = await create_tenant(owner_engine, "Validation elsewhere")
    async with owner_engine.begin() as conn:
        await set_tenant(conn, other.id)
        foreign_project = await make(conn, "opportunity_projects", other, external_source_id=other.manual_source_id)
    with pytest.raises(ValidationFailed) as refused:
        await validate(uow, "opportunity_projects", {"assigned_capture_manager": other.system_user_id})
    expect_refusal(refused, "opportunity_projects.assigned_capture_manager.reference",
                   field="assigned_capture_manager", code="VALIDATION")
    with pytest.raises(ReferenceNotFound) as missing:
        await validate(uow, "capture_plans", {"opportunity_project_id": foreign_project.id})
    expect_refusal(missing, "capture_plans.opportunity_project_id.reference", field="opportunity_project_id",
                   code="NOT_FOUND")
    # The tenant's own rows pass.
    await validate(uow, "opportunity_projects", {"assigned_capture_manager": targets.tenant.system_user_id,
                                                 "assigned_team_members": [targets.tenant.system_user_id]})
    await validate(uow, "capture_plans", {"opportunity_project_id": targets.project.id})


async def test_valid_values_pass_and_every_failure_can_be_listed(uow: UnitOfWork) -> None:
    values = {"project_name": "Fine", "priority_level": Priority.HIGH, "win_probability_score": Decimal("99.99"),
              "pipeline_stage": "phase_2"}
    await validate(uow, "opportunity_projects", values)
    assert await problems(uow, "opportunity_projects", values) == []
    found = await problems(uow, "opportunity_projects", {
        "project_name": "x" * 300, "priority_level": "urgent", "win_probability_score": Decimal(-5),
        "assigned_capture_manager": uuid.uuid4(),
    })
    assert [(e.rule, e.field) for e in found] == [
        ("opportunity_projects.priority_level.enum", "priority_level"),
        ("opportunity_projects.project_name.length", "project_name"),
        ("opportunity_projects.win_probability_score.range", "win_probability_score"),
        ("opportunity_projects.assigned_capture_manager.reference", "assigned_capture_manager"),
    ]
    # validate raises the first; both error classes are the domain's, so payloads map them as before.
    with pytest.raises(ValidationFailed) as first:
        await validate(uow, "opportunity_projects", {"project_name": "x" * 300, "priority_level": "urgent"})
    assert first.value.rule == "opportunity_projects.priority_level.enum"
    assert isinstance(first.value, Invalid) and issubclass(ReferenceNotFound, NotFound)
    # One failure per field: a list naming someone twice is not also looked up.
    twice = [uuid.uuid4()] * 2
    assert [e.rule for e in await problems(uow, "opportunity_projects", {"assigned_team_members": twice})] == [
        "opportunity_projects.assigned_team_members.unique"
    ]
    # An entity without rules accepts anything.
    await validate(uow, "no_such_entity", {"anything": object()})


async def test_declared_rules_compare_merged_values_and_ids_are_unique(uow: UnitOfWork) -> None:
    taken = rules()[0]
    with pytest.raises(ValueError, match="declared twice"):
        declare(taken)
    size = range_rule("validation_test_entries", "size", low=1, high=3)
    assert size.id == "validation_test_entries.size.range"
    assert await size.check(RuleContext(uow, size.entity, {"size": 2}, None)) is None
    assert await size.check(RuleContext(uow, size.entity, {"size": 4}, None)) is not None
    assert await size.check(RuleContext(uow, size.entity, {"size": "many"}, None)) is not None

    order = date_order("validation_test_spans", "starts_on", "ends_on")
    assert order.id == "validation_test_spans.ends_on.order" and order.sample is None  # no columns to type it by
    row = SimpleNamespace(id=uuid.uuid4(), starts_on=date(2030, 1, 10), ends_on=date(2030, 1, 20))

    async def check(values: dict[str, Any]) -> Failure | None:
        return await order.check(RuleContext(uow, order.entity, values, row))

    assert await check({"ends_on": date(2030, 1, 10)}) is None  # the same day is in order
    assert await check({"starts_on": date(2030, 1, 21)}) == Failure("ends on must not be before starts on.",
                                                                    field="starts_on")
    assert await check({"ends_on": datetime(2030, 1, 9, 23, tzinfo=UTC)}) == Failure(
        "ends on must not be before starts on.", field="ends_on")
    assert await check({"ends_on": None}) is None


@pytest.mark.validates("document_categories.parent_category_id.cycle")
async def test_two_concurrent_reparentings_cannot_close_a_loop_together(
    app_engine: AsyncEngine, owner_engine: AsyncEngine
) -> None:
    """A under B and B under A, at once: each would pass alone. The cycle rule takes the tenant's
    hierarchy lock, so the second waits for the first to commit, then sees its parent and refuses."""
    tenant = await create_tenant(owner_engine, "Validation hierarchy")
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        a = await make(conn, "document_categories", tenant)
        b = await make(conn, "document_categories", tenant)

    first = _uow(app_engine, tenant)
    await first.__aenter__()
    try:
        category = await first.lock(DocumentCategory, a.id)
        await validate(first, "document_categories", {"parent_category_id": b.id}, row=category)
        first.assign(category, {"parent_category_id": b.id})
        await first.flush()

        async def second() -> None:
            async with _uow(app_engine, tenant) as unit:
                other = await unit.lock(DocumentCategory, b.id)
                await validate(unit, "document_categories", {"parent_category_id": a.id}, row=other)
                unit.assign(other, {"parent_category_id": a.id})

        waiting = asyncio.create_task(second())
        await asyncio.sleep(0.5)
        assert not waiting.done()  # queued on the hierarchy lock
        await first.commit()
    finally:
        await first.rollback()
    with pytest.raises(ValidationFailed) as refused:
        await waiting
    expect_refusal(refused, "document_categories.parent_category_id.cycle", field="parent_category_id",
                   code="VALIDATION")
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        found = await conn.execute(text("SELECT id, parent_category_id FROM document_categories"))
        parents: dict[uuid.UUID, uuid.UUID | None] = {row.id: row.parent_category_id for row in found}
    assert parents == {a.id: b.id, b.id: None}
