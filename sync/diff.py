"""Change detection over SAM.gov Get Opportunities v2 notice payloads: pure functions, no I/O.

A payload is one element of ``opportunitiesData[]`` as the API returns it (a JSON object, camelCase
keys): the raw record each version keeps verbatim (``raw_json_data``), not the connector's
snake_case normalised record, so the hash and the diff of stored versions do not move when the
connector's mapping does. Every comparison normalises the raw values itself, following the rules of
docs/samgov.md (strings trimmed; ``""``, ``null``, the string ``"null"`` and an absent key alike;
set-aside ``""``/``null``/``"NONE"`` alike; deadlines with or without time or offset).

Canonical payload hash (``payload_hash``)
    sha256 over canonical JSON (``sort_keys``, no insignificant whitespace, UTF-8) of the payload
    after:

    * removing what is derived from the ``noticeId`` alone: ``links``, ``uiLink`` and
      ``description`` while it is still the ``noticedesc`` URL (once the connector has replaced it
      with the fetched text, that text is content and counts). ``noticeId`` itself is kept: a new
      ``noticeId`` in a lineage is a new amendment and must make a new version;
    * trimming every string (padding is an API artefact) and dropping keys whose value is ``null``
      or ``""`` (the API uses both, or omits the key, for "no value");
    * ``typeOfSetAside``: trimmed and upper-cased; ``"NONE"`` is dropped like ``""``/``null``;
    * ``resourceLinks``: ``null`` is ``[]``, and the list is sorted (the API does not promise an
      order; a reordering is not a change), duplicates kept so the count is content.

    Whitespace inside strings, case and punctuation are NOT normalised in the hash: such an edit
    makes a new version, which the diff classifies as informational.

Change classification (``diff_notices``; the same table is in docs/samgov.md)
    Per field, the impact of a field whose old and new values differ:

    ============================================  =============  ===================================
    Field                                         Impact         Note
    ============================================  =============  ===================================
    (notice gone from results / withdrawn)        critical       change_type ``removed``
    (notice cancelled)                            critical       change_type ``cancelled``
    ``responseDeadLine`` moved earlier            critical       compared as instants
    ``typeOfSetAside``                            critical       ``""``/null/``NONE`` equal; code
                                                                 compared trimmed, upper-case
    ``active`` Yes -> No before the deadline      critical       withdrawn while still open
    ``noticeId``                                  high           new amendment, ``amended``
    ``responseDeadLine`` later, set or cleared    high
    ``resourceLinks`` added or removed            high           as a set; order ignored
    ``type``, ``baseType``                        high           ``type_changed`` / ``awarded``
    ``naicsCode``, ``naicsCodes``                 high           when the NAICS set changes
    ``award``                                     high           ``awarded`` when it appears
    ``description`` (text), ``title``             medium
    ``pointOfContact``, ``placeOfPerformance``    medium
    ``classificationCode``                        medium
    ``solicitationNumber``                        medium
    ``active`` (otherwise), ``archiveDate``,      low            ``archived`` when Yes -> No
    ``archiveType``, ``officeAddress``,
    ``fullParentPathName``/``Code``,
    ``organizationType``, ``additionalInfoLink``,
    ``postedDate``, any field not listed
    ``typeOfSetAsideDescription``                 as the code    a label of ``typeOfSetAside``
    whitespace, case or punctuation only          informational  any field (see ``_loose``)
    ============================================  =============  ===================================

    The change's impact is the highest of its fields' (``informational`` when nothing differs).
    Its ``change_type``, first that applies: ``removed`` (new payload is None), ``cancelled``,
    ``created`` (old payload is None; informational: nothing could have been missed yet),
    ``awarded`` (type became "Award Notice" or award data appeared), ``type_changed``,
    ``amended`` (new ``noticeId``), ``archived`` (``active`` Yes -> No), ``updated``.

    A notice counts as cancelled when it carries ``status`` ``cancelled``/``canceled`` (the API's
    announced status filter) or its title starts with "CANCELLED"/"CANCELED", as agencies title
    cancellation notices (an observed convention, not a documented field).

Follow-up (``needs_follow_up``, ``follow_up_due``)
    High and critical changes need a follow-up, due strictly before the response deadline: one day
    before it, but no later than ``FOLLOW_UP_WINDOW`` from now; halfway to a deadline closer than a
    day; now when the deadline has passed; ``FOLLOW_UP_WINDOW`` from now without a deadline.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from models.enums import ChangeType, ImpactLevel

__all__ = [
    "EXCLUDED_FIELDS",
    "FOLLOW_UP_WINDOW",
    "FieldChange",
    "NoticeDiff",
    "canonical_payload",
    "diff_notices",
    "follow_up_due",
    "is_cancelled",
    "max_impact",
    "needs_follow_up",
    "normalise_set_aside",
    "parse_sam_datetime",
    "payload_hash",
]

Payload = Mapping[str, object]

EXCLUDED_FIELDS: frozenset[str] = frozenset({"links", "uiLink"})
"""Always left out of the hash and the diff (``description`` too while it is a URL)."""

SAM_TIME_ZONE = ZoneInfo("America/New_York")
"""SAM.gov shows times in US Eastern: a deadline written without an offset is read in that zone."""

FOLLOW_UP_WINDOW = timedelta(days=3)
FOLLOW_UP_LEAD = timedelta(days=1)

AWARD_NOTICE_TYPE = "award notice"

_RANK: dict[ImpactLevel, int] = {
    ImpactLevel.INFORMATIONAL: 0,
    ImpactLevel.LOW: 1,
    ImpactLevel.MEDIUM: 2,
    ImpactLevel.HIGH: 3,
    ImpactLevel.CRITICAL: 4,
}

_MEDIUM_FIELDS = frozenset(
    {
        "description",
        "title",
        "pointOfContact",
        "placeOfPerformance",
        "classificationCode",
        "solicitationNumber",
    }
)
_HIGH_FIELDS: dict[str, str] = {
    "noticeId": "new amendment (new noticeId)",
    "type": "notice type changed",
    "baseType": "original notice type changed",
    "award": "award data changed",
}
_COSMETIC = "whitespace, case or punctuation only"
_NONE_SET_ASIDE = frozenset({"", "NONE", "NULL"})
_CANCELLED_STATUS = frozenset({"cancelled", "canceled"})
_CANCELLED_TITLE = re.compile(r"^\W*cancell?ed\b", re.IGNORECASE)
_PUNCTUATION = re.compile(r"[^\w\s]|_")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One top-level field of the notice whose value differs between the two versions."""

    field: str
    old: object
    new: object
    impact: ImpactLevel
    reason: str


@dataclass(frozen=True, slots=True)
class NoticeDiff:
    """The classified difference between two versions of a notice."""

    change_type: ChangeType
    impact: ImpactLevel
    changes: tuple[FieldChange, ...]
    summary: str

    @property
    def changed_fields(self) -> list[str]:
        return [change.field for change in self.changes]

    @property
    def needs_follow_up(self) -> bool:
        return needs_follow_up(self.impact)


# --- normalisation -------------------------------------------------------------------------------


def _is_description_url(value: object) -> bool:
    return isinstance(value, str) and value.strip().lower().startswith(("http://", "https://"))


def _clean(value: object) -> object:
    """Trim strings; drop null and empty-string members of objects, recursively."""
    if isinstance(value, str):
        text = value.strip()
        return None if text == "null" else text
    if isinstance(value, Mapping):
        cleaned = {str(k): _clean(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v is not None and v != ""}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    return value


def _blank(value: object) -> bool:
    cleaned = _clean(value)
    return cleaned is None or cleaned == "" or cleaned == [] or cleaned == {}


def normalise_set_aside(value: object) -> str | None:
    """The set-aside code trimmed and upper-cased; ``""``, ``null``, ``"null"``, ``"NONE"`` are None."""
    if value is None:
        return None
    code = str(value).strip().upper()
    return None if code in _NONE_SET_ASIDE else code


def _resource_links(value: object) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple):
        return sorted(str(item).strip() for item in value if item is not None)
    return [str(value).strip()]


def _naics_set(payload: Payload) -> frozenset[str]:
    codes: set[str] = set()
    many = payload.get("naicsCodes")
    if isinstance(many, list | tuple):
        codes.update(str(code).strip() for code in many if code is not None and str(code).strip())
    single = payload.get("naicsCode")
    if single is not None and str(single).strip():
        codes.add(str(single).strip())
    return frozenset(codes)


def canonical_payload(payload: Payload) -> dict[str, object]:
    """The payload reduced to its content, as hashed (see the module docstring)."""
    content: dict[str, object] = {}
    for key, value in payload.items():
        if key in EXCLUDED_FIELDS or (key == "description" and _is_description_url(value)):
            continue
        if key == "typeOfSetAside":
            content[key] = normalise_set_aside(value)
        elif key == "resourceLinks":
            content[key] = _resource_links(value)
        else:
            content[key] = _clean(value)
    return {k: v for k, v in content.items() if v is not None and v != ""}


def payload_hash(payload: Payload) -> str:
    """Hex sha256 of the canonical JSON of ``canonical_payload(payload)``."""
    text = json.dumps(canonical_payload(payload), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_sam_datetime(value: object) -> datetime | None:
    """A SAM.gov response deadline as an aware datetime, read as the connector reads it.

    With an offset as written (``2026-03-02T16:00:00-05:00``, ``2018-05-09 23:45:22+00``, ``...Z``);
    without one in US Eastern, the zone SAM.gov shows (``2026-02-02 10:00:00``); a bare date is the
    last second of that day in US Eastern. None for null, ``""``, ``"null"`` and what does not parse.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and value.strip() and value.strip() != "null":
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
        if len(text) == 10:  # a bare YYYY-MM-DD
            parsed = datetime.combine(parsed.date(), time(23, 59, 59))
    else:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=SAM_TIME_ZONE)


def _loose(value: object) -> object:
    """The value with case, punctuation and whitespace differences removed, recursively."""
    if isinstance(value, str):
        return _WHITESPACE.sub(" ", _PUNCTUATION.sub(" ", value.casefold())).strip()
    if isinstance(value, Mapping):
        loosened = {str(k): _loose(v) for k, v in value.items()}
        return {k: v for k, v in loosened.items() if v is not None and v != ""}
    if isinstance(value, list | tuple):
        return [_loose(item) for item in value]
    return value


def is_cancelled(payload: Payload) -> bool:
    """Whether the notice says it is cancelled (``status``, or a title starting "CANCELLED")."""
    status = payload.get("status")
    if isinstance(status, str) and status.strip().lower() in _CANCELLED_STATUS:
        return True
    title = payload.get("title")
    return isinstance(title, str) and _CANCELLED_TITLE.match(title.strip()) is not None


def _is_award(payload: Payload) -> bool:
    kind = payload.get("type")
    return isinstance(kind, str) and kind.strip().lower() == AWARD_NOTICE_TYPE


def _is_active(value: object) -> bool:
    return not (isinstance(value, str) and value.strip().lower() == "no") and value is not False


# --- field rules ---------------------------------------------------------------------------------

_Rule = Callable[[str, object, object, Payload, Payload, datetime], tuple[ImpactLevel, str] | None]


def _deadline_rule(
    field: str, old: object, new: object, old_p: Payload, new_p: Payload, now: datetime
) -> tuple[ImpactLevel, str] | None:
    before, after = parse_sam_datetime(old), parse_sam_datetime(new)
    if before is not None and after is not None:
        if after < before:
            return ImpactLevel.CRITICAL, "response deadline moved earlier"
        if after > before:
            return ImpactLevel.HIGH, "response deadline extended"
        return ImpactLevel.INFORMATIONAL, "same response deadline, written differently"
    if before is None and after is None:
        return None
    return ImpactLevel.HIGH, "response deadline set" if before is None else "response deadline removed"


def _set_aside_rule(
    field: str, old: object, new: object, old_p: Payload, new_p: Payload, now: datetime
) -> tuple[ImpactLevel, str] | None:
    before = normalise_set_aside(old_p.get("typeOfSetAside"))
    after = normalise_set_aside(new_p.get("typeOfSetAside"))
    if before != after:
        return ImpactLevel.CRITICAL, f"set-aside changed from {before or 'none'} to {after or 'none'}"
    return ImpactLevel.INFORMATIONAL, "same set-aside, written differently"


def _naics_rule(
    field: str, old: object, new: object, old_p: Payload, new_p: Payload, now: datetime
) -> tuple[ImpactLevel, str] | None:
    if _naics_set(old_p) != _naics_set(new_p):
        return ImpactLevel.HIGH, "NAICS changed"
    return ImpactLevel.INFORMATIONAL, "same NAICS codes, written differently"


def _resource_links_rule(
    field: str, old: object, new: object, old_p: Payload, new_p: Payload, now: datetime
) -> tuple[ImpactLevel, str] | None:
    before, after = set(_resource_links(old)), set(_resource_links(new))
    added, removed = len(after - before), len(before - after)
    if not added and not removed:
        if sorted(_resource_links(old)) == sorted(_resource_links(new)):
            return None  # reordered only: not a change
        return ImpactLevel.INFORMATIONAL, "attachment list repeats a file"
    parts = [
        f"{n} attachment{'s' if n != 1 else ''} {verb}" for n, verb in ((added, "added"), (removed, "removed")) if n
    ]
    return ImpactLevel.HIGH, ", ".join(parts)


def _active_rule(
    field: str, old: object, new: object, old_p: Payload, new_p: Payload, now: datetime
) -> tuple[ImpactLevel, str] | None:
    if _is_active(old) and not _is_active(new):
        deadline = parse_sam_datetime(new_p.get("responseDeadLine")) or parse_sam_datetime(
            old_p.get("responseDeadLine")
        )
        if deadline is not None and deadline > now:
            return ImpactLevel.CRITICAL, "notice archived before its response deadline"
        return ImpactLevel.LOW, "notice archived"
    return ImpactLevel.LOW, "notice active again" if not _is_active(old) else "active flag changed"


_SPECIAL_RULES: dict[str, _Rule] = {
    "responseDeadLine": _deadline_rule,
    "typeOfSetAside": _set_aside_rule,
    "typeOfSetAsideDescription": _set_aside_rule,
    "naicsCode": _naics_rule,
    "naicsCodes": _naics_rule,
    "resourceLinks": _resource_links_rule,
    "active": _active_rule,
}


def _field_change(
    field: str, old: object, new: object, old_p: Payload, new_p: Payload, now: datetime
) -> FieldChange | None:
    if _clean(old) == _clean(new) or (_blank(old) and _blank(new)):
        return None  # padding, or "" versus null versus [] versus absent
    if field == "description" and (_is_description_url(old) or _is_description_url(new)):
        return None  # a noticedesc URL on either side: derived from the noticeId, or not comparable
    rule = _SPECIAL_RULES.get(field)
    if rule is not None:
        verdict = rule(field, old, new, old_p, new_p, now)
        if verdict is None:
            return None
        return FieldChange(field, old, new, *verdict)
    if _loose(old) == _loose(new):
        return FieldChange(field, old, new, ImpactLevel.INFORMATIONAL, _COSMETIC)
    if field in _HIGH_FIELDS:
        return FieldChange(field, old, new, ImpactLevel.HIGH, _HIGH_FIELDS[field])
    if field in _MEDIUM_FIELDS:
        return FieldChange(field, old, new, ImpactLevel.MEDIUM, f"{field} changed")
    return FieldChange(field, old, new, ImpactLevel.LOW, f"{field} changed")


def max_impact(levels: list[ImpactLevel]) -> ImpactLevel:
    """The highest of the levels; informational for none."""
    return max(levels, key=_RANK.__getitem__, default=ImpactLevel.INFORMATIONAL)


def _change_type(old_p: Payload, new_p: Payload, changes: tuple[FieldChange, ...]) -> ChangeType:
    material = {c.field for c in changes if c.impact is not ImpactLevel.INFORMATIONAL}
    if is_cancelled(new_p) and not is_cancelled(old_p):
        return ChangeType.CANCELLED
    award_appeared = "award" in material and not _clean(old_p.get("award"))
    if (_is_award(new_p) and not _is_award(old_p)) or award_appeared:
        return ChangeType.AWARDED
    if "type" in material:
        return ChangeType.TYPE_CHANGED
    if "noticeId" in material:
        return ChangeType.AMENDED
    if "active" in material and not _is_active(new_p.get("active")):
        return ChangeType.ARCHIVED
    return ChangeType.UPDATED


def _summary(change_type: ChangeType, impact: ImpactLevel, changes: tuple[FieldChange, ...]) -> str:
    head = f"{change_type.value.replace('_', ' ').capitalize()} ({impact.value})"
    if not changes:
        return f"{head}: no field changed"
    ordered = sorted(changes, key=lambda c: (-_RANK[c.impact], c.field))
    return f"{head}: " + "; ".join(f"{c.field}: {c.reason}" for c in ordered)


def diff_notices(old: Payload | None, new: Payload | None, *, now: datetime) -> NoticeDiff:
    """Classify the difference between two versions of one notice (lineage).

    ``old`` is None for a notice seen for the first time; ``new`` is None when the notice is
    withdrawn or no longer returned while tracked. ``now`` (aware) decides whether an archived
    notice was withdrawn before its response deadline.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if old is None and new is None:
        raise ValueError("diff_notices needs at least one payload")
    if new is None:
        return NoticeDiff(
            ChangeType.REMOVED,
            ImpactLevel.CRITICAL,
            (),
            "Removed (critical): the notice was withdrawn or is no longer returned",
        )
    if old is None:
        summary = "Created (informational): first version of the notice"
        if is_cancelled(new):
            return NoticeDiff(
                ChangeType.CANCELLED, ImpactLevel.CRITICAL, (), "Cancelled (critical): first seen cancelled"
            )
        return NoticeDiff(ChangeType.CREATED, ImpactLevel.INFORMATIONAL, (), summary)

    fields = sorted((set(old) | set(new)) - EXCLUDED_FIELDS)
    found = (_field_change(field, old.get(field), new.get(field), old, new, now) for field in fields)
    changes = tuple(change for change in found if change is not None)
    change_type = _change_type(old, new, changes)
    impact = max_impact([c.impact for c in changes])
    if change_type is ChangeType.CANCELLED:
        impact = ImpactLevel.CRITICAL
    return NoticeDiff(change_type, impact, changes, _summary(change_type, impact, changes))


# --- follow-up -----------------------------------------------------------------------------------


def needs_follow_up(impact: ImpactLevel) -> bool:
    """High and critical changes get a follow-up activity."""
    return _RANK[impact] >= _RANK[ImpactLevel.HIGH]


def follow_up_due(response_deadline: datetime | str | None, now: datetime) -> datetime:
    """When the follow-up for a change is due: strictly before the response deadline while one is
    ahead (see the module docstring); ``response_deadline`` may be the raw SAM.gov string."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    deadline = parse_sam_datetime(response_deadline)
    if deadline is None:
        return now + FOLLOW_UP_WINDOW
    if deadline <= now:
        return now
    if deadline - FOLLOW_UP_LEAD >= now:
        return min(now + FOLLOW_UP_WINDOW, deadline - FOLLOW_UP_LEAD)
    return now + (deadline - now) / 2
