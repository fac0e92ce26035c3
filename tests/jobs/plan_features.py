"""A job that uses every option ``mesh plan`` shows (tests/unit/test_plan.py pins its plan):
rebalance, broadcast, rescale and hash edges, a side output, an explicit parallelism, a
second slot-sharing group, a co-location group, disable_chaining and start_new_chain."""

from mesh import Job, sinks, sources


def route(record, ctx):
    if record % 2:
        ctx.output("odd", record)
    else:
        yield record


job = Job("plan-features", parallelism=2, checkpoint_interval="1s")
numbers = job.source(sources.Collection(list(range(100)))).name("numbers").uid("numbers")
evens = numbers.rebalance().process(route).name("route").uid("route")
odds = evens.side_output("odd")
doubled = (
    evens.map(lambda r: r * 2)
    .name("double")
    .uid("double")
    .slot_sharing_group("heavy")
    .set_parallelism(3)
    .disable_chaining()
)
doubled.rescale().filter(lambda r: r > 0).name("positive").uid("positive").sink(sinks.Print()).name(
    "print"
).uid("print")
evens.broadcast().map(lambda r: r).name("echo").uid("echo").co_location_group("pair").sink(
    sinks.Collect()
).uid("collect").co_location_group("pair")
odds.map(lambda r: -r).name("negate").uid("negate").sink(sinks.Collect()).uid("odd-out")
evens.key_by(lambda r: r % 3).sum("x").name("sum").uid("sum").start_new_chain().sink(
    sinks.Collect()
).name("sums").uid("sums")
