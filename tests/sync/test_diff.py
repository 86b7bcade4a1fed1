"""sync.diff: canonical payload hash, change classification and follow-up dates (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from models.enums import ChangeType, ImpactLevel
from sync.diff import (
    canonical_payload,
    diff_notices,
    follow_up_due,
    is_cancelled,
    max_impact,
    needs_follow_up,
    normalise_set_aside,
    parse_sam_datetime,
    payload_hash,
)

NOW = datetime(2026, 2, 10, 12, 0, tzinfo=UTC)
NOTICE = "a" * 32
FILE_1 = "https://sam.gov/api/prod/opps/v3/opportunities/resources/files/f1/download"
FILE_2 = "https://sam.gov/api/prod/opps/v3/opportunities/resources/files/f2/download"
FILE_3 = "https://sam.gov/api/prod/opps/v3/opportunities/resources/files/f3/download"


def notice(**changes: Any) -> dict[str, Any]:
    """A SAM.gov v2 record shaped as the API returns it, with `changes` applied."""
    base: dict[str, Any] = {
        "noticeId": NOTICE,
        "title": "Enterprise IT Support Services",
        "solicitationNumber": "N0001726R0001",
        "fullParentPathName": "DEPT OF DEFENSE.DEPT OF THE NAVY.NAVSEA.NAVSEA HQ",
        "fullParentPathCode": "017.1700.NAVSEA.NAVSEA HQ",
        "postedDate": "2026-02-02",
        "type": "Solicitation",
        "baseType": "Presolicitation",
        "archiveType": "auto15",
        "archiveDate": "2026-03-17",
        "typeOfSetAsideDescription": "Total Small Business Set-Aside (FAR 19.5)",
        "typeOfSetAside": "SBA",
        "responseDeadLine": "2026-03-02T16:00:00-05:00",
        "naicsCode": "541512",
        "naicsCodes": ["541512"],
        "classificationCode": "DA01",
        "active": "Yes",
        "award": None,
        "pointOfContact": [
            {"type": "primary", "fullName": "Jane Doe", "email": "jane.doe@navy.mil", "phone": "202-555-0100"}
        ],
        "description": f"https://api.sam.gov/prod/opportunities/v1/noticedesc?noticeid={NOTICE}",
        "organizationType": "OFFICE",
        "officeAddress": {"zipcode": "20376", "city": "WASHINGTON NAVY YARD", "countryCode": "USA", "state": "DC"},
        "placeOfPerformance": {"city": {"code": "82000", "name": "Washington"}, "state": {"code": "DC"}},
        "additionalInfoLink": None,
        "uiLink": f"https://sam.gov/workspace/contract/opp/{NOTICE}/view",
        "links": [{"rel": "self", "href": f"https://api.sam.gov/prod/opportunities/v2/search?noticeid={NOTICE}"}],
        "resourceLinks": [FILE_1, FILE_2],
    }
    base.update(changes)
    return base


OTHER = "b" * 32
C, H, M, L, I = (  # noqa: E741
    ImpactLevel.CRITICAL,
    ImpactLevel.HIGH,
    ImpactLevel.MEDIUM,
    ImpactLevel.LOW,
    ImpactLevel.INFORMATIONAL,
)
U = ChangeType.UPDATED

# (case id, old, new, change_type, impact): one case per classification rule.
CASES: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None, ChangeType, ImpactLevel]] = [
    ("created", None, notice(), ChangeType.CREATED, I),
    ("removed / gone while tracked", notice(), None, ChangeType.REMOVED, C),
    (
        "cancelled by title",
        notice(),
        notice(title="CANCELLED - Enterprise IT Support Services"),
        ChangeType.CANCELLED,
        C,
    ),
    ("cancelled by status", notice(), notice(status="cancelled"), ChangeType.CANCELLED, C),
    ("deadline earlier", notice(), notice(responseDeadLine="2026-02-25T16:00:00-05:00"), U, C),
    ("deadline earlier by an hour via offset", notice(), notice(responseDeadLine="2026-03-02T16:00:00-04:00"), U, C),
    ("deadline extended", notice(), notice(responseDeadLine="2026-03-09T16:00:00-05:00"), U, H),
    ("deadline same instant, other offset", notice(), notice(responseDeadLine="2026-03-02T21:00:00+00:00"), U, I),
    ("deadline removed", notice(), notice(responseDeadLine=None), U, H),
    ("set-aside changed", notice(), notice(typeOfSetAside="WOSB", typeOfSetAsideDescription="Women-Owned"), U, C),
    ("set-aside added", notice(typeOfSetAside=None), notice(typeOfSetAside="SBA"), U, C),
    ("set-aside removed to NONE", notice(), notice(typeOfSetAside="NONE"), U, C),
    ("set-aside '' to NONE", notice(typeOfSetAside=""), notice(typeOfSetAside="NONE"), U, I),
    ("set-aside code case", notice(), notice(typeOfSetAside="sba"), U, I),
    ("new amendment", notice(), notice(noticeId=OTHER), ChangeType.AMENDED, H),
    ("attachment added", notice(), notice(resourceLinks=[FILE_1, FILE_2, FILE_3]), U, H),
    ("attachment removed", notice(), notice(resourceLinks=[FILE_1]), U, H),
    ("attachments gone (null)", notice(), notice(resourceLinks=None), U, H),
    ("notice type changed", notice(type="Presolicitation"), notice(), ChangeType.TYPE_CHANGED, H),
    ("award posted", notice(), notice(type="Award Notice", responseDeadLine=None), ChangeType.AWARDED, H),
    ("award data appeared", notice(), notice(award={"number": "N1", "amount": "1000.00"}), ChangeType.AWARDED, H),
    ("NAICS changed", notice(), notice(naicsCode="541511", naicsCodes=["541511"]), U, H),
    ("NAICS added", notice(), notice(naicsCodes=["541512", "541519"]), U, H),
    ("description text", notice(description="Provide IT support."), notice(description="Provide OT support."), U, M),
    ("contacts", notice(), notice(pointOfContact=[{"type": "primary", "fullName": "John Roe"}]), U, M),
    ("place of performance", notice(), notice(placeOfPerformance={"state": {"code": "VA"}}), U, M),
    ("classification", notice(), notice(classificationCode="DA10"), U, M),
    ("title reworded", notice(), notice(title="Enterprise IT Help Desk Services"), U, M),
    ("archive date", notice(), notice(archiveDate="2026-04-01"), U, L),
    ("archive type", notice(), notice(archiveType="manual"), U, L),
    ("office address", notice(), notice(officeAddress={"zipcode": "20376", "city": "DC", "state": "DC"}), U, L),
    ("office path", notice(), notice(fullParentPathName="DEPT OF DEFENSE.DEPT OF THE NAVY.NAVAIR"), U, L),
    (
        "archived after deadline",
        notice(responseDeadLine="2026-02-01"),
        notice(responseDeadLine="2026-02-01", active="No"),
        ChangeType.ARCHIVED,
        L,
    ),
    ("archived before deadline", notice(), notice(active="No"), ChangeType.ARCHIVED, C),
    ("title whitespace", notice(), notice(title="Enterprise  IT Support\nServices"), U, I),
    ("title case", notice(), notice(title="ENTERPRISE IT SUPPORT SERVICES"), U, I),
    ("title punctuation", notice(), notice(title="Enterprise IT Support Services."), U, I),
    (
        "description punctuation",
        notice(description="Provide IT support"),
        notice(description="Provide IT support."),
        U,
        I,
    ),
    (
        "contact case",
        notice(),
        notice(
            pointOfContact=[
                {"type": "primary", "fullName": "JANE DOE", "email": "Jane.Doe@navy.mil", "phone": "202-555-0100"}
            ]
        ),
        U,
        I,
    ),
    ("NAICS written both ways", notice(naicsCodes=None), notice(), U, I),
]


@pytest.mark.parametrize(("old", "new", "change_type", "impact"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_classification(
    old: dict[str, Any] | None, new: dict[str, Any] | None, change_type: ChangeType, impact: ImpactLevel
) -> None:
    result = diff_notices(old, new, now=NOW)
    assert (result.change_type, result.impact) == (change_type, impact), result.summary
    if old is not None and new is not None:
        assert result.changes, "a classified update names its fields"
        assert (
            result.impact == max_impact([c.impact for c in result.changes])
            or result.change_type is ChangeType.CANCELLED
        )
    assert result.summary.startswith(change_type.value.replace("_", " ").capitalize())
    assert result.needs_follow_up is (impact in (H, C))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (notice(), notice()),
        (notice(), notice(title="  Enterprise IT Support Services  ", solicitationNumber=" N0001726R0001 ")),
        (notice(), notice(resourceLinks=[FILE_2, FILE_1])),
        (notice(typeOfSetAside=None), notice(typeOfSetAside="")),
        (notice(resourceLinks=None), notice(resourceLinks=[])),
        (notice(additionalInfoLink=None), notice(additionalInfoLink="")),
        (notice(additionalInfoLink=None), notice(additionalInfoLink="null")),
        (notice(), {k: v for k, v in notice().items() if k != "award"}),
        (notice(), notice(uiLink="https://sam.gov/opp/x/view", links=[])),
        (notice(), notice(description="https://api.sam.gov/prod/opportunities/v1/noticedesc?noticeid=zz")),
    ],
    ids=[
        "same",
        "padding",
        "attachments reordered",
        "set-aside null vs ''",
        "null vs [] links",
        "null vs ''",
        "null vs 'null'",
        "absent vs null",
        "links",
        "desc url",
    ],
)
def test_no_change_is_reported_for_non_content(old: dict[str, Any], new: dict[str, Any]) -> None:
    result = diff_notices(old, new, now=NOW)
    assert result.changes == ()
    assert (result.change_type, result.impact) == (ChangeType.UPDATED, ImpactLevel.INFORMATIONAL)
    assert payload_hash(old) == payload_hash(new)


def test_field_changes_carry_old_and_new_values() -> None:
    new = notice(noticeId=OTHER, responseDeadLine="2026-02-20T16:00:00-05:00", resourceLinks=[FILE_1, FILE_2, FILE_3])
    result = diff_notices(notice(), new, now=NOW)
    by_field = {c.field: c for c in result.changes}
    assert set(by_field) == {"noticeId", "responseDeadLine", "resourceLinks"}
    assert (by_field["noticeId"].old, by_field["noticeId"].new) == (NOTICE, OTHER)
    assert by_field["responseDeadLine"].impact is ImpactLevel.CRITICAL
    assert by_field["resourceLinks"].reason == "1 attachment added"
    assert (result.change_type, result.impact) == (ChangeType.AMENDED, ImpactLevel.CRITICAL)
    assert result.changed_fields == ["noticeId", "resourceLinks", "responseDeadLine"]
    assert "response deadline moved earlier" in result.summary


def test_diff_rejects_two_missing_payloads_and_a_naive_clock() -> None:
    with pytest.raises(ValueError, match="at least one"):
        diff_notices(None, None, now=NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        diff_notices(notice(), notice(), now=datetime(2026, 2, 10))


# --- hash ------------------------------------------------------------------------------------


def test_hash_is_stable_sha256_and_ignores_key_order() -> None:
    digest = payload_hash(notice())
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert payload_hash(dict(reversed(list(notice().items())))) == digest


def test_hash_excludes_fields_derived_from_the_notice_id() -> None:
    canonical = canonical_payload(notice())
    assert {"links", "uiLink", "description"}.isdisjoint(canonical)
    assert canonical["noticeId"] == NOTICE  # a new noticeId is an amendment: it counts


@pytest.mark.parametrize(
    "changes",
    [
        {"noticeId": OTHER},
        {"title": "Enterprise IT Support Services."},
        {"title": "Enterprise IT  Support Services"},
        {"responseDeadLine": "2026-03-03T16:00:00-05:00"},
        {"resourceLinks": [FILE_1, FILE_2, FILE_3]},
        {"resourceLinks": [FILE_1, FILE_2, FILE_2]},
        {"typeOfSetAside": "WOSB"},
        {"description": "Fetched description text"},
        {"archiveDate": "2026-04-01"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_hash_changes_on_content(changes: dict[str, Any]) -> None:
    assert payload_hash(notice(**changes)) != payload_hash(notice())


@pytest.mark.parametrize("no_set_aside", ["", None, "NONE", " none ", "null"])
def test_hash_and_normalisation_treat_no_set_aside_alike(no_set_aside: str | None) -> None:
    assert normalise_set_aside(no_set_aside) is None
    assert payload_hash(notice(typeOfSetAside=no_set_aside)) == payload_hash(notice(typeOfSetAside=None))
    # The connector may drop the key altogether: the normalised form hashes like the raw one.
    without = {k: v for k, v in notice().items() if k != "typeOfSetAside"}
    assert payload_hash(without) == payload_hash(notice(typeOfSetAside=no_set_aside))


def test_set_aside_codes_are_trimmed_and_upper_cased() -> None:
    assert normalise_set_aside(" sdvosbc ") == "SDVOSBC"


# --- helpers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-03-02T16:00:00-05:00", datetime(2026, 3, 2, 21, 0, tzinfo=UTC)),
        ("2018-05-09 23:45:22+00", datetime(2018, 5, 9, 23, 45, 22, tzinfo=UTC)),
        ("2026-03-02T21:00:00Z", datetime(2026, 3, 2, 21, 0, tzinfo=UTC)),
        # Without an offset: US Eastern, as the connector reads it (EST in February, EDT in July).
        ("2026-02-02 10:00:00", datetime(2026, 2, 2, 15, 0, tzinfo=UTC)),
        ("2026-07-02T10:00:00", datetime(2026, 7, 2, 14, 0, tzinfo=UTC)),
        # A bare date: the last second of that day in US Eastern.
        ("2026-02-02", datetime(2026, 2, 3, 4, 59, 59, tzinfo=UTC)),
        (" 2026-02-02 ", datetime(2026, 2, 3, 4, 59, 59, tzinfo=UTC)),
        ("null", None),
        ("", None),
        (None, None),
        ("next Tuesday", None),
    ],
)
def test_parse_sam_datetime(raw: str | None, expected: datetime | None) -> None:
    assert parse_sam_datetime(raw) == expected


def test_is_cancelled() -> None:
    assert is_cancelled(notice(title="Canceled: IT services"))
    assert is_cancelled(notice(status=" Cancelled "))
    assert not is_cancelled(notice(title="Cancellation insurance services"))
    assert not is_cancelled(notice())


@pytest.mark.parametrize(
    ("impact", "expected"),
    [(C, True), (H, True), (M, False), (L, False), (I, False)],
)
def test_needs_follow_up(impact: ImpactLevel, expected: bool) -> None:
    assert needs_follow_up(impact) is expected


@pytest.mark.parametrize(
    ("deadline", "due"),
    [
        (None, NOW + timedelta(days=3)),
        (NOW + timedelta(days=30), NOW + timedelta(days=3)),
        (NOW + timedelta(days=2), NOW + timedelta(days=1)),
        (NOW + timedelta(hours=6), NOW + timedelta(hours=3)),
        (NOW - timedelta(days=1), NOW),
        ("2026-02-12T12:00:00+00:00", NOW + timedelta(days=1)),
        ("2026-02-12", datetime(2026, 2, 12, 4, 59, 59, tzinfo=UTC)),
    ],
    ids=["no deadline", "far", "two days", "six hours", "passed", "raw string", "date only"],
)
def test_follow_up_due_is_before_the_deadline(deadline: datetime | str | None, due: datetime) -> None:
    result = follow_up_due(deadline, NOW)
    assert result == due
    parsed = parse_sam_datetime(deadline)
    if parsed is not None and parsed > NOW:
        assert NOW <= result < parsed


def test_follow_up_due_needs_an_aware_clock() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        follow_up_due(None, datetime(2026, 2, 10))


def test_enum_values_are_the_models_value_sets() -> None:
    # The diff speaks the stored vocabulary: every result is a member of the models' enums.
    results = [diff_notices(old, new, now=NOW) for _, old, new, _, _ in CASES]
    assert {r.change_type for r in results} == set(ChangeType)
    assert {r.impact for r in results} == set(ImpactLevel)
