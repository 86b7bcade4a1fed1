"""Password hashing (PBKDF2-HMAC-SHA256) and the NIST SP 800-63B password policy.

`PasswordHasher` produces `pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>` strings (about 90
characters, within VARCHAR(255)) and verifies them. PBKDF2 with SHA-256 is the FIPS 140-approved
choice, which is why it is used instead of a memory-hard function. The iteration count lives in
each hash, so raising the setting makes older hashes report `needs_rehash` on the next good login.
The KDF runs in a worker thread behind a semaphore: a login flood queues instead of stalling the
event loop or occupying every thread of the default executor.

`PasswordPolicy` applies 800-63B: a minimum length (15, or 8 when the account has MFA), at least
64 characters allowed, no composition rules, refusal of common passwords (zxcvbn's list) and of
passwords that zxcvbn scores too low given context such as the tenant name and the email's local
part. Both classes measure and hash the NFC form, so the same password typed on two keyboards that
emit different Unicode sequences is one password.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
import secrets
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from zxcvbn import zxcvbn as _zxcvbn_score
from zxcvbn.frequency_lists import FREQUENCY_LISTS as _FREQUENCY_LISTS

from auth.exceptions import ConfigurationError

__all__ = [
    "PRODUCTION_MIN_ITERATIONS",
    "PasswordHasher",
    "PasswordPolicy",
    "PolicyViolation",
    "VerifyResult",
    "ViolationCode",
    "normalize_password",
]

PRODUCTION_MIN_ITERATIONS = 600_000
"""OWASP's figure for PBKDF2-HMAC-SHA256; settings refuse less outside tests."""

_ALGORITHM = "pbkdf2_sha256"
_SALT_BYTES = 16
_KEY_BYTES = 32
# A stored hash names its own iteration count; the cap keeps a corrupt or planted row from making
# one login burn minutes of CPU. It is ~16x the production figure, room for years of increases.
_MAX_ITERATIONS = 10_000_000
_ENCODED = re.compile(
    r"pbkdf2_sha256\$(?P<iterations>[1-9][0-9]{0,7})"
    r"\$(?P<salt>[A-Za-z0-9+/]+={0,2})\$(?P<key>[A-Za-z0-9+/]+={0,2})"
)


def normalize_password(password: str) -> str:
    """The form a password is measured and hashed in (Unicode NFC, as 800-63B asks)."""
    return unicodedata.normalize("NFC", password)


# --- hashing -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of `PasswordHasher.verify`: `ok`, and whether the caller should store a fresh hash."""

    ok: bool
    needs_rehash: bool

    def __bool__(self) -> bool:
        # A dataclass instance is always truthy, so `if await hasher.verify(...)` would accept every
        # password. Refusing truthiness turns that mistake into an immediate TypeError.
        raise TypeError("VerifyResult is not a boolean; read .ok")


def _encode(iterations: int, salt: bytes, key: bytes) -> str:
    salt_b64 = base64.b64encode(salt).decode("ascii")
    key_b64 = base64.b64encode(key).decode("ascii")
    return f"{_ALGORITHM}${iterations}${salt_b64}${key_b64}"


def _decode(encoded: object) -> tuple[int, bytes, bytes] | None:
    """Parse a stored hash; None for anything that is not one we could have written."""
    if not isinstance(encoded, str):
        return None
    match = _ENCODED.fullmatch(encoded)
    if match is None:
        return None
    iterations = int(match["iterations"])
    try:
        salt = base64.b64decode(match["salt"], validate=True)
        key = base64.b64decode(match["key"], validate=True)
    except (binascii.Error, ValueError):
        return None
    if iterations > _MAX_ITERATIONS or not 8 <= len(salt) <= 64 or len(key) != _KEY_BYTES:
        return None
    return iterations, salt, key


class PasswordHasher:
    """Hashes and verifies passwords; every KDF run goes through one bounded thread pool slot.

    `kdf_calls`, `in_flight` and `peak_in_flight` are instrumentation for tests and metrics: they
    show that an unknown account still costs one KDF run and that concurrency stays bounded.
    Create the hasher once per process and use it from one event loop (its semaphore binds to it).
    """

    def __init__(self, iterations: int, max_concurrency: int = 4) -> None:
        if isinstance(iterations, bool) or not isinstance(iterations, int):
            raise ConfigurationError("PBKDF2 iterations must be an integer")
        if not 1 <= iterations <= _MAX_ITERATIONS:
            raise ConfigurationError(f"PBKDF2 iterations must be between 1 and {_MAX_ITERATIONS:,}")
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ConfigurationError("max_concurrency must be a positive integer")
        self._iterations = iterations
        self._max_concurrency = max_concurrency
        self._semaphore = asyncio.Semaphore(max_concurrency)
        # The dummy path needs a salt and an expected key of the real shapes, nothing more: no
        # password can match and the comparison result is thrown away.
        self._dummy_salt = secrets.token_bytes(_SALT_BYTES)
        self._dummy_key = bytes(_KEY_BYTES)
        self._kdf_calls = 0
        self._in_flight = 0
        self._peak_in_flight = 0
        self._running: set[asyncio.Task[bytes]] = set()

    def __repr__(self) -> str:
        return f"PasswordHasher(iterations={self._iterations}, max_concurrency={self._max_concurrency})"

    @property
    def iterations(self) -> int:
        return self._iterations

    @property
    def kdf_calls(self) -> int:
        """How many times the KDF has been started (real, rehash-check and dummy runs alike)."""
        return self._kdf_calls

    @property
    def in_flight(self) -> int:
        """KDF runs currently holding a slot (at most `max_concurrency`)."""
        return self._in_flight

    @property
    def peak_in_flight(self) -> int:
        """The highest `in_flight` seen since the hasher was created."""
        return self._peak_in_flight

    async def hash(self, password: str) -> str:
        """Hash `password` (NFC-normalized) with a fresh salt at the configured iteration count."""
        salt = secrets.token_bytes(_SALT_BYTES)
        key = await self._derive(password, salt, self._iterations)
        return _encode(self._iterations, salt, key)

    async def verify(self, password: str, encoded: str | None) -> VerifyResult:
        """Check `password` against a stored hash. Never raises for a bad or missing hash.

        A malformed or absent hash (an SSO-only user has none) still costs one KDF run at the
        configured count, so response time does not reveal which accounts have usable passwords.
        """
        parsed = _decode(encoded)
        if parsed is None:
            await self.verify_dummy(password)
            return VerifyResult(ok=False, needs_rehash=False)
        iterations, salt, expected = parsed
        actual = await self._derive(password, salt, iterations)
        ok = hmac.compare_digest(actual, expected)
        return VerifyResult(ok=ok, needs_rehash=ok and iterations < self._iterations)

    async def verify_dummy(self, password: str) -> None:
        """Spend exactly what a real verification costs, for an unknown tenant or email."""
        actual = await self._derive(password, self._dummy_salt, self._iterations)
        hmac.compare_digest(actual, self._dummy_key)

    async def _derive(self, password: str, salt: bytes, iterations: int) -> bytes:
        # No length cap is needed here: PBKDF2 hashes an over-long HMAC key once up front, so a
        # huge password costs one pass over it, not one per iteration. Request size limits apply.
        secret = normalize_password(password).encode("utf-8")
        await self._semaphore.acquire()
        self._kdf_calls += 1
        self._in_flight += 1
        self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        try:
            task = asyncio.create_task(
                asyncio.to_thread(hashlib.pbkdf2_hmac, "sha256", secret, salt, iterations, _KEY_BYTES)
            )
        except BaseException:
            self._release()
            raise
        # The slot is released when the thread finishes, not when the caller stops waiting: a
        # client that disconnects mid-login cancels its request, but the thread keeps running, and
        # freeing the slot then would let a flood of aborted logins exceed the bound.
        self._running.add(task)
        task.add_done_callback(self._finished)
        return await asyncio.shield(task)

    def _finished(self, task: asyncio.Task[bytes]) -> None:
        self._running.discard(task)
        if not task.cancelled():
            # Marks the exception retrieved when the waiter was cancelled and nobody else reads it.
            task.exception()
        self._release()

    def _release(self) -> None:
        self._in_flight -= 1
        self._semaphore.release()


# --- policy --------------------------------------------------------------------------------------


class ViolationCode(StrEnum):
    TOO_SHORT = "TOO_SHORT"
    TOO_LONG = "TOO_LONG"
    COMMON = "COMMON"
    WEAK = "WEAK"


@dataclass(frozen=True, slots=True)
class PolicyViolation:
    """One reason a password was refused; `message` is written for the person choosing it."""

    code: ViolationCode
    message: str


_COMMON_PASSWORDS: frozenset[str] = frozenset(p.lower() for p in _FREQUENCY_LISTS["passwords"])
# zxcvbn's matching grows faster than linearly with length (~30 ms at 100 characters). Characters
# past the first 100 can only add strength, so the prefix is enough to judge.
_ZXCVBN_MAX_CHARS = 100
# zxcvbn stores the user inputs of the current call in a module-global dictionary, so two threads
# scoring at once could score against each other's context. Serialize the calls.
_ZXCVBN_LOCK = threading.Lock()
_MIN_CONTEXT_WORD = 3
_WORD_SPLIT = re.compile(r"[\W_]+")
# Character-for-character undoing of common substitutions ("L0ckh33d"), so positions found in the
# translated text are positions in the password. '1', '!' and '|' stand for either i or l.
_UNLEET = str.maketrans("0345789@$+", "oeastbgast")
_UNLEET_I = str.maketrans("1!|", "iii")
_UNLEET_L = str.maketrans("1!|", "lll")

_CONTEXT_MESSAGE = (
    "This password is built from words tied to your account, such as your organization's name or "
    "your email address, which attackers try first. Add unrelated words or choose a different password."
)


def _context_words(user_inputs: Sequence[str]) -> list[str]:
    """The inputs and their parts: "Acme Federal" gives acme federal, acme, federal, acmefederal."""
    if isinstance(user_inputs, str):
        # A bare string is a Sequence[str] of characters; that would silently weaken the check.
        raise TypeError("user_inputs must be a sequence of strings, not a string")
    words: dict[str, None] = {}
    for raw in user_inputs:
        text = normalize_password(raw).strip().lower()
        parts = [p for p in _WORD_SPLIT.split(text) if p]
        for word in (text, *parts, "".join(parts)):
            if len(word) >= _MIN_CONTEXT_WORD:
                words[word] = None
    return list(words)


def _context_positions(password: str, words: list[str]) -> set[int]:
    """Indexes of `password` covered by a context word, plain, reversed or with digit-for-letter swaps."""
    # Lower-case per character: str.lower() can lengthen some characters and shift every index.
    lowered = "".join(c.lower() if len(c.lower()) == 1 else c for c in password)
    base = lowered.translate(_UNLEET)
    views = {lowered, base.translate(_UNLEET_I), base.translate(_UNLEET_L)}
    covered: set[int] = set()
    for view in views:
        for word in words:
            for needle in (word, word[::-1]):
                start = view.find(needle)
                while start != -1:
                    covered.update(range(start, start + len(needle)))
                    start = view.find(needle, start + 1)
    return covered


def _reachable_score(length: int) -> int:
    """zxcvbn's score for a random password of `length` characters (10**length guesses).

    zxcvbn cannot rate any 8-character password above 2, so a fixed minimum of 3 would refuse
    every 8-character password that 800-63B allows with MFA. The required score is capped here.
    """
    guesses = 10**length
    # zxcvbn's guesses_to_score thresholds, with its delta of 5.
    for score, bound in enumerate((10**3, 10**6, 10**8, 10**10)):
        if guesses < bound + 5:
            return score
    return 4


def _zxcvbn(password: str, user_inputs: list[str]) -> dict[str, Any]:
    if not password:
        return {"score": 0, "sequence": [], "feedback": {"warning": "", "suggestions": []}}
    with _ZXCVBN_LOCK:
        result: dict[str, Any] = _zxcvbn_score(
            password, user_inputs=user_inputs, max_length=_ZXCVBN_MAX_CHARS
        )
    return result


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    """NIST SP 800-63B password rules; the numbers are per-tenant settings.

    `check` is CPU-bound for up to ~60 ms (zxcvbn, twice at most); it is safe to run in a thread.
    """

    min_length: int = 15
    min_length_with_mfa: int = 8
    max_length: int = 256
    min_zxcvbn_score: int = 3

    def __post_init__(self) -> None:
        # 800-63B floors: 8 characters at the very least, and at least 64 must be allowed.
        if self.min_length_with_mfa < 8:
            raise ConfigurationError("min_length_with_mfa must be at least 8")
        if self.min_length < self.min_length_with_mfa:
            raise ConfigurationError("min_length must be at least min_length_with_mfa")
        if self.max_length < max(64, self.min_length):
            raise ConfigurationError("max_length must allow at least 64 characters and min_length")
        if not 0 <= self.min_zxcvbn_score <= 4:
            raise ConfigurationError("min_zxcvbn_score must be between 0 and 4")

    def check(self, password: str, *, mfa_enabled: bool, user_inputs: Sequence[str]) -> list[PolicyViolation]:
        """Every reason `password` is refused; an empty list means it is acceptable.

        `user_inputs` is the context an attacker would try: the tenant's name, the email's local
        part, the user's name. Length is counted in Unicode code points of the NFC form.
        """
        candidate = normalize_password(password)
        context = _context_words(user_inputs)
        length = len(candidate)
        minimum = self.min_length_with_mfa if mfa_enabled else self.min_length
        violations: list[PolicyViolation] = []
        if length < minimum:
            violations.append(
                PolicyViolation(
                    ViolationCode.TOO_SHORT,
                    f"Use at least {minimum} characters; this password has {length}.",
                )
            )
        if length > self.max_length:
            violations.append(
                PolicyViolation(
                    ViolationCode.TOO_LONG,
                    f"Use at most {self.max_length} characters; this password has {length}.",
                )
            )
        if not candidate:
            return violations
        if candidate.lower() in _COMMON_PASSWORDS:
            # Reported alone: "too easy to guess" on top would say the same thing less precisely.
            violations.append(
                PolicyViolation(
                    ViolationCode.COMMON,
                    "This password is on a list of commonly used passwords that attackers try first. "
                    "Choose a different one.",
                )
            )
            return violations
        weakness = self._weakness(candidate[:_ZXCVBN_MAX_CHARS], context)
        if weakness is not None:
            violations.append(PolicyViolation(ViolationCode.WEAK, weakness))
        return violations

    def _weakness(self, scored: str, context: list[str]) -> str | None:
        result = _zxcvbn(scored, context)
        required = min(self.min_zxcvbn_score, _reachable_score(len(scored)))
        covered = _context_positions(scored, context)
        for match in result["sequence"]:
            if match.get("dictionary_name") == "user_inputs":
                covered.update(range(match["i"], match["j"] + 1))
        if result["score"] < required:
            if covered:
                return _CONTEXT_MESSAGE
            feedback = result["feedback"]
            hints = [feedback.get("warning") or "", *(feedback.get("suggestions") or [])[:1]]
            detail = " ".join(h.strip() for h in hints if h and h.strip())
            return (
                f"This password is too easy to guess. {detail or 'Use a longer phrase of unrelated words.'}"
            )
        if covered:
            # zxcvbn credits a context word with a few guesses and may fold one into a brute-force
            # run, so "jane.doe.lockheed!" can score 4. Context adds nothing an attacker does not
            # know: what remains without it must reach the minimum on its own.
            rest = "".join(c for i, c in enumerate(scored) if i not in covered)
            if _zxcvbn(rest, context)["score"] < self.min_zxcvbn_score:
                return _CONTEXT_MESSAGE
        return None
