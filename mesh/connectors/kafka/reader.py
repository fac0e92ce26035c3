"""The runtime half of ``sources.Kafka`` (``source.py``): a reader of the partitions one
source subtask owns. The consumer is called from a worker thread, one call at a time;
records are decoded there, grouped by partition, and handed out one partition per read.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import groupby, repeat
from typing import Any

import anyio
import orjson

from mesh.connectors.base import RestoredSplits, SourceReader, Split
from mesh.connectors.context import TaskContext
from mesh.connectors.kafka.settings import METADATA_TIMEOUT_S, client_config, retrying
from mesh.connectors.kafka.source import Kafka, owner, split_id
from mesh.errors import ConnectorError, GraphError, UndecodableInput

__all__ = ["KafkaReader"]

log = logging.getLogger("mesh.connectors.kafka")

# The longest one consume call waits for records (read returns [] after it).
_CONSUME_WAIT_S = 0.05
# The most messages one consume call takes.
_MAX_BATCH = 10_000
# Metadata requests of partition discovery wait at most this long (they run inside a
# read, which should come back soon); a discovery that times out is tried again later.
_DISCOVERY_TIMEOUT_S = 2.0
# Topics whose names start with this are Kafka's own (offsets, transactions).
_INTERNAL = "__"


def _decoder(fmt: str) -> Callable[[bytes], Any]:
    if fmt == "json":
        return orjson.loads
    if fmt == "text":
        return lambda raw: raw.decode("utf-8")
    return bytes


class _Chunk:
    """Records of one partition consumed but not all handed out yet."""

    __slots__ = ("end", "messages", "offsets", "pos", "records", "rejects")

    def __init__(
        self,
        records: list[Any],
        offsets: list[int] | None,
        rejects: list[tuple[int, UndecodableInput]],
        end: int,
        messages: list[Any] | None = None,
    ) -> None:
        self.messages = messages
        self.records = records
        # records[i] came from offsets[i], or from messages[i] (no message left out)
        self.offsets = offsets
        self.rejects = rejects  # (offset, error) of messages that could not be decoded
        self.end = end  # the offset after the chunk's last message
        self.pos = 0  # records[:pos] are handed out


class KafkaReader(SourceReader):
    """Reads the partitions one source subtask owns (see the module's docstring)."""

    #: How long ``open`` waits for the brokers (metadata, offsets) before failing.
    metadata_timeout_s: float = METADATA_TIMEOUT_S

    def __init__(self, source: Kafka, ctx: TaskContext) -> None:
        self._source = source
        self._ctx = ctx
        self._name = f"Kafka source {ctx.operator_uid or ctx.task_name!r}"
        self._restored: RestoredSplits | None = None
        self._initialized = False
        self._splits: dict[str, Split] = {}
        self._opened_at: dict[str, int] = {}  # split id -> offset when opened (progress)
        self._pending: dict[str, deque[_Chunk]] = {}  # split id -> consumed, not handed out
        self._consumer: Any = None
        self._lock = threading.Lock()  # one call on the consumer at a time
        self._unassigned: set[str] = set()  # done splits taken off the consumer
        self._snapshots: dict[int, list[Split]] = {}
        self._commits: list[Split] | None = None  # completed, not yet sent to the group
        self._next_discovery = 0.0
        self._pattern = re.compile(source.pattern) if source.pattern is not None else None
        self._value = _decoder(source.value_format)
        self._key = _decoder(source.key) if source.key is not None else None
        self._closed = False
        self._quiet_until = 0.0  # passing consumer errors are logged at most every 10 s
        # One topic (no pattern): a message's topic need not be asked for.
        self._many_topics = source.pattern is not None or len(source.topics or ()) > 1

    # -- the splits ---------------------------------------------------------------------

    def initialize(self, restored: RestoredSplits | None) -> None:
        self._restored = restored
        self._initialized = True

    def split_ids(self) -> list[str] | None:
        return list(self._splits)

    def snapshot(self, checkpoint_id: int) -> list[Split]:
        splits = [dict(s) for s in self._splits.values()]
        self._snapshots[checkpoint_id] = splits
        return [dict(s) for s in splits]

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        splits = self._snapshots.get(checkpoint_id)
        for cid in [c for c in self._snapshots if c <= checkpoint_id]:
            del self._snapshots[cid]
        if splits is None or self._source.group is None or self._consumer is None:
            return
        self._commits = splits
        # Commit now unless a consume call holds the consumer: then the next read does.
        if self._lock.acquire(blocking=False):
            try:
                self._commit_pending()
            finally:
                self._lock.release()

    def _commit_pending(self) -> None:
        """Send the offsets of the last completed checkpoint to the group (asynchronous:
        monitoring only). Called with the lock held."""
        splits, self._commits = self._commits, None
        if not splits or self._consumer is None:
            return
        from confluent_kafka import KafkaException, TopicPartition

        offsets = [TopicPartition(s["topic"], s["partition"], s["offset"]) for s in splits]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            log.warning(
                "%s: committing offsets to group %r failed: %s", self._name, self._source.group, exc
            )

    def progress(self) -> tuple[int, int] | None:
        if not self._source.bounded:
            return None
        done = total = 0
        for sid, split in self._splits.items():
            start = self._opened_at.get(sid, split["offset"])
            stop = split["stop"]
            if stop is None:
                continue
            total += max(0, stop - start)
            done += max(0, min(split["offset"], stop) - start)
        return done, total

    # -- opening ------------------------------------------------------------------------

    def _consumer_config(self) -> dict[str, Any]:
        source, ctx = self._source, self._ctx
        group = source.group or f"mesh-{ctx.job_id}-{ctx.operator_uid}"
        ours = {
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            # The default (1000 ms) makes the consumer idle between fetches: 5-7x slower.
            "fetch.queue.backoff.ms": 10,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "on_commit": self._committed,
        }
        client_id = f"mesh-{ctx.job_id}-{ctx.operator_uid}-{ctx.subtask_index}"
        return client_config(source.bootstrap, client_id, ours, source.config or {})

    def _committed(self, error: Any, partitions: Any) -> None:
        if error is not None:
            log.warning(
                "%s: committing offsets to group %r failed: %s",
                self._name,
                self._source.group,
                error,
            )

    async def open(self) -> None:
        assert self._initialized, "open before initialize"
        await anyio.to_thread.run_sync(self._open_blocking)

    def _open_blocking(self) -> None:
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        source = self._source
        with self._lock:
            self._consumer = Consumer(self._consumer_config())
            try:
                partitions = self._partitions(self.metadata_timeout_s)
            except KafkaException as exc:
                raise ConnectorError(
                    f"{self._name}: cannot reach the Kafka brokers at {source.bootstrap!r} "
                    f"within {self.metadata_timeout_s:g} s ({exc.args[0].str()}); check "
                    "bootstrap and that the brokers are up"
                ) from None
            restored = self._restored
            if restored is None:
                splits = self._plan(partitions)
            else:
                splits = [dict(s) for s in restored.mine]
                known = {(s["topic"], s["partition"]) for s in restored.everyone}
                known |= {(s["topic"], s["partition"]) for s in splits}
                new = [tp for tp in partitions if tp not in known and self._owns(*tp)]
                splits += self._from_earliest(new, bounded=source.bounded)
            for split in splits:
                sid = split_id(split["topic"], split["partition"])
                self._splits[sid] = split
                self._opened_at[sid] = split["offset"]
            live = [s for sid, s in self._splits.items() if not self._done(sid)]
            self._unassigned = {sid for sid in self._splits if self._done(sid)}
            self._consumer.assign(
                [TopicPartition(s["topic"], s["partition"], s["offset"]) for s in live]
            )
            self._next_discovery = time.monotonic() + source.discovery_interval_ms / 1000.0

    def _owns(self, topic: str, partition: int) -> bool:
        return owner(topic, partition, self._ctx.parallelism) == self._ctx.subtask_index

    def _partitions(self, timeout_s: float) -> list[tuple[str, int]]:
        """Every (topic, partition) the source reads that exists now; raises GraphError
        for a named topic that does not exist."""
        metadata = self._consumer.list_topics(timeout=timeout_s)
        found: list[tuple[str, int]] = []
        if self._pattern is not None:
            names = sorted(
                t
                for t in metadata.topics
                if not t.startswith(_INTERNAL) and self._pattern.fullmatch(t)
            )
        else:
            names = list(self._source.topics or [])
        for name in names:
            topic = metadata.topics.get(name)
            if topic is None or (topic.error is not None and not topic.partitions):
                reason = f": {topic.error.str()}" if topic is not None else ""
                raise GraphError(
                    f"{self._name}: topic {name!r} does not exist at {self._source.bootstrap!r}"
                    f"{reason} (create it, or fix the name)"
                )
            found.extend((name, p) for p in sorted(topic.partitions))
        return found

    def _watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        """(earliest offset, end offset); the end is the last stable offset."""
        from confluent_kafka import TopicPartition

        low, high = self._consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=self.metadata_timeout_s, cached=False
        )
        return int(low), int(high)

    def _from_earliest(self, new: list[tuple[str, int]], *, bounded: bool) -> list[Split]:
        """Splits for partitions that are new since the job started: from the earliest
        offset (a bounded source, whose ends were fixed when it started, skips them)."""
        splits = []
        for topic, partition in new:
            low, _ = self._watermarks(topic, partition)
            splits.append(
                {
                    "topic": topic,
                    "partition": partition,
                    "offset": low,
                    "stop": low if bounded else None,
                }
            )
        return splits

    def _plan(self, partitions: list[tuple[str, int]]) -> list[Split]:
        """This subtask's splits of a fresh start, with concrete offsets."""
        from confluent_kafka import TopicPartition

        source = self._source
        mine = [tp for tp in partitions if self._owns(*tp)]
        marks = {tp: self._watermarks(*tp) for tp in mine}
        starts: dict[tuple[str, int], int] = {}
        start = source.start
        if start == "earliest":
            starts = {tp: marks[tp][0] for tp in mine}
        elif start == "latest":
            starts = {tp: marks[tp][1] for tp in mine}
        elif isinstance(start, dict):
            for tp in mine:
                low, high = marks[tp]
                starts[tp] = min(max(start.get(tp[1], low), low), high)
        elif start == "committed":
            wanted = [TopicPartition(t, p) for t, p in mine]
            timeout = self.metadata_timeout_s
            committed = (
                retrying(lambda: self._consumer.committed(wanted, timeout=timeout), timeout)
                if mine
                else []
            )
            for tp in committed:
                key = (tp.topic, tp.partition)
                starts[key] = tp.offset if tp.offset >= 0 else marks[key][0]
        elif isinstance(start, int):
            found = (
                self._consumer.offsets_for_times(
                    [TopicPartition(t, p, start) for t, p in mine], timeout=self.metadata_timeout_s
                )
                if mine
                else []
            )
            for tp in found:
                key = (tp.topic, tp.partition)
                # -1: no record at or after the timestamp, so start at the end.
                starts[key] = tp.offset if tp.offset >= 0 else marks[key][1]
        return [
            {
                "topic": t,
                "partition": p,
                "offset": starts[(t, p)],
                "stop": marks[(t, p)][1] if source.bounded else None,
            }
            for t, p in mine
        ]

    # -- reading ------------------------------------------------------------------------

    def _done(self, sid: str) -> bool:
        split = self._splits[sid]
        stop = split["stop"]
        return stop is not None and split["offset"] >= stop and not self._pending.get(sid)

    async def read(self, max_records: int) -> list[Any] | None:
        assert self._consumer is not None, "read before open"
        if not self._pending:
            if self._source.bounded and all(self._done(sid) for sid in self._splits):
                return None
            # Bounded splits with nothing buffered: ask where the consumer is when their
            # partition returns nothing (transaction markers take offsets too).
            idle = [
                sid
                for sid in self._splits
                if self._splits[sid]["stop"] is not None and not self._done(sid)
            ]
            await anyio.to_thread.run_sync(
                self._consume, max(1, min(max_records, _MAX_BATCH)), idle
            )
            if not self._pending:
                if self._source.bounded and all(self._done(sid) for sid in self._splits):
                    return None
                return []
        return self._hand_out(max_records)

    def _hand_out(self, max_records: int) -> list[Any]:
        """Up to ``max_records`` buffered records of one partition (the first in line;
        a partition with more goes to the back of the line)."""
        sid = next(iter(self._pending))
        chunks = self._pending.pop(sid)
        split = self._splits[sid]
        out: list[Any] = []
        while chunks and len(out) < max_records:
            chunk = chunks[0]
            take = min(max_records - len(out), len(chunk.records) - chunk.pos)
            if take:
                out.extend(chunk.records[chunk.pos : chunk.pos + take])
                chunk.pos += take
            if chunk.pos == len(chunk.records):
                split["offset"] = max(split["offset"], chunk.end)
                chunks.popleft()
            else:
                last = (
                    chunk.offsets[chunk.pos - 1]
                    if chunk.offsets is not None
                    else chunk.messages[chunk.pos - 1].offset()  # type: ignore[index]
                )
                split["offset"] = last + 1
            if chunk.rejects:
                offset = split["offset"]
                for _, error in [r for r in chunk.rejects if r[0] < offset]:
                    self.reject(error)
                chunk.rejects = [r for r in chunk.rejects if r[0] >= offset]
        if chunks:
            self._pending[sid] = chunks
        self.last_split = sid if out else None
        return out

    def _consume(self, count: int, idle: list[str]) -> None:
        """One consume call (in a worker thread): decode what came, per partition."""
        from confluent_kafka import KafkaError, TopicPartition

        with self._lock:
            if self._closed:
                return
            consumer = self._consumer
            if self._commits is not None:
                self._commit_pending()
            done = [sid for sid in self._splits if sid not in self._unassigned and self._done(sid)]
            if done:
                consumer.incremental_unassign(
                    [
                        TopicPartition(self._splits[s]["topic"], self._splits[s]["partition"])
                        for s in done
                    ]
                )
                self._unassigned.update(done)
            if not self._source.bounded and time.monotonic() >= self._next_discovery:
                self._discover()
            messages = consumer.consume(num_messages=count, timeout=_CONSUME_WAIT_S)
            groups: dict[tuple[str, int], list[Any]] = {}
            if messages:
                # Per message, only C calls (map over the method descriptors): this loop
                # runs for every record the source reads.
                message = type(messages[0])
                if any(map(message.error, messages)):
                    messages = [m for m in messages if self._keep(m, KafkaError._PARTITION_EOF)]
            if messages:
                parts = list(map(message.partition, messages))
                keys: Any = (
                    zip(map(message.topic, messages), parts, strict=True)
                    if self._many_topics
                    else zip(repeat(messages[0].topic()), parts)
                )
            else:
                keys = ()
            # A fetch answers partition by partition: group runs, not single messages.
            start = 0
            for where, run in groupby(keys):
                end = start + len(list(run))
                group = groups.get(where)
                if group is None:
                    groups[where] = messages[start:end]
                else:
                    group.extend(messages[start:end])
                start = end
            for (topic, partition), group in groups.items():
                sid = split_id(topic, partition)
                chunk = self._decode(sid, group)
                if chunk is not None:
                    self._pending.setdefault(sid, deque()).append(chunk)
            seen = {split_id(t, p) for t, p in groups}
            quiet = [sid for sid in idle if sid not in seen and sid not in self._unassigned]
            if quiet:
                positions = consumer.position(
                    [
                        TopicPartition(self._splits[s]["topic"], self._splits[s]["partition"])
                        for s in quiet
                    ]
                )
                for tp in positions:
                    sid = split_id(tp.topic, tp.partition)
                    split = self._splits[sid]
                    if tp.offset >= 0 and sid not in self._pending and tp.offset > split["offset"]:
                        split["offset"] = tp.offset

    def _keep(self, message: Any, eof: int) -> bool:
        """False for a partition-end or a passing error event; raises for an error the
        consumer cannot get over by itself."""
        error = message.error()
        if error is None:
            return True
        if error.code() == eof:
            return False
        self._fail(message, error)
        return False

    def _fail(self, message: Any, error: Any) -> None:
        topic, partition = message.topic(), message.partition()
        where = f"topic {topic!r}" + (
            f" partition {partition}" if partition is not None and partition >= 0 else ""
        )
        what = (
            f"{self._name}: the brokers at {self._source.bootstrap!r} reported an error for "
            f"{where}: {error.str()}"
        )
        code = error.code()
        if code in _GRAPH_ERRORS:
            raise GraphError(what)
        if not error.fatal() and (error.retriable() or code in _transient_codes()):
            # A broker went away or a request timed out: librdkafka reconnects (to the
            # new leader) and fetches again by itself.
            now = time.monotonic()
            if now >= self._quiet_until:
                self._quiet_until = now + 10.0
                log.warning("%s (the consumer retries)", what)
            return
        raise ConnectorError(what)

    def _decode(self, sid: str, messages: list[Any]) -> _Chunk | None:
        split = self._splits[sid]
        stop = split["stop"]
        if stop is not None and messages[-1].offset() >= stop:
            # Past the end of a bounded split (written after the job started).
            messages = [m for m in messages if m.offset() < stop]
            if not messages:
                return None
        value, key = self._value, self._key
        try:
            if key is None:
                raw = list(map(type(messages[0]).value, messages))
                if None in raw:  # tombstones (null values) stay None
                    records = [None if v is None else value(v) for v in raw]
                else:
                    records = list(map(value, raw))
            else:
                records = [
                    {
                        "key": None if (k := m.key()) is None else key(k),
                        "value": None if (v := m.value()) is None else value(v),
                    }
                    for m in messages
                ]
            return _Chunk(records, None, [], messages[-1].offset() + 1, messages)
        except (orjson.JSONDecodeError, UnicodeDecodeError):
            return self._decode_slow(messages)

    def _decode_slow(self, messages: list[Any]) -> _Chunk:
        records: list[Any] = []
        offsets: list[int] = []
        rejects: list[tuple[int, UndecodableInput]] = []
        for m in messages:
            what, raw_part = "value", m.value()
            try:
                v = m.value()
                decoded = None if v is None else self._value(v)
                if self._key is not None:
                    what, raw_part = "key", m.key()
                    k = m.key()
                    decoded = {"key": None if k is None else self._key(k), "value": decoded}
            except (orjson.JSONDecodeError, UnicodeDecodeError) as exc:
                fmt = self._source.value_format if what == "value" else self._source.key
                expected = "valid JSON" if fmt == "json" else "valid UTF-8"
                raw = raw_part.decode("utf-8", "replace") if raw_part is not None else ""
                rejects.append(
                    (
                        m.offset(),
                        UndecodableInput(
                            f"{self._name}: the {what} at topic {m.topic()!r} partition "
                            f"{m.partition()} offset {m.offset()} is not {expected} ({exc}): "
                            f"{raw_part[:80]!r}",
                            raw=raw,
                            origin={
                                "topic": m.topic(),
                                "partition": m.partition(),
                                "offset": m.offset(),
                            },
                        ),
                    )
                )
                continue
            records.append(decoded)
            offsets.append(m.offset())
        return _Chunk(records, offsets, rejects, messages[-1].offset() + 1)

    def _discover(self) -> None:
        """Add the partitions (and, with a pattern, topics) created since the reader
        opened that this subtask owns, from the earliest offset. Called with the lock."""
        from confluent_kafka import KafkaException, TopicPartition

        self._next_discovery = time.monotonic() + self._source.discovery_interval_ms / 1000.0
        try:
            partitions = self._partitions(_DISCOVERY_TIMEOUT_S)
            known = {(s["topic"], s["partition"]) for s in self._splits.values()}
            new = [tp for tp in partitions if tp not in known and self._owns(*tp)]
            splits = self._from_earliest(new, bounded=False)
        except (KafkaException, GraphError) as exc:
            log.warning(
                "%s: looking for new partitions failed (tried again later): %s", self._name, exc
            )
            return
        if not splits:
            return
        self._consumer.incremental_assign(
            [TopicPartition(s["topic"], s["partition"], s["offset"]) for s in splits]
        )
        for split in splits:
            sid = split_id(split["topic"], split["partition"])
            self._splits[sid] = split
            self._opened_at[sid] = split["offset"]
        log.info("%s: reading new partitions %s", self._name, [split_id(*tp) for tp in new])

    def close(self) -> None:
        with self._lock:
            self._closed = True
            consumer, self._consumer = self._consumer, None
            if consumer is not None:
                consumer.close()


def _transient_codes() -> frozenset[int]:
    from confluent_kafka import KafkaError

    return frozenset(
        {
            KafkaError._TRANSPORT,
            KafkaError._ALL_BROKERS_DOWN,
            KafkaError._RESOLVE,
            KafkaError._TIMED_OUT,
            KafkaError.NOT_LEADER_FOR_PARTITION,
            KafkaError.LEADER_NOT_AVAILABLE,
        }
    )


def _graph_error_codes() -> frozenset[int]:
    return frozenset({3, 29})  # UNKNOWN_TOPIC_OR_PART, TOPIC_AUTHORIZATION_FAILED


_GRAPH_ERRORS = _graph_error_codes()
