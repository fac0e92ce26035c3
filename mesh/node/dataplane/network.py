"""A node's data plane: its sockets, the links to other nodes, and frame routing.

Sockets (all created by the ``SocketFactory``):

* one PULL bound at the node's data endpoint: every other node PUSHes the DATA and
  event frames of all its channels to us over one connection per node pair;
* one ROUTER bound at the node's control endpoint: consumers on other nodes send the
  credits (and end-of-partition acks) of our output channels here;
* per peer node, a PUSH to its data endpoint and a DEALER to its control endpoint.

Both receive pumps drain their socket without blocking and route each frame by
``(job, channel)``. Whatever is malformed — a frame that does not decode, a wrong
version, an unknown job, a frame from an older attempt — is counted and logged with the
peer and channel, and dropped. A frame whose channel token (``mesh.transport.tokens``)
is not the one the channel was deployed with did not come from the channel's deployed
peer: it is dropped as ``forged`` before anything reads its sequence number or payload.
Only a broken channel of genuine frames (sequence gap, overdraft, undecodable payload)
fails the subtask that reads it. Nothing a peer sends can stop a pump. A connection
that sends ``max_bad_messages`` malformed or forged messages is cut, and one that
ZeroMQ cuts for a message part over the port's size limit is logged with its peer
(``mesh.transport.inbound``).
Sampled records' trace marks ride in the DATA frame's header extension
(``mesh.transport.traced``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import anyio

from mesh.errors import FrameError
from mesh.node.dataplane.channels import InputChannel, OutputChannel
from mesh.protocol.messages import PeerAddress
from mesh.transport.drops import DropCounter
from mesh.transport.frames import FrameHeader, FrameKind, decode_header, encode_header
from mesh.transport.inbound import InboundConnections
from mesh.transport.links import watch_link
from mesh.transport.sockets import Frame, Outbox, Socket, SocketFactory, SocketKind, frame_peer
from mesh.transport.tokens import token_matches
from mesh.transport.traced import TracedPayload, marks_from_ext, trace_ext

__all__ = ["JobChannels", "NodeNetwork", "RemoteCreditReturn", "RemoteLink"]

log = logging.getLogger("mesh.node.network")

# Frames handled between two yields to the event loop: keeps pumps from starving tasks.
_PUMP_BATCH = 64
# How many ended jobs to remember, so that their late frames are not reported as strange.
_RETIRED_JOBS = 1000
# The largest message part the credit port takes: a header (fixed part, job id, an
# extension of at most 64 KiB), and credits carry no extension at all.
_MAX_CREDIT_BYTES = 128 << 10
# How often links to other nodes are pinged (a link is lost after 3 unanswered pings).
_PING_MS = 1000


@dataclass(eq=False)
class JobChannels:
    """The channel endpoints of one job attempt on this node."""

    job_id: str
    attempt: int
    inputs: dict[int, InputChannel] = field(default_factory=dict)
    outputs: dict[int, OutputChannel] = field(default_factory=dict)
    # The tokens frames from the network must carry: per input channel with a remote
    # producer (data and events), per output channel with a remote consumer (credits).
    # A channel without one takes no frames from the network.
    data_tokens: dict[int, bytes] = field(default_factory=dict)
    credit_tokens: dict[int, bytes] = field(default_factory=dict)
    # The other nodes this attempt exchanges frames with.
    peers: set[str] = field(default_factory=set)


class RemotePeer:
    """Our links to one other node.

    Both links are pinged every ``_PING_MS``; ZeroMQ drops a connection whose pings go
    unanswered three times in a row. ``on_lost`` hears of a link that dropped after it
    had been up, and of one back after a drop: frames queued on it meanwhile may be gone,
    so the job attempts that use this peer cannot go on.
    """

    def __init__(
        self,
        factory: SocketFactory,
        own_id: str,
        address: PeerAddress,
        on_lost: Callable[[str, str, bool], None] | None = None,
    ) -> None:
        self.address = address
        self._factory = factory
        self._on_lost = on_lost
        # Cancels this peer's pumps when it is replaced (the node came back elsewhere).
        self._scope = anyio.CancelScope()
        # With CURVE keys: the peer's own key if it has one, else the nodes' shared one.
        server = (address.node_id, "node")
        self.data = Outbox(
            factory.connect(
                SocketKind.PUSH, address.data_endpoint, server=server, watch_link_ms=_PING_MS
            )
        )
        self.control = Outbox(
            factory.connect(
                SocketKind.DEALER,
                address.control_endpoint,
                identity=own_id,
                server=server,
                watch_link_ms=_PING_MS,
            )
        )

    async def run(self) -> None:
        with self._scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.data.pump)
                tg.start_soon(self.control.pump)
                for sock, what in ((self.data.sock, "data"), (self.control.sock, "credit")):
                    lost, back = partial(self._lost, what, False), partial(self._lost, what, True)
                    tg.start_soon(watch_link, sock, lost, back)

    def _lost(self, what: str, back: bool) -> None:
        endpoint = self.data.sock.endpoint if what == "data" else self.control.sock.endpoint
        if back:
            reason = (
                f"the {what} link to node {self.address.node_id} at {endpoint} is back after "
                "a drop: what was sent on it meanwhile may be lost"
            )
        else:
            reason = (
                f"lost the {what} link to node {self.address.node_id} at {endpoint}: "
                f"3 pings {_PING_MS} ms apart went unanswered, or the connection closed"
            )
        log.warning("%s", reason)
        if self._on_lost is not None:
            self._on_lost(self.address.node_id, reason, back)

    def close(self) -> None:
        """Stop the pumps and close both sockets; later sends raise TransportError."""
        self._scope.cancel()
        self._factory.release(self.data.sock)
        self._factory.release(self.control.sock)


class RemoteLink:
    """Sends one channel's frames (of one job attempt) to a peer node, with the channel's
    data token."""

    __slots__ = ("_attempt", "_job", "_peer", "_token")

    def __init__(self, peer: RemotePeer, job_id: str, attempt: int, token: bytes) -> None:
        self._peer = peer
        self._job = job_id
        self._attempt = attempt
        self._token = token

    def transmit(self, channel: int, kind: FrameKind, seq: int, arg: int, payload: bytes) -> None:
        ext = trace_ext(payload) if type(payload) is TracedPayload else None
        header = encode_header(
            kind, self._job, self._attempt, channel, seq, arg, ext, token=self._token
        )
        self._peer.data.send([header, payload])


class RemoteCreditReturn:
    """Sends one channel's credits and end-of-partition ack (of one job attempt) to the
    producer's node, with the channel's credit token."""

    __slots__ = ("_attempt", "_job", "_peer", "_token")

    def __init__(self, peer: RemotePeer, job_id: str, attempt: int, token: bytes) -> None:
        self._peer = peer
        self._job = job_id
        self._attempt = attempt
        self._token = token

    def grant(self, channel: int, credits: int) -> None:
        header = encode_header(
            FrameKind.CREDIT, self._job, self._attempt, channel, 0, credits, token=self._token
        )
        self._peer.control.send([header])

    def ack_end(self, channel: int) -> None:
        header = encode_header(
            FrameKind.EOP_ACK, self._job, self._attempt, channel, token=self._token
        )
        self._peer.control.send([header])


class NodeNetwork:
    """The node's data plane: sockets, peer links, and routing of frames to channels."""

    def __init__(
        self,
        factory: SocketFactory,
        node_id: str,
        bind_host: str,
        *,
        max_frame_bytes: int = 64 << 20,
        max_bad_messages: int = 100,
    ) -> None:
        self.node_id = node_id
        self._factory = factory
        # A peer that sends a larger message part is disconnected by ZeroMQ itself.
        self._pull = factory.bind(
            SocketKind.PULL, f"tcp://{bind_host}:0", max_message_bytes=max_frame_bytes
        )
        self._router = factory.bind(
            SocketKind.ROUTER, f"tcp://{bind_host}:0", max_message_bytes=_MAX_CREDIT_BYTES
        )
        # Who is connected to each port: names senders, cuts the ones sending garbage.
        self._pull_peers = InboundConnections(
            self._pull,
            "data port",
            limit=max_bad_messages,
            size_limit=("max_frame_size", max_frame_bytes),
            on_oversize=partial(self._oversize, "data"),
        )
        self._router_peers = InboundConnections(
            self._router,
            "credit port",
            limit=max_bad_messages,
            size_limit=("the credit port's limit", _MAX_CREDIT_BYTES),
            on_oversize=partial(self._oversize, "credit"),
        )
        self._jobs: dict[str, JobChannels] = {}
        self._peers: dict[str, RemotePeer] = {}
        # Jobs that ended here recently (oldest first): their late frames are expected.
        self._retired: dict[str, None] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        # Dropped frames by reason, for logs and heartbeats.
        self.drops = DropCounter(log)
        self._drop = self.drops.drop
        #: Told (job id, attempt, why, back) when a link to a node that job uses drops
        #: (back: False) or comes back after a drop (back: True).
        self.on_job_link_lost: Callable[[str, int, str, bool], None] | None = None

    @property
    def data_endpoint(self) -> str:
        """Where other nodes PUSH frames to us."""
        return self._pull.endpoint

    @property
    def control_endpoint(self) -> str:
        """Where other nodes send credits for our output channels."""
        return self._router.endpoint

    def advertise(self, host: str) -> PeerAddress:
        """Our address as peers should dial it (``host`` replaces the bound host)."""

        def swap(endpoint: str) -> str:
            port = endpoint.rsplit(":", 1)[1]
            return f"tcp://{host}:{port}"

        return PeerAddress(
            node_id=self.node_id,
            data_endpoint=swap(self.data_endpoint),
            control_endpoint=swap(self.control_endpoint),
        )

    async def run(self) -> None:
        """Run the receive pumps and peer links until cancelled."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._pump, self._pull, self._on_data)
            tg.start_soon(self._pump, self._router, self._on_control)
            tg.start_soon(self._pull_peers.watch)
            tg.start_soon(self._router_peers.watch)
            for peer in self._peers.values():
                tg.start_soon(peer.run)

    # -- registry -----------------------------------------------------------------------

    def peer(self, address: PeerAddress) -> RemotePeer:
        """The links to ``address``'s node, created on first use."""
        peer = self._peers.get(address.node_id)
        if peer is not None and peer.address != address:
            peer.close()  # the node came back on other ports
            peer = None
        if peer is None:
            peer = RemotePeer(self._factory, self.node_id, address, self._peer_lost)
            self._peers[address.node_id] = peer
            if self._tg is not None:
                self._tg.start_soon(peer.run)
        return peer

    def _peer_lost(self, node_id: str, reason: str, back: bool) -> None:
        for channels in list(self._jobs.values()):
            if node_id in channels.peers and self.on_job_link_lost is not None:
                self.on_job_link_lost(channels.job_id, channels.attempt, reason, back)

    def register(self, channels: JobChannels) -> None:
        """Route frames of ``channels.job_id`` (replacing any older attempt)."""
        self._jobs[channels.job_id] = channels

    def unregister(self, job_id: str, attempt: int) -> None:
        """Stop routing frames of this job attempt; later ones are counted as unknown."""
        current = self._jobs.get(job_id)
        if current is not None and current.attempt == attempt:
            del self._jobs[job_id]
            self._retired[job_id] = None
            while len(self._retired) > _RETIRED_JOBS:
                del self._retired[next(iter(self._retired))]

    # -- receiving ----------------------------------------------------------------------

    async def _pump(self, sock: Socket, on_message: Callable[[list[Frame]], None]) -> None:
        """Drain ``sock`` without blocking; await only when it is empty."""
        handled = 0
        while True:
            frames = sock.recv_frames_nowait()
            if frames is None:
                handled = 0
                await sock.wait_readable()
                continue
            try:
                on_message(frames)
            except Exception as exc:  # never let a peer's frame stop the pump
                self._drop("internal", f"{type(exc).__name__}: {exc}")
            handled += 1
            if handled >= _PUMP_BATCH:
                handled = 0
                await anyio.lowlevel.checkpoint()

    def _job_of(self, header: FrameHeader, peer: str) -> JobChannels | None:
        """The running attempt a frame belongs to, or None (counted and logged)."""
        job = self._jobs.get(header.job)
        if job is None:
            if header.job in self._retired:  # in flight when the job ended here: normal
                self._drop("ended_job", "", expected=True)
                return None
            self._drop(
                "unknown_job",
                f"{header.kind.name} for job {header.job} channel {header.channel} from {peer}",
            )
            return None
        if header.attempt != job.attempt:
            self._drop(
                "stale_attempt",
                f"{header.kind.name} for job {header.job} channel {header.channel}: attempt "
                f"{header.attempt}, running {job.attempt} (from {peer})",
            )
            return None
        return job

    @property
    def disconnected_peers(self) -> int:
        """Connections cut for sending ``max_bad_messages`` malformed or forged messages."""
        return self._pull_peers.disconnected + self._router_peers.disconnected

    def _oversize(self, port: str, peer: str) -> None:
        self._drop("oversize", f"a message part too large for the {port} port from {peer}")

    def _bad(self, peers: InboundConnections, frame: Frame, reason: str, detail: str) -> None:
        """Drop a malformed or forged message, a strike against its connection."""
        self._drop(reason, detail)
        peers.strike(frame, f"{reason}: {detail}")

    def _on_data(self, frames: list[Frame]) -> None:
        if len(frames) != 2:
            peer = self._pull_peers.peer_of(frames[0])
            self._bad(
                self._pull_peers,
                frames[0],
                "malformed",
                f"data message with {len(frames)} frame(s) from {peer}",
            )
            return
        try:
            header = decode_header(frames[0].buffer)
        except FrameError as exc:
            peer = self._pull_peers.peer_of(frames[0])
            self._bad(self._pull_peers, frames[0], "malformed", f"{exc} (from {peer})")
            return
        job = self._job_of(header, frame_peer(frames[0]))
        if job is None:
            return
        channel = job.inputs.get(header.channel)
        if channel is None or header.kind in (FrameKind.CREDIT, FrameKind.EOP_ACK):
            self._drop(
                "unknown_channel",
                f"job {header.job}: {header.kind.name} for channel {header.channel}, which "
                f"is not an input here (from {frame_peer(frames[0])})",
            )
            return
        expected = job.data_tokens.get(header.channel)
        if expected is None or not token_matches(header.token, expected):
            self._bad(
                self._pull_peers,
                frames[0],
                "forged",
                f"job {header.job}: {header.kind.name} seq {header.seq} for channel "
                f"{header.channel} without the channel's token "
                f"(from {self._pull_peers.peer_of(frames[0])})",
            )
            return
        payload: bytes | memoryview = frames[1].buffer
        if header.ext is not None:
            payload = self._traced(header, payload, frame_peer(frames[0]))
        channel.deliver(header.kind, header.seq, header.arg, payload)

    def _traced(
        self, header: FrameHeader, payload: bytes | memoryview, peer: str
    ) -> bytes | memoryview:
        """``payload`` with the trace marks its header carries; malformed marks are
        logged and ignored (the records still count, only their traces are lost)."""
        assert header.ext is not None
        try:
            marks = marks_from_ext(header.ext)
        except ValueError as exc:
            log.warning(
                "job %s channel %d: ignoring the trace marks of a frame from %s: %s",
                header.job,
                header.channel,
                peer,
                exc,
            )
            return payload
        return TracedPayload.of(payload, marks) if marks else payload

    def _on_control(self, frames: list[Frame]) -> None:
        peer = repr(frames[0].bytes.decode("utf-8", "replace"))
        last = frames[-1]  # the identity part is made here; the last came on the wire
        if len(frames) != 2:
            self._bad(
                self._router_peers,
                last,
                "malformed",
                f"control message with {len(frames) - 1} frame(s) from {peer} "
                f"at {self._router_peers.peer_of(last)}",
            )
            return
        try:
            header = decode_header(frames[1].buffer)
        except FrameError as exc:
            self._bad(
                self._router_peers,
                last,
                "malformed",
                f"{exc} (from {peer} at {self._router_peers.peer_of(last)})",
            )
            return
        job = self._job_of(header, peer)
        if job is None:
            return
        channel = job.outputs.get(header.channel)
        if channel is None:
            self._drop(
                "unknown_channel",
                f"{header.kind.name} for channel {header.channel} of job {header.job}, which is "
                f"not an output here (from {peer})",
            )
            return
        expected = job.credit_tokens.get(header.channel)
        if expected is None or not token_matches(header.token, expected):
            self._bad(
                self._router_peers,
                last,
                "forged",
                f"job {header.job}: {header.kind.name} for channel {header.channel} without "
                f"the channel's token (from {peer} at {self._router_peers.peer_of(last)})",
            )
            return
        if header.kind is FrameKind.CREDIT:
            channel.on_credit(header.arg)
        elif header.kind is FrameKind.EOP_ACK:
            channel.on_end_ack()
        else:
            self._bad(
                self._router_peers,
                last,
                "malformed",
                f"{header.kind.name} frame on the credit port from {peer}",
            )

    def close(self) -> None:
        """Close peer links (the factory closes the bound sockets)."""
        self._pull_peers.close()
        self._router_peers.close()
        for peer in self._peers.values():
            peer.close()
        self._peers.clear()
