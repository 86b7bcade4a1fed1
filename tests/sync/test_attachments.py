"""SAM.gov attachments (sync/attachments.py) end to end: the project refresh job of sync/jobs.py
against a fake SAM.gov on a real uvicorn on 127.0.0.1 that also serves the files behind
`resourceLinks`, through the outbound guard, the budget of the source's key and the call log, into
documents on the local store (a directory of the test) in a database of the module's own, and once
on S3 (the session's moto server on 127.0.0.1).

Shown: a notice's attachments become documents linked to the change that brought them (version 1,
quarantined, the hashes of the bytes, the object readable); an amendment whose file changed makes a
new version of it, an unchanged file is not stored again and a new one starts its own chain; a poll
with nothing new makes no download at all; a file refused by the upload checks (an executable named
.pdf, HTML), a 404, a redirect to a loopback address off the allow-list and a file over the limit
leave no document and no object and are not fetched again; a server error and a spent budget are
tried again on the next poll; the key never reaches the log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from auth.crypto import SecretBox
from auth.outbound import OutboundPolicy
from models.db import set_tenant
from resolvers.external_data.mutations import seal_credentials
from storage.config import StorageConfig
from storage.local import LocalStorage
from storage.s3 import S3Storage
from storage.signing import Signer
from sync.attachments import attachment_key, filename_of
from sync.jobs import JOBS
from sync.schedule import Job, JobKind, JobOutcome, OutcomeKind, fingerprint_key, key_fingerprint, set_budget_limits
from sync.worker import JobContext, SyncServices, Worker
from tests.support.clock import FakeClock
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef, create_tenant
from tests.support.s3 import MotoS3
from tests.sync.fake_samgov import API_KEY, FakeSamGov, notice, serve
from tests.sync.schedule_support import SECRET_KEYS, SyncDb, sync_db

__all__ = ["sync_db"]  # the module's own database (fixture)

SOLNUM = "W912-26-R-0042"
ORIGINAL, AMENDMENT = f"{700001:032x}", f"{700002:032x}"
DAY_1 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
FILES = "/prod/opportunities/v3/resources/files"
MAX_BYTES = 64 * 1024

PDF_1 = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n% statement of work, first issue\n%%EOF\n"
PDF_2 = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n% statement of work, amended clause 3\n%%EOF\n"
TEXT_QA = b"Questions and answers.\nQ1: Is CMMC level 2 required? A: Yes.\n"
TEXT_WAGE = b"Wage determination 2015-4281, revision 27.\n"
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 200
HTML = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"


@dataclass
class FileServer(FakeSamGov):
    """The fake SAM.gov plus its attachment downloads: `files[id] = (bytes, file name)`; `statuses[id]`
    answers an error status instead; `redirects[id]` redirects. Every download is recorded."""

    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    downloads: list[tuple[str, str | None]] = field(default_factory=list)  # (id, api_key sent)
    delay: float = 0.0  # seconds before a file is answered

    def app(self) -> Starlette:
        app = super().app()
        app.router.routes.append(Route(FILES + "/{rid}/download", self._download))
        return app

    async def _download(self, request: Request) -> Response:
        rid = request.path_params["rid"]
        self.downloads.append((rid, request.query_params.get("api_key")))
        if request.query_params.get("api_key") != API_KEY:
            return Response(b"forbidden", status_code=403)
        if rid in self.statuses:
            return Response(b"scripted", status_code=self.statuses[rid])
        if rid in self.redirects:
            return RedirectResponse(self.redirects[rid], status_code=303)
        if rid not in self.files:
            return Response(b"Not Found", status_code=404)
        content, name = self.files[rid]
        await asyncio.sleep(self.delay)
        return Response(content, media_type="application/octet-stream",
                        headers={"content-disposition": f"attachment; filename=\"{name}\""})

    def count(self, rid: str) -> int:
        return sum(1 for got, _ in self.downloads if got == rid)


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[FileServer, str]]:
    fake = FileServer()
    with serve(fake) as base_url:
        yield fake, base_url


def link(base_url: str, rid: str) -> str:
    """A resource link as SAM.gov's search gives it: an api_key placeholder and an empty token."""
    return f"{base_url}{FILES}/{rid}/download?api_key=null&token="


@dataclass
class Scene:
    db: SyncDb
    fake: FileServer
    base_url: str
    tenant: TenantRef
    source_id: uuid.UUID
    project_id: uuid.UUID
    polling_id: uuid.UUID
    services: SyncServices
    fingerprint: str
    root: Path

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        async with self.db.owner.connect() as conn:
            await set_tenant(conn, self.tenant.id)
            found = list((await conn.execute(text(sql), {"t": self.tenant.id, **params})).all())
            await conn.rollback()
        return found

    async def documents(self) -> list[Any]:
        return await self.rows(
            "SELECT * FROM documents WHERE tenant_id = :t AND opportunity_project_id = :p"
            " ORDER BY external_document_id, version_number", p=self.project_id,
        )

    async def changes(self) -> list[Any]:
        return await self.rows(
            "SELECT * FROM external_data_changes WHERE opportunity_project_id = :p ORDER BY change_timestamp",
            p=self.project_id,
        )

    def objects(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*") if p.is_file())

    async def run(self, kind: JobKind, now: datetime) -> JobOutcome:
        """One job, run as the worker runs it (a source search on a fresh schedule id: its window is
        the first run's, 30 days back)."""
        clock = FakeClock(now)
        worker = Worker(self.services, JOBS, clock=clock)
        refresh = kind is JobKind.PROJECT_REFRESH
        job = Job(kind=kind, job_id=self.polling_id if refresh else uuid.uuid4(), tenant_id=self.tenant.id,
                  external_source_id=self.source_id, saved_search_id=None,
                  opportunity_project_id=self.project_id if refresh else None,
                  claimed_until=now + timedelta(minutes=10), worker=worker.name)
        ctx = JobContext(job=job, services=self.services, clock=clock, started_at=now, _worker=worker)
        return await JOBS[kind](ctx)

    async def refresh(self, now: datetime) -> JobOutcome:
        """The project's refresh job."""
        return await self.run(JobKind.PROJECT_REFRESH, now)

    def revision(self, notice_id: str, posted: str, rids: list[str]) -> dict[str, Any]:
        return notice(700001, noticeId=notice_id, solicitationNumber=SOLNUM, postedDate=posted,
                      title="Facility maintenance, Fort Example",
                      description=f"{self.base_url}/prod/opportunities/v1/noticedesc?noticeid={notice_id}",
                      resourceLinks=[link(self.base_url, rid) for rid in rids] or None)


@pytest.fixture
async def scene(sync_db: SyncDb, live: tuple[FileServer, str], tmp_path: Path) -> AsyncIterator[Scene]:
    fake, base_url = live
    fake.notices, fake.files, fake.statuses, fake.redirects, fake.downloads = [], {}, {}, {}, []
    fake.delay = 0.0
    tenant = await create_tenant(sync_db.owner)
    box = SecretBox.from_setting(SECRET_KEYS)
    fingerprint_hmac = fingerprint_key(SECRET_KEYS)
    async with sync_db.owner.begin() as conn:
        await set_tenant(conn, tenant.id)
        source_id = await conn.scalar(
            text(
                "INSERT INTO external_opportunity_sources (tenant_id, source_name, api_endpoint, api_version,"
                " authentication_type, api_credentials_encrypted, retry_attempts, created_by)"
                " VALUES (:t, 'SAM.gov', :url, 'v2', 'api_key', '{}', 0, :u) RETURNING id"
            ),
            {"t": tenant.id, "url": base_url, "u": tenant.system_user_id},
        )
        assert isinstance(source_id, uuid.UUID)
        sealed = seal_credentials(box, tenant.id, source_id, {"api_key": API_KEY})
        await conn.execute(
            text("UPDATE external_opportunity_sources SET api_credentials_encrypted = CAST(:c AS jsonb) WHERE id = :s"),
            {"c": json.dumps(sealed), "s": source_id},
        )
        project_id = await conn.scalar(
            text(
                "INSERT INTO opportunity_projects (tenant_id, project_name, external_source_id,"
                " external_opportunity_id, sync_status, created_by)"
                " VALUES (:t, 'Facility pursuit', :s, :k, 'pending', :u) RETURNING id"
            ),
            {"t": tenant.id, "s": source_id, "k": SOLNUM, "u": tenant.system_user_id},
        )
        polling_id = await conn.scalar(
            text(
                "INSERT INTO polling_configurations (tenant_id, opportunity_project_id, external_source_id,"
                " max_retries, next_poll_timestamp, created_by)"
                " VALUES (:t, :p, :s, 0, NULL, :u) RETURNING id"
            ),
            {"t": tenant.id, "p": project_id, "s": source_id, "u": tenant.system_user_id},
        )
        fingerprint = key_fingerprint(fingerprint_hmac, API_KEY)
        await set_budget_limits(conn, tenant.id, fingerprint, daily_limit=100, hourly_limit=None)
    assert isinstance(project_id, uuid.UUID) and isinstance(polling_id, uuid.UUID)
    root = tmp_path / "documents"
    temp = tmp_path / "spool"
    temp.mkdir()
    storage = LocalStorage(root, signer=Signer(b"s" * 32), public_url="http://127.0.0.1")
    port = base_url.rsplit(":", 1)[1]
    services = SyncServices(
        engine=sync_db.app, chain=TEST_AUDIT_CHAIN, secret_box=box, fingerprint_key=fingerprint_hmac,
        outbound=OutboundPolicy.from_setting(f"127.0.0.1:{port}"), storage=storage,
        storage_config=StorageConfig(root=root, max_upload_bytes=MAX_BYTES, temp_dir=temp),
    )
    yield Scene(sync_db, fake, base_url, tenant, source_id, project_id, polling_id, services, fingerprint, root)
    assert list(temp.iterdir()) == []  # no temporary file left, whatever happened


async def test_attachments_become_documents_linked_to_their_change_and_new_bytes_a_new_version(
    scene: Scene,
) -> None:
    fake = scene.fake
    fake.files = {"sow": (PDF_1, "Statement of Work.pdf"), "wage": (TEXT_WAGE, "wage determination.txt")}
    fake.notices = [scene.revision(ORIGINAL, "2026-03-01", ["sow", "wage"])]
    assert (await scene.refresh(DAY_1)).kind is OutcomeKind.DONE
    (created,) = await scene.changes()
    docs = await scene.documents()
    assert [(d.name, d.version_number, d.is_current_version) for d in docs] == [
        ("Statement of Work.pdf", 1, True), ("wage determination.txt", 1, True)
    ]
    sow, wage = docs
    assert sow.external_document_id == f"{scene.base_url}{FILES}/sow/download"  # the link without its query
    assert (sow.mime_type, sow.file_extension, sow.file_size_bytes) == ("application/pdf", "pdf", len(PDF_1))
    assert sow.file_hash_sha256 == hashlib.sha256(PDF_1).hexdigest()
    assert sow.file_hash_md5 == hashlib.md5(PDF_1, usedforsecurity=False).hexdigest()
    assert wage.mime_type == "text/plain"
    for doc in docs:
        assert doc.external_data_change_id == created.id  # the change that brought them
        assert (doc.document_source, doc.is_synced_from_external, doc.uploaded_by) == (
            "external", True, scene.tenant.system_user_id
        )
        assert doc.scan_status == "quarantined" and doc.parent_document_id is None
        assert doc.storage_provider == "local" and str(scene.tenant.id) in doc.storage_key
    # the objects hold the bytes, under keys of ids only
    stored = {p.read_bytes() for p in scene.objects()}
    assert stored == {PDF_1, TEXT_WAGE}
    # each download was one budgeted, logged call with the source's key, never logged
    assert [(rid, key) for rid, key in fake.downloads] == [("sow", API_KEY), ("wage", API_KEY)]
    logs = await scene.rows("SELECT endpoint_called, success, opportunity_project_id FROM api_integration_logs"
                            " WHERE tenant_id = :t AND endpoint_called LIKE '%/resources/files/%'")
    assert len(logs) == 2 and all(log.success and log.opportunity_project_id == scene.project_id for log in logs)
    assert all(API_KEY not in log.endpoint_called and "redacted" in log.endpoint_called for log in logs)
    # written as the tenant's system user, audited like an upload, with the process named
    audits = await scene.rows("SELECT entity_id FROM audit_logs WHERE tenant_id = :t"
                              " AND action_type = 'document.uploaded' AND user_id = :u", u=scene.tenant.system_user_id)
    assert {a.entity_id for a in audits} == {sow.id, wage.id}
    history = await scene.rows("SELECT DISTINCT entity_id, changed_by_system_process FROM change_history"
                               " WHERE tenant_id = :t AND entity_type = 'document'")
    assert {(h.entity_id, h.changed_by_system_process) for h in history} == {
        (sow.id, "sync.attachments"), (wage.id, "sync.attachments")
    }

    # the amendment: the statement of work changed, the wage determination did not, Q&A is new
    fake.files["sow"] = (PDF_2, "Statement of Work (amended).pdf")
    fake.files["qa"] = (TEXT_QA, "Q&A.txt")
    fake.notices = [scene.revision(AMENDMENT, "2026-03-03", ["sow", "wage", "qa"])]
    assert (await scene.refresh(DAY_1 + timedelta(days=1))).kind is OutcomeKind.DONE
    amended = (await scene.changes())[-1]
    assert amended.change_type == "amended" and "resourceLinks" in amended.changed_fields
    docs = await scene.documents()
    by_key = {(d.external_document_id.rsplit("/", 2)[-2], d.version_number): d for d in docs}
    assert sorted(by_key) == [("qa", 1), ("sow", 1), ("sow", 2), ("wage", 1)]  # wage not stored twice
    first, second = by_key[("sow", 1)], by_key[("sow", 2)]
    assert (first.is_current_version, second.is_current_version) == (False, True)
    assert second.parent_document_id == first.id and second.name == "Statement of Work (amended).pdf"
    assert second.file_hash_sha256 == hashlib.sha256(PDF_2).hexdigest()
    assert second.external_data_change_id == amended.id and by_key[("qa", 1)].external_data_change_id == amended.id
    assert by_key[("wage", 1)].external_data_change_id == created.id
    assert {p.read_bytes() for p in scene.objects()} == {PDF_1, PDF_2, TEXT_WAGE, TEXT_QA}
    assert fake.count("wage") == 2  # fetched again with the new version, its bytes compared, not stored

    # polling again with nothing new: no download at all, nothing written
    sent, before = len(fake.downloads), await scene.documents()
    assert (await scene.refresh(DAY_1 + timedelta(days=2))).kind is OutcomeKind.DONE
    assert len(fake.downloads) == sent and await scene.documents() == before


async def test_refused_files_leave_nothing_and_are_not_fetched_again(scene: Scene) -> None:
    fake = scene.fake
    fake.files = {"exe": (EXE, "drawings.pdf"), "html": (HTML, "notice.html"),
                  "big": (b"a" * (MAX_BYTES + 1), "big.txt")}
    fake.redirects = {"away": "http://127.0.0.2:9/file.pdf"}  # a loopback address not on the allow-list
    rids = ["exe", "html", "missing", "away", "big"]
    fake.notices = [scene.revision(ORIGINAL, "2026-03-01", rids)]
    fake.notices[0]["resourceLinks"] += ["not a link", "http://[::1", "ftp://files.example/a.pdf"]  # left out
    assert (await scene.refresh(DAY_1)).kind is OutcomeKind.DONE  # the notice itself is taken in
    assert await scene.documents() == [] and scene.objects() == []
    assert [rid for rid, _ in fake.downloads] == sorted(rids)  # the links in their recorded (sorted) order
    logs = await scene.rows("SELECT endpoint_called, success, http_status, error_message FROM api_integration_logs"
                            " WHERE tenant_id = :t AND endpoint_called LIKE '%/resources/files/%'"
                            " ORDER BY api_call_timestamp, created_at")
    by_rid = {log.endpoint_called.split("/files/")[1].split("/")[0]: log for log in logs}
    assert by_rid["missing"].http_status == 404 and not by_rid["missing"].success
    assert "refused" in by_rid["away"].error_message and "refused" in by_rid["big"].error_message
    # the files the checks refused are audited on the project, with the version that listed them
    (version,) = await scene.rows("SELECT id FROM external_opportunity_data WHERE opportunity_project_id = :p",
                                  p=scene.project_id)
    events = await scene.rows("SELECT entity_id, risk_level, after_values FROM audit_logs WHERE tenant_id = :t"
                              " AND action_type = 'document.attachment.refused' ORDER BY after_values->>'attachment'")
    assert [(e.after_values["attachment"].split("/files/")[1], e.after_values["refusal"]) for e in events] == [
        ("exe/download", "UNSUPPORTED_TYPE"), ("html/download", "UNSUPPORTED_TYPE")
    ]
    assert all(e.entity_id == scene.project_id and e.risk_level == "medium"
               and e.after_values["version"] == str(version.id) for e in events)
    # the next poll brings nothing new: none of them is fetched again
    assert (await scene.refresh(DAY_1 + timedelta(hours=6))).kind is OutcomeKind.DONE
    assert len(fake.downloads) == len(rids)


async def test_a_server_error_or_a_spent_budget_is_tried_again_on_the_next_poll(scene: Scene) -> None:
    fake = scene.fake
    fake.files = {"sow": (PDF_1, "sow.pdf"), "wage": (TEXT_WAGE, "wage.txt")}
    fake.statuses = {"sow": 500}
    fake.notices = [scene.revision(ORIGINAL, "2026-03-01", ["sow", "wage"])]
    # a budget of 3 calls: the refresh's search, the description and one download (the server error);
    # none left for the wage file
    async with scene.db.owner.begin() as conn:
        await set_tenant(conn, scene.tenant.id)
        await set_budget_limits(conn, scene.tenant.id, scene.fingerprint, daily_limit=3, hourly_limit=None)
    assert (await scene.refresh(DAY_1)).kind is OutcomeKind.DONE
    assert [rid for rid, _ in fake.downloads] == ["sow"] and await scene.documents() == []
    (created,) = await scene.changes()
    # the next day: budget again, the server recovered; both are fetched and linked to the first change
    del fake.statuses["sow"]
    assert (await scene.refresh(DAY_1 + timedelta(days=1))).kind is OutcomeKind.DONE
    docs = await scene.documents()
    assert [(d.name, d.external_data_change_id) for d in docs] == [("sow.pdf", created.id), ("wage.txt", created.id)]
    assert [rid for rid, _ in fake.downloads] == ["sow", "sow", "wage"]


async def test_without_a_store_no_attachment_is_fetched(scene: Scene) -> None:
    scene.services = SyncServices(
        engine=scene.services.engine, chain=scene.services.chain, secret_box=scene.services.secret_box,
        fingerprint_key=scene.services.fingerprint_key, outbound=scene.services.outbound,
    )
    scene.fake.files = {"sow": (PDF_1, "sow.pdf")}
    scene.fake.notices = [scene.revision(ORIGINAL, "2026-03-01", ["sow"])]
    assert (await scene.refresh(DAY_1)).kind is OutcomeKind.DONE
    assert scene.fake.downloads == [] and await scene.documents() == []


def test_an_attachment_is_known_by_its_link_without_the_query() -> None:
    base = "https://sam.gov/api/prod/opps/v3/opportunities/resources/files/abc123/download"
    assert attachment_key(f" {base}?api_key=null&token= ") == base
    assert attachment_key(f"{base}#x") == base
    long = "https://files.example/" + "a" * 300
    assert attachment_key(long) == "sha256:" + hashlib.sha256(long.encode()).hexdigest()


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        ('attachment; filename="SOW.pdf"', "SOW.pdf"),
        ("attachment; filename*=UTF-8''Q%26A%20r%C3%A9sum%C3%A9.docx", "Q&A résumé.docx"),
        ('attachment; filename="../../etc/passwd"', "passwd"),
        ('attachment; filename="..\\\\secret.txt"', "secret.txt"),
        (None, "abc123"),
        ('attachment; filename=""', "abc123"),
    ],
)
def test_the_file_name_comes_from_content_disposition_never_a_path(disposition: str | None, expected: str) -> None:
    headers = httpx.Headers({"content-disposition": disposition} if disposition else {})
    assert filename_of(headers, "https://sam.gov/files/abc123/download?api_key=null") == expected


async def test_two_workers_taking_in_one_project_at_once_make_one_chain(scene: Scene) -> None:
    scene.fake.files = {"sow": (PDF_1, "sow.pdf")}
    scene.fake.delay = 0.5  # both have asked for the file before either stores it
    scene.fake.notices = [scene.revision(ORIGINAL, "2026-03-01", ["sow"])]
    # the source's window search and the project's refresh, claimed by two workers at the same time
    outcomes = await asyncio.gather(scene.run(JobKind.SOURCE_SEARCH, DAY_1), scene.refresh(DAY_1))
    assert all(outcome.kind is OutcomeKind.DONE for outcome in outcomes)
    assert scene.fake.count("sow") == 2
    (document,) = await scene.documents()
    assert (document.version_number, document.is_current_version) == (1, True)
    assert [p.read_bytes() for p in scene.objects()] == [PDF_1]  # the loser's object removed again


async def test_the_source_search_takes_attachments_in_too(scene: Scene) -> None:
    scene.fake.files = {"sow": (PDF_1, "sow.pdf")}
    scene.fake.notices = [scene.revision(ORIGINAL, "2026-03-01", ["sow"])]
    assert (await scene.run(JobKind.SOURCE_SEARCH, DAY_1)).kind is OutcomeKind.DONE
    (document,) = await scene.documents()
    (created,) = await scene.changes()
    assert document.external_data_change_id == created.id and document.name == "sow.pdf"


async def test_a_store_that_fails_leaves_nothing_and_is_tried_again(scene: Scene, tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_bytes(b"")  # the store's root is a file: every write fails
    working = scene.services
    scene.services = dataclasses.replace(
        working, storage=LocalStorage(blocked, signer=Signer(b"s" * 32), public_url="http://127.0.0.1")
    )
    scene.fake.files = {"sow": (PDF_1, "sow.pdf")}
    scene.fake.notices = [scene.revision(ORIGINAL, "2026-03-01", ["sow"])]
    assert (await scene.refresh(DAY_1)).kind is OutcomeKind.DONE  # the notice is taken in all the same
    assert await scene.documents() == [] and scene.objects() == []
    assert blocked.read_bytes() == b""
    scene.services = working  # the store is back: the next poll fetches it again
    assert (await scene.refresh(DAY_1 + timedelta(hours=6))).kind is OutcomeKind.DONE
    (document,) = await scene.documents()
    assert document.file_hash_sha256 == hashlib.sha256(PDF_1).hexdigest()
    assert scene.fake.count("sow") == 2


async def test_on_s3_attachments_and_their_versions_are_objects_of_the_bucket(
    scene: Scene, moto_s3: MotoS3
) -> None:
    s3_storage = S3Storage(moto_s3.config(await moto_s3.create_bucket()))  # the session's S3 server, keys under gwm/
    scene.services = dataclasses.replace(scene.services, storage=s3_storage)
    scene.fake.files = {"sow": (PDF_1, "sow.pdf")}
    scene.fake.notices = [scene.revision(ORIGINAL, "2026-03-01", ["sow"])]
    assert (await scene.refresh(DAY_1)).kind is OutcomeKind.DONE
    scene.fake.files["sow"] = (PDF_2, "sow.pdf")
    scene.fake.notices = [scene.revision(AMENDMENT, "2026-03-03", ["sow"])]
    assert (await scene.refresh(DAY_1 + timedelta(days=1))).kind is OutcomeKind.DONE
    first, second = await scene.documents()
    assert (first.version_number, second.version_number, second.parent_document_id) == (1, 2, first.id)
    for document, content in ((first, PDF_1), (second, PDF_2)):
        assert (document.storage_provider, document.storage_bucket, document.storage_region) == (
            "s3", s3_storage.bucket, moto_s3.region
        )
        assert document.storage_key == f"gwm/{scene.tenant.id}/{scene.project_id}/{first.id}/{document.id}"
        assert b"".join([chunk async for chunk in s3_storage.read(document.storage_key)]) == content
    assert scene.objects() == []  # nothing on the local disk
    await s3_storage.aclose()
