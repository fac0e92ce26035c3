"""The data-plane wire format: one binary header, then the payload.

A data-plane message is multipart ``[header, payload]``: the header is a fixed struct
followed by the job id and an optional extension (a small JSON map, e.g. trace context).
Every frame carries a 16-byte channel token (``mesh.transport.tokens``): the receiver
drops frames whose token is not the one its channel was deployed with, so only the
producer (or consumer, for credits) the coordinator named can feed a channel.
The payload depends on the kind: DATA carries a batch of records, untimed or with event
timestamps (its codec is ``mesh.transport.batches``); BARRIER carries what the
checkpoint is and where its files go (``mesh.transport.barriers.BarrierPayload``); the
other events carry nothing beyond ``arg``. Credit messages travel the other way as
``[header]`` alone.

    offset  size  field
    0       2     magic b"MF"
    2       1     version (2)
    3       1     kind (FrameKind)
    4       1     flags (bit 0: an extension follows the job id)
    5       4     attempt  (fencing: frames of an older attempt are dropped)
    9       4     channel  (id in the job's execution graph)
    13      8     seq      (per channel, +1 per frame; credits carry 0)
    21      8     arg      (DATA: sender backlog; CREDIT: credits granted;
                            BARRIER: checkpoint id; WATERMARK: timestamp;
                            WATERMARK_STATUS: 1 idle, 0 active)
    29      16    token    (the channel's token for this direction; see tokens.py)
    45      1     job id length n, then n ASCII bytes
    ...     2+m   extension length m, then m bytes of JSON (only with flag bit 0)

``decode_header`` turns anything that is not such a header into a ``FrameError`` that
says what was wrong; it never raises anything else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import orjson

from mesh.errors import FrameError

__all__ = [
    "MAGIC",
    "NO_TOKEN",
    "TOKEN_SIZE",
    "VERSION",
    "FrameHeader",
    "FrameKind",
    "decode_header",
    "encode_header",
]

MAGIC = b"MF"
VERSION = 2
TOKEN_SIZE = 16
#: The token of a frame that has none (it matches no deployed channel).
NO_TOKEN = bytes(TOKEN_SIZE)
_FIXED = struct.Struct("<2sBBBIIQq16sB")
_EXT_LEN = struct.Struct("<H")
_FLAG_EXT = 0x01
_MAX_U32 = 0xFFFFFFFF


class FrameKind(IntEnum):
    """What a frame carries."""

    DATA = 1  # a buffer of records; costs one credit
    WATERMARK = 2  # event-time progress of the channel
    BARRIER = 3  # checkpoint barrier
    END_OF_PARTITION = 4  # the producer subtask will send nothing more on this channel
    CREDIT = 5  # consumer → producer: ``arg`` more buffers may be sent
    EOP_ACK = 6  # consumer → producer: END_OF_PARTITION received
    WATERMARK_STATUS = 7  # the producer became idle (arg 1) or active again (arg 0)


_EVENT_KINDS = frozenset(
    {
        FrameKind.WATERMARK,
        FrameKind.BARRIER,
        FrameKind.END_OF_PARTITION,
        FrameKind.WATERMARK_STATUS,
    }
)


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """A decoded header."""

    kind: FrameKind
    job: str
    attempt: int
    channel: int
    seq: int
    arg: int
    ext: dict[str, Any] | None = None
    token: bytes = NO_TOKEN

    @property
    def is_event(self) -> bool:
        """Events travel in order with data but cost no credit."""
        return self.kind in _EVENT_KINDS


def encode_header(
    kind: FrameKind,
    job: str,
    attempt: int,
    channel: int,
    seq: int = 0,
    arg: int = 0,
    ext: dict[str, Any] | None = None,
    *,
    token: bytes = NO_TOKEN,
) -> bytes:
    """Encode a header (see the module docstring for the layout).

    Raises ValueError for values the layout cannot hold (a job id that is not short
    ASCII, numbers out of range, an extension over 64 KiB, a token that is not 16 bytes).
    """
    try:
        job_bytes = job.encode("ascii")
        if len(job_bytes) > 255:
            raise ValueError(f"job id is {len(job_bytes)} bytes; at most 255 fit")
        if len(token) != TOKEN_SIZE:
            raise ValueError(f"a channel token is {TOKEN_SIZE} bytes, got {len(token)}")
        flags = _FLAG_EXT if ext else 0
        head = _FIXED.pack(
            MAGIC, VERSION, kind, flags, attempt, channel, seq, arg, token, len(job_bytes)
        )
        if not ext:
            return head + job_bytes
        ext_bytes = orjson.dumps(ext)
        return head + job_bytes + _EXT_LEN.pack(len(ext_bytes)) + ext_bytes
    except (struct.error, UnicodeEncodeError, orjson.JSONEncodeError) as exc:
        raise ValueError(f"cannot encode frame header: {exc}") from None


def decode_header(data: bytes | memoryview) -> FrameHeader:
    """Decode a header; anything malformed raises FrameError saying what is wrong."""
    size = len(data)
    if size < _FIXED.size:
        raise FrameError(f"frame header too short: {size} bytes, need at least {_FIXED.size}")
    magic, version, kind, flags, attempt, channel, seq, arg, token, job_len = _FIXED.unpack_from(
        data
    )
    if magic != MAGIC:
        raise FrameError(f"bad magic {bytes(magic)!r}: not a mesh data frame")
    if version != VERSION:
        raise FrameError(f"unsupported frame version {version} (this node speaks {VERSION})")
    try:
        frame_kind = FrameKind(kind)
    except ValueError:
        raise FrameError(f"unknown frame kind {kind}") from None
    end = _FIXED.size + job_len
    if size < end:
        raise FrameError(f"frame header truncated: job id needs {job_len} bytes")
    try:
        job = bytes(data[_FIXED.size : end]).decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("job id in frame header is not ASCII") from None
    ext: dict[str, Any] | None = None
    if flags & _FLAG_EXT:
        if size < end + _EXT_LEN.size:
            raise FrameError("frame header truncated: extension length missing")
        (ext_len,) = _EXT_LEN.unpack_from(data, end)
        start = end + _EXT_LEN.size
        if size < start + ext_len:
            raise FrameError(f"frame header truncated: extension needs {ext_len} bytes")
        try:
            decoded = orjson.loads(bytes(data[start : start + ext_len]))
        except orjson.JSONDecodeError as exc:
            raise FrameError(f"frame header extension is not JSON: {exc}") from None
        if not isinstance(decoded, dict):
            raise FrameError("frame header extension must be a JSON object")
        ext = decoded
        end = start + ext_len
    if size != end:
        raise FrameError(f"frame header has {size - end} unexpected trailing bytes")
    if frame_kind is FrameKind.CREDIT and not 0 < arg <= _MAX_U32:
        raise FrameError(f"credit frame grants {arg} credits; must be 1..{_MAX_U32}")
    return FrameHeader(frame_kind, job, attempt, channel, seq, arg, ext, token)
