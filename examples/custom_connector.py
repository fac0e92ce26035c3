"""A connector of your own: orders read from a paginated API, written to CSV exactly once.

``OrdersApi`` is a source: orders 0 .. total-1, cut into splits of consecutive orders
dealt out over the source subtasks; a split remembers the next order to fetch, so after
a failure, or at another parallelism, every order is read once. ``CsvFiles`` is an
exactly-once sink: rows become visible in ``part-*.csv`` files (a header row, then the
rows) only when the checkpoint that covers them completes. Run it with

    mesh run examples/custom_connector.py

and the orders land in out/orders/part-*.csv. docs/connectors.md walks through it.
"""

import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from mesh import Job, RecordError
from mesh.connectors import (
    Committer,
    Sink,
    SinkWriter,
    Source,
    SourceReader,
    Split,
    TaskContext,
    TransactionNames,
    transaction_pattern,
)


def fetch_orders(offset: int, limit: int, latency: float) -> list[dict[str, Any]]:
    """``GET /orders?offset=..&limit=..`` of a (pretend) shop's API: a blocking call."""
    time.sleep(latency)
    return [
        {"id": i, "customer": f"c{i % 7}", "cents": 100 + i * 37 % 900}
        for i in range(offset, offset + limit)
    ]


@dataclass(eq=False)
class OrdersApi(Source):
    """Orders ``0 .. total-1``, fetched ``page_size`` at a time; ``split_size`` a split."""

    total: int
    page_size: int = 50
    split_size: int = 500
    latency: float = 0.05  # seconds per request

    def __post_init__(self) -> None:  # settings are checked when the job file is loaded
        if min(self.total, self.page_size, self.split_size) < 1:
            raise ValueError("OrdersApi: total, page_size and split_size must be positive")

    def describe(self) -> dict[str, Any]:
        return {"type": "OrdersApi", "total": self.total, "split_size": self.split_size}

    def create_reader(self, ctx: TaskContext) -> SourceReader:
        return OrdersReader(self, ctx)


class OrdersReader(SourceReader):
    def __init__(self, source: OrdersApi, ctx: TaskContext) -> None:
        self.source = source
        self.ctx = ctx
        self.splits: list[Split] = []  # set by initialize (the default one)

    def plan(self) -> list[Split]:
        # Every subtask cuts the same splits and keeps every p-th one.
        total, size = self.source.total, self.source.split_size
        starts = range(0, total, size)
        splits = [{"start": s, "end": min(s + size, total), "next": s} for s in starts]
        return splits[self.ctx.subtask_index :: self.ctx.parallelism]

    # The default initialize keeps plan() (or the restored splits) in self.splits, and
    # the default snapshot returns copies of them: read keeps their positions.

    def progress(self) -> tuple[int, int]:
        done = sum(s["next"] - s["start"] for s in self.splits)
        return done, sum(s["end"] - s["start"] for s in self.splits)

    async def read(self, max_records: int) -> list[Any] | None:
        split = next((s for s in self.splits if s["next"] < s["end"]), None)
        if split is None:
            return None  # every split is done: the end of this subtask's input
        limit = min(max_records, self.source.page_size, split["end"] - split["next"])
        # The client blocks: run it in a thread, so the event loop goes on.
        records = await anyio.to_thread.run_sync(
            fetch_orders, split["next"], limit, self.source.latency
        )
        split["next"] += len(records)
        return records


@dataclass(eq=False)
class CsvFiles(Sink):
    """Dict records as rows of CSV files in ``directory`` (relative: to where you ran mesh)."""

    directory: str
    columns: list[str]

    def create_writer(self, ctx: TaskContext) -> SinkWriter:
        return CsvWriter(self, ctx)

    def create_committer(self, ctx: TaskContext) -> Committer:
        return CsvCommitter(self, ctx)


def fsync_dir(directory: Path) -> None:
    """Make the renames in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CsvWriter(SinkWriter):
    """One hidden file per transaction; sealed (renamed to ``.pending``) at each barrier."""

    def __init__(self, sink: CsvFiles, ctx: TaskContext) -> None:
        self.sink = sink
        self.ctx = ctx
        self.directory = ctx.resolve(sink.directory)
        self.names = TransactionNames(ctx)  # <job>-<uid>-<subtask>-...
        self.file: Any = None  # the current transaction's file, and its csv writer
        self.rows: Any = None

    async def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def write(self, records: list[Any]) -> None:
        if self.file is None:  # a new transaction: a file no other subtask or attempt uses
            path = self.directory / f".{self.names.current()}.csv.inprogress"
            self.file = open(path, "w", newline="")  # noqa: SIM115 - closed when sealed
            self.rows = csv.DictWriter(self.file, self.sink.columns)
            self.rows.writeheader()
        try:
            self.rows.writerows(records)
        except (ValueError, AttributeError) as exc:  # not a dict, or a field not in columns
            raise RecordError(f"sink {self.ctx.operator_uid!r} (CsvFiles): {exc}") from None

    async def flush(self) -> None:
        if self.file is not None:  # at every barrier, before prepare_commit
            self.file.flush()
            await anyio.to_thread.run_sync(os.fsync, self.file.fileno())

    def prepare_commit(self, transaction: str) -> dict[str, Any] | None:
        if self.file is None:
            return None  # nothing written since the last barrier
        self.file.close()
        pending = self.directory / f".{transaction}.csv.pending"
        os.replace(self.file.name, pending)
        fsync_dir(self.directory)
        self.file = None
        return {"pending": str(pending), "final": str(self.directory / f"part-{transaction}.csv")}

    def abort(self) -> None:  # drop the current transaction (sealed ones are mesh's)
        if self.file is not None:
            self.file.close()
            Path(self.file.name).unlink(missing_ok=True)
            self.file = None

    close = abort  # after a clean end there is no current transaction left


class CsvCommitter(Committer):
    def __init__(self, sink: CsvFiles, ctx: TaskContext) -> None:
        self.directory = ctx.resolve(sink.directory)
        self.uid = ctx.operator_uid

    async def commit(self, committable: dict[str, Any]) -> None:
        await anyio.to_thread.run_sync(self._rename, committable)

    def _rename(self, committable: dict[str, Any]) -> None:
        pending, final = Path(committable["pending"]), Path(committable["final"])
        if pending.exists():
            os.replace(pending, final)
            fsync_dir(self.directory)
        elif not final.exists():  # neither: committed by nobody, and now lost
            raise RuntimeError(f"sink {self.uid!r} (CsvFiles): {pending} is gone, no {final}")

    async def clean_up(self, job_id: str, keep: list[dict[str, Any]], subtask: int | None) -> None:
        kept = {Path(c["pending"]).name for c in keep}
        # Sealed (-000012, -end) and current (-a0-3) transactions of that job's writers.
        ours = transaction_pattern(
            job_id,
            self.uid,
            r"-(\d+|end)\.csv\.pending",
            r"-a\d+-\d+\.csv\.inprogress",
            subtask=subtask,
        )
        for path in self.directory.glob(".*.csv.*"):
            if path.name not in kept and ours.match(path.name[1:]):
                path.unlink(missing_ok=True)


def to_row(order: dict[str, Any]) -> dict[str, Any]:
    euros = f"{order['cents'] / 100:.2f}"
    return {"order": order["id"], "customer": order["customer"], "total": euros}


job = Job("orders", parallelism=2, checkpoint_interval="500ms")
orders = job.source(OrdersApi(total=2000), name="orders API").uid("orders-api")
rows = orders.map(to_row).name("to row")
csv_files = CsvFiles("out/orders", columns=["order", "customer", "total"])
rows.sink(csv_files).name("orders CSV").uid("orders-csv")
