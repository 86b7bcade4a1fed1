"""The permission catalog, the system roles and docs/permissions.md agree."""

from __future__ import annotations

import re
from pathlib import Path

from auth.permissions import PERMISSION_DESCRIPTIONS, SYSTEM_ROLES, Permission, SystemRole

DOC = Path(__file__).resolve().parents[2] / "docs" / "permissions.md"


def test_every_permission_is_resource_colon_action_and_described() -> None:
    for permission in Permission:
        # resource[.part]:action, or the GraphQL endpoint's graphql:<object>:<action> (graphql:document:register)
        assert re.fullmatch(r"[a-z_]+(\.[a-z_]+)?:[a-z]+|graphql:[a-z_]+:[a-z]+", permission.value), permission
        assert PERMISSION_DESCRIPTIONS[permission]


def test_docs_list_every_permission_with_its_description() -> None:
    doc = DOC.read_text()
    for permission in Permission:
        assert f"| `{permission.value}` | {PERMISSION_DESCRIPTIONS[permission]} |" in doc, permission


def test_docs_role_matrix_matches_the_code() -> None:
    lines = DOC.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| permission | Tenant Admin"))
    roles = [cell.strip() for cell in lines[start].strip("|").split("|")[1:]]
    assert roles == [r.value for r in SystemRole]
    matrix = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        matrix[cells[0].strip("`")] = {
            SystemRole(r) for r, cell in zip(roles, cells[1:], strict=True) if cell == "x"
        }
    assert set(matrix) == {p.value for p in Permission}
    for permission in Permission:
        assert matrix[permission.value] == {r for r in SystemRole if permission in SYSTEM_ROLES[r]}, (
            permission
        )


def test_least_privilege_between_system_roles() -> None:
    assert SYSTEM_ROLES[SystemRole.TENANT_ADMIN] == frozenset(Permission)
    viewer = SYSTEM_ROLES[SystemRole.VIEWER]
    assert all(p.value.endswith(":read") for p in viewer)
    assert Permission.OPPORTUNITY_SCORE_READ not in viewer
    assert Permission.CAPTURE_PLAN_STRATEGY_READ not in viewer
    auditor = SYSTEM_ROLES[SystemRole.AUDITOR]
    assert Permission.AUDIT_READ in auditor
    assert not any(p.value.endswith((":write", ":admin", ":archive")) for p in auditor)
    only_admin = {
        Permission.USER_ADMIN,
        Permission.ROLE_ADMIN,
        Permission.API_KEY_ADMIN,
        Permission.TENANT_ADMIN,
        Permission.SOURCE_ADMIN,
        Permission.AUDIT_READ,
    }
    for role in SystemRole:
        if role not in (SystemRole.TENANT_ADMIN, SystemRole.AUDITOR):
            assert not (SYSTEM_ROLES[role] & only_admin), role
