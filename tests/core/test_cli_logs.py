"""``--log-format json`` and ``--log-level``: one JSON object per line; a bad level is exit 2."""

from __future__ import annotations

import io
import json
import logging

import pytest

from syncmesh_app.cli import main
from syncmesh_app.ops import logs

pytestmark = pytest.mark.core


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "syncmesh.registry", logging.WARNING, __file__, 1, "rejected %d from %s", (3, "east"), None
    )
    record.__dict__.update(extra)
    return record


def test_json_line_has_the_fields_and_the_extras() -> None:
    line = logs.JsonFormatter().format(
        _record(cluster="east", source="consul", reason="schema", other="x")
    )
    entry = json.loads(line)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "syncmesh.registry"
    assert entry["message"] == "rejected 3 from east"
    assert entry["time"].endswith("+00:00") and "T" in entry["time"]
    assert (entry["cluster"], entry["source"], entry["reason"]) == ("east", "consul", "schema")
    assert "other" not in entry and "\n" not in line


def test_json_line_without_extras_and_with_an_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = _record()
        record.exc_info = sys.exc_info()
    entry = json.loads(logs.JsonFormatter().format(record))
    assert "cluster" not in entry and "reason" not in entry
    assert "ValueError: boom" in entry["exception"]


def test_configure_writes_json_through_the_root_logger() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    try:
        logs.configure("debug", "json", stream)
        logging.getLogger("edge_sync").info(
            "source %s degraded", "consul", extra={"cluster": "east", "reason": "timeout"}
        )
        entry = json.loads(stream.getvalue().strip().splitlines()[-1])
        assert entry["message"] == "source consul degraded" and entry["reason"] == "timeout"
        # Configuring again replaces our handler, not others'.
        logs.configure("info", "text", stream)
        ours = [h for h in root.handlers if h.get_name() == "syncmesh-cli"]
        assert len(ours) == 1
    finally:
        for handler in [h for h in root.handlers if h.get_name() == "syncmesh-cli"]:
            root.removeHandler(handler)
        root.setLevel(level)


@pytest.mark.parametrize("name", ["debug", "INFO", "Warning", "warn", "error", "CRITICAL"])
def test_levels(name: str) -> None:
    assert logs.parse_level(name) in (10, 20, 30, 40, 50)


@pytest.mark.parametrize("name", ["debgu", "verbose", "", "5"])
def test_a_bad_level_is_an_error(name: str) -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        logs.parse_level(name)


def test_cli_rejects_a_bad_level_and_format_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--log-level", "debgu", "check-config", "x.toml"])
    assert exc.value.code == 2
    assert "unknown log level 'debgu'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--log-format", "xml", "check-config", "x.toml"])
    assert exc.value.code == 2


def test_gated_log_lines_carry_their_reason_as_a_field() -> None:
    from syncmesh.loggate import GatedLog

    stream = io.StringIO()
    logger = logging.getLogger("syncmesh.test-gate")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger.addHandler(handler)
    try:
        GatedLog(logger).warning("schema", 0.0, "rejected on %s", "east")
    finally:
        logger.removeHandler(handler)
    entry = json.loads(stream.getvalue())
    assert entry["reason"] == "schema" and entry["message"] == "[schema] rejected on east"


def test_a_crash_in_native_code_leaves_the_python_stack_in_the_log() -> None:
    """An agent died of SIGSEGV with an empty log (the Nacos bench): every syncmesh
    command enables faulthandler, so stderr (the log) names where it happened."""
    import subprocess
    import sys

    crash = (
        "import ctypes, sys\n"
        "from syncmesh_app import cli\n"
        "def _schemas(args):\n"
        "    return ctypes.string_at(0)\n"
        "cli._schemas = _schemas\n"
        "sys.exit(cli.main(['schemas', '--check']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", crash], capture_output=True, text=True, timeout=120
    )
    assert result.returncode < 0, result
    assert "Fatal Python error: Segmentation fault" in result.stderr
    assert "_schemas" in result.stderr
