"""A TCP proxy that delays everything it forwards: latency for links on a kernel
without netem.

    python -m tests.delay_proxy --delay-ms 50 --jitter-ms 20 LISTEN_IP:PORT=TARGET_IP:PORT ...

For each mapping it accepts connections on the listen address and opens one to the
target per connection; each chunk read from either side is written to the other
``delay ± jitter`` ms later (uniformly drawn), never before the chunk read ahead of it,
so the byte stream keeps its order. It prints ``ready`` once every listener is bound
and runs until killed.
"""

from __future__ import annotations

import argparse
import random
from functools import partial

import anyio
from anyio.abc import ByteStream, SocketStream

_CHUNK = 65536


async def _forward(
    source: ByteStream, sink: ByteStream, delay_s: float, jitter_s: float, rng: random.Random
) -> None:
    """Copy ``source`` to ``sink``, each chunk held back for its drawn delay."""
    send, receive = anyio.create_memory_object_stream[tuple[float, bytes]](1 << 16)

    async def release() -> None:
        try:
            async with receive:
                async for due, chunk in receive:
                    await anyio.sleep(max(0.0, due - anyio.current_time()))  # the latency
                    await sink.send(chunk)
            await sink.send_eof()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass  # the other side went away: so does this direction

    last_due = 0.0
    async with anyio.create_task_group() as tg:
        tg.start_soon(release)
        async with send:
            while True:
                try:
                    chunk = await source.receive(_CHUNK)
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    break
                drawn = rng.uniform(delay_s - jitter_s, delay_s + jitter_s)
                last_due = max(last_due, anyio.current_time() + max(0.0, drawn))
                await send.send((last_due, chunk))


async def _proxy(
    target: tuple[str, int],
    delay_s: float,
    jitter_s: float,
    rng: random.Random,
    client: SocketStream,
) -> None:
    async with client:
        try:
            upstream = await anyio.connect_tcp(*target)
        except OSError:
            return
        async with upstream, anyio.create_task_group() as tg:
            tg.start_soon(_forward, client, upstream, delay_s, jitter_s, rng)
            tg.start_soon(_forward, upstream, client, delay_s, jitter_s, rng)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def _main(mappings: list[str], delay_s: float, jitter_s: float) -> None:
    rng = random.Random(7)
    async with anyio.create_task_group() as tg:
        for mapping in mappings:
            listen, _, target = mapping.partition("=")
            host, port = _address(listen)
            listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
            handler = partial(_proxy, _address(target), delay_s, jitter_s, rng)
            tg.start_soon(listener.serve, handler)
        print("ready", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="a TCP proxy that adds latency")
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--jitter-ms", type=float, default=20.0)
    parser.add_argument("mappings", nargs="+", metavar="LISTEN=TARGET")
    args = parser.parse_args()
    anyio.run(_main, args.mappings, args.delay_ms / 1000, args.jitter_ms / 1000)


if __name__ == "__main__":
    main()
