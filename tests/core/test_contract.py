"""Pure tests of the wire contract helpers: labels, subjects, config loading."""

from __future__ import annotations

import msgspec
import pytest

from syncmesh import schema, subjects
from syncmesh.configfile import ConfigError, apply_env_overrides, load_config
from syncmesh.labels import assign_labels, is_label, to_label
from syncmesh.nats_config import NatsConfig

pytestmark = pytest.mark.core


@pytest.mark.parametrize("name", ["payments", "a", "a-b-c", "x1", "9lives"])
def test_valid_labels_are_unchanged(name: str) -> None:
    assert is_label(name)
    assert to_label(name) == name


@pytest.mark.parametrize(
    ("name", "prefix"),
    [
        ("com.foo.Bar", "com-foo-bar-"),
        ("Payments", "payments-"),
        ("my_svc", "my-svc-"),
        ("--x--", "x-"),
        ("___", "x-"),
    ],
)
def test_other_names_get_deterministic_suffixed_labels(name: str, prefix: str) -> None:
    label = to_label(name)
    assert label.startswith(prefix)
    assert is_label(label)
    assert to_label(name) == label  # deterministic


def test_long_names_are_cut_to_a_label() -> None:
    label = to_label("a" * 100)
    assert len(label) <= 63 and is_label(label)
    assert label != to_label("a" * 99)


def test_case_variants_do_not_merge() -> None:
    mapping, collisions = assign_labels({"Foo", "foo", "FOO"})
    assert len(set(mapping.values())) == 3
    assert collisions == []


def test_collision_is_reported_not_merged() -> None:
    crafted = to_label("a.b")  # a valid label equal to another name's mapped form
    mapping, collisions = assign_labels({"a.b", crafted})
    assert len(mapping) == 1
    assert len(collisions) == 1
    assert collisions[0].label == crafted


def test_subjects_round_trip() -> None:
    subj = subjects.service_subject("east", "default", "payments")
    assert subj == "syncmesh.v2.svc.east.default.payments"
    assert subjects.parse_subject(subj) == subjects.SubjectKey("svc", "east", "default", "payments")
    assert subjects.parse_subject(subjects.cluster_subject("west")) == subjects.SubjectKey(
        "cluster", "west"
    )
    assert subjects.parse_subject("syncmesh.v2.svc.east.default") is None
    assert subjects.parse_subject("other.v1.cluster.x") is None
    assert subjects.msg_id("east", 5, 7) == "east:5:7"


def test_service_state_validation_rejects_bad_labels_and_ports() -> None:
    good = schema.ServiceState(
        schema=1,
        cluster="east",
        namespace="default",
        service="pay",
        epoch=1,
        revision=1,
        source="file",
        source_name="pay",
        instances=[schema.Instance(id="i1", address="10.0.0.1", port=80)],
    )
    data = schema.encode(good)
    assert schema.decode_service_state(data) == good
    bad = data.replace(b'"east"', b'"East_1"')
    with pytest.raises(msgspec.ValidationError, match="cluster"):
        schema.decode_service_state(bad)
    with pytest.raises(msgspec.ValidationError, match="port"):
        schema.decode_service_state(data.replace(b'"port":80', b'"port":70000'))


def test_config_names_key_and_reason(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('servers = ["nats://x:1"]\nreplicas = "three"\n')
    with pytest.raises(ConfigError, match=r"replicas"):
        load_config(path, NatsConfig, "T", environ={})
    path.write_text('servers = ["nats://x:1"]\nbogus = 1\n')
    with pytest.raises(ConfigError, match=r"bogus"):
        load_config(path, NatsConfig, "T", environ={})


def test_env_overrides_nested_and_typed(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('servers = ["nats://x:1"]\n')
    cfg = load_config(path, NatsConfig, "T", environ={"T__REPLICAS": "3", "T__USER": "alice"})
    assert cfg.replicas == 3 and cfg.user == "alice" and cfg.servers == ["nats://x:1"]
    data = apply_env_overrides({}, "P", {"P__A__B": '["x", "y"]', "Q__A": "1"})
    assert data == {"a": {"b": ["x", "y"]}}


def test_env_overrides_never_retype_a_string() -> None:
    from edge_sync.config import EdgeConfig

    env = {
        "SYNCMESH_EDGE__NATS__PASSWORD": "123456",
        "SYNCMESH_EDGE__NATS__TOKEN": "true",
        "SYNCMESH_EDGE__NATS__USER": "0x1F",
        "SYNCMESH_EDGE__BEAT_INTERVAL_S": "2.5",
        "SYNCMESH_EDGE__NATS__SERVERS": '["nats://10.0.0.1:4222"]',
        "SYNCMESH_EDGE__SOURCE__KIND": "file",
        "SYNCMESH_EDGE__CLUSTER": "east",
    }
    config = load_config(None, EdgeConfig, "SYNCMESH_EDGE", environ=env)
    assert config.nats.password == "123456"
    assert config.nats.token == "true"
    assert config.nats.user == "0x1F"
    assert config.beat_interval_s == 2.5
    assert config.nats.servers == ["nats://10.0.0.1:4222"]
