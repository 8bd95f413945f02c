"""A PostgreSQL 15 cluster on loopback, managed with Debian's cluster tools.

The cluster is called ``dbopt``, keeps its data in ``.run/pg`` and preloads
``pg_stat_statements``; the HypoPG extension is installed from Debian's package.
The server refuses to run as root, so ``pg_ctlcluster`` runs it as ``postgres``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .process import StartError, run, tail, wait_until

PG_MAJOR = "15"
# pg_qualstats: only for bench/powa_compare.py (PoWA's index advisor), preloaded on its own throwaway cluster
PACKAGES = (f"postgresql-{PG_MAJOR}", f"postgresql-{PG_MAJOR}-hypopg", "postgresql-contrib",
            f"postgresql-{PG_MAJOR}-pg-qualstats")


@dataclass(frozen=True)
class PostgresCluster:
    run_dir: Path
    port: int = 15432
    name: str = "dbopt"
    user: str = "dbopt"
    password: str = "dbopt"
    database: str = "dbopt"

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "pg" / "data"

    @property
    def log_file(self) -> Path:
        return Path(f"/var/log/postgresql/postgresql-{PG_MAJOR}-{self.name}.log")

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def install(self) -> None:
        missing = [p for p in PACKAGES if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
        if not missing:
            return
        if os.geteuid() != 0:
            raise StartError(f"packages {missing} are missing and installing them needs root")
        print(f"installing {' '.join(missing)} with apt-get ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
        proc = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            env=env, capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise StartError(f"apt-get install failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")

    def _cluster_line(self) -> list[str] | None:
        proc = run(["pg_lsclusters", "--no-header"], quiet=True)
        for line in proc.stdout.splitlines():
            cols = line.split()
            if len(cols) >= 6 and cols[0] == PG_MAJOR and cols[1] == self.name:
                return cols
        return None

    def _create(self) -> None:
        line = self._cluster_line()
        if line is not None and (Path(line[5]) != self.data_dir or not self.data_dir.exists() or line[2] != str(self.port)):
            # a cluster of this name left by another checkout (or whose data is gone): replace it
            run(["pg_dropcluster", PG_MAJOR, self.name, "--stop"], check=False, quiet=True)
            line = None
        if line is not None:
            return
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.data_dir.parent, "postgres", "postgres")
        settings = {
            "listen_addresses": "127.0.0.1",
            "shared_preload_libraries": "pg_stat_statements",
            "pg_stat_statements.track": "all",
            "max_connections": "200",
            "shared_buffers": "256MB",
            # a disposable dev/test cluster: durability is traded for speed
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_wal_size": "4GB",
        }
        run(
            ["pg_createcluster", PG_MAJOR, self.name, "-p", str(self.port), "-d", str(self.data_dir),
             "--", "--auth-local=peer", "--auth-host=scram-sha-256"],
            quiet=True,
        )
        # Debian's postgresql.conf includes conf.d/ last, so these win
        conf = Path(f"/etc/postgresql/{PG_MAJOR}/{self.name}/conf.d/dbopt.conf")
        conf.write_text("".join(f"{key} = '{value}'\n" for key, value in settings.items()))

    def _psql(self, sql: str, database: str = "postgres") -> str:
        proc = run(
            ["runuser", "-u", "postgres", "--", "psql", "-p", str(self.port), "-d", database,
             "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
            quiet=True,
        )
        return proc.stdout.strip()

    def ready(self) -> bool:
        return subprocess.run(
            ["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True
        ).returncode == 0

    def start(self) -> None:
        self.install()
        self._create()
        if not self.ready():
            proc = subprocess.run(["pg_ctlcluster", PG_MAJOR, self.name, "start"], capture_output=True, text=True)
            if proc.returncode != 0 and "already running" not in proc.stderr:
                raise StartError(f"PostgreSQL did not start: {proc.stderr.strip()}\nLast log lines:\n{tail(self.log_file)}")
        wait_until(self.ready, timeout=60, what="PostgreSQL", log=self.log_file)
        self._bootstrap()
        print(f"postgresql {PG_MAJOR} ready on 127.0.0.1:{self.port} (database {self.database})")

    def _bootstrap(self) -> None:
        """Role, database and extensions; idempotent."""
        if not self._psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{self.user}'"):
            self._psql(f"CREATE ROLE {self.user} LOGIN SUPERUSER PASSWORD '{self.password}'")
        if not self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"):
            self._psql(f"CREATE DATABASE {self.database} OWNER {self.user}")
        self._psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements; CREATE EXTENSION IF NOT EXISTS hypopg",
                   database=self.database)

    def stop(self) -> None:
        if self._cluster_line() is None:
            return
        subprocess.run(["pg_ctlcluster", PG_MAJOR, self.name, "stop", "-m", "fast"], capture_output=True)
        print("postgresql stopped")
