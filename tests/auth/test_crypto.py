"""SecretBox: round trip, binding to context, tampering, unknown keys, rotation and the key setting."""

from __future__ import annotations

import base64
import os

import pytest

from auth.crypto import SecretBox
from auth.exceptions import AuthError, ConfigurationError, DecryptionError

KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))
AAD = b"mfa:0b7f1f1e-5a43-4a55-9d8e-3f1c2a7b9e01"


def _box(*keys: tuple[str, bytes]) -> SecretBox:
    return SecretBox(dict(keys), current_key_id=keys[0][0])


def test_round_trip_and_token_shape() -> None:
    box = _box(("k1", KEY_A))
    token = box.encrypt(b"JBSWY3DPEHPK3PXP", AAD)
    version, key_id, body = token.split(".")
    assert (version, key_id) == ("v1", "k1")
    assert len(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))) == 12 + 16 + 16
    assert box.decrypt(token, AAD) == b"JBSWY3DPEHPK3PXP"
    assert box.encrypt(b"JBSWY3DPEHPK3PXP", AAD) != token  # fresh nonce


def test_decryption_error_is_an_auth_error() -> None:
    assert issubclass(DecryptionError, AuthError)


def test_a_token_moved_to_another_context_fails() -> None:
    box = _box(("k1", KEY_A))
    token = box.encrypt(b"secret", AAD)
    with pytest.raises(DecryptionError):
        box.decrypt(token, b"mfa:another-user")


def _flip(token: str, index: int) -> str:
    replacement = "A" if token[index] != "A" else "B"
    return token[:index] + replacement + token[index + 1 :]


def test_any_tampering_fails() -> None:
    box = _box(("k1", KEY_A))
    token = box.encrypt(b"secret", AAD)
    body_start = len("v1.k1.")
    for index in range(body_start, len(token)):
        tampered = _flip(token, index)
        with pytest.raises(DecryptionError):
            box.decrypt(tampered, AAD)


@pytest.mark.parametrize(
    "token",
    ["", "v1", "v1.k1", "v2.k1.AAAA", "v1.k1.", "v1.k1.AAAA", "v1.k1.not*base64", "v1.k.1.AAAA", "x.y.z.w"],
)
def test_malformed_tokens_fail(token: str) -> None:
    with pytest.raises(DecryptionError):
        _box(("k1", KEY_A)).decrypt(token, AAD)


def test_truncated_and_extended_tokens_fail() -> None:
    box = _box(("k1", KEY_A))
    token = box.encrypt(b"secret", AAD)
    for bad in (token[:-1], token[:-4], token + "A", token + "AAAA"):
        with pytest.raises(DecryptionError):
            box.decrypt(bad, AAD)


def test_unknown_key_id_fails() -> None:
    token = _box(("k1", KEY_A)).encrypt(b"secret", AAD)
    with pytest.raises(DecryptionError):
        _box(("k2", KEY_A)).decrypt(token, AAD)


def test_relabelled_key_id_fails_even_with_the_same_key() -> None:
    # The header is authenticated: renaming the key in the token is tampering.
    box = _box(("k1", KEY_A), ("k2", KEY_A))
    token = box.encrypt(b"secret", AAD)
    with pytest.raises(DecryptionError):
        box.decrypt(token.replace("v1.k1.", "v1.k2.", 1), AAD)


def test_wrong_key_under_the_same_id_fails() -> None:
    token = _box(("k1", KEY_A)).encrypt(b"secret", AAD)
    with pytest.raises(DecryptionError):
        _box(("k1", KEY_B)).decrypt(token, AAD)


def test_rotation_reads_old_tokens_and_writes_with_the_current_key() -> None:
    old_box = _box(("old", KEY_A))
    old_token = old_box.encrypt(b"secret", AAD)
    rotated = _box(("new", KEY_B), ("old", KEY_A))
    assert rotated.decrypt(old_token, AAD) == b"secret"
    assert rotated.needs_rotation(old_token)
    new_token = rotated.encrypt(rotated.decrypt(old_token, AAD), AAD)
    assert new_token.startswith("v1.new.")
    assert not rotated.needs_rotation(new_token)
    with pytest.raises(DecryptionError):
        old_box.decrypt(new_token, AAD)


@pytest.mark.parametrize("length", [0, 16, 24, 31, 33, 64])
def test_keys_must_be_32_bytes(length: int) -> None:
    with pytest.raises(ConfigurationError, match="exactly 32 bytes"):
        SecretBox({"k1": os.urandom(length)}, current_key_id="k1")


@pytest.mark.parametrize("key_id", ["", "has.dot", "has:colon", "has,comma", "x" * 33, "sp ace"])
def test_key_ids_that_would_break_the_token_or_setting_are_refused(key_id: str) -> None:
    with pytest.raises(ConfigurationError):
        SecretBox({key_id: KEY_A}, current_key_id=key_id)


def test_current_key_must_be_configured() -> None:
    with pytest.raises(ConfigurationError):
        SecretBox({"k1": KEY_A}, current_key_id="k2")
    with pytest.raises(ConfigurationError):
        SecretBox({}, current_key_id="k1")


def test_empty_associated_data_is_a_bug() -> None:
    box = _box(("k1", KEY_A))
    with pytest.raises(ValueError, match="aad"):
        box.encrypt(b"secret", b"")
    with pytest.raises(ValueError, match="aad"):
        box.decrypt(box.encrypt(b"secret", AAD), b"")


def test_from_setting_first_key_is_current() -> None:
    a, b = base64.b64encode(KEY_A).decode(), base64.urlsafe_b64encode(KEY_B).decode().rstrip("=")
    box = SecretBox.from_setting(f" k2026:{a} , k2025:{b} ")
    assert box.current_key_id == "k2026"
    old_token = _box(("k2025", KEY_B)).encrypt(b"secret", AAD)
    assert box.decrypt(old_token, AAD) == b"secret"
    assert box.encrypt(b"x", AAD).startswith("v1.k2026.")


@pytest.mark.parametrize(
    "setting",
    [
        "",
        "k1",
        "k1:",
        ":" + base64.b64encode(KEY_A).decode(),
        "k1:not base64!",
        "k1:" + base64.b64encode(b"short").decode(),
        "k1:" + KEY_A.hex(),  # hex is valid base64 but 48 bytes
        f"k1:{base64.b64encode(KEY_A).decode()},k1:{base64.b64encode(KEY_B).decode()}",
        f"k1:{base64.b64encode(KEY_A).decode()},",
    ],
)
def test_bad_settings_are_refused_without_echoing_keys(setting: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        SecretBox.from_setting(setting)
    for fragment in setting.split(","):
        secret_part = fragment.partition(":")[2].strip()
        if len(secret_part) > 4:
            assert secret_part not in str(raised.value)


def test_repr_shows_key_ids_only() -> None:
    box = _box(("k1", KEY_A))
    assert repr(box) == "SecretBox(key_ids=['k1'], current_key_id='k1')"
