"""HTTP-date (RFC 9110 section 5.6.7): the three formats a recipient must parse, and nothing else."""

from __future__ import annotations

import calendar
import re
import time

_DAYS = "Mon|Tue|Wed|Thu|Fri|Sat|Sun"
_LONG_DAYS = "Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH = "|".join(_MONTHS)
_TIME = r"(?P<hour>\d\d):(?P<minute>\d\d):(?P<second>\d\d)"
# HTTP-date is case-sensitive, separated by exactly one SP, and a 2DIGIT day is zero-padded except in asctime.
_IMF_FIXDATE = re.compile(
    rf"(?:{_DAYS}), (?P<day>\d\d) (?P<month>{_MONTH}) (?P<year>\d{{4}}) {_TIME} GMT", re.ASCII
)
_RFC850 = re.compile(
    rf"(?:{_LONG_DAYS}), (?P<day>\d\d)-(?P<month>{_MONTH})-(?P<year>\d\d) {_TIME} GMT", re.ASCII
)
_ASCTIME = re.compile(
    rf"(?:{_DAYS}) (?P<month>{_MONTH}) (?P<day>\d\d| \d) {_TIME} (?P<year>\d{{4}})", re.ASCII
)


def parse_http_date(value: bytes, now: float | None = None) -> float | None:
    """An IMF-fixdate, RFC 850 or asctime date as a Unix time, or None for anything else (RFC 9110 section
    5.6.7). `now` (default: the clock) places an RFC 850 two-digit year at most 50 years ahead."""
    try:
        text = value.decode("ascii").strip(" \t")
    except UnicodeDecodeError:
        return None
    for pattern in (_IMF_FIXDATE, _RFC850, _ASCTIME):
        match = pattern.fullmatch(text)
        if match is not None:
            year = int(match["year"])
            if pattern is _RFC850:
                year = _full_year(year, time.time() if now is None else now)
            return _timestamp(year, _MONTHS.index(match["month"]) + 1, int(match["day"]), match)
    return None


def format_http_date(timestamp: float) -> bytes:
    """The IMF-fixdate of a Unix time (RFC 9110 section 5.6.7), as a sender must generate it."""
    parts = time.gmtime(timestamp)
    day = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[parts.tm_wday]
    return (
        f"{day}, {parts.tm_mday:02d} {_MONTHS[parts.tm_mon - 1]} {parts.tm_year:04d} "
        f"{parts.tm_hour:02d}:{parts.tm_min:02d}:{parts.tm_sec:02d} GMT"
    ).encode("ascii")


def _full_year(two_digits: int, now: float) -> int:
    """RFC 9110 section 5.6.7: a two-digit year more than 50 years ahead is the most recent such year past."""
    current = time.gmtime(now).tm_year
    year = current - current % 100 + two_digits
    if year > current + 50:
        year -= 100
    return year


def _timestamp(year: int, month: int, day: int, match: re.Match[str]) -> float | None:
    hour, minute, second = int(match["hour"]), int(match["minute"]), int(match["second"])
    if year < 1 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    if hour > 23 or minute > 59 or second > 60:  # 60: a leap second
        return None
    return float(calendar.timegm((year, month, day, hour, minute, second)))
