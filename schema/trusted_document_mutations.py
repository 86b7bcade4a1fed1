"""Registering and listing the tenant's trusted documents (schema/trusted_documents.py; docs/api.md).

`trustedDocumentRegister`, `trustedDocumentUnregister` and `trustedDocuments` need `graphql:document:register`
(docs/permissions.md says who holds it and why). Each mutation is one audited transaction through the
mutation kit: the row is written on the unit of work's connection and its event row
(`graphql.document.registered` / `graphql.document.unregistered`, `document_sha256` and the name in its values) is
appended before COMMIT (docs/decisions.md D32; the table is not audited by the flush hook).

A document is checked when it is registered against the production profile whatever the deployment's:
it parses within 2,000 tokens, passes validation with at most 15 aliases, the selection and overlap
bounds, and holds no introspection (served only to graphql:adhoc). At execution it passes every limit
again, like any document. Registering is idempotent by content: the same text gives the row first
registered, without a second one or a second event. A tenant keeps at most GWM_TRUSTED_DOCUMENTS_MAX
documents; registering more is refused (VALIDATION) until some are unregistered.
"""

from __future__ import annotations

import datetime
import uuid

import strawberry
from graphql import GraphQLSyntaxError, parse, specified_rules, validate
from sqlalchemy import func, select, text

from auth.permissions import Permission
from models.enums import RiskLevel
from models.errors import Invalid, NotFound
from models.trusted_documents import MAX_DOCUMENT_CHARS, document_hash
from models.trusted_documents import TrustedDocument as TrustedDocumentRow
from models.unit_of_work import UnitOfWork
from schema.context import Info
from schema.limits import (
    DEFAULT_MAX_OVERLAPS,
    DEFAULT_MAX_SELECTIONS,
    PRODUCTION,
    count_overlaps,
    count_selections,
    has_introspection,
    without_suggestions,
)
from schema.mutation_kit import Args, Deleted, Done, Entity, mutation
from schema.permissions import requires
from schema.trusted_documents import DEFAULT_MAX_REGISTERED

__all__ = [
    "REGISTERED",
    "TrustedDocument",
    "TrustedDocumentMutation",
    "TrustedDocumentQuery",
    "TrustedDocumentRegisterInput",
    "TrustedDocumentUnregisterInput",
]

REGISTERED = "graphql.document.registered"
UNREGISTERED = "graphql.document.unregistered"
_NAME_LENGTH = 200


@strawberry.type(description="A GraphQL document the tenant registered: callers without graphql:adhoc may run it,"
                 " sent as its text or by its hash (docs/api.md, Trusted documents).")
class TrustedDocument:
    id: uuid.UUID = strawberry.field(description="The registration's id: what `trustedDocumentUnregister` takes.")
    sha256_hash: str = strawberry.field(
        description="The sha256 of the document's exact text (lower-case hex): what a client sends as"
        " `extensions.persistedQuery.sha256Hash`."
    )
    document: str = strawberry.field(description="The document's text, exactly as registered.")
    name: str | None = strawberry.field(description="What the document is for, as its registrant named it.")
    registered_by: uuid.UUID = strawberry.field(description="The rowId of the user who registered it.")
    created_at: datetime.datetime = strawberry.field(description="When it was registered.")

    @classmethod
    def from_row(cls, row: TrustedDocumentRow) -> TrustedDocument:
        return cls(
            id=row.id, sha256_hash=row.sha256_hash, document=row.document, name=row.name,
            registered_by=row.registered_by, created_at=row.created_at,
        )


@strawberry.input(description="Register a GraphQL document for the tenant, so callers without graphql:adhoc may run"
                  " it.")
class TrustedDocumentRegisterInput:
    document: str = strawberry.field(
        description="The document's exact text (its sha256 is what clients send by hash); it must pass the"
        " production limits and validation."
    )
    name: str | None = strawberry.field(default=None, description="What the document is for (at most 200 characters).")
    idempotency_key: str | None = strawberry.field(
        default=None,
        description="1 to 200 characters, yours to choose: registering is idempotent by content anyway (the same"
        " text returns the registration first made, without a second one; docs/api.md, Idempotent creates).",
    )


@strawberry.input(description="Unregister one of the tenant's trusted documents: callers without graphql:adhoc can"
                  " no longer run it.")
class TrustedDocumentUnregisterInput:
    id: uuid.UUID = strawberry.field(description="The registration's id (`TrustedDocument.id`).")


def _checked(document: str, info_schema: object) -> None:
    """Invalid unless `document` passes the production profile's limits and validation."""
    from graphql import GraphQLSchema

    assert isinstance(info_schema, GraphQLSchema)
    if len(document) > MAX_DOCUMENT_CHARS:
        raise Invalid(f"The document is longer than {MAX_DOCUMENT_CHARS} characters.", field="document")
    try:
        parsed = parse(document, no_location=False, max_tokens=PRODUCTION.max_tokens)
    except GraphQLSyntaxError as exc:
        raise Invalid(f"The document does not parse: {exc.message}", field="document") from None
    if count_selections(parsed, DEFAULT_MAX_SELECTIONS) > DEFAULT_MAX_SELECTIONS:
        raise Invalid(f"The document has more than {DEFAULT_MAX_SELECTIONS} field selections.", field="document")
    if count_overlaps(parsed, DEFAULT_MAX_OVERLAPS) > DEFAULT_MAX_OVERLAPS:
        raise Invalid("The document repeats fields under the same name too often.", field="document")
    if has_introspection(parsed):
        raise Invalid(
            f"Introspection (__schema, __type) is served only to callers holding {Permission.GRAPHQL_ADHOC}:"
            " a document holding it cannot be registered.", field="document",
        )
    errors = validate(info_schema, parsed, [*specified_rules, *PRODUCTION.rules])
    if errors:
        without_suggestions(errors)
        raise Invalid(f"The document is not valid: {errors[0].message}", field="document")


async def _lock_registry(uow: UnitOfWork) -> None:
    """One change of the tenant's registry at a time (until COMMIT): the bound holds under concurrent
    registrations, and of two unregistrations of one document the second finds it gone (gwm_app has no
    UPDATE on the table, so no row lock: FOR UPDATE needs that privilege)."""
    await uow.connection.execute(
        text("SELECT pg_advisory_xact_lock(hashtext('gwm.trusted_documents'), hashtext(CAST(:t AS text)))"),
        {"t": str(uow.tenant_id)},
    )


async def _register(uow: UnitOfWork, args: Args[TrustedDocumentRegisterInput]) -> Done:
    value = args.input
    name = value.name.strip() if value.name is not None else None
    if name is not None and not name:
        raise Invalid("The name must not be blank.", field="name")
    if name is not None and len(name) > _NAME_LENGTH:
        raise Invalid(f"The name is longer than {_NAME_LENGTH} characters.", field="name")
    _checked(value.document, args.info.schema._schema)
    sha256 = document_hash(value.document)
    await _lock_registry(uow)
    found = await uow.session.scalar(
        select(TrustedDocumentRow).where(
            TrustedDocumentRow.tenant_id == uow.tenant_id, TrustedDocumentRow.sha256_hash == sha256
        )
    )
    if found is not None:
        return Done(node=TrustedDocument.from_row(found))
    trusted = args.context.trusted
    bound = trusted.max_registered if trusted is not None else DEFAULT_MAX_REGISTERED
    count = await uow.session.scalar(
        select(func.count()).select_from(TrustedDocumentRow).where(TrustedDocumentRow.tenant_id == uow.tenant_id)
    )
    if (count or 0) >= bound:
        raise Invalid(
            f"The tenant has registered {bound} documents, the most it may keep (GWM_TRUSTED_DOCUMENTS_MAX):"
            " unregister one first.", field="document",
        )
    actor = uow.actor_id
    assert actor is not None, "a caller's unit of work names its actor"
    row = TrustedDocumentRow(
        tenant_id=uow.tenant_id, sha256_hash=sha256, document=value.document, name=name, registered_by=actor
    )
    uow.add(row)
    await uow.flush()
    uow.record_event(
        REGISTERED, entity_type="trusted_document", entity_id=row.id, description="trusted document registered",
        details={"document_sha256": sha256, "name": name}, risk=RiskLevel.MEDIUM,
    )
    return Done(node=TrustedDocument.from_row(row))


async def _unregister(uow: UnitOfWork, args: Args[TrustedDocumentUnregisterInput]) -> Done:
    await _lock_registry(uow)
    row = await uow.session.scalar(
        select(TrustedDocumentRow).where(
            TrustedDocumentRow.tenant_id == uow.tenant_id, TrustedDocumentRow.id == args.input.id
        )
    )
    if row is None:
        raise NotFound("No such trusted document.", field="id")
    sha256, name = row.sha256_hash, row.name
    await uow.delete(row)
    await uow.flush()
    uow.record_event(
        UNREGISTERED, entity_type="trusted_document", entity_id=args.input.id,
        description="trusted document unregistered", details={"document_sha256": sha256, "name": name},
        risk=RiskLevel.MEDIUM,
    )
    return Done(id=args.input.id)


@strawberry.type
class TrustedDocumentQuery:
    @strawberry.field(
        description="The tenant's trusted documents (at most GWM_TRUSTED_DOCUMENTS_MAX), oldest first: what callers"
        " without graphql:adhoc may run besides the shipped operations.",
        extensions=[requires(Permission.GRAPHQL_DOCUMENT_REGISTER)],
    )
    async def trusted_documents(self, info: Info) -> list[TrustedDocument] | None:
        db = info.context.loaders.db
        table = TrustedDocumentRow.__table__
        rows = (
            await db.execute(
                select(table).where(table.c.tenant_id == db.tenant_id).order_by(table.c.created_at, table.c.id)
            )
        ).all()
        return [
            TrustedDocument(
                id=row.id, sha256_hash=row.sha256_hash, document=row.document, name=row.name,
                registered_by=row.registered_by, created_at=row.created_at,
            )
            for row in rows
        ]


@strawberry.type
class TrustedDocumentMutation:
    trusted_document_register = mutation(
        "trustedDocumentRegister",
        input=TrustedDocumentRegisterInput,
        input_description="The document to register and what it is for.",
        permission=Permission.GRAPHQL_DOCUMENT_REGISTER,
        run=_register,
        returns=Entity(TrustedDocument, "trusted document registered (or the one registered before with this text)",
                       field="trusted_document"),
        description="Register a GraphQL document for the tenant: callers without graphql:adhoc may then run it, by"
        " text or by its sha256 (docs/api.md, Trusted documents).",
    )
    trusted_document_unregister = mutation(
        "trustedDocumentUnregister",
        input=TrustedDocumentUnregisterInput,
        input_description="The registration to remove.",
        permission=Permission.GRAPHQL_DOCUMENT_REGISTER,
        run=_unregister,
        returns=Deleted("TrustedDocument", "trusted document"),
        description="Unregister a trusted document: callers without graphql:adhoc can no longer run it.",
    )
