"""Access levels on the subscription path: a change to a restricted document never reaches a subscriber
outside its readers (changeBatchCommitted's entities and changes), against a real uvicorn on 127.0.0.1
with the process's listener and bus. A change to an open document of the same project reaches the same
subscriber (the check is not vacuous)."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from models.db import set_tenant
from tests.conftest import Database
from tests.live.ws_support import LiveServer, WsClient, live_server, ws_connect
from tests.support.db import create_tenant
from tests.support.factories import make
from tests.support.http import make_login_user

pytestmark = pytest.mark.server

BATCHES = (
    "subscription($t: [EntityType!]) { changeBatchCommitted(entityTypes: $t) { batchId"
    " entities { entityType entityId nodeId } changes { entityId fieldName newValue } } }"
)
RENAME = """
mutation ($input: DocumentUpdateInput!) { documentUpdate(input: $input) { document { rowId } errors { code } } }
"""


def _gid(type_name: str, row_id: uuid.UUID) -> str:
    return base64.b64encode(f"{type_name}:{row_id}".encode()).decode()


async def _subscriber(server: LiveServer, token: str) -> WsClient:
    cm = ws_connect(server)
    client = await cm.__aenter__()
    client.cm = cm  # type: ignore[attr-defined]
    assert (await client.init({"authorization": f"Bearer {token}"}))["type"] == "connection_ack"
    await client.subscribe("s", BATCHES, {"t": ["DOCUMENT"]})
    return client


async def _rename(server: LiveServer, token: str, document: Any, name: str) -> None:
    variables = {"input": {"rowId": str(document.id), "updatedAt": document.updated_at.isoformat(), "name": name}}
    body = await server.graphql(token, RENAME, variables)
    assert body["data"]["documentUpdate"]["errors"] == [], body


async def test_a_restricted_documents_change_reaches_no_subscriber_outside_its_readers(
    database: Database, owner_engine: AsyncEngine
) -> None:
    import asyncio

    tenant = await create_tenant(owner_engine, "Live access levels")
    uploader = await make_login_user(owner_engine, tenant, roles=("Capture Manager",))
    admin = await make_login_user(owner_engine, tenant, roles=("Tenant Admin",))
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        project = await make(conn, "opportunity_projects", tenant)
        refs = {"opportunity_projects": project.id}
        secret = await make(conn, "documents", tenant, refs, opportunity_project_id=project.id,
                            access_level="confidential", uploaded_by=uploader.id, name="Pricing volume")
        open_doc = await make(conn, "documents", tenant, refs, opportunity_project_id=project.id,
                              uploaded_by=uploader.id, name="Past performance")
    async with live_server(database.app_url) as server:
        uploader_token = await server.sign_in(uploader)
        outsider = await _subscriber(server, await server.sign_in(admin))
        reader = await _subscriber(server, uploader_token)
        try:
            bus = server.app.state.live_bus
            for _ in range(200):
                await asyncio.sleep(0.05)
                if bus.subscribers >= 2:
                    break
            await asyncio.sleep(0.5)
            new_name = f"Pricing volume {uuid.uuid4().hex[:6]}"
            await _rename(server, uploader_token, secret, new_name)
            await _rename(server, uploader_token, open_doc, "Past performance, revised")
            received = [await outsider.next_of("s")]
            received += await outsider.quiet("s", 1.0)
            seen = [await reader.next_of("s"), await reader.next_of("s")]
        finally:
            for client in (outsider, reader):
                await client.cm.__aexit__(None, None, None)  # type: ignore[attr-defined]
    text = json.dumps(received)
    for leak in (str(secret.id), _gid("Document", secret.id), new_name):
        assert leak not in text, received
    assert str(open_doc.id) in text  # the open document's change did arrive
    # Its uploader, a reader, is told which document changed (its entity, read with the subscriber's own
    # access); the values of its changes stay out of the shared read of the trail.
    assert str(secret.id) in json.dumps(seen)
