"""Every rejection reason (validation and epoch fencing): the message changes nothing, is
counted, and is logged once a minute."""

from __future__ import annotations

import msgspec
import pytest

from global_registry.config import StaleConfig
from global_registry.core.ingest import Ingest
from global_registry.core.snapshot import inventory
from global_registry.core.view import RegistryView
from harness.samples import cluster_beat, epoch_claim, instance, service_state, subject_of
from syncmesh import subjects
from syncmesh.limits import LimitsConfig
from syncmesh.loggate import LogGate
from syncmesh.schema import Gateway, Locality, encode
from syncmesh.validate import REJECT_REASONS, validate_message

pytestmark = [pytest.mark.core, pytest.mark.security]

SMALL = LimitsConfig(
    max_message_bytes=4096,
    max_instances_per_service=3,
    max_services_per_cluster=2,
    max_gateways_per_cluster=2,
    max_client_cidrs=2,
    max_clusters=3,
)


def raw(message: object, **changes: object) -> bytes:
    data = msgspec.to_builtins(message)
    data.update(changes)
    return msgspec.json.encode(data)


SVC = subjects.service_subject("east", "default", "web")
BEAT = subjects.cluster_subject("east")
CLAIM = subjects.epoch_subject("east")
# Where every case is stored: after all of prepared()'s messages.
SEQ = 100

CASES: list[tuple[str, str, bytes]] = [
    ("oversize", SVC, b" " * 5000),
    ("subject", "syncmesh.v2.other.east", encode(service_state("east", "web"))),
    ("subject", "syncmesh.v2.svc.east.web", encode(service_state("east", "web"))),
    ("schema", SVC, b"{not json"),
    ("schema", SVC, raw(service_state("east", "web"), revision="seven")),
    ("schema", SVC, b'{"schema": 1, "cluster": "east"}'),
    ("schema", BEAT, raw(cluster_beat("east"), interval_s=0)),
    ("schema", CLAIM, b'{"schema": 2}'),
    ("schema-version", SVC, raw(service_state("east", "web"), schema=3)),
    ("schema-version", CLAIM, raw(epoch_claim("east"), schema=1)),
    (
        "label",
        "syncmesh.v2.svc.East.default.web",
        raw(service_state("east", "web"), cluster="East"),
    ),
    (
        "label",
        subjects.service_subject("east", "default", "Web"),
        raw(service_state("east", "web"), service="Web"),
    ),
    ("cluster-mismatch", SVC, encode(service_state("west", "web"))),
    ("cluster-mismatch", BEAT, encode(cluster_beat("west"))),
    ("cluster-mismatch", CLAIM, encode(epoch_claim("west"))),
    ("key-mismatch", SVC, encode(service_state("east", "api"))),
    (
        "key-mismatch",
        subjects.service_subject("east", "prod", "web"),
        encode(service_state("east", "web")),
    ),
    (
        "address",
        SVC,
        encode(service_state("east", "web", instances=[instance(address="10.0.0.300")])),
    ),
    (
        "address",
        SVC,
        encode(service_state("east", "web", instances=[instance(address="bad host!")])),
    ),
    (
        "address",
        BEAT,
        encode(cluster_beat("east", gateways=[Gateway(address="gw.example.com", port=443)])),
    ),
    ("cidr", BEAT, encode(cluster_beat("east", client_cidrs=["10.0.0.0/33"]))),
    ("cidr", BEAT, encode(cluster_beat("east", client_cidrs=["10.1.2.3/16"]))),
    (
        "duplicate-instance",
        SVC,
        encode(
            service_state(
                "east", "web", instances=[instance(id="a"), instance(id="a", address="10.0.0.2")]
            )
        ),
    ),
    (
        "too-many-instances",
        SVC,
        encode(service_state("east", "web", instances=[instance(id=str(i)) for i in range(4)])),
    ),
    (
        "too-many-gateways",
        BEAT,
        encode(
            cluster_beat(
                "east", gateways=[Gateway(address=f"192.0.2.{i}", port=443) for i in range(3)]
            )
        ),
    ),
    (
        "too-many-cidrs",
        BEAT,
        encode(cluster_beat("east", client_cidrs=["10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16"])),
    ),
    # A forged epoch "a year ahead" (what a wall-clock epoch would look like).
    ("future-epoch", SVC, encode(service_state("east", "web", epoch=10**12, revision=2))),
    ("future-epoch", BEAT, encode(cluster_beat("east", epoch=SEQ, revision=2))),
    # Below its own sequence, but nobody claimed it (east's claim is epoch 1).
    ("unclaimed-epoch", SVC, encode(service_state("east", "web", epoch=60, revision=2))),
    # north's agent of epoch 1 was replaced at sequence 50, then wrote again.
    (
        "deposed",
        subjects.service_subject("north", "default", "web"),
        encode(service_state("north", "web", revision=99)),
    ),
]


def prepared() -> Ingest:
    view = RegistryView(StaleConfig(), SMALL, Locality())
    ingest = Ingest(view, SMALL)
    ingest.begin(0, 0.0)
    for cluster in ("east", "west", "north"):
        claim = epoch_claim(cluster)
        assert ingest.prime(subject_of(claim), encode(claim), 1)
    messages = (
        cluster_beat("east"),
        service_state("east", "web"),
        service_state("east", "api"),
        cluster_beat("west"),
        service_state("north", "web"),
    )
    for seq, message in enumerate(messages, start=2):
        assert ingest.handle(subject_of(message), encode(message), seq, 0.0).outcome == "applied"
    takeover = epoch_claim("north")
    assert ingest.handle(subject_of(takeover), encode(takeover), 50, 0.0).outcome == "applied"
    return ingest


@pytest.mark.parametrize(
    ("reason", "subject", "data"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_rejected_message_changes_nothing_and_is_counted(
    reason: str, subject: str, data: bytes
) -> None:
    ingest = prepared()
    before = encode(inventory(ingest.view))
    result = ingest.handle(subject, data, SEQ, now=1.0)
    assert result.outcome == "rejected"
    assert result.rejected is not None and result.rejected.reason == reason, result.rejected
    assert not result.change
    assert ingest.rejections == {reason: 1}
    assert encode(inventory(ingest.view)) == before


def test_limits_that_need_the_view_are_rejections_too() -> None:
    ingest = prepared()
    before = encode(inventory(ingest.view))
    third = service_state("east", "db")
    assert (
        ingest.handle(subject_of(third), encode(third), SEQ, 1.0).rejected.reason  # type: ignore[union-attr]
        == "too-many-services"
    )
    # Each cluster's agent claims it first: the claim of a fourth is what the limit stops.
    fourth = epoch_claim("south")
    assert (
        ingest.handle(subject_of(fourth), encode(fourth), SEQ + 1, 1.0).rejected.reason  # type: ignore[union-attr]
        == "too-many-clusters"
    )
    assert encode(inventory(ingest.view)) == before
    assert ingest.rejections == {"too-many-services": 1, "too-many-clusters": 1}


def test_every_reason_has_a_case() -> None:
    covered = {c[0] for c in CASES} | {"too-many-services", "too-many-clusters"}
    assert covered == set(REJECT_REASONS)


def test_the_cluster_of_a_rejection_is_the_subjects_not_the_payloads() -> None:
    with pytest.raises(Exception) as caught:
        validate_message(SVC, encode(service_state("west", "web")), LimitsConfig())
    assert getattr(caught.value, "cluster", None) == "east"


def test_hostnames_are_fine_for_instances() -> None:
    state = service_state(
        "east",
        "web",
        instances=[
            instance(address="web-1.east.internal"),
            instance(id="v6", address="2001:db8::5"),
        ],
    )
    assert validate_message(SVC, encode(state), LimitsConfig()) == state


def test_rejections_are_logged_once_per_reason_and_cluster_per_minute() -> None:
    ingest = prepared()
    spoof = encode(service_state("west", "web"))
    logged = [ingest.handle(SVC, spoof, SEQ, now=t).log for t in (10.0, 20.0, 30.0)]
    assert logged == [True, False, False]
    other_cluster = ingest.handle(
        subjects.service_subject("north", "default", "web"), spoof, SEQ, now=31.0
    )
    assert other_cluster.log
    later = ingest.handle(SVC, spoof, SEQ, now=71.0)
    assert later.log and later.suppressed == 2
    assert ingest.rejections == {"cluster-mismatch": 5}


def test_log_gate_is_bounded() -> None:
    gate = LogGate(period_s=60.0, max_keys=2)
    assert gate.allow(("schema", "a"), 0.0)[0]
    assert gate.allow(("schema", "b"), 0.0)[0]
    assert not gate.allow(("schema", "c"), 1.0)[0], "full: new keys are not logged"
    assert gate.allow(("schema", "c"), 61.0)[0], "old keys expire and make room"


def test_fenced_messages_are_logged_once_per_reason_and_cluster() -> None:
    ingest = prepared()
    forged = encode(service_state("east", "web", epoch=10**12, revision=2))
    first = ingest.handle(SVC, forged, SEQ, now=10.0)
    again = ingest.handle(SVC, forged, SEQ + 1, now=11.0)
    assert first.rejected is not None and first.rejected.cluster == "east"
    assert (first.log, again.log) == (True, False)
    other = ingest.handle(SVC, encode(service_state("east", "web", epoch=60)), SEQ + 2, now=12.0)
    assert other.log, "another reason for the same cluster has its own line"
    assert ingest.rejections == {"future-epoch": 2, "unclaimed-epoch": 1}
