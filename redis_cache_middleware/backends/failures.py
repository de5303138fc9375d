"""Naming why Redis calls fail, in words an operator can act on."""

from __future__ import annotations

import socket
import ssl

from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .pipeline import StillConnecting

MISCONFIGURED = ("authentication", "TLS", "DNS")


def failure_cause(exc: BaseException) -> str:
    """What went wrong, in one word an operator can act on: authentication, TLS, DNS, refused, reset,
    timeout, connecting (still opening), error-reply (Redis answered with an error) or connection."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 8:
        chain.append(current)
        current = current.__cause__ or current.__context__
    text = " ".join(str(e) for e in chain).upper()
    if any(isinstance(e, AuthenticationError) for e in chain) or any(
        word in text for word in ("WRONGPASS", "NOAUTH", "INVALID PASSWORD", "INVALID USERNAME")
    ):
        return "authentication"
    checks: tuple[tuple[str, type[BaseException] | tuple[type[BaseException], ...]], ...] = (
        ("connecting", StillConnecting),
        ("TLS", ssl.SSLError),
        ("DNS", socket.gaierror),
        ("refused", ConnectionRefusedError),
        ("reset", (ConnectionResetError, BrokenPipeError)),
        ("timeout", (TimeoutError, RedisTimeoutError)),
        ("error-reply", ResponseError),
    )
    for cause, kinds in checks:
        if any(isinstance(e, kinds) for e in chain):
            return cause
    if "CONNECTION REFUSED" in text or "ERRNO 111" in text or "ERROR 111 " in text:
        return "refused"
    if "CONNECTION RESET" in text or "BROKEN PIPE" in text:
        return "reset"
    if "NAME OR SERVICE NOT KNOWN" in text or "NAME RESOLUTION" in text:
        return "DNS"
    if "SSL" in text or "CERTIFICATE" in text:
        return "TLS"
    if "REDIS ERROR" in text:
        return "error-reply"
    return "connection"
