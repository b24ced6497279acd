"""Static checks of the deployment files under ``infra/``.

Nothing here talks to Docker or Kubernetes: the compose file, the k8s manifests, the
Dockerfile and ``.env.example`` are parsed and cross-checked against each other and
against ``pyproject.toml``; the Dask and Prefect command lines are checked against the
installed CLIs (``--help`` only, no server is started).
"""

from __future__ import annotations

import fnmatch
import importlib.metadata as md
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
K8S = INFRA / "k8s"
COMPOSE_FILE = INFRA / "docker-compose.yml"
ENV_EXAMPLE = INFRA / ".env.example"
DOCKERFILE = INFRA / "Dockerfile"

EXPECTED_SERVICES = {
    "postgres",
    "prefect-server",
    "dask-scheduler",
    "dask-worker",
    "minio",
    "minio-init",
    "changedet-worker",
}
# Variables the deployment must let an operator set (the brief's list).
REQUIRED_ENV_VARS = {
    "POSTGRES_PASSWORD",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
    "SH_CLIENT_ID",
    "SH_CLIENT_SECRET",
    "SH_BASE_URL",
    "SH_TOKEN_URL",
    "CHANGEDET_SLACK_WEBHOOK_URL",
    "CHANGEDET_SMTP_HOST",
    "CHANGEDET_SMTP_PORT",
    "CHANGEDET_SMTP_USER",
    "CHANGEDET_SMTP_PASSWORD",
    "CHANGEDET_PUBLIC_BASE_URL",
    "CHANGEDET_DATA_DIR",
    "CHANGEDET_STORE_URL",
    "DASK_SCHEDULER_ADDRESS",
    "PREFECT_API_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}
CLI_EXECUTABLES = {"prefect", "dask", "changedet"}
DASK_ADDRESS = "tcp://dask-scheduler:8786"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}; not $${...}
# (an escaped dollar, expanded later by the container's shell).
VAR_RE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
BARE_VAR_RE = re.compile(r"(?<!\$)\$([A-Za-z_][A-Za-z0-9_]*)")
SECRET_KEY_RE = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|WEBHOOK|CLIENT_ID|ROOT_USER|TOKEN(?!_URL)")
# scheme://user:password@host ; the password part is checked.
URL_CREDENTIALS_RE = re.compile(r"[a-z0-9+.-]+://[^\s:/@]+:([^\s@]+)@", re.I)


# --------------------------------------------------------------------------- helpers


def _load_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return _load_compose()


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _strings(node):
    """Every string (keys included) inside a parsed YAML tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, sep, value = stripped.partition("=")
        assert sep, f".env.example line is not NAME=VALUE: {line!r}"
        assert re.fullmatch(r"[A-Z_][A-Z0-9_]*", name), f"bad variable name {name!r}"
        assert name not in values, f"{name} is defined twice in .env.example"
        values[name] = value
    return values


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        out = {}
        for item in env:
            name, _, value = item.partition("=")
            out[name] = value
        return out
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _command(service: dict) -> list[str]:
    cmd = service.get("command")
    if cmd is None:
        return []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def _resolve_defaults(text: str) -> str:
    """Substitute ${VAR:-default} by its default (and ${VAR} by ''), like compose with no .env."""
    return VAR_RE.sub(lambda m: m.group(3) if m.group(2) in (":-", "-") else "", text)


def _image_tag(image: str) -> tuple[str, str | None]:
    """('repo', tag or None); a digest counts as the tag."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, digest
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = image.rsplit(":", 1)
        return name, tag
    return image, None


def _assert_pinned(image: str, where: str) -> None:
    name, tag = _image_tag(_resolve_defaults(image))
    assert tag, f"{where}: image {image!r} has no tag"
    assert tag != "latest", f"{where}: image {image!r} uses :latest"


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _req_name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _req_pin(req: str) -> str | None:
    m = re.search(r"==\s*([^\s,;]+)", req)
    return m.group(1) if m else None


def _extra_requirements(extra: str, seen: set[str] | None = None) -> list[str]:
    """Requirements of one extra, following self references like ``changedet[flows]``."""
    project = _pyproject()["project"]
    name = project["name"].lower()
    seen = set() if seen is None else seen
    if extra in seen:
        return []
    seen.add(extra)
    reqs = []
    for req in project["optional-dependencies"][extra]:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\[([^\]]+)\]\s*", req)
        if m and m.group(1).lower() == name:
            for sub in m.group(2).split(","):
                reqs += _extra_requirements(sub.strip(), seen)
        else:
            reqs.append(req)
    return reqs


def _k8s_files() -> list[Path]:
    return sorted(K8S.glob("*.yaml")) + sorted(K8S.glob("*.yml"))


def _k8s_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def _k8s_resources() -> list[dict]:
    docs = []
    for res in _kustomization()["resources"]:
        docs += _k8s_docs(K8S / res)
    return docs


def _pod_spec(doc: dict) -> dict | None:
    kind = doc.get("kind")
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
        return doc["spec"]["template"]["spec"]
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if kind == "Pod":
        return doc["spec"]
    return None


def _workloads() -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in _k8s_resources() if _pod_spec(d) is not None}


def _find(kind: str, name: str) -> dict:
    for doc in _k8s_resources():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind}/{name} among the kustomization resources")


# --------------------------------------------------------------------------- compose


def test_compose_has_expected_services(compose, services):
    missing = EXPECTED_SERVICES - set(services)
    assert not missing, f"services missing from docker-compose.yml: {sorted(missing)}"
    # Only x- extension fields and the compose top-level keys.
    allowed = {"name", "services", "volumes", "networks", "configs", "secrets"}
    for key in compose:
        assert key in allowed or key.startswith("x-"), f"unexpected top-level key {key!r}"


def test_compose_depends_on_structure(services):
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    graph: dict[str, set[str]] = {}
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: use the long depends_on form with a condition"
        graph[name] = set(deps)
        for target, spec in deps.items():
            assert target in services, f"{name} depends on unknown service {target}"
            cond = spec["condition"]
            assert cond in conditions, f"{name} -> {target}: bad condition {cond!r}"
            if cond == "service_healthy":
                assert "healthcheck" in services[target], f"{target} needs a healthcheck ({name} waits for it)"
            if cond == "service_completed_successfully":
                assert str(services[target].get("restart", "no")) == "no", f"{target} is one-shot"

    def cond(src, dst):
        return services[src]["depends_on"][dst]["condition"]

    assert cond("prefect-server", "postgres") == "service_healthy"
    assert "dask-scheduler" in graph["dask-worker"]
    assert cond("minio-init", "minio") == "service_healthy"
    assert cond("changedet-worker", "prefect-server") == "service_healthy"
    assert "dask-scheduler" in graph["changedet-worker"]
    assert cond("changedet-worker", "minio-init") == "service_completed_successfully"

    # No cycles.
    done: set[str] = set()
    pending = dict(graph)
    while pending:
        ready = [n for n, deps in pending.items() if deps <= done]
        assert ready, f"depends_on cycle among {sorted(pending)}"
        for n in ready:
            done.add(n)
            del pending[n]


def test_healthchecks(services):
    pg = services["postgres"]["healthcheck"]["test"]
    assert "pg_isready" in " ".join(pg)
    prefect = " ".join(services["prefect-server"]["healthcheck"]["test"])
    assert "http://localhost:4200/api/health" in prefect
    assert "/health" in " ".join(services["dask-scheduler"]["healthcheck"]["test"])
    for name, svc in services.items():
        hc = svc.get("healthcheck")
        if hc:
            assert isinstance(hc["test"], list) and hc["test"][0] in {"CMD", "CMD-SHELL"}, name


def test_every_compose_variable_is_documented(compose):
    used = {m.group(1) for s in _strings(compose) for m in VAR_RE.finditer(s)}
    documented = _env_example()
    undocumented = used - set(documented)
    assert not undocumented, f"variables used in docker-compose.yml but not in .env.example: {sorted(undocumented)}"
    unused = set(documented) - used
    assert not unused, f".env.example documents variables docker-compose.yml never uses: {sorted(unused)}"
    # Every ${...} must be braced; a bare $VAR in a value is ambiguous (use $$ for the shell).
    for s in _strings(compose):
        bare = BARE_VAR_RE.findall(s.replace("$$", ""))
        assert not bare, f"unbraced variable(s) {bare} in {s!r}"


def test_env_example_documents_every_variable_with_a_comment():
    lines = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() and not line.lstrip().startswith("#"):
            name = line.split("=", 1)[0]
            above = lines[i - 1].strip() if i else ""
            assert above.startswith("#") and len(above) > 2, f"{name} in .env.example needs a comment line above it"
    missing = REQUIRED_ENV_VARS - set(_env_example())
    assert not missing, f".env.example lacks {sorted(missing)}"


def test_env_example_holds_only_placeholders():
    for name, value in _env_example().items():
        if SECRET_KEY_RE.search(name):
            assert value == "" or "change-me" in value, f".env.example {name} must be empty or a change-me placeholder"


def test_no_literal_secrets_in_compose(compose, services):
    for name, svc in services.items():
        for key, value in _environment(svc).items():
            if SECRET_KEY_RE.search(key):
                m = VAR_RE.fullmatch(value)
                assert m, f"{name}: {key} must come from ${{...}} substitution, not a literal"
                if m.group(2) in (":-", "-"):
                    assert m.group(3) == "", f"{name}: {key} has a literal default value"
    for s in _strings(compose):
        for password in URL_CREDENTIALS_RE.findall(s):
            assert password.startswith(("${", "$${")), f"literal credentials in URL {s!r}"
    # Nothing that looks like a secret hides in the command lines either.
    for name, svc in services.items():
        for part in _strings([svc.get("command"), svc.get("entrypoint")]):
            for word in re.findall(r"(?i)(?:password|secret)\S*=\S+", part):
                assert "${" in word, f"{name}: literal secret in command {word!r}"


def test_images_are_pinned(services):
    for name, svc in services.items():
        assert "image" in svc, f"{name} has no image"
        _assert_pinned(svc["image"], f"compose service {name}")
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["prefect-server"]["image"] == "prefecthq/prefect:3.8.8-python3.11"
    assert services["minio-init"]["image"].startswith("minio/mc:")


def test_changedet_image_built_from_infra_dockerfile(services):
    built = {n: s for n, s in services.items() if "build" in s}
    assert {"dask-scheduler", "dask-worker", "changedet-worker"} <= set(built)
    images = {s["image"] for s in built.values()}
    assert len(images) == 1, f"services built from the Dockerfile must share one image tag: {images}"
    for name, svc in built.items():
        context = (INFRA / svc["build"]["context"]).resolve()
        assert context == REPO, f"{name}: build context must be the repository root"
        assert (context / svc["build"]["dockerfile"]).resolve() == DOCKERFILE


def test_commands_name_real_executables(services):
    expected = {
        "prefect-server": ["prefect", "server", "start", "--host", "0.0.0.0"],
        "dask-scheduler": ["dask", "scheduler"],
        "dask-worker": ["dask", "worker", DASK_ADDRESS, "--nthreads", "4", "--memory-limit", "4GiB"],
        "changedet-worker": ["changedet", "serve", "--dask-address", DASK_ADDRESS],
    }
    for name, prefix in expected.items():
        cmd = _command(services[name])
        assert cmd[: len(prefix)] == prefix, f"{name}: command {cmd} should start with {prefix}"
        assert cmd[0] in CLI_EXECUTABLES
    for name, svc in services.items():
        if "build" in svc or svc["image"].startswith("prefecthq/prefect:"):
            assert _command(svc)[0] in CLI_EXECUTABLES, f"{name} must run prefect, dask or changedet"


def test_ports_and_scaling(services):
    def published(name):
        return {str(p).rsplit(":", 1)[-1] for p in services[name].get("ports", [])}

    assert "4200" in published("prefect-server")
    assert {"8786", "8787"} <= published("dask-scheduler")
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("${HOST_BIND_ADDRESS"), f"{name}: bind {port} to ${{HOST_BIND_ADDRESS}}"
    worker = services["dask-worker"]
    assert worker["deploy"]["replicas"] == 2
    assert "ports" not in worker and "container_name" not in worker, "replicated service cannot fix names/ports"
    assert not services["postgres"].get("ports"), "postgres stays inside the compose network"


def test_service_environment(services):
    db_url = _environment(services["prefect-server"])["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert re.fullmatch(r"postgresql\+asyncpg://prefect:\$\{POSTGRES_PASSWORD[^}]*\}@postgres:5432/prefect", db_url)
    pg = _environment(services["postgres"])
    assert pg["POSTGRES_USER"] == "prefect" and pg["POSTGRES_DB"] == "prefect"
    for name in ("changedet-worker", "dask-worker"):
        env = {k: _resolve_defaults(v) for k, v in _environment(services[name]).items()}
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert env["DASK_SCHEDULER_ADDRESS"] == DASK_ADDRESS
        assert env["CHANGEDET_STORE_URL"].startswith("s3://changedet/")
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION"} <= set(env)
        assert {"SH_CLIENT_ID", "SH_CLIENT_SECRET", "SH_BASE_URL", "SH_TOKEN_URL"} <= set(env)
    init = " ".join(_strings(services["minio-init"].get("command")))
    assert "mc mb --ignore-existing local/changedet" in init


def test_named_volumes_declared(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            source = str(vol).split(":", 1)[0]
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: volume {source} not declared at top level"


# --------------------------------------------------------------------------- CLIs


def test_cli_entry_points_installed():
    scripts = {ep.name: ep for ep in md.entry_points(group="console_scripts")}
    assert scripts["dask"].dist.name.lower() == "dask"
    assert scripts["prefect"].dist.name.lower() == "prefect"
    dask_cli = {ep.name: ep.dist.name for ep in md.entry_points(group="dask_cli")}
    assert dask_cli.get("scheduler") == "distributed" and dask_cli.get("worker") == "distributed"
    assert md.version("prefect") == "3.8.8", "the prefect client must match the prefecthq/prefect:3.8.8 server"


def _help(*args: str) -> str:
    exe = Path(sys.executable).parent / args[0]
    assert exe.exists(), f"{args[0]} is not installed next to {sys.executable}"
    proc = subprocess.run([str(exe), *args[1:], "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout + proc.stderr


def test_compose_command_flags_are_accepted():
    from dask.utils import parse_bytes

    services = _load_compose()["services"]
    scheduler = _help("dask", "scheduler")
    worker = _help("dask", "worker")
    server = _help("prefect", "server", "start")
    for flag in (f for f in _command(services["dask-scheduler"]) if f.startswith("--")):
        assert flag in scheduler, f"dask scheduler has no {flag}"
    for flag in (f for f in _command(services["dask-worker"]) if f.startswith("--")):
        assert flag in worker, f"dask worker has no {flag}"
    for flag in (f for f in _command(services["prefect-server"]) if f.startswith("--")):
        assert flag in server, f"prefect server start has no {flag}"
    assert parse_bytes("4GiB") == 4 * 2**30


# --------------------------------------------------------------------------- pyproject


def test_pyproject_declares_cli_and_extras():
    project = _pyproject()["project"]
    assert project["scripts"]["changedet"] == "changedet.cli:main"
    all_reqs = _extra_requirements("all")
    names = {_req_name(r): r for r in all_reqs}
    base = {_req_name(r): r for r in project["dependencies"]}
    assert "prefect" in names, "prefect must be in the [all] extra"
    assert "distributed" in names, "distributed (the `dask scheduler/worker` CLI) must be in [all]"
    assert "prefect-dask" in names
    assert "dask" in names or "dask" in base
    assert _req_pin(names["prefect"]) == "3.8.8", "prefect pin must match the prefect-server image"
    dask_req = names.get("dask") or base["dask"]
    assert _req_pin(names["distributed"]) == _req_pin(dask_req), "dask and distributed versions must match"


# --------------------------------------------------------------------------- Dockerfile


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_dockerfile():
    instr = _dockerfile_instructions()
    args = dict(re.match(r"([A-Z_]+)=?(.*)", rest).groups() for op, rest in instr if op == "ARG")
    froms = [rest for op, rest in instr if op == "FROM"]
    base = froms[-1].replace("${PYTHON_IMAGE}", args.get("PYTHON_IMAGE", "").strip('"'))
    assert base.startswith("python:3.11-slim"), base

    runs = " ".join(rest for op, rest in instr if op == "RUN")
    assert re.search(r"""pip install ["']?\.\[all\]["']?""", runs), "image must pip install .[all]"

    copied = set()
    for op, rest in instr:
        if op == "COPY":
            parts = [p for p in rest.split() if not p.startswith("--")]
            copied |= {p.rstrip("/") for p in parts[:-1]}
    needed = {"pyproject.toml", "README.md", "changedet", "flows", "aois"}
    assert needed <= copied, f"Dockerfile does not COPY {sorted(needed - copied)}"
    assert _pyproject()["project"]["readme"] in copied, "pyproject's readme file is needed to build"
    for src in ("pyproject.toml", "changedet", "flows", "aois"):
        assert (REPO / src).exists(), f"COPY source {src} missing from the repository"

    users = [rest for op, rest in instr if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the image must run as a non-root user"
    cmd = [rest for op, rest in instr if op == "CMD"][-1]
    assert yaml.safe_load(cmd) == ["changedet", "--help"]


def test_dockerignore_keeps_sources():
    ignore = INFRA / "Dockerfile.dockerignore"
    patterns = [p.strip() for p in ignore.read_text().splitlines() if p.strip() and not p.startswith("#")]
    for src in ("pyproject.toml", "README.md", "changedet", "flows", "aois", "changedet/__init__.py"):
        for pat in patterns:
            assert not fnmatch.fnmatch(src, pat.lstrip("/").replace("**/", "")), f"{pat} excludes {src}"
    assert ".venv" in patterns and any(p.endswith(".env") for p in patterns)


def test_secrets_are_git_ignored():
    ignored = (INFRA / ".gitignore").read_text().splitlines()
    assert ".env" in ignored and "k8s/secret.yaml" in ignored


# --------------------------------------------------------------------------- Kubernetes


def test_k8s_manifests_parse_and_are_named():
    files = _k8s_files()
    assert files, "no manifests in infra/k8s"
    for path in files:
        docs = _k8s_docs(path)
        assert docs, f"{path.name} is empty"
        for doc in docs:
            assert doc.get("apiVersion"), f"{path.name}: document without apiVersion"
            assert doc.get("kind"), f"{path.name}: document without kind"
            assert doc.get("metadata", {}).get("name"), f"{path.name}: {doc['kind']} without metadata.name"
            if doc["kind"] not in {"Namespace", "Kustomization"}:
                assert doc["metadata"].get("namespace") == "changedet", f"{path.name}: {doc['kind']} namespace"


def test_kustomization_lists_every_manifest():
    kust = _kustomization()
    assert kust["kind"] == "Kustomization" and kust["namespace"] == "changedet"
    resources = kust["resources"]
    for res in resources:
        assert (K8S / res).is_file(), f"kustomization lists missing {res}"
    expected = {p.name for p in _k8s_files()} - {"kustomization.yaml", "secret.example.yaml"}
    assert set(resources) == expected
    assert "secret.example.yaml" not in resources, "placeholder secrets must never be applied"
    assert not any(d["kind"] == "Secret" for d in _k8s_resources()), "no Secret may be committed as a resource"


def test_k8s_expected_objects():
    assert _find("Namespace", "changedet")
    assert _find("StatefulSet", "postgres")["spec"]["serviceName"] == "postgres"
    assert _find("Service", "postgres")
    assert _find("Deployment", "prefect-server") and _find("Service", "prefect-server")
    assert _find("Deployment", "dask-scheduler") and _find("Service", "dask-scheduler")
    assert _find("Deployment", "dask-worker")["spec"]["replicas"] == 2
    assert _find("Deployment", "changedet-worker")
    assert _find("ConfigMap", "changedet-config")


def test_k8s_containers_have_image_and_command():
    compose_images = {_resolve_defaults(s["image"]) for s in _load_compose()["services"].values()}
    for name, doc in _workloads().items():
        spec = _pod_spec(doc)
        containers = spec.get("initContainers", []) + spec["containers"]
        assert spec["containers"], f"{name} has no containers"
        for c in containers:
            where = f"{doc['kind']}/{name} container {c.get('name')}"
            assert c.get("image"), f"{where}: no image"
            cmd = c.get("command")
            assert isinstance(cmd, list) and cmd and all(isinstance(x, str) for x in cmd), f"{where}: no command"
            # Either the very image compose runs (pinned there) or pinned here.
            if c["image"] not in compose_images:
                _assert_pinned(c["image"], where)


def test_k8s_commands_match_compose():
    services = _load_compose()["services"]
    workloads = _workloads()
    for name in ("prefect-server", "dask-scheduler", "dask-worker", "changedet-worker"):
        container = _pod_spec(workloads[name])["containers"][0]
        assert container["command"] == _command(services[name]), f"{name}: k8s and compose commands differ"
        assert container["command"][0] in CLI_EXECUTABLES
        assert _resolve_defaults(services[name]["image"]) == container["image"], f"{name}: image differs"
    assert _pod_spec(workloads["postgres"])["containers"][0]["image"] == services["postgres"]["image"]


def test_k8s_selectors_ports_and_references():
    resources = _k8s_resources()
    workloads = _workloads()
    secrets = {d["metadata"]["name"]: d for d in _k8s_docs(K8S / "secret.example.yaml")}
    configmaps = {d["metadata"]["name"]: d for d in resources if d["kind"] == "ConfigMap"}

    for name, doc in workloads.items():
        if doc["kind"] in {"Deployment", "StatefulSet"}:
            labels = doc["spec"]["template"]["metadata"]["labels"]
            for k, v in doc["spec"]["selector"]["matchLabels"].items():
                assert labels.get(k) == v, f"{name}: selector does not match the pod labels"
        for c in _pod_spec(doc).get("initContainers", []) + _pod_spec(doc)["containers"]:
            for src in c.get("envFrom", []):
                if "secretRef" in src:
                    assert src["secretRef"]["name"] in secrets
                if "configMapRef" in src:
                    assert src["configMapRef"]["name"] in configmaps
            for env in c.get("env", []):
                ref = env.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    sec = secrets[ref["secretKeyRef"]["name"]]
                    assert ref["secretKeyRef"]["key"] in sec["stringData"]
                elif "configMapKeyRef" in ref:
                    cm = configmaps[ref["configMapKeyRef"]["name"]]
                    assert ref["configMapKeyRef"]["key"] in cm["data"]
                elif SECRET_KEY_RE.search(env["name"]):
                    raise AssertionError(f"{name}: {env['name']} must come from a Secret")
                for password in URL_CREDENTIALS_RE.findall(str(env.get("value", ""))):
                    assert password.startswith("$("), f"{name}: literal credentials in {env['name']}"

    for svc in (d for d in resources if d["kind"] == "Service"):
        selector = svc["spec"]["selector"]
        matches = [
            w for w in workloads.values()
            if all(w["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in selector.items())
        ]
        assert matches, f"Service {svc['metadata']['name']} selects no workload"
        port_names = {p.get("name") for w in matches for c in _pod_spec(w)["containers"] for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if isinstance(target, str):
                assert target in port_names, f"Service {svc['metadata']['name']}: no container port {target}"


def test_k8s_secret_example_and_configmap_hold_no_secrets():
    for doc in _k8s_docs(K8S / "secret.example.yaml"):
        assert doc["kind"] == "Secret"
        for key, value in doc["stringData"].items():
            assert value == "" or "change-me" in value, f"secret.example.yaml {key} must be a placeholder"
    config = _find("ConfigMap", "changedet-config")["data"]
    leaked = [k for k in config if SECRET_KEY_RE.search(k)]
    assert not leaked, f"secret-looking keys in the ConfigMap: {leaked}"
    assert config["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert config["DASK_SCHEDULER_ADDRESS"] == DASK_ADDRESS
    # Together the ConfigMap and Secrets cover what compose passes to changedet code.
    secret_keys = {k for d in _k8s_docs(K8S / "secret.example.yaml") for k in d["stringData"]}
    compose_env = set(_environment(_load_compose()["services"]["changedet-worker"]))
    missing = compose_env - set(config) - secret_keys
    assert not missing, f"k8s lacks settings compose gives changedet-worker: {sorted(missing)}"


# --------------------------------------------------------------------------- README


def test_readme_documents_the_deployment():
    readme = (INFRA / "README.md").read_text()
    assert "docker compose --env-file .env up" in readme
    for name in _env_example():
        assert f"`{name}`" in readme, f"infra/README.md env table lacks {name}"
    for service in EXPECTED_SERVICES:
        assert service in readme, f"infra/README.md does not describe {service}"
    assert "validated" in readme.lower()


# --------------------------------------------------------------------------- changedet commands


def test_changedet_worker_runs_a_real_changedet_command():
    from changedet.cli import build_parser
    from flows.cli import cmd_serve

    services = _load_compose()["services"]
    cmd = _command(services["changedet-worker"])
    args = build_parser().parse_args(cmd[1:])
    assert args.func is cmd_serve and args.dask_address == DASK_ADDRESS
    container = _pod_spec(_workloads()["changedet-worker"])["containers"][0]
    assert build_parser().parse_args(container["command"][1:]).func is cmd_serve


def test_shared_data_volume():
    pvcs = {d["metadata"]["name"]: d for d in _k8s_resources() if d["kind"] == "PersistentVolumeClaim"}
    for name in ("changedet-worker", "dask-worker"):
        spec = _pod_spec(_workloads()[name])
        claims = [v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v]
        assert claims == ["changedet-data"], f"{name} must mount the shared data volume"
        mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
        assert mounts.get("data") == "/data"
    assert "ReadWriteMany" in pvcs["changedet-data"]["spec"]["accessModes"]
    services = _load_compose()["services"]
    for name in ("changedet-worker", "dask-worker"):
        assert "changedet-data:/data" in services[name]["volumes"]


def test_prefect_yaml_commands_in_the_readme_exist():
    readme = (INFRA / "README.md").read_text()
    assert "prefect deploy --all" in readme and "prefect worker start --pool changedet-process" in readme
    assert "--all" in _help("prefect", "deploy")
    assert "--pool" in _help("prefect", "worker", "start")
