"""The deployment files (issue 15): the Helm chart renders (see helm_render.py for how, without
the helm binary) into manifests that validate against the Kubernetes JSON schemas
(kubernetes-validate, schemas bundled: no network), and agree with the server they run: probe
paths, the drain timeout against the grace period, the autoscaled metric, the settings' names,
the CLI's arguments. The Dockerfile and docker-compose.yml are checked the same way."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from tests.deploy.helm_render import Unsupported, render_chart
from voxpipe.cli import build_parser
from voxpipe.config.settings import VoxpipeSettings
from voxpipe.server.metrics import ServerMetrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "voxpipe"
# The oldest Kubernetes release the chart supports and the newest the validator knows.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
SETTINGS = {name.upper() for name in VoxpipeSettings.model_fields}
# Read by libraries, not by VoxpipeSettings (boto3's standard credentials).
OTHER_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}


def manifests(values: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The rendered chart's objects by kind."""
    out: dict[str, dict[str, Any]] = {}
    for text in render_chart(CHART, values).values():
        for doc in yaml.safe_load_all(text):
            if doc:
                assert doc["kind"] not in out, f"two {doc['kind']} objects"
                out[doc["kind"]] = doc
    return out


def container(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (c,) = objs["Deployment"]["spec"]["template"]["spec"]["containers"]
    return c  # type: ignore[no-any-return]


def env_of(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c["env"]}


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"autoscaling": {"enabled": False}, "podDisruptionBudget": {"enabled": False}},
        {"secrets": {"create": True, "values": {"TWILIO_AUTH_TOKEN": "x", "REDIS_URL": "r"}}},
        {
            "nodeSelector": {"pool": "voice"},
            "tolerations": [{"key": "voice", "operator": "Exists"}],
        },
    ],
)
def test_the_chart_renders_to_valid_kubernetes_objects(values: dict[str, Any]) -> None:
    objs = manifests(values)
    for version in K8S_VERSIONS:
        for doc in objs.values():
            kubernetes_validate.validate(doc, version, strict=True)  # raises when invalid


def test_the_validator_rejects_a_broken_manifest() -> None:
    deployment = manifests()["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = {
        "name": "http"
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)
    deployment = manifests()["Deployment"]
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 5  # a misspelt field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_probes_drain_and_grace_period_agree_with_the_server() -> None:
    objs = manifests()
    pod = objs["Deployment"]["spec"]["template"]["spec"]
    c = container(objs)
    env = env_of(c)
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    (port,) = c["ports"]
    assert port["name"] == c["livenessProbe"]["httpGet"]["port"] == "http"
    assert str(port["containerPort"]) == env["PORT"]
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    # SIGKILL comes only after the preStop pause, the whole drain and a shutdown margin.
    assert pod["terminationGracePeriodSeconds"] > float(env["DRAIN_TIMEOUT_S"]) + int(pre_stop[1])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    # The data the server writes goes to mounted volumes.
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    written = ("SQLITE_PATH", "SPOOL_DIR", "RECORDINGS_URL")
    assert {"/tmp", *(str(Path(env[k]).parent) for k in written)} <= mounts


def test_every_env_var_is_a_setting_and_the_args_parse() -> None:
    c = container(manifests({"settings": {"LOG_LEVEL": "INFO"}}))
    assert set(env_of(c)) <= SETTINGS, set(env_of(c)) - SETTINGS
    args = build_parser().parse_args(["serve", *c["args"]])
    assert args.workers == 2 and args.bot == "bots/support_agent.py"
    assert (ROOT / args.bot).is_file()


def test_secrets_come_from_a_kubernetes_secret() -> None:
    objs = manifests()
    assert "Secret" not in objs  # by default the chart reads an existing Secret
    (ref,) = container(objs)["envFrom"]
    assert ref["secretRef"]["name"] == "voxpipe-secrets"
    objs = manifests({"secrets": {"create": True, "values": {"METRICS_TOKEN": "t"}}})
    assert container(objs)["envFrom"][0]["secretRef"]["name"] == objs["Secret"]["metadata"]["name"]
    assert objs["Secret"]["stringData"] == {"METRICS_TOKEN": "t"}
    assert not any("TOKEN" in e for e in env_of(container(objs)))  # no secret in plain env


def test_the_autoscaler_scales_on_the_active_calls_gauge_the_server_exports() -> None:
    objs = manifests()
    hpa = objs["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == objs["Deployment"]["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    name = metric["pods"]["metric"]["name"]
    exported = ServerMetrics(active_calls=lambda: 3).render().decode()
    assert f"# TYPE {name} gauge" in exported and f"{name} 3.0" in exported
    adapter = yaml.safe_load((DEPLOY / "prometheus-adapter-values.yaml").read_text())
    (rule,) = adapter["rules"]["custom"]
    assert rule["seriesQuery"].startswith(name + "{") and rule["name"]["as"] == name
    # Disruptions take one pod at a time; its selector is the pods' labels.
    pdb = objs["PodDisruptionBudget"]["spec"]
    labels = objs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert "replicas" not in objs["Deployment"]["spec"]  # the HPA owns the count
    fixed = manifests({"autoscaling": {"enabled": False}, "replicaCount": 3})
    assert "HorizontalPodAutoscaler" not in fixed and fixed["Deployment"]["spec"]["replicas"] == 3


def test_the_renderer_refuses_what_it_does_not_translate(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("name: c\nversion: 0.1.0\nappVersion: '1'\n")
    (chart / "values.yaml").write_text("a: {b: 1}\n")
    (chart / "templates" / "x.yaml").write_text("{{ with .Values.a }}{{ .b }}{{ end }}\n")
    with pytest.raises(Unsupported):
        render_chart(chart)
    (chart / "templates" / "x.yaml").write_text("v: {{ .Values.a.b | upper }}\n")
    with pytest.raises(Unsupported):
        render_chart(chart)


def test_the_dockerfile_is_slim_non_root_with_a_healthcheck_and_models_baked_in() -> None:
    df = DockerfileParser(str(DEPLOY / "Dockerfile"))
    steps = [(s["instruction"], s["value"]) for s in df.structure]
    assert df.baseimage.endswith("-slim")
    user = [v for k, v in steps if k == "USER"][-1]
    assert user.split(":")[0] not in ("0", "root")
    (health,) = [v for k, v in steps if k == "HEALTHCHECK"]
    assert "/healthz" in health
    assert json.loads([v for k, v in steps if k == "ENTRYPOINT"][-1]) == ["voxpipe", "serve"]
    assert (ROOT / json.loads([v for k, v in steps if k == "CMD"][-1])[0]).is_file()
    installs = " ".join(v for k, v in steps if k == "RUN")
    assert "offline" in installs and "server" in installs
    for source in [v.split()[0] for k, v in steps if k == "COPY" and "--from" not in v]:
        assert (ROOT / source).exists(), source
    # The build's model check, run here: it fails the build if a model is missing.
    checks = [part for k, v in steps if k == "RUN" for part in v.split("&&") if "python -c" in part]
    assert checks
    for check in checks:
        argv = shlex.split(check.strip())
        assert argv[:2] == ["python", "-c"]
        subprocess.run([sys.executable, "-c", argv[2]], check=True, cwd=ROOT, timeout=120)


def test_docker_compose_runs_workers_redis_postgres_and_an_s3_store() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"voxpipe", "redis", "postgres", "minio"} <= services.keys()
    env = services["voxpipe"]["environment"]
    assert set(env) <= SETTINGS | OTHER_ENV, set(env) - SETTINGS - OTHER_ENV
    assert env["REDIS_URL"].startswith("redis://redis:")
    assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:" in env["DATABASE_URL"]
    assert env["RECORDINGS_URL"].startswith("s3://") and env["S3_ENDPOINT_URL"].startswith(
        "http://minio:"
    )
    grace = int(services["voxpipe"]["stop_grace_period"].rstrip("s"))
    assert grace > float(env["DRAIN_TIMEOUT_S"])
    assert services["voxpipe"]["build"]["dockerfile"] == "deploy/Dockerfile"
