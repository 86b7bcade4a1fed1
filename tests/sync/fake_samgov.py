"""A fake SAM.gov Get Opportunities v2 search endpoint for tests (docs/samgov.md).

A small Starlette app serving `/opportunities/v2/search` over a list of raw notices a test sets. It
checks what the real API checks (api_key, both dates as MM/dd/yyyy at most one year apart, limit
0..1000, offset not negative), filters by posted date, `solnum`, `noticeid`, `ptype`, `ncode` and
`typeOfSetAside`, and pages as docs/samgov.md says the connector relies on: `offset` is a record
offset, the page is `matches[offset : offset + limit]`, `limit` defaults to 1 like the real API.
`before_page` lets a test change the data between pages (notices posted while paging). Every request's
query is recorded in `requests`. `script` queues scripted answers (`status`, `slow`, `malformed`,
`oversized`, `redirect`), one per search request, before the normal handling; `serve(fake)` runs the
app on a real uvicorn on 127.0.0.1 (for calls through the outbound guard, which connects for real).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

API_KEY = "test-key"


def _date(text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return datetime.strptime(text, "%m/%d/%Y").date()
    except ValueError:
        return None


def _posted(notice: dict[str, Any]) -> date | None:
    value = notice.get("postedDate")
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.strip()).date()
    except ValueError:
        return None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"errorCode": str(status), "errorMessage": message}, status_code=status)


@dataclass
class FakeSamGov:
    """The fake's state: the notices it holds, hooks, and the requests it received."""

    notices: list[dict[str, Any]] = field(default_factory=list)
    before_page: Callable[[FakeSamGov, int], None] | None = None
    # when set, answers every search in place of the normal handling (error statuses, broken bodies)
    answer: Callable[[Request], Response] | None = None
    requests: list[list[tuple[str, str]]] = field(default_factory=list)
    # noticeid -> the text /prod/opportunities/v1/noticedesc answers (404 for any other id)
    descriptions: dict[str, str] = field(default_factory=dict)
    description_requests: list[list[tuple[str, str]]] = field(default_factory=list)
    # scripted answers, one taken per search request in order; one answering None falls through to
    # the normal handling (e.g. `slow`)
    script: list[Scripted] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/opportunities/v2/search", self._search),
                Route("/prod/opportunities/v1/noticedesc", self._description),
            ]
        )

    async def _description(self, request: Request) -> JSONResponse:
        self.description_requests.append(list(request.query_params.multi_items()))
        if request.query_params.get("api_key") != API_KEY:
            return _error(403, "An invalid api_key was supplied")
        text = self.descriptions.get(request.query_params.get("noticeid", ""))
        if text is None:
            return _error(404, "Description Not Found")
        return JSONResponse({"description": text})

    def _matches(self, request: Request, posted_from: date, posted_to: date) -> list[dict[str, Any]]:
        params = request.query_params
        found = []
        for notice in self.notices:
            posted = _posted(notice)
            if posted is not None and not posted_from <= posted <= posted_to:
                continue
            solnum = params.get("solnum")
            if solnum is not None and str(notice.get("solicitationNumber") or "").strip() != solnum:
                continue
            noticeid = params.get("noticeid")
            if noticeid is not None and str(notice.get("noticeId") or "").strip().lower() != noticeid.lower():
                continue
            ptypes = params.getlist("ptype")
            if ptypes and notice.get("_ptype") not in ptypes:
                continue
            ncode = params.get("ncode")
            if ncode is not None and ncode != notice.get("naicsCode"):
                continue
            set_aside = params.get("typeOfSetAside")
            if set_aside is not None and set_aside != notice.get("typeOfSetAside"):
                continue
            found.append({key: value for key, value in notice.items() if not key.startswith("_")})
        return found

    async def _search(self, request: Request) -> Response:
        params = request.query_params
        self.requests.append(list(params.multi_items()))
        if self.script:
            scripted = await self.script.pop(0)(request)
            if scripted is not None:
                return scripted
        if self.answer is not None:
            return self.answer(request)
        if not params.get("api_key"):
            return _error(401, "No api_key was supplied")
        if params["api_key"] != API_KEY:
            return _error(403, "An invalid api_key was supplied")
        if "postedFrom" not in params or "postedTo" not in params:
            return _error(400, "PostedFrom and PostedTo are mandatory")
        posted_from, posted_to = _date(params["postedFrom"]), _date(params["postedTo"])
        if posted_from is None or posted_to is None:
            return _error(400, "Invalid Date Entered. Expected date format is MM/dd/yyyy")
        try:
            one_year = posted_from.replace(year=posted_from.year + 1)
        except ValueError:
            one_year = posted_from.replace(year=posted_from.year + 1, day=28)
        if posted_to > one_year or posted_to < posted_from:
            return _error(400, "Date range must be 1 year(s) apart")
        try:
            limit = int(params.get("limit", "1"))
            offset = int(params.get("offset", "0"))
        except ValueError:
            return _error(400, "limit/offset must be a positive number.")
        if not 0 <= limit <= 1000:
            return _error(400, "Limit valid range is 0-1000. Please provide valid input.")
        if offset < 0:
            return _error(400, "limit/offset must be a positive number.")
        if self.before_page is not None:
            self.before_page(self, offset)
        matches = self._matches(request, posted_from, posted_to)
        return JSONResponse(
            {
                "totalRecords": len(matches),
                "limit": limit,
                "offset": offset,
                "opportunitiesData": matches[offset : offset + limit],
                "links": [{"rel": "self", "href": str(request.url)}],
            }
        )


def notice(number: int, **overrides: Any) -> dict[str, Any]:
    """A realistic raw record; `overrides` replace or add keys (None values are kept as null)."""
    record: dict[str, Any] = {
        "noticeId": f"{number:032x}",
        "title": f"Notice {number}",
        "solicitationNumber": f"SOL-{number:05d}",
        "fullParentPathName": "DEPT OF DEFENSE.DEPT OF THE NAVY.NAVSEA.NAVSEA HQ",
        "fullParentPathCode": "017.1700.NAVSEA.NAVSEA HQ",
        "postedDate": "2026-02-02",
        "type": "Solicitation",
        "baseType": "Presolicitation",
        "archiveType": "auto15",
        "archiveDate": "2026-04-01",
        "typeOfSetAsideDescription": "Total Small Business Set-Aside (FAR 19.5)",
        "typeOfSetAside": "SBA",
        "responseDeadLine": "2026-03-02T16:00:00-05:00",
        "naicsCode": "336611",
        "naicsCodes": ["336611"],
        "classificationCode": "J019",
        "active": "Yes",
        "award": None,
        "pointOfContact": None,
        "description": f"https://api.sam.gov/prod/opportunities/v1/noticedesc?noticeid={number:032x}",
        "organizationType": "OFFICE",
        "officeAddress": {"zipcode": "20376", "city": "WASHINGTON NAVY YARD", "countryCode": "USA", "state": "DC"},
        "placeOfPerformance": {"city": {"code": "82000", "name": "Washington"}, "state": {"code": "DC"}},
        "additionalInfoLink": None,
        "uiLink": f"https://sam.gov/workspace/contract/opp/{number:032x}/view",
        "links": [{"rel": "self", "href": "https://api.sam.gov/prod/opportunities/v2/search"}],
        "resourceLinks": None,
    }
    record.update(overrides)
    return record


# --- scripted answers and a real server ------------------------------------------------------------

Scripted = Callable[[Request], Awaitable[Response | None]]


def status(code: int, *, headers: dict[str, str] | None = None, message: str = "scripted") -> Scripted:
    """Answer `code` with an error envelope (and `headers`, e.g. Retry-After)."""

    async def answer(request: Request) -> Response:
        response = _error(code, message)
        response.headers.update(headers or {})
        return response

    return answer


def slow(seconds: float) -> Scripted:
    """Wait `seconds`, then answer normally."""

    async def answer(request: Request) -> None:
        await asyncio.sleep(seconds)

    return answer


def malformed() -> Scripted:
    """A 200 declared as JSON whose body is cut short."""

    async def answer(request: Request) -> Response:
        return Response(b'{"totalRecords": 1, "opportunitiesData": [{"noticeId": ', media_type="application/json")

    return answer


def oversized(size: int) -> Scripted:
    """A 200 JSON body of `size` bytes (valid JSON: only its size is wrong)."""

    async def answer(request: Request) -> Response:
        padding = "x" * max(0, size - 60)
        return Response(f'{{"totalRecords": 0, "opportunitiesData": [], "p": "{padding}"}}'.encode(),
                        media_type="application/json")

    return answer


def redirect(location: str, code: int = 302) -> Scripted:
    """A redirect to `location`."""

    async def answer(request: Request) -> Response:
        return RedirectResponse(location, status_code=code)

    return answer


@contextmanager
def serve(fake: FakeSamGov) -> Iterator[str]:
    """Run `fake` on a real uvicorn on 127.0.0.1 (a free port, a background thread); yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        fake.app(), lifespan="off", ws="none", http="h11", log_level="warning", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="fake-samgov", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fake SAM.gov did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
