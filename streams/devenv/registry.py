"""A Confluent-API-compatible schema registry on loopback: Apicurio Registry, from Maven Central.

Confluent's own registry is not published on Maven Central (nor PyPI); Apicurio Registry is
(``io.apicurio:apicurio-registry-app:<version>:zip:all``: a Quarkus runner jar plus ``lib/``)
and serves the Confluent REST API under ``/apis/ccompat/v7``, which confluent-kafka's
``SchemaRegistryClient`` talks to. It keeps schemas in memory (H2), which is what tests and
the demo need: schemas are registered again by the producers after a restart.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .process import StartError, read_pid, run, start_daemon, stop_daemon

# 2.6.x is the newest line published with the ``all`` distribution zip on Maven Central
# and runs on Java 17 (the JDK the Kafka broker uses).
DEFAULT_REGISTRY_VERSION = "2.6.13.Final"
ARTIFACT = "io.apicurio:apicurio-registry-app:{version}:zip:all"


@dataclass(frozen=True)
class SchemaRegistry:
    run_dir: Path
    version: str = DEFAULT_REGISTRY_VERSION
    port: int = 18081
    heap: str = "384m"

    @property
    def home(self) -> Path:
        return self.run_dir / "registry" / self.version

    @property
    def runner(self) -> Path:
        return self.home / f"apicurio-registry-app-{self.version}-runner.jar"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "registry" / "registry.log"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "registry" / "registry.pid"

    @property
    def url(self) -> str:
        """Base URL for confluent-kafka's SchemaRegistryClient (Confluent API v7)."""
        return f"http://127.0.0.1:{self.port}/apis/ccompat/v7"

    def fetch(self) -> None:
        """Download and unpack the registry with Maven unless it is already there."""
        if self.runner.exists():
            return
        if shutil.which("mvn") is None:
            raise StartError("Maven (mvn) is needed to fetch Apicurio Registry from Maven Central; apt-get install maven")
        print(f"fetching Apicurio Registry {self.version} from Maven Central ...", flush=True)
        download = self.run_dir / "registry" / "download"
        if download.exists():
            shutil.rmtree(download)
        run(
            [
                "mvn", "-B", "-q", "-Dstyle.color=never", "dependency:copy",
                f"-Dartifact={ARTIFACT.format(version=self.version)}",
                f"-DoutputDirectory={download}",
            ]
        )
        (archive,) = download.glob("*.zip")
        staging = self.home.with_name(self.home.name + ".partial")
        if staging.exists():
            shutil.rmtree(staging)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(staging)
        staging.rename(self.home)  # the runner jar appears only once everything is unpacked
        shutil.rmtree(download)

    def running_pid(self) -> int | None:
        return read_pid(self.pid_file)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/subjects", timeout=2) as resp:
                return resp.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def start(self) -> None:
        if self.running_pid() is not None and self.ready():
            print(f"schema registry already running on {self.url}")
            return
        self.fetch()
        pid = start_daemon(
            [
                "java", f"-Xmx{self.heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "-Dquarkus.http.host=127.0.0.1", f"-Dquarkus.http.port={self.port}",
                "-jar", str(self.runner),
            ],
            cwd=self.home,
            log_file=self.log_file,
            pid_file=self.pid_file,
            ready=self.ready,
            what=f"Apicurio Registry {self.version}",
        )
        print(f"schema registry (Apicurio {self.version}) ready on {self.url} (pid {pid})")

    def stop(self) -> None:
        if stop_daemon(self.pid_file):
            print("schema registry stopped")
