"""HTTP side of document uploads.

- `UploadGuard` (ASGI middleware): a multipart POST to /graphql (GraphQL multipart request spec)
  is taken only with a `GraphQL-Require-Preflight` header, which a cross-site form cannot send (400
  PREFLIGHT_REQUIRED); its body is limited before it is read (Content-Length, 413 TOO_LARGE) and
  while it is read (a counted stream: a lying or absent Content-Length is cut at the limit); at most
  GWM_UPLOAD_CONCURRENCY such requests are read at once per process (503 UPLOAD_BUSY), which bounds
  the temporary disk they take.
- `PUT /storage/upload/{token}`: the local backend's presigned upload. The token (HMAC-signed,
  storage/signing.py) names the staging key and the size allowed; the request needs the preflight
  header too. The bytes go to a temporary name and are linked into place only when complete and
  within the size; a second PUT to the same key is refused (the object is checked by the mutation
  completing the upload, and must not change afterwards).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from storage.local import UPLOAD_PATH, UPLOAD_PURPOSE, LocalStorage
from storage.signing import BadSignature, Expired

__all__ = ["PREFLIGHT_HEADER", "UPLOAD_PREFIXES", "UploadGuard", "build_uploads", "storage_routes"]

_log = logging.getLogger(__name__)

PREFLIGHT_HEADER = "graphql-require-preflight"
#: Public path prefixes (the signed token authenticates the request).
UPLOAD_PREFIXES = (UPLOAD_PATH,)
# Room for the multipart request's other parts (operations, map) and boundaries.
_ENVELOPE = 1024 * 1024


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"code": code}}]},
        status_code=status,
        headers={"cache-control": "no-store"},
    )


class _TooLarge(Exception):
    """The body passed the limit while it was read (not a ValueError: nothing may take it for a
    malformed body)."""


def _declared_length(headers: Headers) -> int | None:
    raw = headers.get("content-length")
    if raw is None:
        return None
    return int(raw) if raw.isdigit() else -1


class UploadGuard:
    """Preflight header, size limit and concurrency bound of multipart requests to `paths`."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, concurrency: int, paths: tuple[str, ...] = ("/graphql",)):
        self.app = app
        self.max_body = max_bytes + _ENVELOPE
        self.max_bytes = max_bytes
        self.paths = paths
        self.slots = anyio.Semaphore(concurrency)

    def _limit(self, scope: Scope, headers: Headers) -> int | None:
        """The body limit of an upload request (None: not one, passed on untouched)."""
        if scope["type"] != "http":
            return None
        if scope["method"] == "POST" and scope["path"] in self.paths:
            multipart = headers.get("content-type", "").lower().startswith("multipart/")
            return self.max_body if multipart else None
        if scope["method"] == "PUT" and scope["path"].startswith(UPLOAD_PATH):
            return self.max_bytes  # the token's own (lower) limit is checked by the route
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan and WebSocket scopes pass untouched (they have no body)
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit = self._limit(scope, headers)
        if limit is None:
            await self.app(scope, receive, send)
            return
        if not headers.get(PREFLIGHT_HEADER):
            await _error(
                400, "PREFLIGHT_REQUIRED",
                "An upload request needs a GraphQL-Require-Preflight header (any value).",
            )(scope, receive, send)
            return
        declared = _declared_length(headers)
        if declared is not None and (declared < 0 or declared > limit):
            await self._too_large(scope, receive, send)
            return
        scope["gwm.upload_guarded"] = True  # server/middleware.py: no JSON-only rule, no 1 MiB bound
        try:
            self.slots.acquire_nowait()
        except anyio.WouldBlock:
            await _error(503, "UPLOAD_BUSY", "Too many uploads at once: try again shortly.")(scope, receive, send)
            return
        try:
            await self._guarded(scope, receive, send, limit)
        finally:
            self.slots.release()

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _error(
            413, "TOO_LARGE", f"The upload is larger than the limit of {self.max_bytes} bytes."
        )(scope, receive, send)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if not started:
                await self._too_large(scope, receive, send)


async def _upload(request: Request) -> Response:
    uploads: Any = request.app.state.uploads
    storage = uploads.storage
    if not isinstance(storage, LocalStorage):
        return _error(404, "NOT_FOUND", "This server takes no presigned uploads itself.")
    if not request.headers.get(PREFLIGHT_HEADER):
        return _error(400, "PREFLIGHT_REQUIRED", "The upload needs a GraphQL-Require-Preflight header (any value).")
    try:
        claims = storage.signer.verify(UPLOAD_PURPOSE, request.path_params["token"])
    except Expired:
        return _error(403, "UPLOAD_EXPIRED", "The upload URL has expired: start the upload again.")
    except BadSignature:
        return _error(403, "UPLOAD_INVALID", "The upload URL is not valid.")
    key, limit = str(claims["key"]), int(claims["max"])
    declared = _declared_length(request.headers)
    if declared is not None and (declared < 0 or declared > limit):
        return _error(413, "TOO_LARGE", f"This upload takes at most {limit} bytes.")

    async def body() -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > limit:
                raise _TooLarge
            yield chunk

    try:
        created = await storage.put_stream(key, body())
    except _TooLarge:
        return _error(413, "TOO_LARGE", f"This upload takes at most {limit} bytes.")
    except ClientDisconnect:
        _log.info("presigned upload: the client went away mid-body; nothing kept")
        return Response(status_code=400)
    if not created:
        return _error(409, "UPLOAD_EXISTS", "Something was already uploaded with this URL.")
    return Response(status_code=201)


def storage_routes() -> list[Route]:
    """The local backend's presigned upload route."""
    return [Route(UPLOAD_PATH + "{token}", _upload, methods=["PUT"])]


def build_uploads(settings: Any) -> Any:
    """The app's document store and upload limits (`app.state.uploads`, resolvers/documents/uploads.py)."""
    import datetime

    from resolvers.documents.uploads import Uploads
    from storage import open_storage
    from storage.ingest import Limits
    from storage.signing import Signer

    config = settings.storage_config()
    return Uploads(
        storage=open_storage(config, settings.public_url),
        limits=Limits(max_bytes=config.max_upload_bytes, temp_dir=config.temp_dir),
        signer=Signer(config.signing_key),
        url_lifetime=datetime.timedelta(seconds=config.presign_seconds),
    )
