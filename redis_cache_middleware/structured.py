"""A strict parser for Structured Field Dictionaries (RFC 8941 section 4.2.2), as targeted cache control
fields use them (RFC 9213 section 2.1). Any syntax error rejects the whole field."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass

BareItem = int | float | str | bytes | bool
Parameters = dict[str, BareItem]


class Token(str):
    """An sf-token (RFC 8941 section 3.3.4), distinct from an sf-string."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Item:
    value: BareItem | tuple[Item, ...]  # a tuple is an Inner List (section 3.1.1)
    params: Parameters


_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
_NUMBER = re.compile(r"-?[0-9]{1,15}(?:\.[0-9]{1,3})?")
_BYTES = re.compile(r":([A-Za-z0-9+/=]*):")
_OWS = " \t"


class _Invalid(ValueError):
    pass


def parse_dictionary(field_lines: Iterable[bytes]) -> dict[str, Item] | None:
    """The Dictionary of the field's lines joined by commas (section 4.2), or None when it does not parse."""
    try:
        text = b",".join(field_lines).decode("ascii")
    except UnicodeDecodeError:
        return None
    parser = _Parser(text.strip(" "))
    try:
        return parser.dictionary()
    except _Invalid:
        return None


class _Parser:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def dictionary(self) -> dict[str, Item]:
        """Section 4.2.2."""
        members: dict[str, Item] = {}
        while self.pos < len(self.text):
            key = self.key()
            if self.peek() == "=":
                self.pos += 1
                members[key] = self.item_or_inner_list()
            else:
                members[key] = Item(True, self.parameters())
            self.skip(_OWS)
            if self.pos >= len(self.text):
                return members
            self.expect(",")
            self.skip(_OWS)
            if self.pos >= len(self.text):
                raise _Invalid("trailing comma")
        return members

    def item_or_inner_list(self) -> Item:
        if self.peek() != "(":
            return Item(self.bare_item(), self.parameters())
        self.pos += 1  # section 4.2.1.2
        items: list[Item] = []
        while True:
            self.skip(" ")
            if self.peek() == ")":
                self.pos += 1
                return Item(tuple(items), self.parameters())
            items.append(Item(self.bare_item(), self.parameters()))
            if self.peek() not in (" ", ")"):
                raise _Invalid("inner list member not followed by a space or ')'")

    def parameters(self) -> Parameters:
        """Section 4.2.3.2."""
        params: Parameters = {}
        while self.peek() == ";":
            self.pos += 1
            self.skip(" ")
            key = self.key()
            value: BareItem = True
            if self.peek() == "=":
                self.pos += 1
                value = self.bare_item()
            params[key] = value
        return params

    def key(self) -> str:
        return self.match(_KEY)

    def bare_item(self) -> BareItem:
        """Section 4.2.3.1."""
        char = self.peek()
        if char == '"':
            return self.string()
        if char == "?":
            flag = self.text[self.pos + 1 : self.pos + 2]
            if flag not in ("0", "1"):
                raise _Invalid("boolean")
            self.pos += 2
            return flag == "1"
        if char == ":":
            encoded = _BYTES.match(self.text, self.pos)
            if encoded is None:
                raise _Invalid("byte sequence")
            self.pos = encoded.end()
            try:
                data = encoded[1]  # section 4.2.7: missing "=" padding is tolerated
                return base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
            except binascii.Error as error:
                raise _Invalid("byte sequence") from error
        if char == "-" or char.isdigit():
            number = self.match(_NUMBER)
            if "." in number:
                if len(number.lstrip("-").partition(".")[0]) > 12:
                    raise _Invalid("decimal")
                return float(number)
            return int(number)
        return Token(self.match(_TOKEN))

    def string(self) -> str:
        """Section 4.2.5: printable ASCII, with only `\\"` and `\\\\` escaped."""
        self.pos += 1
        chars: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == "\\":
                escaped = self.text[self.pos : self.pos + 1]
                if escaped not in ('"', "\\"):
                    raise _Invalid("escape")
                chars.append(escaped)
                self.pos += 1
            elif char == '"':
                return "".join(chars)
            elif not " " <= char <= "~":
                raise _Invalid("string character")
            else:
                chars.append(char)
        raise _Invalid("unterminated string")

    def match(self, pattern: re.Pattern[str]) -> str:
        found = pattern.match(self.text, self.pos)
        if found is None:
            raise _Invalid(f"expected {pattern.pattern} at {self.pos}")
        self.pos = found.end()
        return found[0]

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise _Invalid(f"expected {char!r} at {self.pos}")
        self.pos += 1

    def skip(self, chars: str) -> None:
        while self.peek() and self.peek() in chars:
            self.pos += 1
