"""The dev broker's SASL_SSL listener (``up --secure``): what a Strimzi, MSK or Confluent Cloud
cluster asks of a client — TLS with a private CA and SCRAM-SHA-512 logins — on loopback.

Made once per run directory, in ``<run dir>/kafka/secure/``: a CA and a broker certificate for
127.0.0.1/localhost (openssl), the broker's PKCS12 keystore (keytool checks it), and the SCRAM
password of the user ``dbopt``. The credential itself is stored in the cluster's metadata with the
admin API over the PLAINTEXT listener (idempotent: it is set again on every ``up --secure``).
``<run dir>/env-secure`` holds the ``DBOPT_KAFKA_*`` variables of a client of that listener.
"""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from .process import StartError, run

MECHANISM = "SCRAM-SHA-512"
USER = "dbopt"
CERT_DAYS = 3650


@dataclass(frozen=True)
class SecureListener:
    """Certificates and credentials of the SASL_SSL listener on ``port``."""

    home: Path  # <run dir>/kafka/secure
    port: int

    @property
    def ca_file(self) -> Path:
        return self.home / "ca.pem"

    @property
    def keystore(self) -> Path:
        return self.home / "broker.p12"

    def _secret(self, name: str) -> str:
        path = self.home / name
        if not path.exists():
            path.write_text(secrets.token_urlsafe(24))
            path.chmod(0o600)
        return path.read_text().strip()

    @property
    def keystore_password(self) -> str:
        return self._secret("keystore-password")

    @property
    def password(self) -> str:
        """The SCRAM password of :data:`USER`."""
        return self._secret("scram-password")

    def make_certificates(self) -> None:
        """A CA and a CA-signed broker certificate for 127.0.0.1 and localhost, unless they exist."""
        if self.keystore.exists():
            return
        if shutil.which("openssl") is None:
            raise StartError("openssl is needed for the SASL_SSL listener's certificates; apt-get install openssl")
        self.home.mkdir(parents=True, exist_ok=True)
        h = self.home
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(CERT_DAYS),
             "-subj", "/CN=dbopt dev CA", "-keyout", str(h / "ca.key"), "-out", str(self.ca_file)], quiet=True)
        run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", str(h / "broker.key"), "-out", str(h / "broker.csr")], quiet=True)
        (h / "broker.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
        run(["openssl", "x509", "-req", "-in", str(h / "broker.csr"), "-CA", str(self.ca_file),
             "-CAkey", str(h / "ca.key"), "-CAcreateserial", "-days", str(CERT_DAYS),
             "-extfile", str(h / "broker.ext"), "-out", str(h / "broker.pem")], quiet=True)
        staging = h / "broker.p12.partial"
        run(["openssl", "pkcs12", "-export", "-name", "broker", "-in", str(h / "broker.pem"),
             "-inkey", str(h / "broker.key"), "-certfile", str(self.ca_file),
             "-passout", f"pass:{self.keystore_password}", "-out", str(staging)], quiet=True)
        if shutil.which("keytool") is not None:  # the JVM must read what openssl wrote
            run(["keytool", "-list", "-storetype", "PKCS12", "-keystore", str(staging),
                 "-storepass", self.keystore_password], quiet=True)
        staging.rename(self.keystore)

    def broker_properties(self) -> list[str]:
        """server.properties lines of the listener (its name is SASL_SSL, added to the broker's)."""
        return [
            f"sasl.enabled.mechanisms={MECHANISM}",
            f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            f"listener.name.sasl_ssl.ssl.keystore.location={self.keystore}",
            f"listener.name.sasl_ssl.ssl.keystore.password={self.keystore_password}",
            "listener.name.sasl_ssl.ssl.keystore.type=PKCS12",
        ]

    def add_user(self, plaintext_bootstrap: str) -> None:
        """Store the SCRAM credential of :data:`USER` in the cluster (over the PLAINTEXT listener)."""
        from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

        admin = AdminClient({"bootstrap.servers": plaintext_bootstrap, "socket.timeout.ms": 10_000})
        upsert = UserScramCredentialUpsertion(
            USER, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), self.password.encode()
        )
        for future in admin.alter_user_scram_credentials([upsert], request_timeout=30).values():
            future.result()

    def client_env(self) -> dict[str, str]:
        """The variables of a dbopt client of this listener."""
        return {
            "DBOPT_KAFKA_BOOTSTRAP": f"127.0.0.1:{self.port}",
            "DBOPT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "DBOPT_KAFKA_SASL_MECHANISM": MECHANISM,
            "DBOPT_KAFKA_SASL_USERNAME": USER,
            "DBOPT_KAFKA_SASL_PASSWORD": self.password,
            "DBOPT_KAFKA_SSL_CA_FILE": str(self.ca_file),
        }
