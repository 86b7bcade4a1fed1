"""GWM_AUDIT_KEYS: required with a real database, generated once in embedded mode, never printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.audit_chain import AuditChain
from server.cli import resolve_audit_keys, resolve_secrets
from server.settings import Settings, SettingsError

_REAL = {"DATABASE_URL": "postgresql://o@h/d", "GWM_APP_DATABASE_URL": "postgresql://a@h/d"}


def test_embedded_mode_generates_an_audit_key_once(tmp_path: Path) -> None:
    settings = Settings.from_env({"GWM_DATA_DIR": str(tmp_path)})
    first = resolve_secrets(settings)
    assert first.audit_keys is not None and first.audit_keys.startswith("a1:")
    assert AuditChain.from_setting(first.audit_keys).key_ids == ("a1",)
    assert (tmp_path / "audit-keys").stat().st_mode & 0o777 == 0o600
    assert resolve_audit_keys(settings).audit_keys == first.audit_keys
    assert first.audit_keys.split(":", 1)[1] not in repr(first)


def test_a_real_database_needs_explicit_audit_keys() -> None:
    with pytest.raises(SettingsError, match="GWM_AUDIT_KEYS is required"):
        resolve_audit_keys(Settings.from_env(_REAL))
    given = Settings.from_env({**_REAL, "GWM_AUDIT_KEYS": "k9:" + "B" * 43 + "="})
    assert resolve_audit_keys(given).audit_keys == "k9:" + "B" * 43 + "="
    with pytest.raises(SettingsError, match="audit key id 'k9' appears twice"):
        resolve_audit_keys(Settings.from_env({**_REAL, "GWM_AUDIT_KEYS": "k9:" + "B" * 43 + ",k9:" + "C" * 43}))
