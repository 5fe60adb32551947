"""Child-process management shared by every real peer (NATS, Consul, Nacos).

Every peer runs in its own process group with its output in a log file, so a
failed start or a failed test can show the log, and teardown can kill the whole
group (Nacos's JVM and Consul's children included) even when a test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "PeerStartError",
    "ManagedProcess",
    "dying_with_parent",
    "free_port",
    "reserve_ports",
    "stop_popen",
    "cache_dir",
    "file_lock",
    "wait_tcp",
    "wait_until",
]


class PeerStartError(RuntimeError):
    """A peer did not become ready; the message carries the tail of its log."""


# util-linux's setpriv sets the parent-death signal and execs the command, so
# no Python runs between fork and exec: a preexec_fn forks the whole process
# the slow way and runs Python in the child, and in a process with gRPC
# threads (the Nacos SDK) that child died of SIGSEGV before exec, leaving an
# empty log (bench/edge_nacos_scale.py, twice).
_SETPRIV = shutil.which("setpriv")


def dying_with_parent(argv: Sequence[str]) -> tuple[list[str], Callable[[], None] | None]:
    """``argv`` and a ``preexec_fn`` for ``Popen`` that SIGKILL the child when the
    process that started it dies: through setpriv when it is there, else a
    ``preexec_fn`` (unsafe in a process with gRPC threads, see ``_SETPRIV``)."""
    if _SETPRIV is not None:
        return [_SETPRIV, "--pdeathsig", "KILL", "--", *argv], None
    return list(argv), _die_with_parent


def _die_with_parent() -> None:
    """Runs in the child before exec (only without setpriv): SIGKILL it when the
    process that started it dies.

    Peers run in their own session so teardown can kill the whole group; this
    covers the other case, a test runner or benchmark that is itself killed.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except OSError:  # not Linux: teardown still kills the group
        pass


def cache_dir() -> Path:
    """Where built peer binaries are cached (``SYNCMESH_CACHE`` overrides)."""
    root = os.environ.get("SYNCMESH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "syncmesh"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 now and was not handed out before
    by this process (two peers started back to back must not get the same one)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port in _handed_out:
            continue
        # Also check UDP: Consul's DNS and serf use both.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port found")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise builders of one cached peer across processes.

    flock, not O_EXCL files: a crashed builder never leaves a stale lock.
    """
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def reserve_ports(ports: Sequence[int]) -> bool:
    """Reserve ports a peer derives from its main one (Nacos binds P-1000, P+1000,
    P+1001): False, reserving nothing, when one was already handed out."""
    if any(p in _handed_out for p in ports):
        return False
    _handed_out.update(ports)
    return True


async def wait_tcp(host: str, port: int, timeout: float) -> None:
    """Wait until a TCP connect to host:port succeeds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Exception | None = None
    while loop.time() < deadline:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return
        except (OSError, TimeoutError) as exc:
            last = exc
            await asyncio.sleep(0.05)
    raise TimeoutError(f"{host}:{port} not accepting connections after {timeout}s: {last}")


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.1, what: str = ""
) -> None:
    """Poll an async predicate until it is true; exceptions count as false, except
    ``PeerStartError``: a process that exited will not become ready, so a check
    that finds it gone fails the wait at once instead of at the timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: BaseException | None = None
    while True:
        try:
            if await check():
                return
        except PeerStartError:
            raise
        except Exception as exc:  # noqa: BLE001 - a not-yet-ready peer raises anything
            last = exc
        if loop.time() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or check}: {last}")
        await asyncio.sleep(interval)


@dataclass
class ManagedProcess:
    """One child process in its own process group, logging to ``log_path``."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        argv, preexec = dying_with_parent(self.argv)
        try:
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=preexec,
            )
        finally:
            log.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status once the process ended (None: running, or never started)."""
        return None if self.proc is None else self.proc.returncode

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def fail(self, reason: str) -> PeerStartError:
        return PeerStartError(
            f"{self.name} failed: {reason}\n--- log {self.log_path} ---\n{self.log_tail()}"
        )

    def signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    async def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the group, then SIGKILL what is left after ``grace`` seconds."""
        if self.proc is None:
            return
        self.signal_group(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.proc.poll() is None and loop.time() < deadline:
            await asyncio.sleep(0.05)
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)

    def kill(self) -> None:
        """Hard kill of the whole group (used by fault tests and final cleanup)."""
        self.signal_group(signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(Exception):
                self.proc.wait(timeout=5)


def stop_popen(process: subprocess.Popen[bytes] | None, grace: float = 15.0) -> None:
    """SIGTERM a plain ``Popen`` child, SIGKILL after ``grace`` seconds; None or
    an exited process is left alone."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
