"""The REST API fuzzed by schemathesis against a real coordinator running a real job.

Every case goes through ``case.call_and_validate``: no 5xx, the status code documented,
the content type and the body as the spec says, negative data refused and positive
data accepted, and an undeclared method answered 405 with an ``Allow`` header. The
cases come from the hypothesis strategies of each operation (positive and negative,
with generated ids, which only reach 404s and 400s, and with the real job's ids) and
from schemathesis's coverage phase (boundary values, undeclared methods, wrong content
types). Schemathesis's pytest integration breaks on our pytest, hence the loops.

The operations that end a job (cancel, savepoints) never meet the shared job's id:
generated ids cannot name it, and the cases that name a real job go to jobs submitted
for the purpose. A savepoint's directory is always moved under the test's directory:
the fuzzer would write savepoints anywhere on the disk (it picks ``/`` first).
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.meta import CoverageScenario
from schemathesis.schemas import BaseSchema

from mesh.client.client import open_client, prepare_submission
from tests.helpers import poll_until_sync, wait_for_state
from tests.web import ServedJob, http, serving_cluster

# Sized for the whole module to run in about 30 s on two slow cores.
EXAMPLES = 25
ENDING = {"POST /api/v1/jobs/{job_id}/cancel", "POST /api/v1/jobs/{job_id}/savepoints"}
SAVEPOINTS = "POST /api/v1/jobs/{job_id}/savepoints"
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)

Case = Any  # schemathesis.Case
APIOperation = Any  # schemathesis.schemas.APIOperation


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedJob]:
    with serving_cluster(tmp_path_factory.mktemp("web-fuzz")) as served:
        yield served


@pytest.fixture(scope="module")
def schema(served: ServedJob) -> BaseSchema:
    return schemathesis.openapi.from_url(f"{served.base}/api/v1/openapi.json")


@pytest.fixture(scope="module")
def savepoint_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzzed-savepoints")


def operations(schema: BaseSchema) -> list[APIOperation]:
    found = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(found) == 15, [op.label for op in found]
    return found


def confine(root: Path, *, cancel: bool | None = None) -> Callable[[Case], Case]:
    """Moves a savepoint body's absolute directory under ``root`` (no ``..`` kept) and,
    when ``cancel`` is given, sets a boolean ``cancel`` to it (negations are kept)."""

    def apply(case: Case) -> Case:
        if case.operation.label != SAVEPOINTS or not isinstance(case.body, dict):
            return case
        body = dict(case.body)
        directory = body.get("directory")
        if isinstance(directory, str) and directory.startswith("/"):
            parts = ["up" if part == ".." else part for part in directory.split("/")]
            body["directory"] = str(root) + "/".join(parts)
        if cancel is not None and isinstance(body.get("cancel"), bool):
            body["cancel"] = cancel
        case.body = body
        return case

    return apply


class Fuzz:
    """Runs cases against the server and keeps every failure and every status seen."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.failures: list[str] = []
        self.statuses: dict[str, collections.Counter[int]] = collections.defaultdict(
            collections.Counter
        )
        self.bodies: list[Any] = []  # the 2xx bodies, for tests that look at them
        self.asked: list[Any] = []  # the request bodies of those

    def call(self, case: Case, key: str) -> None:
        response = case.call_and_validate(base_url=self.base)
        self.statuses[key][response.status_code] += 1
        if 200 <= response.status_code < 300 and response.content:
            self.bodies.append(response.json())
            self.asked.append(case.body)

    def strategy(
        self,
        op: APIOperation,
        mode: GenerationMode,
        *,
        path_parameters: dict[str, Any] | None = None,
        transform: Callable[[Case], Case] | None = None,
        examples: int = EXAMPLES,
        avoid_job: str | None = None,
    ) -> int:
        """Hypothesis-generated cases of ``op``; returns how many ran."""
        where = f"{op.label} [{mode.value}" + (f", {path_parameters}]" if path_parameters else "]")
        strategy = op.as_strategy(generation_mode=mode, path_parameters=path_parameters)
        if avoid_job is not None:
            strategy = strategy.filter(lambda c: c.path_parameters.get("job_id") != avoid_job)
        if transform is not None:
            strategy = strategy.map(transform)
        ran = 0

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case: Case) -> None:
            nonlocal ran
            ran += 1
            self.call(case, op.label)

        try:
            run()
        except Unsatisfiable:
            # Nothing left to negate (no parameters, or all of them fixed): fine.
            if mode is not GenerationMode.NEGATIVE:
                self.failures.append(f"{where}: no case could be generated")
        except (Exception, FailureGroup) as exc:
            self.failures.append(f"{where}:\n{exc}")
        return ran

    def coverage(
        self,
        schema: BaseSchema,
        op: APIOperation,
        *,
        job_id: str | None = None,
        transform: Callable[[Case], Case] | None = None,
    ) -> collections.Counter[tuple[str, str, int]]:
        """Schemathesis's coverage-phase cases of ``op`` (boundary values, undeclared
        methods, wrong content types), with ``job_id`` in the path when given (the
        negative cases whose negation is the job id are left out then)."""
        seen: collections.Counter[tuple[str, str, int]] = collections.Counter()
        config = schema.config.generation_for(operation=op, phase="coverage")
        cases = schema.iter_coverage_cases(
            op, generation_modes=list(MODES), generation_config=config
        )
        for case in cases:
            assert case.meta is not None
            data: Any = case.meta.phase.data
            if job_id is not None:
                negative = case.meta.generation.mode is GenerationMode.NEGATIVE
                if negative and data.parameter == "job_id":
                    continue
                case.path_parameters = {**case.path_parameters, "job_id": job_id}
            if transform is not None:
                case = transform(case)
            try:
                response = case.call_and_validate(base_url=self.base)
            except (Exception, FailureGroup) as exc:
                self.failures.append(f"{op.label} [coverage: {data.scenario.value}]:\n{exc}")
                continue
            self.statuses[op.label][response.status_code] += 1
            seen[(data.scenario.value, case.method.upper(), response.status_code)] += 1
        return seen

    def check(self) -> None:
        if self.failures:
            pytest.fail(
                f"{len(self.failures)} fuzzed operation(s) failed:\n\n"
                + "\n\n".join(self.failures),
                pytrace=False,
            )


def job_running(served: ServedJob) -> dict[str, Any]:
    reply = http(served.base, f"/api/v1/jobs/{served.job_id}")
    assert reply.status == 200, reply.raw[:300]
    detail: dict[str, Any] = reply.body
    assert detail["state"] == "RUNNING", detail
    return detail


def assert_still_running(served: ServedJob) -> None:
    """The shared job runs, and its records keep rising."""
    first = job_running(served)["totals"]["records_out"]
    poll_until_sync(
        lambda: job_running(served)["totals"]["records_out"],
        until=lambda n: n > first,
        timeout_s=30,
        what="the shared job's records to rise",
    )


def test_every_operation_with_generated_ids(
    served: ServedJob, schema: BaseSchema, savepoint_root: Path
) -> None:
    """Generated ids (well-formed in positive mode) name no job: 404s, 400s and the 200s
    of the operations without ids, all as documented. Cancel and savepoints are in: a
    generated id cannot be the shared job's (and is kept from being so)."""
    fuzz = Fuzz(served.base)
    ran = collections.Counter[str]()
    for op in operations(schema):
        for mode in MODES:
            ran[op.label] += fuzz.strategy(
                op, mode, transform=confine(savepoint_root), avoid_job=served.job_id
            )
    fuzz.check()
    # Every operation ran; those with a job id met 404s (well-formed unknown ids) and 400s.
    assert set(ran) == {op.label for op in operations(schema)} and all(ran.values()), ran
    for label, statuses in fuzz.statuses.items():
        if "{job_id}" in label:
            assert statuses[404] and statuses[400], (label, statuses)
        else:
            assert statuses[200], (label, statuses)
    assert_still_running(served)


def test_every_operation_on_the_real_job(served: ServedJob, schema: BaseSchema) -> None:
    """With the job's real id (and its tasks 0 and 1), positive cases reach the handlers
    and their answers are checked against the response schemas; negative ones reach the
    task id and query validation."""
    fuzz = Fuzz(served.base)
    job = served.job_id
    for op in operations(schema):
        names = {p.name for p in op.path_parameters}
        if "job_id" not in names or op.label in ENDING:
            continue
        variants: list[dict[str, Any]] = [{"job_id": job}]
        if "task_id" in names:
            variants += [{"job_id": job, "task_id": 0}, {"job_id": job, "task_id": 1}]
        for path_parameters in variants:
            for mode in MODES:
                fuzz.strategy(op, mode, path_parameters=path_parameters)
    fuzz.check()
    for label, statuses in fuzz.statuses.items():
        success = 204 if label.startswith("DELETE") else 200
        assert statuses[success], (label, statuses)
    # Sampling on every task was asked, and it found the job's records.
    peeked = [b for b in fuzz.bodies if isinstance(b, dict) and "lease_ms" in b]
    assert {b["task"] for b in peeked} == {0, 1}
    assert_still_running(served)


def test_coverage_phase_boundaries_methods_and_content_types(
    served: ServedJob, schema: BaseSchema, savepoint_root: Path
) -> None:
    """Schemathesis's coverage phase: each parameter at and past its bounds, wrong types,
    every undeclared method (405 with an ``Allow`` that lists exactly the declared
    methods), malformed content types. With generated ids for every operation, and with
    the real job's id for those that do not end it."""
    fuzz = Fuzz(served.base)
    undeclared: dict[str, collections.Counter[tuple[str, int]]] = collections.defaultdict(
        collections.Counter
    )
    for op in operations(schema):
        seen = fuzz.coverage(schema, op, transform=confine(savepoint_root))
        if op.label not in ENDING and "{job_id}" in op.path:
            seen += fuzz.coverage(schema, op, job_id=served.job_id)
        for (scenario, method, status), count in seen.items():
            if scenario == CoverageScenario.UNSPECIFIED_HTTP_METHOD:
                undeclared[op.path][(method, status)] += count
    fuzz.check()
    # On every path, undeclared methods were tried and refused with a 405 (their Allow
    # was checked by schemathesis).
    assert set(undeclared) == set(schema.raw_schema["paths"])
    for path, answers in undeclared.items():
        assert {status for _, status in answers} == {405}, (path, answers)
        assert {"PUT", "PATCH", "OPTIONS"} <= {method for method, _ in answers}, (path, answers)
    assert_still_running(served)


def test_undeclared_methods_get_405_with_allow_and_a_json_error(
    served: ServedJob, schema: BaseSchema
) -> None:
    """What the coverage phase checks, said plainly, on every path of the spec."""
    paths = schema.raw_schema["paths"]
    for path, declared in paths.items():
        concrete = path.replace("{job_id}", served.job_id).replace("{task_id}", "1")
        allowed = {m.upper() for m in declared} | ({"HEAD"} if "get" in declared else set())
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            if method in allowed:
                continue
            reply = http(served.base, concrete, method=method)
            assert reply.status == 405, (method, path, reply.status)
            assert set(re.split(r",\s*", reply.headers["allow"])) == allowed, (method, path)
            assert reply.headers["content-type"] == "application/json"
            assert reply.body == {
                "error": f"{method} {concrete}: Method Not Allowed",
                "code": "method_not_allowed",
                "field": None,
            }
    assert_still_running(served)


def submit(served: ServedJob) -> str:
    async def run() -> str:
        async with open_client(served.cluster.address) as client:
            base_dir = served.job_file.parent
            job_id = await client.submit(prepare_submission(served.job_file, base_dir=base_dir))
            await wait_for_state(client, job_id, ("RUNNING",))
            return job_id

    return anyio.run(run)


def state_of(served: ServedJob, job_id: str) -> str:
    reply = http(served.base, f"/api/v1/jobs/{job_id}")
    assert reply.status == 200, reply.raw[:300]
    return str(reply.body["state"])


def test_savepoints_and_cancel_fuzzed_on_jobs_of_their_own(
    served: ServedJob, schema: BaseSchema, savepoint_root: Path
) -> None:
    """Positive savepoints (without cancel) on a second job are taken and answered as
    the spec says; negative ones are refused before anything is done; positive cancels
    cancel it (202) and then find it over (409). A third job is fuzzed with cancel on:
    its savepoint is taken, then it is cancelled. The shared job runs on throughout."""
    ops = {op.label: op for op in operations(schema)}
    savepoints, cancel = ops[SAVEPOINTS], ops["POST /api/v1/jobs/{job_id}/cancel"]
    fuzz = Fuzz(served.base)

    second = submit(served)
    on_second = {"job_id": second}
    keep_running = confine(savepoint_root, cancel=False)
    fuzz.strategy(
        savepoints, GenerationMode.NEGATIVE, path_parameters=on_second, transform=keep_running
    )
    assert state_of(served, second) == "RUNNING"
    fuzz.strategy(
        savepoints, GenerationMode.POSITIVE, path_parameters=on_second, transform=keep_running
    )
    fuzz.check()
    taken = [(asked, b) for asked, b in zip(fuzz.asked, fuzz.bodies, strict=True) if "path" in b]
    assert taken and all(b["job_id"] == second and not b["cancelled"] for _, b in taken)
    for asked, body in taken:
        assert Path(body["path"], "_metadata.json").is_file(), body
        # Each went where it was asked to, or beside the checkpoints by default.
        directory = asked.get("directory") if isinstance(asked, dict) else None
        expected = Path(directory) if directory else served.cluster.state_dir
        assert Path(body["path"]).is_relative_to(expected), (asked, body)
    assert state_of(served, second) == "RUNNING"

    # (Cancel has nothing to generate but the fixed id: one case each time.)
    fuzz.strategy(cancel, GenerationMode.POSITIVE, path_parameters=on_second)
    fuzz.check()
    assert fuzz.statuses[cancel.label] == {202: 1}
    poll_until_sync(
        lambda: state_of(served, second),
        until=lambda s: s == "CANCELED",
        timeout_s=30,
        what="the second job to be cancelled",
    )
    # Once it is over, both find it so: 409.
    fuzz.strategy(cancel, GenerationMode.POSITIVE, path_parameters=on_second)
    fuzz.statuses[savepoints.label].clear()
    fuzz.strategy(
        savepoints,
        GenerationMode.POSITIVE,
        path_parameters=on_second,
        transform=keep_running,
        examples=5,
    )
    fuzz.check()
    assert fuzz.statuses[cancel.label] == {202: 1, 409: 1}
    assert set(fuzz.statuses[savepoints.label]) == {409}, fuzz.statuses[savepoints.label]

    third = submit(served)
    fuzz.bodies.clear()
    fuzz.asked.clear()
    fuzz.strategy(
        savepoints,
        GenerationMode.POSITIVE,
        path_parameters={"job_id": third},
        transform=confine(savepoint_root, cancel=True),
        examples=10,
    )
    if state_of(served, third) == "RUNNING":  # no generated body had a cancel field
        fuzz.call(
            savepoints.Case(
                path_parameters={"job_id": third},
                body={"cancel": True},
                media_type="application/json",
            ),
            savepoints.label,
        )
    fuzz.check()
    cancelled = [b for b in fuzz.bodies if b.get("cancelled")]
    assert len(cancelled) == 1 and cancelled[0]["job_id"] == third, fuzz.bodies
    assert Path(cancelled[0]["path"], "_metadata.json").is_file()
    poll_until_sync(
        lambda: state_of(served, third),
        until=lambda s: s == "CANCELED",
        timeout_s=30,
        what="the third job to be cancelled after its savepoint",
    )
    assert_still_running(served)
