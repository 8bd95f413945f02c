"""dbopt notify: alert on the topic -> delivered to the local Slack, p50/p99 latency; and
notifications per second with all five channels on.

Starts recording servers for Slack, PagerDuty, Twilio, a webhook and SMTP on 127.0.0.1, a fresh
database for the ledger and private topics, runs the real ``dbopt notify`` process, then:

1. latency: ``--paced`` alerts, one every ``--interval`` seconds; for each, the time from the
   producer's acknowledgement to the Slack server receiving the request;
2. throughput: ``--burst`` alerts at once, every one routed to all channels (a routing file);
   deliveries per second from the first produce to the last delivery.

Run: ``.venv/bin/python bench/notify_latency.py`` (local servers up: ``make up``).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from notify_servers import RecordingServer, Reply, SmtpServer  # noqa: E402
from streams.config import load_settings  # noqa: E402
from streams.kafka import clients  # noqa: E402
from streams.records import Alert  # noqa: E402
from streams.serde import Codec  # noqa: E402

DBOPT = str(Path(sys.executable).with_name("dbopt"))


def alert(i: int, tag: str) -> Alert:
    now = int(time.time() * 1000)
    return Alert(alert_id=f"{tag}-{i}", state="firing", severity="critical", kind="slo", service=f"svc-{i}",
                 context="booking", fingerprint=f"{i:016x}", p95_ms=80.0, threshold_ms=50.0,
                 window_start=now - 60_000, window_end=now, query_text="SELECT * FROM bookings WHERE id = $1",
                 created_at=now)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paced", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--burst", type=int, default=500)
    args = parser.parse_args()

    base = load_settings()
    suffix = uuid.uuid4().hex[:8]
    db_name = f"bench_notify_{suffix}"
    with psycopg.connect(base.database_url.get_secret_value(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    url = base.database_url.get_secret_value().rpartition("/")[0] + f"/{db_name}"
    topics = {k: f"{v}.bench{suffix}" for k, v in base.topics.all().items()}
    servers = {"slack": RecordingServer(Reply(200, b"ok")), "pagerduty": RecordingServer(Reply(202, b"{}")),
               "twilio": RecordingServer(Reply(201, b"{}")), "webhook": RecordingServer(Reply(204, b""))}
    smtp = SmtpServer()
    routes = Path(tempfile.mkdtemp()) / "routes.yaml"
    routes.write_text("routes:\n  - match: {kind: slo}\n    channels: [pagerduty, slack, email, sms, webhook]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBOPT_")}
    env.update({f"DBOPT_TOPIC_{k.upper()}": v for k, v in topics.items()})
    env.update(
        DBOPT_KAFKA_BOOTSTRAP=base.kafka_bootstrap, DBOPT_DATABASE_URL=url, DBOPT_NOTIFY_ROUTES=str(routes),
        DBOPT_NOTIFY_SLACK_WEBHOOK_URL=f"{servers['slack'].url}/services/T/B/X",
        DBOPT_NOTIFY_PAGERDUTY_URL=f"{servers['pagerduty'].url}/v2/enqueue", DBOPT_NOTIFY_PAGERDUTY_ROUTING_KEY="rk",
        DBOPT_NOTIFY_TWILIO_URL=servers["twilio"].url, DBOPT_NOTIFY_TWILIO_ACCOUNT_SID="AC1",
        DBOPT_NOTIFY_TWILIO_AUTH_TOKEN="t", DBOPT_NOTIFY_SMS_FROM="+15550001", DBOPT_NOTIFY_SMS_TO="+15550100",
        DBOPT_NOTIFY_SMTP_URL=smtp.url, DBOPT_NOTIFY_EMAIL_FROM="a@example.com", DBOPT_NOTIFY_EMAIL_TO="b@example.com",
        DBOPT_NOTIFY_WEBHOOK_URL=f"{servers['webhook'].url}/hook", DBOPT_NOTIFY_WEBHOOK_SECRET="s",
        DBOPT_NOTIFY_SLACK_RATE="none", DBOPT_NOTIFY_EMAIL_RATE="none", DBOPT_NOTIFY_SMS_RATE="none",
        DBOPT_NOTIFY_GROUP=f"bench-notify-{suffix}",
    )
    settings = base.with_overrides(topics=base.topics.model_copy(update=topics))
    proc = subprocess.Popen([DBOPT, "notify", "--log-level", "WARNING"], env=env)
    codec, producer = Codec(), clients.producer(settings)

    def send(records: list[Alert]) -> dict[str, float]:
        acked: dict[str, float] = {}
        for record in records:
            def on_delivery(err: object, _msg: object, alert_id: str = record.alert_id) -> None:
                acked[alert_id] = time.time()
            producer.produce(settings.topics.alerts, key=record.alert_id.encode(), on_delivery=on_delivery,
                             value=codec.encode("Alert", record.to_avro(), topic=settings.topics.alerts))
            producer.poll(0)
        producer.flush(30)
        return acked

    try:
        send([alert(0, "warmup")])
        servers["slack"].wait_delivered(1, timeout=90)
        acked: dict[str, float] = {}
        for i in range(args.paced):
            acked.update(send([alert(i, "paced")]))
            time.sleep(args.interval)
        slack = servers["slack"].wait_delivered(1 + args.paced, timeout=120)
        received = {r.json()["blocks"][-1]["elements"][0]["text"].split("`")[1]: r.at for r in slack}
        latencies = sorted((received[k] - t) * 1000 for k, t in acked.items())
        p50, p99 = statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]

        before = {n: len(s.delivered()) for n, s in servers.items()} | {"smtp": len(smtp.delivered())}
        start = time.time()
        send([alert(i, "burst") for i in range(args.burst)])
        total = args.burst * 5
        deadline = time.time() + 600
        while sum(len(s.delivered()) - before[n] for n, s in servers.items()) + len(smtp.delivered()) - before["smtp"] < total:
            if time.time() > deadline:
                raise SystemExit("burst not delivered in time")
            time.sleep(0.02)
        elapsed = time.time() - start
        print(f"latency, alert acknowledged by the broker -> received by the local Slack "
              f"({args.paced} alerts, one every {args.interval * 1000:.0f} ms):")
        print(f"  p50 {p50:.1f} ms   p99 {p99:.1f} ms   max {latencies[-1]:.1f} ms")
        print(f"throughput, {args.burst} critical alerts routed to all 5 channels ({total} deliveries):")
        print(f"  {elapsed:.1f} s  ->  {total / elapsed:.0f} deliveries/s ({args.burst / elapsed:.0f} alerts/s)")
        per = {n: max(r.at for r in s.delivered()) - start for n, s in servers.items()}
        print("  last delivery after: " + ", ".join(f"{n} {t:.1f}s" for n, t in sorted(per.items())))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        for s in servers.values():
            s.close()
        smtp.close()
        with psycopg.connect(base.database_url.get_secret_value(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        admin = clients.admin(settings)
        present = admin.list_topics(timeout=10).topics
        names = [t for t in topics.values() if t in present]
        if names:
            for f in admin.delete_topics(names).values():
                f.result()
    return 0


if __name__ == "__main__":
    sys.exit(main())
