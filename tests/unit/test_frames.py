"""The data-plane frame header (mesh/transport/frames.py)."""

from __future__ import annotations

import struct
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.errors import FrameError
from mesh.transport.frames import (
    MAGIC,
    NO_TOKEN,
    VERSION,
    FrameHeader,
    FrameKind,
    decode_header,
    encode_header,
)

FIXED_SIZE = 46  # the layout in the module docstring: 45 bytes, then the job id length
TOKEN = bytes(range(16))
MAX_U32 = 0xFFFFFFFF
TRACE = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}


def decode_or_frame_error(data: bytes | memoryview) -> FrameHeader | None:
    """decode_header's contract: a FrameHeader, or a FrameError and nothing else."""
    try:
        header = decode_header(data)
    except FrameError as exc:
        assert str(exc), "a FrameError must say what was wrong"
        return None
    assert isinstance(header, FrameHeader)
    return header


def default_arg(kind: FrameKind) -> int:
    return 3 if kind is FrameKind.CREDIT else 17


# -- layout and round trips --------------------------------------------------------------


def test_layout_matches_the_documented_offsets() -> None:
    data = encode_header(
        FrameKind.BARRIER, "job", attempt=0x01020304, channel=0x0A0B0C0D, seq=5, arg=-2, token=TOKEN
    )
    assert data[0:2] == MAGIC == b"MF"
    assert data[2] == VERSION == 2
    assert data[3] == FrameKind.BARRIER
    assert data[4] == 0  # no extension
    assert struct.unpack_from("<I", data, 5) == (0x01020304,)
    assert struct.unpack_from("<I", data, 9) == (0x0A0B0C0D,)
    assert struct.unpack_from("<Q", data, 13) == (5,)
    assert struct.unpack_from("<q", data, 21) == (-2,)
    assert data[29:45] == TOKEN
    assert data[45] == 3
    assert data[FIXED_SIZE:] == b"job"


def test_layout_with_extension() -> None:
    data = encode_header(FrameKind.DATA, "j1", 0, 0, ext=TRACE)
    assert data[4] & 0x01
    ext = orjson.dumps(TRACE)
    assert data[FIXED_SIZE : FIXED_SIZE + 2] == b"j1"
    assert struct.unpack_from("<H", data, FIXED_SIZE + 2) == (len(ext),)
    assert data[FIXED_SIZE + 4 :] == ext


@pytest.mark.parametrize("kind", list(FrameKind))
@pytest.mark.parametrize("ext", [None, TRACE], ids=["plain", "ext"])
def test_round_trip_every_kind(kind: FrameKind, ext: dict[str, Any] | None) -> None:
    arg = default_arg(kind)
    data = encode_header(
        kind, "job-42", attempt=7, channel=1234, seq=99, arg=arg, ext=ext, token=TOKEN
    )
    header = decode_header(data)
    assert header == FrameHeader(kind, "job-42", 7, 1234, 99, arg, ext, TOKEN)
    assert header.kind is kind
    # A memoryview (what zmq hands out) decodes the same.
    assert decode_header(memoryview(data)) == header


def test_defaults_are_seq_zero_arg_zero_no_ext_no_token() -> None:
    header = decode_header(encode_header(FrameKind.EOP_ACK, "j", 1, 2))
    assert (header.seq, header.arg, header.ext, header.token) == (0, 0, None, NO_TOKEN)


@pytest.mark.parametrize("size", [0, 15, 17])
def test_a_token_of_the_wrong_size_cannot_be_encoded(size: int) -> None:
    with pytest.raises(ValueError, match="token is 16 bytes"):
        encode_header(FrameKind.DATA, "j", 0, 0, token=bytes(size))


@pytest.mark.parametrize(
    ("kind", "is_event"),
    [
        (FrameKind.DATA, False),
        (FrameKind.WATERMARK, True),
        (FrameKind.BARRIER, True),
        (FrameKind.END_OF_PARTITION, True),
        (FrameKind.CREDIT, False),
        (FrameKind.EOP_ACK, False),
    ],
)
def test_is_event(kind: FrameKind, is_event: bool) -> None:
    header = decode_header(encode_header(kind, "j", 0, 0, arg=1))
    assert header.is_event is is_event


def test_empty_job_id_round_trips() -> None:
    data = encode_header(FrameKind.DATA, "", 0, 0)
    assert len(data) == FIXED_SIZE
    assert decode_header(data).job == ""


json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
ascii_job = st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=255)


@st.composite
def headers(draw: st.DrawFn) -> FrameHeader:
    kind = draw(st.sampled_from(list(FrameKind)))
    if kind is FrameKind.CREDIT:
        arg = draw(st.integers(1, MAX_U32))
    else:
        arg = draw(st.integers(-(2**63), 2**63 - 1))
    ext = draw(st.none() | st.dictionaries(st.text(max_size=12), json_values, min_size=1))
    return FrameHeader(
        kind=kind,
        job=draw(ascii_job),
        attempt=draw(st.integers(0, MAX_U32)),
        channel=draw(st.integers(0, MAX_U32)),
        seq=draw(st.integers(0, 2**64 - 1)),
        arg=arg,
        ext=ext,
        token=draw(st.binary(min_size=16, max_size=16)),
    )


def encode(h: FrameHeader) -> bytes:
    return encode_header(h.kind, h.job, h.attempt, h.channel, h.seq, h.arg, h.ext, token=h.token)


@given(headers())
def test_round_trip_property(header: FrameHeader) -> None:
    assert decode_header(encode(header)) == header


@given(headers())
def test_every_truncation_of_a_valid_header_is_a_frame_error(header: FrameHeader) -> None:
    data = encode(header)
    for size in range(len(data)):
        with pytest.raises(FrameError, match=r"too short|truncated"):
            decode_header(data[:size])


@given(headers(), st.binary(min_size=1, max_size=8))
def test_trailing_bytes_are_a_frame_error(header: FrameHeader, extra: bytes) -> None:
    with pytest.raises(FrameError, match=rf"has {len(extra)} unexpected trailing bytes"):
        decode_header(encode(header) + extra)


# -- garbage -----------------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_frame_error(data: bytes) -> None:
    decode_or_frame_error(data)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_after_a_valid_prefix_decode_or_raise_frame_error(tail: bytes) -> None:
    # Past magic and version, so the fuzzing reaches kind, job id and extension parsing.
    decode_or_frame_error(MAGIC + bytes([VERSION]) + tail)


@given(headers(), st.data())
def test_mutated_valid_headers_decode_or_raise_frame_error(
    header: FrameHeader, data: st.DataObject
) -> None:
    raw = bytearray(encode(header))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(raw) - 1))
        raw[index] = data.draw(st.integers(0, 255))
    decode_or_frame_error(bytes(raw))
    decode_or_frame_error(memoryview(bytes(raw)))


@given(st.binary(max_size=200), st.integers(0, 255))
def test_arbitrary_extension_bytes_decode_or_raise_frame_error(ext: bytes, flags: int) -> None:
    fixed = struct.pack("<2sBBBIIQqB", MAGIC, VERSION, FrameKind.DATA, flags, 0, 0, 0, 0, 1)
    decode_or_frame_error(fixed + b"j" + struct.pack("<H", len(ext)) + ext)


# -- specific errors ---------------------------------------------------------------------


def header_bytes(**overrides: Any) -> bytearray:
    return bytearray(encode_header(FrameKind.DATA, "job", 1, 2, 3, 4, **overrides))


def test_wrong_magic_says_so() -> None:
    data = header_bytes()
    data[0:2] = b"ZZ"
    with pytest.raises(FrameError, match=r"bad magic b'ZZ': not a mesh data frame"):
        decode_header(bytes(data))


@pytest.mark.parametrize("version", [0, 1, 3, 255])
def test_wrong_version_says_so(version: int) -> None:
    data = header_bytes()
    data[2] = version
    with pytest.raises(FrameError, match=rf"unsupported frame version {version} .*speaks 2"):
        decode_header(bytes(data))


@pytest.mark.parametrize("kind", [0, 8, 200, 255])
def test_unknown_kind_says_so(kind: int) -> None:
    data = header_bytes()
    data[3] = kind
    with pytest.raises(FrameError, match=rf"unknown frame kind {kind}$"):
        decode_header(bytes(data))


def test_too_short_says_how_long() -> None:
    with pytest.raises(FrameError, match=r"too short: 5 bytes, need at least 46"):
        decode_header(b"MF\x01\x01\x00")
    with pytest.raises(FrameError, match=r"too short: 0 bytes"):
        decode_header(b"")


def test_job_id_truncated_says_how_long() -> None:
    data = encode_header(FrameKind.DATA, "abcdef", 0, 0)
    with pytest.raises(FrameError, match=r"truncated: job id needs 6 bytes"):
        decode_header(data[:-1])


def test_non_ascii_job_id_is_rejected() -> None:
    data = header_bytes()
    data[FIXED_SIZE] = 0xC3
    with pytest.raises(FrameError, match="job id in frame header is not ASCII"):
        decode_header(bytes(data))


def test_extension_length_missing() -> None:
    data = header_bytes()
    data[4] |= 0x01  # claims an extension, has none
    with pytest.raises(FrameError, match="truncated: extension length missing"):
        decode_header(bytes(data))
    with pytest.raises(FrameError, match="truncated: extension length missing"):
        decode_header(bytes(data) + b"\x05")


def test_extension_truncated_says_how_long() -> None:
    data = header_bytes(ext={"a": 1})
    with pytest.raises(FrameError, match=r"truncated: extension needs 7 bytes"):
        decode_header(bytes(data[:-2]))


def test_extension_that_is_not_json() -> None:
    data = header_bytes() + struct.pack("<H", 3) + b"{x}"
    data[4] |= 0x01
    with pytest.raises(FrameError, match="frame header extension is not JSON"):
        decode_header(bytes(data))


@pytest.mark.parametrize("ext", [b"[1,2]", b'"s"', b"3", b"null"])
def test_extension_that_is_not_an_object(ext: bytes) -> None:
    data = header_bytes() + struct.pack("<H", len(ext)) + ext
    data[4] |= 0x01
    with pytest.raises(FrameError, match="extension must be a JSON object"):
        decode_header(bytes(data))


def test_flag_without_extension_bit_ignores_other_bits() -> None:
    data = header_bytes()
    data[4] = 0xFE  # every flag but the extension bit
    assert decode_header(bytes(data)).ext is None


def test_extension_bytes_without_flag_are_trailing_garbage() -> None:
    data = header_bytes() + struct.pack("<H", 2) + b"{}"
    with pytest.raises(FrameError, match="4 unexpected trailing bytes"):
        decode_header(bytes(data))


@pytest.mark.parametrize("arg", [0, -1, -(2**63), MAX_U32 + 1, 2**63 - 1])
def test_credit_outside_1_to_u32_is_rejected(arg: int) -> None:
    data = encode_header(FrameKind.CREDIT, "job", 0, 5, arg=arg)
    with pytest.raises(FrameError, match=rf"credit frame grants {arg} credits; must be 1\.\."):
        decode_header(data)


@pytest.mark.parametrize("arg", [1, MAX_U32])
def test_credit_bounds_are_accepted(arg: int) -> None:
    assert decode_header(encode_header(FrameKind.CREDIT, "job", 0, 5, arg=arg)).arg == arg


@pytest.mark.parametrize("kind", [k for k in FrameKind if k is not FrameKind.CREDIT])
def test_zero_and_negative_arg_are_fine_for_other_kinds(kind: FrameKind) -> None:
    for arg in (0, -1):
        assert decode_header(encode_header(kind, "job", 0, 5, arg=arg)).arg == arg


@given(headers())
def test_credit_zero_is_rejected_whatever_else_is_in_the_header(header: FrameHeader) -> None:
    data = encode_header(
        FrameKind.CREDIT, header.job, header.attempt, header.channel, header.seq, 0, header.ext
    )
    with pytest.raises(FrameError, match="credit frame grants 0 credits"):
        decode_header(data)


def test_empty_extension_is_not_sent() -> None:
    # An empty map carries nothing: no flag, no length, and it decodes as "no extension".
    data = encode_header(FrameKind.DATA, "j", 0, 0, ext={})
    assert data == encode_header(FrameKind.DATA, "j", 0, 0)
    assert decode_header(data).ext is None
