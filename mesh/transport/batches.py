"""The payload of a DATA frame: a batch of records, with or without event time.

A batch is the orjson encoding of either

* a JSON array of records (a stream without event time), or
* ``{"t": [timestamps], "r": [records]}``: a *timed* batch, one timestamp (milliseconds)
  per record, in the same order (a stream with event time).

Producers encode a whole channel buffer at once and consumers decode it at once; there
is no per-record framing. ``decode_batch`` turns anything else into a ``BatchError``
saying what was wrong.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["BatchError", "decode_batch", "encode_batch"]

_dumps = orjson.dumps
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


class BatchError(ValueError):
    """A DATA payload that is not a batch (the message says what is wrong with it)."""


def encode_batch(records: list[Any], stamps: list[int] | None = None) -> bytes:
    """``records`` as a batch payload, timed when ``stamps`` is given.

    Raises TypeError (orjson's) for a record that cannot be encoded as JSON.
    """
    if stamps is not None:
        return _dumps({"t": stamps, "r": records})
    return _dumps(records)


def decode_batch(payload: bytes | memoryview) -> tuple[list[Any], list[int] | None]:
    """The records of a batch payload, and their timestamps (None: an untimed batch)."""
    try:
        batch = _loads(payload)
    except _JSONDecodeError as exc:
        raise BatchError(f"undecodable payload ({exc})") from None
    if type(batch) is list:
        return batch, None
    if type(batch) is dict:
        records, stamps = batch.get("r"), batch.get("t")
        if isinstance(records, list) and isinstance(stamps, list) and len(stamps) == len(records):
            return records, stamps
        raise BatchError("a timestamped payload needs lists 'r' and 't' of equal length")
    raise BatchError("payload is not a batch")
