"""The stored-record codec: every field comes back, and a record that is not exactly what this key's writer
sealed (another key, another signature, cut short, flipped, another format) reads as None, never raises."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from redis_cache_middleware.entry import (
    FORMAT_VERSION,
    MUST_REVALIDATE,
    REVALIDATABLE,
    Entry,
    VaryMarker,
    decode,
    decode_row,
    encode,
    encode_marker,
    encode_row,
)

KEY = "rcm:ns:1:predict:0123abcd"
SIGNING_KEY = b"s3cret-signing-key"
OTHER_SIGNING_KEY = b"another-signing-key"
SIGNINGS = [None, SIGNING_KEY]


def full_entry(key: str = KEY) -> Entry:
    """An entry whose every field differs from its default, latin-1 bytes above 0x7f included."""
    return Entry(
        key=key,
        status=203,
        headers=[(b"content-type", b"application/json"), (b"x-name", b"caf\xe9"), (b"x-empty", b"")],
        body=b'{"prediction": [0.25, 0.75]}\x00\xff',
        created=1_700_000_000.125,
        ttl=42.5,
        etag=b'"abc123"',
        delta=0.0375,
        initial_age=3.0,
        flags=MUST_REVALIDATE | REVALIDATABLE,
        last_modified=b"Tue, 15 Nov 1994 08:12:31 GMT",
        vary=(b"accept-language", b"x-tenant"),
    )


# --- round trips ------------------------------------------------------------------------------------


@pytest.mark.parametrize("signing_key", SIGNINGS)
def test_entry_round_trip_keeps_every_field(signing_key: bytes | None) -> None:
    entry = full_entry()
    assert decode(encode(entry, signing_key), KEY, signing_key) == entry


@pytest.mark.parametrize("signing_key", SIGNINGS)
def test_default_entry_round_trip(signing_key: bytes | None) -> None:
    entry = Entry(KEY, 200, [], b"", 1.0, 1.0)
    assert decode(encode(entry, signing_key), KEY, signing_key) == entry


@pytest.mark.parametrize("signing_key", SIGNINGS)
def test_marker_round_trip(signing_key: bytes | None) -> None:
    marker = VaryMarker(KEY, (b"accept-encoding", b"x-caf\xe9"))
    assert decode(encode_marker(marker, signing_key), KEY, signing_key) == marker
    empty = VaryMarker(KEY, ())
    assert decode(encode_marker(empty, signing_key), KEY, signing_key) == empty


@pytest.mark.parametrize("signing_key", SIGNINGS)
def test_row_round_trip(signing_key: bytes | None) -> None:
    value = b'{"label": "caf\xc3\xa9", "score": 0.5}'
    data = encode_row("rcm:rows:é:1", value, 0.0125, signing_key)
    assert decode_row(data, "rcm:rows:é:1", signing_key) == (value, 0.0125)
    assert decode_row(encode_row(KEY, b"", 0.0, signing_key), KEY, signing_key) == (b"", 0.0)


def test_signing_adds_a_32_byte_mac() -> None:
    entry = full_entry()
    assert len(encode(entry, SIGNING_KEY)) == len(encode(entry)) + 32


@given(
    status=st.integers(100, 599),
    headers=st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=40)), max_size=5),
    body=st.binary(max_size=200),
    created=st.floats(0, 4e9),
    ttl=st.floats(0, 1e7),
    delta=st.floats(0, 1e3),
    flags=st.integers(0, 3),
    etag=st.binary(max_size=20),
    vary=st.lists(st.binary(min_size=1, max_size=20), max_size=3),
    signing_key=st.sampled_from(SIGNINGS),
)
def test_any_entry_round_trips(
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    created: float,
    ttl: float,
    delta: float,
    flags: int,
    etag: bytes,
    vary: list[bytes],
    signing_key: bytes | None,
) -> None:
    entry = Entry(KEY, status, headers, body, created, ttl, etag, delta, 1.0, flags, b"lm", tuple(vary))
    assert decode(encode(entry, signing_key), KEY, signing_key) == entry


# --- records that are not this key's, as its writer sealed them -------------------------------------


@pytest.mark.parametrize("signing_key", SIGNINGS)
def test_another_keys_record_is_none(signing_key: bytes | None) -> None:
    other = KEY + "x"
    assert decode(encode(full_entry(), signing_key), other, signing_key) is None
    assert decode(encode_marker(VaryMarker(KEY, (b"a",)), signing_key), other, signing_key) is None
    assert decode_row(encode_row(KEY, b"1", 0.0, signing_key), other, signing_key) is None


def test_records_signed_with_another_key_are_none() -> None:
    assert decode(encode(full_entry(), OTHER_SIGNING_KEY), KEY, SIGNING_KEY) is None
    assert decode(encode_marker(VaryMarker(KEY, ()), OTHER_SIGNING_KEY), KEY, SIGNING_KEY) is None
    assert decode_row(encode_row(KEY, b"1", 0.0, OTHER_SIGNING_KEY), KEY, SIGNING_KEY) is None


def test_unsigned_records_are_none_when_a_signing_key_is_set() -> None:
    assert decode(encode(full_entry()), KEY, SIGNING_KEY) is None
    assert decode(encode_marker(VaryMarker(KEY, ())), KEY, SIGNING_KEY) is None
    assert decode_row(encode_row(KEY, b"1", 0.0), KEY, SIGNING_KEY) is None


@pytest.mark.parametrize("data", [b"", b"R", b"RCM", b"RCM\x02", b"RCM\x02\x00\x00", b"\x00" * 40])
@pytest.mark.parametrize("signing_key", SIGNINGS)
def test_short_or_empty_data_is_none(data: bytes, signing_key: bytes | None) -> None:
    assert decode(data, KEY, signing_key) is None
    assert decode_row(data, KEY, signing_key) is None


@pytest.mark.parametrize("magic", [b"XYZ", b"rcm", b"RCR"])
def test_unknown_magic_is_none(magic: bytes) -> None:
    data = encode(full_entry())
    assert decode(magic + data[3:], KEY) is None


def test_row_and_response_records_are_not_read_as_each_other() -> None:
    assert decode(encode_row(KEY, b"1", 0.0), KEY) is None
    assert decode_row(encode(full_entry()), KEY) is None
    assert decode_row(encode_marker(VaryMarker(KEY, ())), KEY) is None


@pytest.mark.parametrize("version", [0, 1, FORMAT_VERSION + 1, 255])
def test_other_format_versions_are_none(version: int) -> None:
    for data in (encode(full_entry()), encode_marker(VaryMarker(KEY, (b"a",))), encode_row(KEY, b"1", 0.0)):
        assert decode(data[:3] + bytes([version]) + data[4:], KEY) is None
        assert decode_row(data[:3] + bytes([version]) + data[4:], KEY) is None


@pytest.mark.parametrize(
    "meta",
    [
        b"{}",
        b"null",
        b"[1, 2]",
        b'"text"',
        b"[" + b", ".join([b"1"] * 12) + b"]",
        b'["' + KEY.encode() + b'", 200, 1.0, 1.0, 0, [["a"]], "", 0, 0, 0, "", []]',
        b'["' + KEY.encode() + b'", 200, 1.0, 1.0, 0, [[1, 2]], "", 0, 0, 0, "", []]',
        b'["' + KEY.encode() + b'", "x", 1.0, 1.0, 0, [], "", 0, 0, 0, "", []]',
        b'["' + KEY.encode() + b'", 200, 1.0, 1.0, 0, [], "\\u20ac", 0, 0, 0, "", []]',
        b"not json",
    ],
)
def test_malformed_metadata_is_none(meta: bytes) -> None:
    for magic in (b"RCM", b"RCV"):
        data = magic + bytes([FORMAT_VERSION]) + len(meta).to_bytes(4, "big") + meta
        assert decode(data, KEY) is None


def test_a_metadata_length_past_the_end_is_none() -> None:
    data = bytearray(encode(full_entry()))
    data[4:8] = (10**6).to_bytes(4, "big")
    assert decode(bytes(data), KEY) is None


# --- every truncation and every flipped byte ----------------------------------------------------------

RECORDS: dict[str, Callable[[bytes | None], bytes]] = {
    "entry": lambda signing_key: encode(full_entry(), signing_key),
    "marker": lambda signing_key: encode_marker(VaryMarker(KEY, (b"accept", b"x-tenant")), signing_key),
    "row": lambda signing_key: encode_row(KEY, b'{"score": 0.5, "label": "cat"}', 0.25, signing_key),
}


def read(kind: str, data: bytes, signing_key: bytes | None) -> object:
    return decode_row(data, KEY, signing_key) if kind == "row" else decode(data, KEY, signing_key)


@pytest.mark.parametrize("kind", sorted(RECORDS))
def test_signed_records_are_none_when_read_without_the_key(kind: str) -> None:
    """A reader configured without signing must not take the MAC for part of the record."""
    assert read(kind, RECORDS[kind](SIGNING_KEY), None) is None


@pytest.mark.parametrize("kind", sorted(RECORDS))
@pytest.mark.parametrize("signing_key", SIGNINGS)
def test_every_truncation_is_none(kind: str, signing_key: bytes | None) -> None:
    data = RECORDS[kind](signing_key)
    assert read(kind, data, signing_key) is not None
    for length in range(len(data)):
        assert read(kind, data[:length], signing_key) is None, length


@pytest.mark.parametrize("kind", sorted(RECORDS))
@given(data=st.data())
def test_a_flipped_byte_of_a_signed_record_is_none(kind: str, data: st.DataObject) -> None:
    record = RECORDS[kind](SIGNING_KEY)
    position = data.draw(st.integers(0, len(record) - 1))
    flip = data.draw(st.integers(1, 255))
    damaged = bytearray(record)
    damaged[position] ^= flip
    assert read(kind, bytes(damaged), SIGNING_KEY) is None


@pytest.mark.parametrize("kind", sorted(RECORDS))
@given(data=st.data())
def test_damaged_unsigned_records_never_raise(kind: str, data: st.DataObject) -> None:
    """Without a signature a damaged body cannot be told apart, but decoding never raises and a damaged
    header never yields another key's record."""
    record = bytearray(RECORDS[kind](None))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(record) - 1))
        record[position] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(record)))
    result = read(kind, bytes(record[:cut]), None)
    if isinstance(result, Entry | VaryMarker):
        assert result.key == KEY


@given(garbage=st.binary(max_size=300), signing_key=st.sampled_from(SIGNINGS))
def test_arbitrary_bytes_never_raise(garbage: bytes, signing_key: bytes | None) -> None:
    decode(garbage, KEY, signing_key)
    decode(b"RCM" + bytes([FORMAT_VERSION]) + garbage, KEY, signing_key)
    decode(b"RCV" + bytes([FORMAT_VERSION]) + garbage, KEY, signing_key)
    decode_row(garbage, KEY, signing_key)
    decode_row(b"RCR" + bytes([FORMAT_VERSION]) + garbage, KEY, signing_key)


# --- Entry's own clock ------------------------------------------------------------------------------


def test_entry_age_and_freshness() -> None:
    entry = Entry(KEY, 200, [], b"", created=100.0, ttl=10.0, initial_age=2.0)
    assert entry.age(105.0) == 7.0
    assert entry.age(50.0) == 2.0  # a clock behind the writer's never makes the age negative
    assert entry.is_fresh(107.5)
    assert not entry.is_fresh(108.0)
