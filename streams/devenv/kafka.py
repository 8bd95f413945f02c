"""A single-node Apache Kafka broker (KRaft) on loopback, from Maven Central artifacts.

The artifacts are fetched by Maven (``kafka-pom.xml``) into ``.run/kafka/<version>/libs``
and cached in ``~/.m2``; the broker runs as ``java -cp libs/* kafka.Kafka``.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from .process import StartError, read_pid, run, start_daemon, stop_daemon, tail
from .secure import SecureListener

# Newest 4.x release fully published on Maven Central that aiokafka 0.14 (faust-streaming
# 0.15) and confluent-kafka 2.x work with; see docs/ARCHITECTURE.md ("Kafka version").
DEFAULT_KAFKA_VERSION = "4.3.1"
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class KafkaBroker:
    run_dir: Path
    version: str = DEFAULT_KAFKA_VERSION
    port: int = 19092
    controller_port: int = 19093
    heap: str = "1g"
    secure_port: int | None = None  # an additional SASL_SSL listener (up --secure): streams/devenv/secure.py

    @property
    def home(self) -> Path:
        return self.run_dir / "kafka" / self.version

    @property
    def libs(self) -> Path:
        return self.home / "libs"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "kafka" / "kafka.log"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "kafka" / "kafka.pid"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def secure(self) -> SecureListener | None:
        if self.secure_port is None:
            return None
        return SecureListener(self.run_dir / "kafka" / "secure", self.secure_port)

    def secure_listening(self) -> bool:
        """The running broker has the SASL_SSL listener (it was started with ``up --secure``)."""
        if self.secure_port is None:
            return False
        try:
            socket.create_connection(("127.0.0.1", self.secure_port), timeout=1).close()
        except OSError:
            return False
        return True

    def fetch(self) -> None:
        """Download the broker's jars with Maven unless they are already there."""
        marker = self.libs / ".complete"
        if marker.exists():
            return
        if shutil.which("mvn") is None:
            raise StartError("Maven (mvn) is needed to fetch Kafka from Maven Central; apt-get install maven")
        print(f"fetching Apache Kafka {self.version} from Maven Central ...", flush=True)
        if self.libs.exists():
            shutil.rmtree(self.libs)
        run(
            [
                "mvn", "-B", "-q", "-f", str(HERE / "kafka-pom.xml"),
                "dependency:copy-dependencies",
                f"-Dkafka.version={self.version}",
                f"-DoutputDirectory={self.libs}",
            ]
        )
        marker.write_text(self.version)

    def _java(self, *args: str) -> list[str]:
        return ["java", "-cp", f"{self.libs}/*", *args]

    def _write_config(self) -> Path:
        props = self.home / "server.properties"
        listeners = [f"PLAINTEXT://127.0.0.1:{self.port}"]
        secure_lines: list[str] = []
        if self.secure is not None:
            self.secure.make_certificates()
            listeners.append(f"SASL_SSL://127.0.0.1:{self.secure.port}")
            secure_lines = self.secure.broker_properties()
        props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners={','.join(listeners)},CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners={','.join(listeners)}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
                    *secure_lines,
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={self.data_dir}",
                    "num.partitions=1",
                    # topics come from `dbopt topics create` or the producing commands, with their layout
                    "auto.create.topics.enable=false",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=10",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "log.retention.check.interval.ms=60000",
                    "",
                ]
            )
        )
        return props

    def _format(self, props: Path) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cluster_id = run(self._java("kafka.tools.StorageTool", "random-uuid"), quiet=True).stdout.strip()
        cluster_id = cluster_id.splitlines()[-1] if cluster_id else uuid.uuid4().hex[:22]
        run(self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)), quiet=True)

    def running_pid(self) -> int | None:
        return read_pid(self.pid_file)

    def ready(self) -> bool:
        from confluent_kafka.admin import AdminClient

        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        try:
            admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 2000})
            admin.list_topics(timeout=2)
            return True
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            return False

    def start(self) -> None:
        if self.running_pid() is not None and self.ready():
            print(f"kafka {self.version} already running on {self.bootstrap}")
            if self.secure is not None and not self.secure_listening():
                print(f"warning: the running broker has no SASL_SSL listener on port {self.secure.port} (it was "
                      "started without --secure): restart it once (make down && make up) to get it", file=sys.stderr)
            elif self.secure is not None:
                self.secure.add_user(self.bootstrap)
            return
        self.fetch()
        props = self._write_config()
        self._format(props)
        pid = start_daemon(
            [
                "java", "-Xms256m", f"-Xmx{self.heap}", "-XX:+UseG1GC",
                f"-Dlog4j2.configurationFile={HERE / 'log4j2.properties'}",
                f"-Dlog4j.configuration=file:{HERE / 'log4j2.properties'}",
                "-cp", f"{self.libs}/*", "kafka.Kafka", str(props),
            ],
            env={**os.environ, "KAFKA_HEAP_OPTS": f"-Xmx{self.heap}"},
            log_file=self.log_file,
            pid_file=self.pid_file,
            ready=self.ready,
            what=f"Kafka {self.version}",
        )
        if self.secure is not None:
            self.secure.add_user(self.bootstrap)
            print(f"kafka SASL_SSL ({self.secure.port}) with user dbopt, CA {self.secure.ca_file}")
        print(f"kafka {self.version} ready on {self.bootstrap} (pid {pid})")

    def stop(self) -> None:
        if stop_daemon(self.pid_file):
            print("kafka stopped")

    def log_tail(self) -> str:
        return tail(self.log_file)
