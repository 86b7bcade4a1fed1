"""PasswordHasher (format, rehash, malformed hashes, dummy runs, bounded threads) and PasswordPolicy."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import unicodedata

import pytest
from zxcvbn.frequency_lists import FREQUENCY_LISTS

from auth.exceptions import ConfigurationError
from auth.passwords import (
    PRODUCTION_MIN_ITERATIONS,
    PasswordHasher,
    PasswordPolicy,
    VerifyResult,
    ViolationCode,
)

FAST = 1_000
PHRASE = "violet anchor harbour 42"
CONTEXT = ["Lockheed Dynamics", "jane.doe"]


# --- hashing -------------------------------------------------------------------------------------


async def test_hash_format_and_verify() -> None:
    hasher = PasswordHasher(FAST)
    encoded = await hasher.hash(PHRASE)
    algorithm, iterations, salt, key = encoded.split("$")
    assert (algorithm, iterations) == ("pbkdf2_sha256", "1000")
    assert len(salt) == 24 and len(key) == 44  # 16 and 32 bytes in base64
    assert len(encoded) <= 255
    assert await hasher.verify(PHRASE, encoded) == VerifyResult(ok=True, needs_rehash=False)
    assert await hasher.verify(PHRASE + "x", encoded) == VerifyResult(ok=False, needs_rehash=False)
    assert await hasher.hash(PHRASE) != encoded  # fresh salt each time


async def test_production_iteration_count_and_the_loop_stays_free() -> None:
    assert PRODUCTION_MIN_ITERATIONS == 600_000
    hasher = PasswordHasher(PRODUCTION_MIN_ITERATIONS)
    ticks = 0
    task = asyncio.create_task(hasher.hash(PHRASE))
    while not task.done():
        ticks += 1
        await asyncio.sleep(0)
    encoded = task.result()
    assert encoded.split("$")[1] == "600000"
    # The event loop kept turning while the KDF ran: it ran in a thread.
    assert ticks > 10


async def test_lower_stored_count_asks_for_a_rehash() -> None:
    old = await PasswordHasher(FAST).hash(PHRASE)
    stronger = PasswordHasher(2 * FAST)
    assert await stronger.verify(PHRASE, old) == VerifyResult(ok=True, needs_rehash=True)
    # A failed verification never asks for a rehash (the caller would have nothing to hash).
    assert await stronger.verify("wrong password!", old) == VerifyResult(ok=False, needs_rehash=False)
    # A higher stored count than configured is fine as it is.
    assert await PasswordHasher(FAST // 2).verify(PHRASE, old) == VerifyResult(ok=True, needs_rehash=False)


async def test_nfc_and_nfd_forms_are_the_same_password() -> None:
    hasher = PasswordHasher(FAST)
    composed = unicodedata.normalize("NFC", "café crème brûlée")
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert (await hasher.verify(decomposed, await hasher.hash(composed))).ok


def test_verify_result_refuses_to_be_a_boolean() -> None:
    with pytest.raises(TypeError):
        bool(VerifyResult(ok=False, needs_rehash=False))


_GOOD_SALT = "AAAAAAAAAAAAAAAAAAAAAA=="
_GOOD_KEY = "A" * 43 + "="
_FULLWIDTH_1000 = "1000".translate({ord(d): 0xFF10 + int(d) for d in "0123456789"})


@pytest.mark.parametrize(
    "encoded",
    [
        None,
        "",
        "garbage",
        "$2b$12$abcdefghijklmnopqrstuuJ9lOQ5j8KZr8t1d0mXbqgYzQ0aWQ0SO",
        f"pbkdf2_sha1$1000${_GOOD_SALT}${_GOOD_KEY}",
        f"pbkdf2_sha256$0${_GOOD_SALT}${_GOOD_KEY}",
        f"pbkdf2_sha256$-5${_GOOD_SALT}${_GOOD_KEY}",
        f"pbkdf2_sha256$01000${_GOOD_SALT}${_GOOD_KEY}",
        f"pbkdf2_sha256$99999999${_GOOD_SALT}${_GOOD_KEY}",  # over the iteration cap
        f"pbkdf2_sha256$1000$${_GOOD_KEY}",
        f"pbkdf2_sha256$1000$!!!!${_GOOD_KEY}",
        f"pbkdf2_sha256$1000${_GOOD_SALT}$AAAA",  # key too short
        f"pbkdf2_sha256$1000${_GOOD_SALT}${_GOOD_KEY}$extra",
        f"pbkdf2_sha256$1000${_GOOD_SALT}${_GOOD_KEY}\n",
        f"pbkdf2_sha256${_FULLWIDTH_1000}${_GOOD_SALT}${_GOOD_KEY}",
    ],
)
async def test_malformed_hashes_verify_false_and_still_cost_one_kdf(encoded: str | None) -> None:
    hasher = PasswordHasher(FAST)
    result = await hasher.verify(PHRASE, encoded)
    assert result == VerifyResult(ok=False, needs_rehash=False)
    assert hasher.kdf_calls == 1


async def test_dummy_verification_runs_the_kdf_once() -> None:
    hasher = PasswordHasher(FAST)
    await hasher.verify_dummy(PHRASE)
    assert hasher.kdf_calls == 1
    encoded = await hasher.hash(PHRASE)
    await hasher.verify(PHRASE, encoded)
    assert hasher.kdf_calls == 3


async def test_concurrency_is_bounded() -> None:
    hasher = PasswordHasher(FAST, max_concurrency=2)
    original = hashlib.pbkdf2_hmac
    lock = threading.Lock()
    running = peak = 0

    def counting_kdf(*args: object) -> bytes:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.002)  # widens the overlap a missing bound would show; not needed to pass
            return original(*args)  # type: ignore[arg-type]
        finally:
            with lock:
                running -= 1

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hashlib, "pbkdf2_hmac", counting_kdf)
        results = await asyncio.gather(*(hasher.hash(f"{PHRASE} {i}") for i in range(20)))
    assert len(set(results)) == 20
    assert hasher.kdf_calls == 20
    assert hasher.peak_in_flight == 2
    assert peak <= 2
    assert hasher.in_flight == 0


async def test_a_cancelled_caller_keeps_its_slot_until_the_thread_ends() -> None:
    hasher = PasswordHasher(FAST, max_concurrency=1)
    original = hashlib.pbkdf2_hmac
    release = threading.Event()
    started = threading.Event()

    def blocking_kdf(*args: object) -> bytes:
        started.set()
        release.wait(timeout=10)
        return original(*args)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hashlib, "pbkdf2_hmac", blocking_kdf)
        first = asyncio.create_task(hasher.hash(PHRASE))
        await asyncio.to_thread(started.wait, 10)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        # The thread is still computing, so the slot is still taken and a second hash must wait.
        second = asyncio.create_task(hasher.hash(PHRASE))
        await asyncio.sleep(0)
        assert hasher.in_flight == 1 and not second.done()
        release.set()
        assert (await second).startswith("pbkdf2_sha256$")
    assert hasher.in_flight == 0
    assert hasher.peak_in_flight == 1


@pytest.mark.parametrize("iterations", [0, -1, 10_000_001, True, 1.5])
def test_unusable_iteration_counts_are_refused(iterations: int) -> None:
    with pytest.raises(ConfigurationError):
        PasswordHasher(iterations)


def test_unusable_concurrency_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        PasswordHasher(FAST, max_concurrency=0)


# --- policy --------------------------------------------------------------------------------------

# Random-looking strings: strong to zxcvbn, unrelated to CONTEXT, no character classes required.
_RANDOM = (
    "tq8#Lm2v!Rz9pKwXe4Nb7Yh3Jc6Fd1Gs5Hj0Va8Ub2Wi9Qo4Tr7Ey3Mn6Lk1Pz5Sx0Cv8Bq2Dg9Fa4Rw7Tz3Ku6Hy1Jm5Np0Xb8"
)
_POLICY = PasswordPolicy()


def _codes(password: str, *, mfa: bool = False) -> list[ViolationCode]:
    return [v.code for v in _POLICY.check(password, mfa_enabled=mfa, user_inputs=CONTEXT)]


def test_length_limits() -> None:
    assert _codes(_RANDOM[:14]) == [ViolationCode.TOO_SHORT]
    assert _codes(_RANDOM[:15]) == []
    assert _codes(_RANDOM[:64]) == []
    assert _codes(_RANDOM[:100]) == []
    long = (_RANDOM * 3)[:256]
    assert _codes(long) == []
    assert _codes(long + "q") == [ViolationCode.TOO_LONG]


def test_eight_characters_only_with_mfa() -> None:
    assert _codes(_RANDOM[:8], mfa=True) == []
    assert _codes(_RANDOM[:8], mfa=False) == [ViolationCode.TOO_SHORT]
    assert _codes(_RANDOM[:7], mfa=True) == [ViolationCode.TOO_SHORT]


def test_no_composition_rules() -> None:
    assert _codes("correct horse battery staple quartz") == []


def test_length_is_counted_in_nfc_code_points() -> None:
    # "é" typed as e + combining accent is two code points but one after NFC.
    decomposed_e = "e\u0301"
    assert _codes(_RANDOM[:14] + decomposed_e) == []
    assert _codes(_RANDOM[:13] + decomposed_e) == [ViolationCode.TOO_SHORT]


def test_messages_are_specific() -> None:
    [short] = _POLICY.check(_RANDOM[:14], mfa_enabled=False, user_inputs=[])
    assert short.message == "Use at least 15 characters; this password has 14."
    [short_mfa] = _POLICY.check(_RANDOM[:7], mfa_enabled=True, user_inputs=[])
    assert "at least 8 characters" in short_mfa.message
    [long] = _POLICY.check((_RANDOM * 3)[:260], mfa_enabled=False, user_inputs=[])
    assert long.message == "Use at most 256 characters; this password has 260."


@pytest.mark.parametrize("password", ["1qaz2wsx3edc4rfv", "1QAZ2wsx3EDC4rfv", "qazwsxedcrfvtgb"])
def test_common_passwords_from_the_zxcvbn_list_are_refused(password: str) -> None:
    assert password.lower() in FREQUENCY_LISTS["passwords"]
    violations = _POLICY.check(password, mfa_enabled=False, user_inputs=CONTEXT)
    assert [v.code for v in violations] == [ViolationCode.COMMON]
    assert "commonly used" in violations[0].message


def test_guessable_passwords_are_refused_with_zxcvbn_feedback() -> None:
    [weak] = _POLICY.check("passwordpassword", mfa_enabled=False, user_inputs=CONTEXT)
    assert weak.code is ViolationCode.WEAK
    assert "Repeats" in weak.message
    assert _codes("abcdefghijklmnopqrstu") == [ViolationCode.WEAK]


@pytest.mark.parametrize(
    "password",
    [
        "LockheedDynamics2024!",
        "jane.doe.lockheed!",
        "Lockheed-Dynamics-Jane-Doe",
        "L0ckh33d!Dyn4m1cs",
        "eod.enaj-deehkcol",  # reversed
        "janedoe123456789",
    ],
)
def test_passwords_built_from_tenant_name_or_email_are_refused(password: str) -> None:
    assert len(password) >= 15
    violations = _POLICY.check(password, mfa_enabled=False, user_inputs=CONTEXT)
    assert [v.code for v in violations] == [ViolationCode.WEAK]
    assert "organization's name or your email address" in violations[0].message
    # Without the context the same strings are not all refused: the context is what catches them.
    assert _POLICY.check("LockheedDynamics2024!", mfa_enabled=False, user_inputs=[]) == []


def test_context_words_inside_a_strong_password_are_fine() -> None:
    assert _codes("Lockheed sapphire umbrella quartz tango") == []


def test_user_inputs_must_be_a_sequence_not_a_string() -> None:
    with pytest.raises(TypeError):
        _POLICY.check(_RANDOM[:20], mfa_enabled=False, user_inputs="Lockheed")


@pytest.mark.parametrize(
    "settings",
    [
        {"min_length_with_mfa": 6},
        {"min_length": 8, "min_length_with_mfa": 10},
        {"max_length": 32},
        {"min_zxcvbn_score": 5},
    ],
)
def test_policy_settings_below_nist_floors_are_refused(settings: dict[str, int]) -> None:
    with pytest.raises(ConfigurationError):
        PasswordPolicy(**settings)
