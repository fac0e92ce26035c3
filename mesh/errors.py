"""Every error mesh raises on purpose, in one tree.

    MeshError
    ├── ConfigError            a bad setting: names the key, the value, what is allowed
    ├── GraphError             a job graph that cannot run (bad parallelism, forward
    │                          between unequal parallelisms, unknown job name, ...)
    ├── JobCodeError           the job file could not be loaded or built
    ├── RecordError            a record could not be processed: names the operator
    │   ├── EncodingError      a record orjson cannot encode (names the operator and type)
    │   └── UndecodableInput   input a source cannot decode (names the file and offset)
    ├── SchedulingError        too few slots: says how many are needed and what each node offers
    ├── StateError             state that cannot be read, written or restored (names the file)
    │   └── CheckpointError    a checkpoint that failed or cannot be used
    ├── TransportError         the network layer
    │   ├── FrameError         a frame that cannot be decoded (garbage, truncation, version)
    │   └── ChannelError       a channel fault: sequence gap or duplicate, overdraft
    ├── ConnectorError         a system a connector talks to (Kafka brokers) did not
    │                          answer or refused; restarts may fix it
    ├── RemoteError            an error reported by a daemon to a client
    └── JobFailed              a job ended FAILED (carries the root cause)

Messages name the thing at fault (the operator uid, the channel, the peer, the config
key) and what was expected, so a log line alone is enough to act on.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ChannelError",
    "CheckpointError",
    "ConfigError",
    "ConnectorError",
    "EncodingError",
    "FrameError",
    "GraphError",
    "JobCodeError",
    "JobFailed",
    "MeshError",
    "RecordError",
    "RemoteError",
    "SchedulingError",
    "StateError",
    "TransportError",
    "UndecodableInput",
]


class MeshError(Exception):
    """Base of every error mesh raises on purpose."""


class ConfigError(MeshError):
    """A configuration value is invalid; the message names key, value and what is allowed."""


class GraphError(MeshError):
    """The job graph is invalid (built from the user's calls, before anything runs)."""


class JobCodeError(MeshError):
    """The job file could not be imported, or holds no (or several) ``Job`` objects."""


class RecordError(MeshError):
    """User code raised on a record, or a record could not be handled by an operator."""


class UndecodableInput(RecordError):
    """A source read input it cannot decode (a line that is not JSON); ``raw`` is that
    input as text, ``origin`` where it was read (file and byte offset, endpoint)."""

    def __init__(self, message: str, raw: str, origin: dict[str, Any]) -> None:
        super().__init__(message)
        self.raw = raw
        self.origin = origin


class EncodingError(RecordError):
    """A record cannot be encoded as JSON; names the operator and the record's type."""


class ConnectorError(MeshError):
    """A system outside mesh that a connector reads or writes (Kafka brokers) did not
    answer in time or refused a request; the message names it. Recoverable: the job's
    restart strategy applies (the brokers may be back by then)."""


class SchedulingError(MeshError):
    """The cluster has too few slots; says how many are needed and what each node offers."""


class StateError(MeshError):
    """State could not be read, written or restored; the message names the file."""


class CheckpointError(StateError):
    """A checkpoint failed, or cannot be used to restore (missing file, bad checksum)."""


class TransportError(MeshError):
    """A failure in the network layer."""


class FrameError(TransportError):
    """A frame could not be decoded: garbage, truncated, wrong magic or version."""


class ChannelError(TransportError):
    """A channel broke its contract: a sequence gap or duplicate, or a credit overdraft."""


class RemoteError(MeshError):
    """A daemon answered a request with an error."""

    def __init__(self, message: str, *, code: str = "error") -> None:
        super().__init__(message)
        self.code = code


class JobFailed(MeshError):
    """A job ended in state FAILED; ``str()`` is the root cause with its traceback."""
