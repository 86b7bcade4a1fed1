"""A change the sync worker writes (polling the fake SAM.gov of tests/sync on 127.0.0.1) reaches a
subscriber of a server process: the worker's commit notifies like any other."""

from __future__ import annotations

import asyncio

import pytest

from tests.live.ws_support import live_server, ws_connect
from tests.support.http import make_login_user
from tests.sync.test_end_to_end import (
    AMENDMENT_1,
    EARLIER,
    ORIGINAL,
    Scene,
    live,
    revision,
    scene,
    sync_db,
)

pytestmark = pytest.mark.server

__all__ = ["live", "scene", "sync_db"]  # the fixtures of tests/sync/test_end_to_end.py, on a database of this module

QUERY = (
    "subscription($p: ID) { externalDataChanged(projectId: $p, minImpact: HIGH) {"
    " change { changeType impactLevel opportunityProject { rowId } } } }"
)


async def test_an_amendment_found_by_the_sync_worker_reaches_the_subscriber(scene: Scene) -> None:
    scene.fake.notices = [revision(scene.base_url, ORIGINAL, "2026-02-02")]
    scene.fake.descriptions = {ORIGINAL: "Hull maintenance of DDG-51 class destroyers."}
    await scene.poll()  # the first poll fills the pending project
    viewer = await make_login_user(scene.db.owner, scene.tenant, roles=("Viewer",))
    async with live_server(scene.db.database.app_url) as server:
        token = await server.sign_in(viewer)
        async with ws_connect(server) as ws:
            assert (await ws.init({"authorization": f"Bearer {token}"}))["type"] == "connection_ack"
            await ws.subscribe("s", QUERY)
            bus = server.app.state.live_bus
            for _ in range(200):
                if bus.subscribers >= 1:
                    break
                await asyncio.sleep(0.05)
            scene.clock.advance(days=1)
            scene.fake.notices = [revision(scene.base_url, AMENDMENT_1, "2026-02-03", responseDeadLine=EARLIER)]
            scene.fake.descriptions[AMENDMENT_1] = "Deadline moved."
            await scene.poll()
            message = await ws.next_of("s", wait=60)
            assert message["payload"]["data"]["externalDataChanged"]["change"] == {
                "changeType": "AMENDED", "impactLevel": "CRITICAL",
                "opportunityProject": {"rowId": str(scene.project_id)},
            }
