"""Assemble a real standalone Nacos 2.x server (Apache-2.0) from Maven Central.

Alibaba publishes only the client-side Nacos modules to Central; the server
modules (nacos-console, nacos-naming, nacos-config, nacos-core, ...) and the
release zip are GitHub-only, which CI cannot reach. The JeecgBoot project
re-publishes the unmodified server modules under ``org.jeecgframework.nacos``,
so a generated pom that depends on their ``nacos-console`` (whose
``com.alibaba.nacos.Nacos`` is the server's main class) gives the full server
classpath through ``mvn dependency:copy-dependencies``.

Their poms are flattened and carry no dependency management, so the upstream
``com.alibaba.nacos:nacos-all`` pom (which Alibaba does publish) is imported
as a BOM to get the same third-party versions as the upstream release.

Usage: ``python -m harness.nacos_build`` assembles (if needed) and
prints the version.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from syncmesh_app.embedded.process import cache_dir, file_lock

__all__ = ["NACOS_VERSION", "NacosBuildError", "NacosInstall", "ensure_nacos", "java_executable"]

NACOS_VERSION = "2.3.2"
_SERVER_GROUP = "org.jeecgframework.nacos"
MAIN_CLASS = "com.alibaba.nacos.Nacos"
# maven-dependency-plugin 2.8 (Maven 3.8's default) writes the classpath in
# hash order; 3.x keeps Maven's resolution order, which matters below.
_DEP_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"

# jraft-core drags in com.alipay.sofa:hessian, a fork that ships the same
# com.caucho.hessian classes as the com.caucho:hessian that nacos-consistency
# is compiled against. Declaring com.caucho:hessian first puts it first on the
# classpath; otherwise startup fails with "incompatible versions of
# NacosHessianSerializerFactory and SerializerFactory".
_POM = f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>harness</groupId>
  <artifactId>nacos-server-classpath</artifactId>
  <version>{NACOS_VERSION}</version>
  <packaging>pom</packaging>
  <dependencyManagement>
    <dependencies>
      <dependency>
        <groupId>com.alibaba.nacos</groupId>
        <artifactId>nacos-all</artifactId>
        <version>{NACOS_VERSION}</version>
        <type>pom</type>
        <scope>import</scope>
      </dependency>
    </dependencies>
  </dependencyManagement>
  <dependencies>
    <dependency>
      <groupId>com.caucho</groupId>
      <artifactId>hessian</artifactId>
    </dependency>
    <dependency>
      <groupId>{_SERVER_GROUP}</groupId>
      <artifactId>nacos-console</artifactId>
      <version>{NACOS_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"""
# Any change to the recipe must invalidate an old cache.
_FINGERPRINT = hashlib.sha256((_POM + _DEP_PLUGIN + MAIN_CLASS).encode()).hexdigest()[:16]


class NacosBuildError(RuntimeError):
    """Assembling the Nacos classpath failed; the message has the mvn log tail."""


@dataclass(frozen=True)
class NacosInstall:
    java: str
    classpath: str  # os.pathsep-joined absolute jar paths, in Maven's order
    main_class: str
    version: str
    root: Path

    def argv(self, jvm_args: list[str]) -> list[str]:
        return [self.java, *jvm_args, "-cp", self.classpath, self.main_class]


def java_executable() -> str:
    """``$JAVA_HOME/bin/java`` if set, else ``java`` on PATH (Java 8+ works)."""
    home = os.environ.get("JAVA_HOME")
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return os.path.join(home, "bin", "java")
    found = shutil.which("java")
    if not found:
        raise NacosBuildError("no java found (set JAVA_HOME or put java on PATH)")
    return found


def _root() -> Path:
    return cache_dir() / f"nacos-{NACOS_VERSION}"


def _load(root: Path) -> NacosInstall | None:
    """The cached install, or None unless it is complete and from this recipe."""
    stamp, cp_file = root / "COMPLETE", root / "classpath.txt"
    try:
        if stamp.read_text().strip() != _FINGERPRINT:
            return None
        entries = [e for e in cp_file.read_text().strip().split(":") if e]
    except OSError:
        return None
    jars = [root / e for e in entries]
    if not jars or not all(j.is_file() for j in jars):
        return None
    return NacosInstall(
        java=java_executable(),
        classpath=os.pathsep.join(str(j) for j in jars),
        main_class=MAIN_CLASS,
        version=NACOS_VERSION,
        root=root,
    )


def _mvn(root: Path, log: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise NacosBuildError("Maven ('mvn') is needed to assemble Nacos")
    argv = [
        mvn, "-q", "-B", "-f", str(root / "pom.xml"),
        f"{_DEP_PLUGIN}:copy-dependencies", f"{_DEP_PLUGIN}:build-classpath",
        "-DincludeScope=runtime", f"-DoutputDirectory={root / 'lib'}",
        # Relative "lib/<jar>" entries keep the cache relocatable.
        f"-Dmdep.outputFile={root / 'classpath.txt'}", "-Dmdep.prefix=lib",
        "-Dmdep.pathSeparator=:",
    ]  # fmt: skip
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(argv)}\n")
        fh.flush()
        proc = subprocess.run(argv, cwd=root, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise NacosBuildError(f"mvn failed (exit {proc.returncode})\n--- {log} ---\n{tail}")


def ensure_nacos() -> NacosInstall:
    """A complete Nacos server classpath under ``cache_dir()/nacos-<version>/``,
    assembled on first use; later calls only check the cache."""
    root = _root()
    cached = _load(root)
    if cached is not None:
        return cached
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(cache_dir() / f"nacos-{NACOS_VERSION}.lock"):
        # Another process may have finished while we waited for the lock.
        cached = _load(root)
        if cached is not None:
            return cached
        (root / "COMPLETE").unlink(missing_ok=True)
        shutil.rmtree(root / "lib", ignore_errors=True)
        (root / "pom.xml").write_text(_POM)
        log = root / "mvn.log"
        log.write_text(f"assembling nacos {NACOS_VERSION} at {time.ctime()}\n")
        _mvn(root, log)
        # The stamp goes last so a half-copied lib/ is never taken as cached.
        (root / "COMPLETE").write_text(_FINGERPRINT + "\n")
        install = _load(root)
        if install is None:
            raise NacosBuildError(f"mvn succeeded but the classpath is incomplete, see {log}")
        return install


if __name__ == "__main__":
    started = time.monotonic()
    nacos = ensure_nacos()
    print(f"Nacos {nacos.version} ({nacos.root}, {time.monotonic() - started:.1f}s)")
    sys.exit(0)
