"""A throwaway CA and a server certificate for 127.0.0.1, for TLS tests of real peers."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TestCerts", "make_certs"]


@dataclass(frozen=True)
class TestCerts:
    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(directory: Path) -> TestCerts:
    """CA + server cert (SAN IP 127.0.0.1, DNS localhost) made with the openssl CLI."""
    directory.mkdir(parents=True, exist_ok=True)
    ext = directory / "san.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:server.dc1.consul\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
    )
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=syncmesh-test-ca",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
        cwd=directory,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server-key.pem",
        "-out",
        "server.csr",
        cwd=directory,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(ext),
        "-out",
        "server.pem",
        cwd=directory,
    )
    return TestCerts(
        ca=directory / "ca.pem", cert=directory / "server.pem", key=directory / "server-key.pem"
    )


def make_client_cert(directory: Path, name: str) -> tuple[Path, Path]:
    """A client certificate (CN ``name``) signed by the CA that ``make_certs`` made in
    ``directory``; calling it again for the same name issues a new one (rotation)."""
    ext = directory / "client.ext"
    ext.write_text("extendedKeyUsage=clientAuth\n")
    key, csr, cert = f"{name}-key.pem", f"{name}.csr", f"{name}.pem"
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        f"/CN={name}",
        "-keyout",
        key,
        "-out",
        csr,
        cwd=directory,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(ext),
        "-out",
        cert,
        cwd=directory,
    )
    return directory / cert, directory / key
