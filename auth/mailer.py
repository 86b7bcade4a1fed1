"""Outgoing email: the sender of invitation and password-reset messages.

`SmtpMailer` speaks SMTP with the standard library's smtplib, in a small thread pool of its own
(so a slow mail server cannot occupy the threads the password hasher needs), with a timeout on
every socket operation and one on the whole delivery. `send` waits for the server to accept the
message and raises `MailerError` otherwise; `send_later` schedules a delivery and returns at once,
for answers that must not depend on whether an email went out (a password-reset request must
look the same for an unknown address). Scheduled deliveries are bounded: past `max_pending`,
new ones are dropped with a warning rather than queued without end.

Log lines and exception messages name the failure's type, never the message body: bodies carry
single-use tokens.
"""

from __future__ import annotations

import asyncio
import logging
import re
import smtplib
import ssl
from concurrent.futures import ThreadPoolExecutor
from email.headerregistry import Address, HeaderRegistry
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Protocol

from auth.exceptions import AuthError, ConfigurationError

__all__ = ["Mailer", "MailerError", "SmtpMailer", "valid_address"]

_log = logging.getLogger(__name__)

# Conservative: one @, no whitespace or control characters, a dot in the domain. The SMTP server
# decides deliverability; this keeps header injection and obvious typos out.
_ADDRESS = re.compile(r"[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+")
MAX_ADDRESS_LENGTH = 254


class MailerError(AuthError):
    """An email could not be handed to the mail server. The message names no recipient or body."""


def valid_address(address: str) -> bool:
    """True for an address `SmtpMailer` will accept as a recipient."""
    if len(address) > MAX_ADDRESS_LENGTH or not _ADDRESS.fullmatch(address):
        return False
    try:
        Address(addr_spec=address)
    except (ValueError, IndexError):
        return False
    return True


class Mailer(Protocol):
    """What the account lifecycle needs from an email sender."""

    async def send(self, to: str, subject: str, body: str) -> None:
        """Deliver now; raise MailerError if the server does not accept the message."""
        ...

    def send_later(self, to: str, subject: str, body: str) -> bool:
        """Schedule a delivery; False when it was dropped (too many pending). Failures are logged."""
        ...

    async def aclose(self) -> None:
        """Finish (bounded) the scheduled deliveries and release the threads."""
        ...


class SmtpMailer:
    """Sends plain-text email through one SMTP server (optionally STARTTLS and AUTH)."""

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        *,
        timeout: float = 10.0,
        max_concurrency: int = 2,
        max_pending: int = 100,
    ) -> None:
        if not host:
            raise ConfigurationError("SMTP host is required")
        if not 1 <= port <= 65535:
            raise ConfigurationError("SMTP port must be between 1 and 65535")
        if (username is None) != (password is None):
            raise ConfigurationError("SMTP username and password go together")
        if timeout <= 0 or max_concurrency < 1 or max_pending < 1:
            raise ConfigurationError("SMTP timeout, concurrency and queue bound must be positive")
        try:
            sender_domain = _sender_domain(sender)
        except (ValueError, IndexError) as exc:
            raise ConfigurationError("SMTP sender is not a valid From address") from exc
        if username is not None and not starttls and host not in {"127.0.0.1", "::1", "localhost"}:
            _log.warning("SMTP AUTH without STARTTLS: the SMTP password crosses the network in clear text")
        self._host = host
        self._port = port
        self._sender = sender
        self._sender_domain = sender_domain
        self._username = username
        self._password = password
        self._starttls = starttls
        self._timeout = timeout
        self._max_pending = max_pending
        self._executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="gwm-smtp")
        self._pending: set[asyncio.Task[None]] = set()
        self._closed = False
        self.sent = 0
        self.failed = 0

    def __repr__(self) -> str:
        return f"SmtpMailer(host={self._host!r}, port={self._port}, starttls={self._starttls})"

    @property
    def pending(self) -> int:
        """Scheduled deliveries not finished yet."""
        return len(self._pending)

    async def send(self, to: str, subject: str, body: str) -> None:
        if self._closed:
            raise MailerError("the mailer is closed")
        message = self._message(to, subject, body)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._deliver, message)
        # Each socket operation times out on its own; this bounds their sum (connect, EHLO,
        # STARTTLS, AUTH, MAIL, RCPT, DATA). A worker thread still blocked finishes by itself.
        try:
            await asyncio.wait_for(future, timeout=self._timeout * 3)
        except TimeoutError:
            self.failed += 1
            raise MailerError("the mail server did not answer in time") from None
        except (smtplib.SMTPException, OSError) as exc:
            self.failed += 1
            code = getattr(exc, "smtp_code", None)
            raise MailerError(
                f"delivery failed: {type(exc).__name__}{f' ({code})' if code else ''}"
            ) from None
        self.sent += 1

    def send_later(self, to: str, subject: str, body: str) -> bool:
        if self._closed or len(self._pending) >= self._max_pending:
            _log.warning("email dropped: %d deliveries already pending", len(self._pending))
            return False
        message = self._message(to, subject, body)  # fail now, in the caller, for a bad address
        task = asyncio.get_running_loop().create_task(self._send_logged(message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return True

    async def flush(self) -> None:
        """Wait until every scheduled delivery has finished (each is bounded by the delivery timeout)."""
        if self._pending:
            await asyncio.wait(set(self._pending))

    async def aclose(self) -> None:
        self._closed = True
        await self.flush()  # each delivery gives up after its own bound (_send_logged)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _send_logged(self, message: EmailMessage) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.run_in_executor(self._executor, self._deliver, message), timeout=self._timeout * 3
            )
        except TimeoutError:
            self.failed += 1
            _log.warning("email delivery timed out (%s)", message["Subject"])
        except (smtplib.SMTPException, OSError) as exc:
            self.failed += 1
            _log.warning("email delivery failed (%s): %s", message["Subject"], type(exc).__name__)
        else:
            self.sent += 1

    def _message(self, to: str, subject: str, body: str) -> EmailMessage:
        if not valid_address(to):
            raise MailerError("not a deliverable email address")
        message = EmailMessage()
        try:
            message["From"] = self._sender
            message["To"] = to
            message["Subject"] = subject
        except ValueError as exc:  # a CR or LF in a header value: refused, never folded into headers
            raise MailerError("invalid header value") from exc
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain=self._sender_domain)
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this
        message.set_content(body)
        return message

    def _deliver(self, message: EmailMessage) -> None:
        """Runs in a worker thread."""
        with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as smtp:
            if self._starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self._username is not None and self._password is not None:
                smtp.login(self._username, self._password)
            smtp.send_message(message)


def _sender_domain(sender: str) -> str:
    header = HeaderRegistry()("From", sender)
    addresses = header.addresses  # type: ignore[attr-defined]
    if len(addresses) != 1 or not addresses[0].domain:
        raise ValueError("one From address with a domain is required")
    domain: str = addresses[0].domain
    return domain
