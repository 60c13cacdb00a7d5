"""The deployment files, checked without Docker or a cluster: the Dockerfile lints clean
(hadolint), the kustomize overlays render (kubectl kustomize) and pass the Kubernetes schemas
(kubernetes-validate, strict), compose.yaml has the promised shape, and every RENEWBOT_ variable
they set is a real setting. `make image-check` runs the image itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.settings import Settings
from bot.settings_env import fields, is_secret, variable

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KUSTOMIZE = ROOT / "deploy" / "kubernetes"


def tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert found, f"{name} is a test dependency (pyproject.toml); run make install"
    return found


def run(*cmd: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, input=stdin, capture_output=True, text=True, timeout=120, check=False
    )


def known_variables() -> set[str]:
    names = set()
    for path, info in fields(Settings):
        names.add(variable(path))
        if is_secret(info):
            names.add(variable(path) + "_FILE")
    return names


def render(overlay: str) -> list[dict[str, Any]]:
    done = run(tool("kubectl"), "kustomize", str(KUSTOMIZE / overlay))
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def test_dockerfile_lints_clean() -> None:
    """hadolint finds nothing: pinned base by argument, exec-form entrypoint, non-root user."""
    done = run(tool("hadolint"), str(ROOT / "Dockerfile"))
    assert done.returncode == 0, done.stdout + done.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim-bookworm" in text and "USER 10001" in text
    assert 'ENTRYPOINT ["renewbot"]' in text and "HEALTHCHECK" in text


@pytest.mark.parametrize("overlay", ["base", "production"])
def test_kustomize_renders_objects_the_schemas_accept(overlay: str, tmp_path: Path) -> None:
    """Every rendered object passes the Kubernetes schemas, unknown fields refused; a typo
    in a field name would fail (checked with a broken copy)."""
    done = run(tool("kubectl"), "kustomize", str(KUSTOMIZE / overlay))
    assert done.returncode == 0, done.stderr
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(done.stdout)
    checked = run(tool("kubernetes-validate"), "--strict", "--quiet", str(rendered))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text(done.stdout.replace("  replicas: 2", "  replica: 2", 1))
    assert run(tool("kubernetes-validate"), "--strict", "--quiet", str(broken)).returncode != 0


def test_production_overlay_has_what_the_issue_asks() -> None:
    """Two replicas, probes on /healthz and /readyz, limits, a read-only root file system,
    no privilege escalation, the migration as a Job, a disruption budget, and an Ingress for
    the onboarding page, the webhooks and the Teams package's privacy and terms pages only
    (not /metrics)."""
    docs = {(d["kind"], d["metadata"]["name"]): d for d in render("production")}
    assert all(
        d["metadata"].get("namespace") == "renewbot" for k, d in docs.items() if k[0] != "Namespace"
    )
    deployment = docs[("Deployment", "renewbot")]["spec"]
    assert deployment["replicas"] == 2
    pod = deployment["template"]["spec"]
    (bot,) = pod["containers"]
    assert bot["image"] == "registry.example.com/msp/renewbot:0.2.0"
    assert bot["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert bot["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert bot["resources"]["requests"] and bot["resources"]["limits"]["memory"]
    assert bot["securityContext"]["readOnlyRootFilesystem"] is True
    assert bot["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["terminationGracePeriodSeconds"] >= 30
    job = docs[("Job", "renewbot-migrate")]["spec"]["template"]["spec"]
    assert job["containers"][0]["args"] == ["db", "upgrade"]
    assert docs[("PodDisruptionBudget", "renewbot")]["spec"]["minAvailable"] == 1
    paths = {
        p["path"]
        for r in docs[("Ingress", "renewbot")]["spec"]["rules"]
        for p in r["http"]["paths"]
    }
    assert paths == {"/onboard", "/slack/events", "/api/messages", "/privacy", "/terms"}
    assert ("Secret", "renewbot-secrets") not in docs  # real secrets never come from git
    assert docs[("ConfigMap", "renewbot-config")]["data"]["RENEWBOT_WEB__PUBLIC_URL"].startswith(
        "https://"
    )


def test_kubernetes_config_names_real_settings_and_mounted_secrets() -> None:
    """A misspelt variable in a ConfigMap is silently ignored by the bot: catch it here."""
    docs = render("base")
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    secret = next(d for d in docs if d["kind"] == "Secret")["stringData"]
    assert set(config) - known_variables() == set()
    files = {v.rsplit("/", 1)[1] for k, v in config.items() if k.endswith("_FILE")}
    assert files == set(secret)
    secret_vars = {variable(p) for p, i in fields(Settings) if is_secret(i)}
    assert {k.removesuffix("_FILE") for k in config if k.endswith("_FILE")} == secret_vars


def compose() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert "version" not in doc  # the Compose spec has none
    return doc  # type: ignore[no-any-return]


def test_compose_has_postgres_a_migration_two_replicas_and_a_sandbox_profile() -> None:
    """`docker compose up`: PostgreSQL, a one-shot migration before the bots, two replicas
    behind one published port, secrets as compose secrets, the sandbox only in its profile."""
    services = compose()["services"]
    assert services["db"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/db_password"
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    ports = []
    for name in ("bot-1", "bot-2"):
        bot = services[name]
        assert bot["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert bot["network_mode"] == "service:front" and bot["read_only"] is True
        assert "encryption_keys" in bot["secrets"] and "profiles" not in bot
        ports.append(bot["environment"]["RENEWBOT_WEB__PORT"])
    nginx = (ROOT / "deploy" / "compose" / "nginx.conf").read_text()
    assert sorted(re.findall(r"server 127\.0\.0\.1:(\d+)", nginx)) == sorted(ports)
    assert services["front"]["ports"][0].endswith(":8080")
    assert services["sandbox"]["profiles"] == ["sandbox"]
    assert services["sandbox"]["command"][0] == "sandbox"


def test_compose_and_examples_name_real_settings() -> None:
    """compose.yaml, sandbox.env and .env.example set only real variables, and .env.example
    lists every setting (a new setting without a line there fails here)."""
    known = known_variables()
    bot_env = compose()["services"]["bot-1"]["environment"]
    assert {k for k in bot_env if k.startswith("RENEWBOT_")} - known == set()
    for secret_var in [k for k in bot_env if k.endswith("_FILE")]:
        name = bot_env[secret_var].rsplit("/", 1)[1]
        assert name in compose()["secrets"], secret_var

    def assigned(path: Path) -> set[str]:
        text = path.read_text()
        return set(re.findall(r"^(RENEWBOT_\w+)=", text, flags=re.MULTILINE))

    example = assigned(ROOT / ".env.example")
    assert example - known == set()
    assert {variable(p) for p, _ in fields(Settings)} - example == set()
    sandbox = assigned(ROOT / "deploy" / "compose" / "sandbox.env")
    assert sandbox - known == set() and "RENEWBOT_IDENTITY__CA_BUNDLE" in sandbox
