"""Build a real Consul agent (v1.14.11, MPL-2.0) from the Go module proxy.

Consul 1.14.x is the last line we use that is fully open source (1.15+ pulls
in non-OSS modules), and HashiCorp release binaries are not reachable from CI,
so the tests build it themselves and cache the binary under ``cache_dir()``.

Usage: ``python -m harness.consul_build`` builds (if needed) and prints
``consul version``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from syncmesh_app.embedded.process import cache_dir, file_lock

__all__ = ["CONSUL_VERSION", "ConsulBuildError", "consul_binary_path", "ensure_consul"]

CONSUL_VERSION = "1.14.11"
_MODULE = "github.com/hashicorp/consul"
# The module zip does not contain these nested modules, yet go.mod points at
# them with local replace directives; we switch to the published versions.
_NESTED = ("api", "sdk", "proto-public")
# Large non-Go trees that the build never reads (the UI is embedded from
# agent/uiserver/dist, not from ui/).
_SKIP_DIRS = {"website", "ui", ".changelog"}


class ConsulBuildError(RuntimeError):
    """The Consul build failed; the message carries the tail of the build log."""


def consul_binary_path() -> Path:
    return cache_dir() / "bin" / f"consul-{CONSUL_VERSION}"


def _version_line(binary: Path) -> str | None:
    """First line of ``consul version`` or None if the binary is unusable."""
    try:
        out = subprocess.run(
            [str(binary), "version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.splitlines()
    return lines[0].strip() if lines else None


def _is_good(binary: Path) -> bool:
    return binary.is_file() and _version_line(binary) == f"Consul v{CONSUL_VERSION}"


def _go_env(gopath_home: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # -mod=mod lets go add the go.sum lines missing for the published nested
    # modules; -buildvcs=false because the copied tree is not a git checkout.
    env["GOFLAGS"] = "-mod=mod -buildvcs=false"
    env["GOWORK"] = "off"
    env["CGO_ENABLED"] = "0"
    # go.mod says "go 1.20"; any newer local toolchain is fine, and fetching
    # another toolchain would need more than the module proxy.
    env.setdefault("GOTOOLCHAIN", "local")
    env.setdefault("GOPROXY", "https://proxy.golang.org,direct")
    return env


def _run(argv: Sequence[str], cwd: Path, env: dict[str, str], log: Path) -> str:
    """Run a go command, appending its output to ``log``; raise with the tail."""
    with open(log, "a") as fh:
        fh.write(f"\n$ (cd {cwd} && {' '.join(argv)})\n")
        fh.flush()
        proc = subprocess.run(
            list(argv), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=fh, text=True
        )
        fh.write(proc.stdout)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise ConsulBuildError(
            f"{' '.join(argv)} failed (exit {proc.returncode})\n--- {log} ---\n{tail}"
        )
    return proc.stdout


def _download_source(work: Path, env: dict[str, str], log: Path) -> tuple[Path, str]:
    """Fetch the module through the proxy; return its (read-only) GOMODCACHE
    dir and the tagged commit's time."""
    fetch = work / "fetch"
    fetch.mkdir()
    _run(["go", "mod", "init", "syncmesh.local/consulfetch"], fetch, env, log)
    out = _run(["go", "mod", "download", "-json", f"{_MODULE}@v{CONSUL_VERSION}"], fetch, env, log)
    info = json.loads(out)
    if info.get("Error") or not info.get("Dir"):
        raise ConsulBuildError(f"go mod download failed: {info.get('Error')}")
    # `go mod download -json` only points at the .info file that has the time.
    tag_time = "1970-01-01T00:00:01Z"
    with contextlib.suppress(OSError, ValueError, KeyError):
        tag_time = str(json.loads(Path(info["Info"]).read_text())["Time"])
    return Path(info["Dir"]), tag_time


def _copy_writable(src: Path, dst: Path) -> None:
    # GOMODCACHE is read-only; copyfile (no mode copy) plus a chmod pass makes
    # the tree editable and removable afterwards.
    shutil.copytree(
        src, dst, copy_function=shutil.copyfile, ignore=lambda d, names: _SKIP_DIRS & set(names)
    )
    for root, dirs, _files in os.walk(dst):
        for d in dirs:
            p = os.path.join(root, d)
            os.chmod(p, os.stat(p).st_mode | stat.S_IWUSR | stat.S_IXUSR)
    os.chmod(dst, os.stat(dst).st_mode | stat.S_IWUSR)


def _patch_go_mod(go_mod: Path) -> None:
    """Replace local nested-module replaces by the versions go.mod requires."""
    text = go_mod.read_text()
    for sub in _NESTED:
        path = re.escape(f"{_MODULE}/{sub}")
        if not re.search(rf"^\s*{path}\s+v\S+", text, re.M):
            raise ConsulBuildError(f"go.mod has no require line for {_MODULE}/{sub}")
        text = re.sub(rf"^replace\s+{path}\s+=>\s+\./\S+\s*$\n?", "", text, flags=re.M)
    if "=> ./" in text:
        raise ConsulBuildError("go.mod still has local replace directives after patching")
    if re.search(r"envoyextensions|troubleshoot", text):
        raise ConsulBuildError("go.mod references non-OSS modules; refusing to build")
    go_mod.write_text(text)


def _build(out: Path, log: Path) -> None:
    env = _go_env()
    builds = cache_dir() / "build"
    builds.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"consul-{CONSUL_VERSION}-", dir=builds) as tmp:
        work = Path(tmp)
        src_dir, tag_time = _download_source(work, env, log)
        src = work / "src"
        _copy_writable(src_dir, src)
        _patch_go_mod(src / "go.mod")
        # BuildDate must be RFC3339; the tag's commit time (like upstream's
        # release builds) keeps rebuilds reproducible.
        ldflags = (
            "-s -w -X github.com/hashicorp/consul/version.GitCommit=v"
            + CONSUL_VERSION
            + "-modproxy -X github.com/hashicorp/consul/version.BuildDate="
            + tag_time
        )
        tmp_out = out.with_name(out.name + ".tmp")
        build = ["go", "build", "-trimpath", "-ldflags", ldflags, "-o", str(tmp_out), "."]
        try:
            _run(build, src, env, log)
        except ConsulBuildError as exc:
            # A stale/incomplete go.sum is the one thing tidy can fix; retry once.
            if "go mod tidy" not in str(exc) and "go.sum" not in str(exc):
                raise
            _run(["go", "mod", "tidy"], src, env, log)
            _run(build, src, env, log)
        # Rename last so a half-written binary is never taken for a cached one.
        os.replace(tmp_out, out)


def ensure_consul() -> Path:
    """Path to a working ``consul`` v1.14.11 binary, building it on first use."""
    out = consul_binary_path()
    if _is_good(out):
        return out
    if shutil.which("go") is None:
        raise ConsulBuildError("the Go toolchain ('go') is needed to build Consul")
    out.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(cache_dir() / f"consul-{CONSUL_VERSION}.lock"):
        # Another process may have finished the build while we waited.
        if _is_good(out):
            return out
        log = cache_dir() / f"consul-{CONSUL_VERSION}-build.log"
        log.write_text(f"building consul v{CONSUL_VERSION} at {time.ctime()}\n")
        _build(out, log)
        line = _version_line(out)
        if line != f"Consul v{CONSUL_VERSION}":
            raise ConsulBuildError(f"built binary reports {line!r}, see {log}")
    return out


if __name__ == "__main__":
    started = time.monotonic()
    binary = ensure_consul()
    print(_version_line(binary))
    print(f"{binary} ({time.monotonic() - started:.1f}s)")
