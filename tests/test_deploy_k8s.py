"""The Kubernetes manifests (k8s/): every overlay renders with kustomize, validates offline with
kubeconform in strict mode (Kubernetes schemas from the kubernetes-validate package; Strimzi, KEDA and
Prometheus operator CRD schemas made by k8s/tools/fetch.py), kube-score finds nothing CRITICAL, and
the properties a platform team relies on hold (probes, limits, securityContext, one Secret per
component with only what it needs, pinned images). The generated manifests (KafkaTopics from the
one topic configuration, the PrometheusRule from the rule file) equal what their generator makes.

The tools are pinned and cached in .run/tools (``make tools``, which ``make test`` runs first).
"""

from __future__ import annotations

import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.config import OTHER_VARIABLES, VARIABLES, Topics, load_settings
from streams.kafka.topics import kafka_topic_manifests

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
TOOLS = ROOT / ".run" / "tools"
OVERLAYS = ("dev", "prod")
COMPONENTS = ("advisor", "executor", "notify", "collect", "serve", "otlp")  # Deployments; the worker: StatefulSet
# the variables each component's own Secret holds (overlays' secretGenerator); the worker has none
SECRET_KEYS = {
    "advisor": {"DBOPT_DATABASE_URL", "DBOPT_COMMAND_KEY"},
    "executor": {"DBOPT_DATABASE_URL", "DBOPT_COMMAND_KEY"},
    "collect": {"DBOPT_COLLECT_DATABASE_URL"},
    "otlp": {"DBOPT_OTLP_BEARER_TOKEN"},
    "serve": {"DBOPT_DATABASE_URL", "DBOPT_COMMAND_KEY", "DBOPT_UI_USERS", "DBOPT_SERVE_SESSION_SECRET"},
}
# the variables that make each component listen on its container port, on every address
LISTEN = {
    "advisor": ("DBOPT_ADVISE_PROBE_HOST", "DBOPT_ADVISE_PROBE_PORT"),
    "executor": ("DBOPT_EXECUTOR_PROBE_HOST", "DBOPT_EXECUTOR_PROBE_PORT"),
    "notify": ("DBOPT_NOTIFY_PROBE_HOST", "DBOPT_NOTIFY_PROBE_PORT"),
    "collect": ("DBOPT_COLLECT_PROBE_HOST", "DBOPT_COLLECT_PROBE_PORT"),
    "serve": ("DBOPT_SERVE_HOST", "DBOPT_SERVE_PORT"),
    "otlp": ("DBOPT_OTLP_HOST", "DBOPT_OTLP_PORT"),
}


def run(*cmd: str | Path, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(c) for c in cmd], input=stdin, capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def tools() -> Path:
    """The pinned tools and schemas (installed here too when the test runs without ``make tools``)."""
    if not (TOOLS / ".complete").exists():
        run(sys.executable, K8S / "tools" / "fetch.py", TOOLS)
    return TOOLS


@pytest.fixture(scope="module")
def rendered(tools: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """``kustomize build`` of each overlay; prod's Secrets from its example env files (a copy of k8s/)."""
    copy = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("*.env"))
    for example in (copy / "overlays" / "prod" / "secrets").glob("*.env.example"):
        example.with_suffix("").write_text(example.read_text())
    return {name: run(tools / "bin" / "kustomize", "build", copy / "overlays" / name).stdout for name in OVERLAYS}


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def kubeconform(tools: Path, text: str) -> subprocess.CompletedProcess[str]:
    version = runpy.run_path(str(K8S / "tools" / "fetch.py"))["KUBERNETES_VERSION"]
    schemas = tools / "schemas"
    kubernetes = "{{ .NormalizedKubernetesVersion }}/{{ .ResourceKind }}{{ .KindSuffix }}.json"
    crds = "{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"
    return run(
        tools / "bin" / "kubeconform", "-strict", "-summary", "-kubernetes-version", version,
        "-schema-location", f"{schemas}/kubernetes/{kubernetes}", "-schema-location", f"{schemas}/crds/{crds}",
        "-", stdin=text, check=False,
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_is_valid_in_strict_mode(overlay: str, rendered: dict[str, str], tools: Path) -> None:
    proc = kubeconform(tools, rendered[overlay])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Errors: 0" in proc.stdout and "Skipped: 0" in proc.stdout, proc.stdout


def test_strict_validation_rejects_unknown_fields(rendered: dict[str, str], tools: Path) -> None:
    """The control: an unknown field in a workload or a custom resource is an error (the schemas bite)."""
    for kind in ("Deployment", "KafkaTopic", "ScaledObject", "PrometheusRule"):
        resource = next(d for d in docs(rendered["prod"]) if d["kind"] == kind)
        resource["spec"]["notAField"] = True
        proc = kubeconform(tools, yaml.safe_dump(resource))
        assert proc.returncode != 0 and "notAField" in proc.stdout, (kind, proc.stdout)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kube_score_finds_nothing_critical(overlay: str, rendered: dict[str, str], tools: Path) -> None:
    proc = run(tools / "bin" / "kube-score", "score", "--output-format", "ci", "-", stdin=rendered[overlay], check=False)
    critical = [line for line in proc.stdout.splitlines() if "[CRITICAL]" in line]
    assert not critical, "\n".join(critical)
    assert "[OK]" in proc.stdout  # it did score the workloads


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workloads_run_the_way_platform_teams_require(overlay: str, rendered: dict[str, str]) -> None:
    resources = docs(rendered[overlay])
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for d in resources:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d

    worker = by_kind["StatefulSet"]["dbopt-worker"]
    assert by_kind["Service"][worker["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    assert worker["spec"]["podManagementPolicy"] == "Parallel"
    assert worker["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert worker["spec"]["volumeClaimTemplates"]
    assert "dbopt-worker" in by_kind["PodDisruptionBudget"]
    workloads = [worker, *(by_kind["Deployment"][f"dbopt-{c}"] for c in COMPONENTS)]

    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert any(v.get("emptyDir") is not None for v in pod["volumes"])  # /tmp
        for container in pod["containers"]:
            name = workload["metadata"]["name"]
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], name
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert {"/tmp"} <= {m["mountPath"] for m in container["volumeMounts"]}, name
            assert container["livenessProbe"] != container["readinessProbe"], name
            assert container["resources"]["limits"]["memory"] and container["resources"]["limits"]["cpu"], name
            image = container["image"]
            assert ":" in image.rsplit("/", 1)[-1] or "@sha256:" in image, f"{name}: image not pinned: {image}"
            assert not image.endswith(":latest"), image

    # each component's Secret holds only what it needs; the worker gets no database URL at all
    secrets = {name.rsplit("-", 1)[0]: d for name, d in by_kind["Secret"].items()}
    worker_env = worker["spec"]["template"]["spec"]["containers"][0]
    assert not any("secretRef" in source for source in worker_env["envFrom"])
    assert not any(e["name"].startswith("DBOPT_DATABASE") for e in worker_env["env"])
    for component, keys in SECRET_KEYS.items():
        assert set(secrets[f"dbopt-{component}-env"]["data"]) == keys, component
    for component in COMPONENTS:
        refs = [s["secretRef"]["name"] for s in by_kind["Deployment"][f"dbopt-{component}"]["spec"]["template"]["spec"]
                ["containers"][0]["envFrom"] if "secretRef" in s]
        assert refs and all(r.startswith(f"dbopt-{component}-env") for r in refs), (component, refs)

    # every DBOPT_* variable the manifests set is one dbopt reads, and each component listens on its port
    containers = {w["metadata"]["name"]: w["spec"]["template"]["spec"]["containers"][0] for w in workloads}
    given = {*by_kind["ConfigMap"]["dbopt-config"]["data"], *(k for d in secrets.values() for k in d.get("data", {})),
             *(e["name"] for c in containers.values() for e in c.get("env", []))}
    unknown = {n for n in given if n.startswith("DBOPT_")} - set(VARIABLES) - set(OTHER_VARIABLES)
    assert not unknown, f"manifests set variables dbopt does not read: {sorted(unknown)}"
    for component, (host, port) in LISTEN.items():
        container = containers[f"dbopt-{component}"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env.get(host) == "0.0.0.0" and env.get(port) == str(container["ports"][0]["containerPort"]), component
        assert {n for n in env if n.endswith(("_HOST", "_PORT"))} == {host, port}, component

    # one Kafka user per component, KEDA scaling the worker up to the partitions, monitoring objects
    assert set(by_kind["KafkaUser"]) == {"dbopt-worker", "dbopt-sdk", *(f"dbopt-{c}" for c in COMPONENTS)}
    named = {acl["resource"]["name"] for user in by_kind["KafkaUser"].values()
             for acl in user["spec"]["authorization"]["acls"]
             if acl["resource"]["type"] == "topic" and acl["resource"]["patternType"] == "literal"}
    assert named <= set(Topics().all().values()), f"ACLs name topics dbopt does not have: {named - set(Topics().all().values())}"
    partitions = int(by_kind["ConfigMap"]["dbopt-config"]["data"]["DBOPT_TOPIC_PARTITIONS"])
    scaled = by_kind["ScaledObject"]["dbopt-worker"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "dbopt-worker" and scaled["maxReplicaCount"] <= partitions
    if overlay == "prod":
        assert scaled["maxReplicaCount"] == partitions
    assert {"PodMonitor", "ServiceMonitor", "PrometheusRule", "NetworkPolicy"} <= by_kind.keys()
    assert len(by_kind["KafkaTopic"]) == len(Topics().all())
    replication = int(by_kind["ConfigMap"]["dbopt-config"]["data"]["DBOPT_TOPIC_REPLICATION"])
    layouts = {(t["spec"]["partitions"], t["spec"]["replicas"]) for t in by_kind["KafkaTopic"].values()}
    assert layouts == {(partitions, replication)}, "the topics and the worker's own topics share one layout"


def test_generated_manifests_are_what_the_generator_makes() -> None:
    proc = run(sys.executable, K8S / "tools" / "generate.py", "--check", check=False)
    assert proc.returncode == 0, proc.stderr


def test_kafka_topics_come_from_the_cli_configuration() -> None:
    """The committed KafkaTopics are `dbopt topics create`'s layout for the ConfigMap's DBOPT_TOPIC_* values."""
    config = next(d for d in docs((K8S / "base" / "config.yaml").read_text()))["data"]
    settings = load_settings({k: v for k, v in config.items() if k.startswith("DBOPT_TOPIC_")})
    committed = docs((K8S / "base" / "generated" / "topics.yaml").read_text())
    assert committed == kafka_topic_manifests(settings, "kafka")
    assert {t["spec"]["partitions"] for t in committed} == {settings.topic_policy.partitions}
    compacted = {t["spec"]["topicName"] for t in committed if "compact" in t["spec"]["config"]["cleanup.policy"]}
    assert compacted == {settings.topics.commands, settings.topics.results}
