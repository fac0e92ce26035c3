"""A real Kafka (KRaft mode, no ZooKeeper) as subprocesses for tests: one node, or a
cluster of three for the broker-failure tests.

The jars come from ``.ci/build-kafka`` (``org.apache.kafka:kafka_2.13`` and its runtime
dependencies from Maven Central, cached under ``~/.cache/mesh-tools/kafka-<version>/libs``)
or from ``$MESH_KAFKA`` (the directory that script prints). :func:`running_kafka` gives each
node a directory of its own under ``tmp_path``, formats its storage with a fresh random
cluster id (``kafka.tools.StorageTool``, what ``kafka-storage.sh format`` runs), writes a
``server.properties`` for a combined broker + controller node whose two listeners
(PLAINTEXT for clients, CONTROLLER for the Raft quorum) are on 127.0.0.1 on ports picked
free, starts ``java -cp 'libs/*' kafka.Kafka server.properties`` with a small heap, waits
until every node answers a metadata request that lists every broker, and stops the nodes on
exit (SIGTERM, then SIGKILL after a deadline). Each node's log (log4j2, to a file) and its
stdout/stderr are in its directory; a failure to start raises with their tails.

The clients here (admin, producer, consumer) are confluent-kafka's, from the test extras:
they are the harness, not what mesh itself uses.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic

from tests.jaeger import HOST, free_port
from tests.tools import cached_dir

KAFKA_VERSION = "4.4.0"
# Each node is a JVM: on two slow cores, three of them starting at once take a while.
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
FORMAT_TIMEOUT_S = 60.0
# Kafka's quick start gives the broker 1 GiB; tests produce little, and the machine (two
# cores) is shared with the mesh daemons under test. C1 only (TieredStopAtLevel=1): on this
# machine a node is ready ~30% sooner (three nodes: ~9 s instead of ~13 s, format
# included) and idles ~20 MiB smaller, at the cost of peak throughput; a benchmark that
# wants the broker's real ceiling passes BENCH_JVM_OPTS.
BENCH_JVM_OPTS = ("-Xms256m", "-Xmx1g", "-XX:+UseG1GC")
DEFAULT_JVM_OPTS = ("-Xms64m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")

T = TypeVar("T")

_LOG4J2 = """\
# log4j2 for a test broker: everything at INFO to one file in the node's directory.
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log_path}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
# One line per state change of every partition replica: too much for a test log.
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def kafka_home() -> Path | None:
    """The directory ``.ci/build-kafka`` prints (its ``libs/`` holds the jars):
    ``$MESH_KAFKA`` if set, else the one it caches; ``None`` unless the build finished."""
    return cached_dir("MESH_KAFKA", "kafka", KAFKA_VERSION, "libs/.complete")


def kafka_libs() -> Path | None:
    """The directory of the broker's jars, or ``None`` (see :func:`kafka_home`)."""
    home = kafka_home()
    return None if home is None else home / "libs"


def java_binary() -> str:
    """``$JAVA_HOME/bin/java`` if ``JAVA_HOME`` is set (as Kafka's own scripts do), else
    ``java`` on the ``PATH``. Kafka 4.x brokers need Java 17 or newer."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise FileNotFoundError("no java on the PATH (Kafka 4.x needs Java 17+)")
    return found


def random_cluster_id() -> str:
    """A cluster id as ``kafka-storage.sh random-uuid`` makes one: 16 random bytes,
    URL-safe base64 without padding, never starting with '-' (it would read as an option)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports on 127.0.0.1 that were free a moment ago."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        return f"({path.name}: {err})"
    return f"{path.name} (tail):\n" + "\n".join(text.splitlines()[-lines:])


@dataclass
class KafkaNode:
    """One combined broker + controller JVM."""

    node_id: int
    port: int  # PLAINTEXT, for clients and replication
    controller_port: int  # CONTROLLER, the KRaft quorum
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        """The broker's own log (log4j2)."""
        return self.directory / "server.log"

    @property
    def stdout_path(self) -> Path:
        """The JVM's stdout and stderr (crashes, log4j2's own complaints)."""
        return self.directory / "stdout.log"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL (kill -9): no controlled shutdown; waits until the process is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        """The first errors of the broker's log (a stack trace can fill the tail), its
        last ``lines`` lines, and the end of the JVM's own output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            text = ""
        errors = [line for line in text.splitlines() if "] ERROR " in line or "] FATAL " in line]
        first = "first errors:\n" + "\n".join(errors[:3]) + "\n" if errors else ""
        return (
            f"--- kafka node {self.node_id} ({self.address}) ---\n{first}"
            f"{_tail(self.log_path, lines)}\n{_tail(self.stdout_path, 10)}"
        )


@dataclass
class Kafka:
    """A running Kafka cluster of one or more nodes on 127.0.0.1."""

    cluster_id: str
    nodes: list[KafkaNode]
    _admin: AdminClient | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        """``bootstrap.servers`` naming every node, so a client gets in while one is down."""
        return ",".join(node.address for node in self.nodes)

    def client_config(self, **extra: Any) -> dict[str, Any]:
        """A confluent-kafka client config for this cluster, plus ``extra``."""
        return {"bootstrap.servers": self.bootstrap, "broker.address.family": "v4", **extra}

    def node(self, node_id: int) -> KafkaNode:
        [node] = [n for n in self.nodes if n.node_id == node_id]
        return node

    def admin(self) -> AdminClient:
        """One admin client for the cluster, made on first use."""
        if self._admin is None:
            self._admin = AdminClient(self.client_config())
        return self._admin

    def metadata(self, topic: str | None = None, timeout_s: float = 10.0) -> ClusterMetadata:
        return self.admin().list_topics(topic=topic, timeout=timeout_s)

    def create_topic(
        self,
        name: str,
        partitions: int,
        replication: int = 1,
        config: dict[str, str] | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        """Create the topic and wait until every partition has a leader and its full
        replica set in sync, as seen by a metadata request."""
        topic = NewTopic(
            name, num_partitions=partitions, replication_factor=replication, config=config or {}
        )
        futures = self.admin().create_topics([topic], operation_timeout=timeout_s)
        futures[name].result(timeout=timeout_s)

        def ready() -> bool:
            meta = self.metadata(name).topics.get(name)
            if meta is None or meta.error is not None or len(meta.partitions) != partitions:
                return False
            return all(
                p.leader >= 0 and len(p.isrs) == replication and p.error is None
                for p in meta.partitions.values()
            )

        self.wait_for(ready, f"topic {name!r} with {partitions} partitions ready", timeout_s)

    def partition_leader(self, topic: str, partition: int) -> int:
        """The node id of the partition's leader (-1 while it has none)."""
        meta = self.metadata(topic).topics[topic]
        return int(meta.partitions[partition].leader)

    def wait_for(
        self,
        condition: Callable[[], T | None],
        what: str,
        timeout_s: float = 30.0,
        interval_s: float = 0.1,
    ) -> T:
        """Poll ``condition`` until it returns something truthy, which is returned; a
        ``KafkaException`` counts as not yet. After ``timeout_s`` fail with the nodes'
        log tails."""
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while True:
            result: T | None = None
            try:
                result = condition()
            except KafkaException as err:
                last_error = err
            if result:
                return result
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout_s:g} s waiting for {what}"
                    f"{f' (last error: {last_error})' if last_error else ''}\n{self.log_tail()}"
                )
            time.sleep(interval_s)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(node.log_tail(lines) for node in self.nodes)


def server_properties(node: KafkaNode, nodes: list[KafkaNode]) -> str:
    """``server.properties`` for one combined broker + controller node of ``nodes``."""
    count = len(nodes)
    replication = min(count, 3)
    min_isr = 2 if replication >= 3 else 1
    voters = ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in nodes)
    lines = {
        "process.roles": "broker,controller",
        "node.id": node.node_id,
        # A static quorum (every node a voter): no --standalone / --initial-controllers.
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{HOST}:{node.port},CONTROLLER://{HOST}:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{node.port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "log.dirs": node.directory / "data",
        # Topics are created by the tests; a missing topic is an error, as it should be.
        "auto.create.topics.enable": "false",
        # The internal topics: replicated across the cluster, few partitions (each one
        # costs start-up time on two cores).
        "offsets.topic.replication.factor": replication,
        "offsets.topic.num.partitions": 4,
        "transaction.state.log.replication.factor": replication,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": 4,
        "share.coordinator.state.topic.replication.factor": replication,
        "share.coordinator.state.topic.min.isr": min_isr,
        "min.insync.replicas": min_isr,
        # A consumer group's first rebalance waits 3 s by default for more members.
        "group.initial.rebalance.delay.ms": 0,
        # A dead broker is fenced (and leaves every ISR) after 4 s, not 9 s.
        "broker.heartbeat.interval.ms": 500,
        "broker.session.timeout.ms": 4000,
        # The log cleaner's dedupe buffer is 128 MiB of heap by default.
        "log.cleaner.dedupe.buffer.size": 8 * 1024 * 1024,
        # Two cores: fewer threads than the defaults (3 network, 8 I/O, 10 background).
        "num.network.threads": 2,
        "num.io.threads": 4,
        "background.threads": 4,
    }
    return "".join(f"{key}={value}\n" for key, value in lines.items())


def _java_command(libs_dir: Path, node: KafkaNode, jvm_opts: tuple[str, ...]) -> list[str]:
    return [
        java_binary(),
        *jvm_opts,
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={node.directory / 'log4j2.properties'}",
        "-cp",
        f"{libs_dir}/*",
    ]


def _format_storage(
    libs_dir: Path, nodes: list[KafkaNode], cluster_id: str, jvm_opts: tuple[str, ...]
) -> None:
    """``kafka-storage.sh format -t CLUSTER_ID -c server.properties`` for every node, at
    once (a JVM start each)."""
    running = []
    for node in nodes:
        out = (node.directory / "format.log").open("wb")
        command = [
            *_java_command(libs_dir, node, jvm_opts),
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cluster_id,
            "--config",
            str(node.directory / "server.properties"),
        ]
        with out:
            running.append(
                (
                    node,
                    subprocess.Popen(
                        command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
                    ),
                )
            )
    failures = []
    try:
        for node, process in running:
            code = process.wait(timeout=FORMAT_TIMEOUT_S)
            if code != 0:
                failures.append(
                    f"node {node.node_id}: exit {code}\n{_tail(node.directory / 'format.log', 20)}"
                )
    finally:
        for _, process in running:
            if process.poll() is None:
                process.kill()
                process.wait()
    if failures:
        raise RuntimeError("kafka storage format failed:\n" + "\n".join(failures))


def _stop_all(nodes: list[KafkaNode]) -> None:
    """SIGTERM every live node at once (a controlled shutdown each), then SIGKILL what is
    still running after ``STOP_TIMEOUT_S``."""
    for node in nodes:
        if node.alive():
            assert node.process is not None
            node.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for node in nodes:
        if node.process is None:
            continue
        try:
            node.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def _not_ready(kafka: Kafka) -> str | None:
    """``None`` once every node accepts a connection and answers a metadata request that
    lists all the cluster's brokers (each registered with the controller and unfenced);
    else what is not ready yet."""
    expected = {node.node_id for node in kafka.nodes}
    for node in kafka.nodes:
        if not _accepts(node.port):
            return f"node {node.node_id} does not accept connections on {node.address}"
        # This node alone, so the answer is its own view of the cluster.
        admin = AdminClient({"bootstrap.servers": node.address, "broker.address.family": "v4"})
        try:
            brokers = set(admin.list_topics(timeout=5).brokers)
        except KafkaException as err:
            return f"node {node.node_id}: metadata request failed: {err}"
        if brokers != expected:
            return f"node {node.node_id} lists brokers {sorted(brokers)}, not {sorted(expected)}"
    return None


@contextmanager
def running_kafka(
    tmp_path: Path,
    libs_dir: Path | None = None,
    brokers: int = 1,
    jvm_opts: tuple[str, ...] = DEFAULT_JVM_OPTS,
) -> Iterator[Kafka]:
    """Start a KRaft cluster of ``brokers`` combined broker + controller nodes (node ids
    1..brokers, directories ``tmp_path/node-<id>``), wait until it serves clients, and
    stop it on exit, whatever the body did."""
    libs_dir = libs_dir or kafka_libs()
    if libs_dir is None:
        raise FileNotFoundError("no Kafka jars: run .ci/build-kafka or set MESH_KAFKA")
    ports = _free_ports(2 * brokers)
    nodes = [
        KafkaNode(
            node_id=i + 1,
            port=ports[2 * i],
            controller_port=ports[2 * i + 1],
            directory=tmp_path / f"node-{i + 1}",
        )
        for i in range(brokers)
    ]
    kafka = Kafka(cluster_id=random_cluster_id(), nodes=nodes)
    for node in nodes:
        node.directory.mkdir(parents=True, exist_ok=True)
        (node.directory / "server.properties").write_text(server_properties(node, nodes))
        (node.directory / "log4j2.properties").write_text(_LOG4J2.format(log_path=node.log_path))
    _format_storage(libs_dir, nodes, kafka.cluster_id, jvm_opts)
    try:
        for node in nodes:
            with node.stdout_path.open("wb") as out:
                node.process = subprocess.Popen(
                    [
                        *_java_command(libs_dir, node, jvm_opts),
                        "kafka.Kafka",
                        str(node.directory / "server.properties"),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=node.directory,
                )
        deadline = time.monotonic() + START_TIMEOUT_S
        while (not_ready := _not_ready(kafka)) is not None:
            dead = [n for n in nodes if not n.alive()]
            if dead:
                assert dead[0].process is not None
                raise RuntimeError(
                    f"kafka node {dead[0].node_id} exited ({dead[0].process.returncode}) "
                    f"during startup: {not_ready}\n{kafka.log_tail()}"
                )
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"kafka not ready after {START_TIMEOUT_S:g} s: {not_ready}\n{kafka.log_tail()}"
                )
            time.sleep(0.1)
        yield kafka
    finally:
        kafka._admin = None
        _stop_all(nodes)


def read_topic(
    kafka: Kafka,
    topic: str,
    *,
    isolation: str = "read_committed",
    timeout_s: float = 60.0,
) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """Every record of ``topic`` that a reader with ``isolation`` sees, from the start to
    the end of each partition (for ``read_committed``, its last stable offset), as
    ``(partition, offset, key, value)``, in order within each partition. Reads with
    assigned partitions, no consumer group."""
    partitions = list(kafka.metadata(topic).topics[topic].partitions)
    consumer = Consumer(
        kafka.client_config(
            **{
                "group.id": "mesh-tests-read-topic",  # required, unused: nothing is committed
                "enable.auto.commit": False,
                "isolation.level": isolation,
                "enable.partition.eof": True,
            }
        )
    )
    records: list[tuple[int, int, bytes | None, bytes | None]] = []
    try:
        consumer.assign([TopicPartition(topic, p, -2) for p in partitions])  # -2: beginning
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while at_end != set(partitions):
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout_s:g} s reading {topic!r}: {len(records)} "
                    f"records, partitions at the end: {sorted(at_end)} of {partitions}\n"
                    f"{kafka.log_tail()}"
                )
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at_end.add(message.partition())
                        continue
                    raise KafkaException(error)
                at_end.discard(message.partition())
                records.append(
                    (message.partition(), message.offset(), message.key(), message.value())
                )
    finally:
        consumer.close()
    return records


def produce_json(
    kafka: Kafka,
    topic: str,
    values: Iterable[Any],
    key: Callable[[Any], str] | None = None,
    timeout_s: float = 120.0,
) -> int:
    """Produce ``values`` as JSON (keyed by ``key(value)`` when given) with an idempotent
    producer and flush; fail on any record whose delivery failed. Returns the count."""
    producer = Producer(
        kafka.client_config(**{"enable.idempotence": True, "linger.ms": 20, "batch.size": 1 << 20})
    )
    failures: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failures.append(err)

    sent = 0
    dumps = orjson.dumps
    for value in values:
        k = key(value).encode() if key is not None else None
        while True:
            try:
                producer.produce(topic, key=k, value=dumps(value), on_delivery=delivered)
                break
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.05)
        sent += 1
        if sent % 10_000 == 0:
            producer.poll(0)
    left = producer.flush(timeout_s)
    producer.close()
    assert left == 0, f"{left} records still undelivered after {timeout_s:g} s"
    assert not failures, f"{len(failures)} records not delivered, first: {failures[0]}"
    return sent
