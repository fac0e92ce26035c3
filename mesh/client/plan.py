"""``mesh plan``: a job's logical graph and its chained (task) graph, for people (pure).

The plan is read off the graphs the runtime itself uses — ``LogicalGraph`` from
``Job.build()`` and the ``JobGraph`` that ``mesh.graph.chaining`` makes of it — so what
it shows is what would run: every operator with its name, uid, kind, parallelism,
slot-sharing and co-location group, every edge with its partitioning and whether it
was chained, every task with the operators fused into it, and the slots the job needs.

Three renderings of the same facts: ``text`` (a terminal), ``dot`` (Graphviz:
``mesh plan job.py --format dot | dot -Tsvg > plan.svg``) and ``mermaid`` (a
``flowchart`` for Markdown). In the pictures each task is a box (a cluster, a
subgraph) around the operators chained into it. Output is deterministic: the same job
file gives the same bytes, so it can be diffed and pinned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from mesh.graph.chaining import JobGraph, TaskSpec, build_job_graph
from mesh.graph.execution import build_execution_graph
from mesh.graph.logical import Chaining, EdgeSpec, LogicalGraph, OperatorSpec
from mesh.graph.slots import slots_needed
from mesh.time.durations import format_duration

__all__ = ["PLAN_FORMATS", "format_plan", "plan_dot", "plan_mermaid", "plan_text"]


def plan_text(graph: LogicalGraph) -> str:
    """The plan as aligned text: job settings, operators, edges, tasks, task edges."""
    jg = build_job_graph(graph)
    ops = graph.operators
    lines = [_job_line(graph), _slots_line(jg), "", f"logical graph: {len(ops)} operator(s)"]
    co_located = any(op.co_location_group for op in ops)
    chaining = any(op.chaining is not Chaining.ALWAYS for op in ops)
    header = ["OP", "NAME", "KIND", "UID", "PARALLELISM", "SLOT GROUP"]
    header += [*(["CO-LOCATION"] if co_located else []), *(["CHAINING"] if chaining else [])]
    rows = [[*header, "TASK"]]
    for op in ops:
        rows.append(
            [
                str(op.id),
                op.name,
                op.kind.value,
                op.uid,
                str(op.parallelism),
                op.slot_sharing_group,
                *([op.co_location_group or "-"] if co_located else []),
                *([_chaining(op.chaining)] if chaining else []),
                str(jg.task_of_operator[op.id]),
            ]
        )
    lines += _indent(_table(rows))
    described = [op for op in ops if op.description]
    if described:
        lines += ["", "operator settings:"]
        lines += [f"  op {op.id}: {_settings(op.description)}" for op in described]
    lines += ["", "edges:"]
    for edge in graph.edges:
        chained = jg.task_of_operator[edge.source] == jg.task_of_operator[edge.target]
        lines.append(
            f"  op {edge.source} -> op {edge.target}: {_edge_label(edge)}"
            + (f" (chained in task {jg.task_of_operator[edge.source]})" if chained else "")
        )
    lines += ["", f"chained graph: {len(jg.tasks)} task(s)"]
    for task in jg.tasks:
        lines.append(f"  task {task.id}: {task.name}")
        lines.append(f"    {_task_settings(task)}")
        lines.append(f"    operators: {', '.join(str(o) for o in task.operators)}")
    if jg.edges:
        lines += ["", "task edges:"]
        for e in jg.edges:
            tag = f', side output "{e.tag}"' if e.tag is not None else ""
            lines.append(
                f"  task {e.source_task} -> task {e.target_task}: {e.partitioning.value}{tag}"
                f" (op {e.source_op} -> op {e.target_op})"
            )
    return "\n".join(lines) + "\n"


def plan_dot(graph: LogicalGraph) -> str:
    """The plan as a Graphviz digraph: one cluster per task around its operators."""
    jg = build_job_graph(graph)
    lines = [
        f"digraph {_dot_quote(graph.config.name)} {{",
        "  rankdir=LR;",
        f"  label={_dot_quote(_job_line(graph) + chr(10) + _slots_line(jg))};",
        "  labelloc=t;",
        '  node [shape=box, style=rounded, fontname="Helvetica"];',
        '  edge [fontname="Helvetica"];',
    ]
    for task in jg.tasks:
        lines.append(f"  subgraph cluster_task_{task.id} {{")
        lines.append(f"    label={_dot_quote(f'task {task.id}: ' + _task_settings(task))};")
        for op_id in task.operators:
            op = graph.operator(op_id)
            lines.append(f"    op_{op.id} [label={_dot_quote(_op_label(op, chr(10)))}];")
        lines.append("  }")
    for edge in graph.edges:
        chained = jg.task_of_operator[edge.source] == jg.task_of_operator[edge.target]
        style = ", style=dashed" if edge.tag is not None else ""
        style += ", penwidth=2" if not chained else ""
        lines.append(
            f"  op_{edge.source} -> op_{edge.target} "
            f"[label={_dot_quote(_edge_label(edge))}{style}];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def plan_mermaid(graph: LogicalGraph) -> str:
    """The plan as a Mermaid flowchart: one subgraph per task around its operators."""
    jg = build_job_graph(graph)
    lines = ["flowchart LR"]
    for task in jg.tasks:
        title = _mermaid_text(f"task {task.id}: {_task_settings(task)}")
        lines.append(f'  subgraph task_{task.id}["{title}"]')
        for op_id in task.operators:
            op = graph.operator(op_id)
            lines.append(f'    op_{op.id}["{_mermaid_text(_op_label(op, "<br/>"))}"]')
        lines.append("  end")
    for edge in graph.edges:
        chained = jg.task_of_operator[edge.source] == jg.task_of_operator[edge.target]
        arrow = "-.->" if edge.tag is not None else ("-->" if chained else "==>")
        label = _mermaid_text(_edge_label(edge))
        lines.append(f'  op_{edge.source} {arrow}|"{label}"| op_{edge.target}')
    return "\n".join(lines) + "\n"


#: ``--format`` values and their renderers.
PLAN_FORMATS: dict[str, Callable[[LogicalGraph], str]] = {
    "text": plan_text,
    "dot": plan_dot,
    "mermaid": plan_mermaid,
}


def format_plan(graph: LogicalGraph, fmt: str = "text") -> str:
    """The plan of ``graph`` in ``fmt`` (one of ``PLAN_FORMATS``); ValueError otherwise."""
    try:
        render = PLAN_FORMATS[fmt]
    except KeyError:
        allowed = ", ".join(PLAN_FORMATS)
        raise ValueError(f"unknown plan format {fmt!r} (allowed: {allowed})") from None
    return render(graph)


# -- pieces shared by the renderings ------------------------------------------------------


def _job_line(graph: LogicalGraph) -> str:
    c = graph.config
    interval = c.checkpoint_interval_ms
    checkpoints = (
        f"checkpoints every {format_duration(interval)} ({c.checkpoint_mode})"
        if interval
        else "checkpoints off"
    )
    return (
        f"job {c.name}: parallelism {c.parallelism} (max {c.max_parallelism}), "
        f"{checkpoints}, state {c.state_backend}"
    )


def _slots_line(jg: JobGraph) -> str:
    needed = slots_needed(build_execution_graph(jg))
    groups = ", ".join(f"{group} {n}" for group, n in needed.items())
    return f"slots: needs {sum(needed.values())} ({groups})"


def _task_settings(task: TaskSpec) -> str:
    text = f"parallelism {task.parallelism}, slot group {task.slot_sharing_group}"
    if task.co_location_group is not None:
        text += f", co-location {task.co_location_group}"
    return text


def _op_label(op: OperatorSpec, newline: str) -> str:
    details = [op.kind.value, f"uid {op.uid}", f"parallelism {op.parallelism}"]
    if op.co_location_group is not None:
        details.append(f"co-location {op.co_location_group}")
    if op.chaining is not Chaining.ALWAYS:
        details.append(_chaining(op.chaining))
    return f"{op.id}: {op.name}{newline}{', '.join(details)}"


def _edge_label(edge: EdgeSpec) -> str:
    if edge.tag is None:
        return edge.partitioning.value
    return f'{edge.partitioning.value}, side output "{edge.tag}"'


def _chaining(chaining: Chaining) -> str:
    return {
        Chaining.ALWAYS: "-",
        Chaining.HEAD: "new chain",
        Chaining.NEVER: "disabled",
    }[chaining]


def _settings(description: dict[str, Any]) -> str:
    return ", ".join(
        f"{key}={value if isinstance(value, str) else orjson.dumps(value).decode()}"
        for key, value in description.items()
    )


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _indent(lines: list[str]) -> list[str]:
    return ["  " + line for line in lines]


def _dot_quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _mermaid_text(text: str) -> str:
    """Text safe inside a quoted Mermaid label (quotes and angle brackets as entities,
    except the ``<br/>`` line breaks this module puts there)."""
    text = text.replace("#", "#35;").replace('"', "#quot;")
    text = text.replace("<br/>", "\0").replace("<", "#lt;").replace(">", "#gt;")
    return text.replace("\0", "<br/>")
