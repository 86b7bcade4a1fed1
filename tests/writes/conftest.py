"""Fixtures for audited writes: the app over HTTP, callers by role, rows and their audit trail.

Every test here works on committed data under a tenant of its own (`fresh_tenant`): a mutation
commits in its own transaction, and its audit rows are read back as the schema owner.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from models.db import set_tenant
from server.app import create_app
from tests.conftest import Database
from tests.support.db import TenantRef
from tests.support.factories import make
from tests.support.graphql import gql, sign_in
from tests.support.http import LoginUser, app_client, make_login_user, test_settings


@pytest.fixture(scope="module")
def write_app(database: Database) -> Starlette:
    return create_app(test_settings(database.app_url))


@pytest.fixture
async def client(write_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(write_app) as http:
        yield http


@dataclass(frozen=True, slots=True)
class Caller:
    user: LoginUser
    token: str

    @property
    def id(self) -> uuid.UUID:
        return self.user.id


SignIn = Callable[..., Awaitable[Caller]]


@pytest.fixture
def sign_in_as(client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> SignIn:
    """`await sign_in_as("Capture Manager")`: a new user of the tenant with those roles, signed in.

    `on_project=` grants the roles on that project only.
    """

    async def sign(*roles: str, on_project: uuid.UUID | None = None) -> Caller:
        user = await make_login_user(owner_engine, fresh_tenant, roles=() if on_project else roles)
        if on_project is not None:
            async with owner_engine.begin() as conn:
                await set_tenant(conn, fresh_tenant.id)
                for role in roles:
                    await conn.execute(
                        text(
                            "INSERT INTO user_roles (tenant_id, user_id, role_id, opportunity_project_id, assigned_by)"
                            " SELECT :t, :u, id, :p, :by FROM roles WHERE tenant_id = :t AND name = :r"
                        ),
                        {"t": fresh_tenant.id, "u": user.id, "p": on_project, "r": role,
                         "by": fresh_tenant.system_user_id},
                    )
        return Caller(user, await sign_in(client, user))

    return sign


@pytest.fixture
def rows(owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> Rows:
    return Rows(owner_engine, fresh_tenant)


class Rows:
    """Committed rows of the test's tenant, made and read as the schema owner."""

    def __init__(self, engine: AsyncEngine, tenant: TenantRef) -> None:
        self.engine = engine
        self.tenant = tenant

    async def make(self, table: str, refs: dict[str, Any] | None = None, **values: Any) -> Any:
        async with self.engine.begin() as conn:
            await set_tenant(conn, self.tenant.id)
            return await make(conn, table, self.tenant, refs, **values)

    async def project(self, **values: Any) -> Any:
        return await self.make("opportunity_projects", **values)

    async def all(self, sql: str, **params: Any) -> list[Any]:
        async with self.engine.connect() as conn:
            await set_tenant(conn, self.tenant.id)
            result = (await conn.execute(text(sql), {"t": self.tenant.id, **params})).all()
            await conn.rollback()
        return list(result)

    async def one(self, sql: str, **params: Any) -> Any:
        found = await self.all(sql, **params)
        assert len(found) == 1, found
        return found[0]

    async def audit(self, entity_id: uuid.UUID | None = None, *, action: str | None = None) -> list[Any]:
        """The audit_logs rows of the tenant's writes (not auth events), oldest first."""
        where = ["tenant_id = :t", "action_type NOT LIKE 'auth.%'"]
        if entity_id is not None:
            where.append("entity_id = :e")
        if action is not None:
            where.append("action_type = :a")
        return await self.all(
            f"SELECT * FROM audit_logs WHERE {' AND '.join(where)} ORDER BY seq", e=entity_id, a=action
        )

    async def history(self, entity_id: uuid.UUID | None = None) -> list[Any]:
        where = "tenant_id = :t" + ("" if entity_id is None else " AND entity_id = :e")
        return await self.all(f"SELECT * FROM change_history WHERE {where} ORDER BY seq", e=entity_id)

    async def denials(self) -> list[Any]:
        return await self.all(
            "SELECT * FROM audit_logs WHERE tenant_id = :t AND action_type = 'auth.access.denied' ORDER BY seq"
        )


async def mutate(
    client: httpx.AsyncClient, caller: Caller, document: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The `data` of a mutation that must not raise a top-level error."""
    body = await gql(client, document, variables, token=caller.token)
    data: dict[str, Any] = body["data"]
    return data


async def refused(
    client: httpx.AsyncClient, caller: Caller, document: str, variables: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The top-level errors of a mutation that must raise some."""
    body = await gql(client, document, variables, token=caller.token, errors=True)
    errors: list[dict[str, Any]] = body["errors"]
    return errors


def codes(errors: Sequence[dict[str, Any]]) -> list[str]:
    return [e.get("extensions", {}).get("code") for e in errors]
