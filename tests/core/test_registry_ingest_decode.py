"""The fast decode of service states (labels matched once per distinct string) accepts,
rejects and reports exactly what msgspec's full decoder of ``ServiceState`` does."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.samples import instance, service_state
from syncmesh import schema
from syncmesh.schema import Label, ServiceState, decode_service_state, encode

pytestmark = [pytest.mark.core, pytest.mark.security]


class _Oracle(ServiceState, frozen=True, kw_only=True, omit_defaults=True):
    """ServiceState as the contract states it, every label matched by msgspec."""

    cluster: Label
    namespace: Label
    service: Label


_full = msgspec.json.Decoder(_Oracle)


def outcome(decode: object, data: bytes) -> tuple[str, object]:
    try:
        return "ok", msgspec.to_builtins(decode(data))  # type: ignore[operator]
    except msgspec.MsgspecError as exc:
        return type(exc).__name__, str(exc)


def assert_same(data: bytes) -> None:
    fast, full = outcome(decode_service_state, data), outcome(_full.decode, data)
    assert fast == full
    if fast[0] == "ok":
        # A real ServiceState (equal only to its own type), never a private Struct.
        assert type(decode_service_state(data)) is ServiceState


def with_fields(**changes: object) -> bytes:
    data = msgspec.to_builtins(service_state("east", "web", instances=[instance()]))
    data.update(changes)
    return msgspec.json.encode(data)


BAD_LABELS = ["East", "-east", "east-", "", "e" * 64, "ea_st", "eäst", "e.st", "east\n", "\neast"]


@pytest.mark.parametrize("field", ["cluster", "namespace", "service"])
@pytest.mark.parametrize("label", BAD_LABELS + ["e" * 63, "a", "0", "a-0"])
def test_labels_as_the_full_decoder_judges_them(field: str, label: str) -> None:
    # Twice: the second time the label may be remembered as good; a bad one never is.
    for _ in range(2):
        assert_same(with_fields(**{field: label}))
    if outcome(_full.decode, with_fields(**{field: label}))[0] != "ok":
        assert label not in schema._LABELS_SEEN


def test_a_bad_label_with_another_error_reports_the_first_error_as_before() -> None:
    # The label comes first in the document: the full decoder names it, so does the fast one.
    assert_same(with_fields(cluster="East", revision="seven"))
    assert_same(with_fields(revision="seven", service="Web"))
    assert (
        outcome(decode_service_state, with_fields(cluster="East", revision="x"))[1]
        == (outcome(_full.decode, with_fields(cluster="East"))[1])
    )


def test_other_errors_and_garbage_are_unchanged() -> None:
    for data in (
        b"{not json",
        b"",
        b"[]",
        b'{"schema": 2}',
        with_fields(instances=[{"id": "a", "address": "10.0.0.1", "port": 0}]),
        with_fields(instances=[{"id": "a", "address": "10.0.0.1", "port": 1, "meta": {"k": 1}}]),
        with_fields(source="zookeeper"),
        with_fields(epoch=-1),
    ):
        assert_same(data)


def test_the_remembered_labels_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema, "_LABELS_SEEN_MAX", 4)
    monkeypatch.setattr(schema, "_LABELS_SEEN", set())
    for i in range(10):
        assert_same(with_fields(service=f"svc-{i}"))
        assert len(schema._LABELS_SEEN) <= 4
    assert_same(with_fields(service="Svc"))


def test_a_decoded_state_equals_the_one_encoded() -> None:
    state = service_state("east", "web", instances=[instance(), instance(id="i2", zone="z")])
    assert decode_service_state(encode(state)) == state


label_text = st.one_of(
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True),
    st.text(max_size=70),
    st.text(alphabet="aZ0-_.\n", max_size=66),
)


@settings(max_examples=300, deadline=None)
@given(cluster=label_text, namespace=label_text, service=label_text)
def test_any_labels_as_the_full_decoder_judges_them(
    cluster: str, namespace: str, service: str
) -> None:
    assert_same(with_fields(cluster=cluster, namespace=namespace, service=service))
