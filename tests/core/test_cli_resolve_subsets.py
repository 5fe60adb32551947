"""``syncmesh resolve NAME --version V --tag T`` and the resolve API's subsets, pure
parts: reading subset DNS names, the request's subset in label form, the table
with loads."""

from __future__ import annotations

import pytest

from global_registry.config import StaleConfig
from global_registry.core.probe_fsm import ProbePhase
from global_registry.core.probes import GatewayId, GatewayStatus
from global_registry.core.snapshot import request_subset, resolve_reply
from global_registry.core.view import RegistryView
from harness.samples import ScriptedStream, cluster_beat, instance, service_state
from syncmesh.limits import LimitsConfig
from syncmesh.schema import Gateway, Locality, ResolveRequest
from syncmesh.view_api import Subset
from syncmesh_app.ops import render

pytestmark = pytest.mark.core

UP = GatewayStatus(phase=ProbePhase.UP, up=True, rtt_ms=1.5, rtt_bucket=1)


def view_with_versions() -> RegistryView:
    """payments 1.2.3 (canary) in east at load 80, 2.0.0 in west."""
    view = RegistryView(StaleConfig(), LimitsConfig(), Locality())
    stream = ScriptedStream(view)
    for name, address, load in (("east", "192.0.2.1", 80), ("west", "192.0.2.2", None)):
        gateway = Gateway(address=address, port=443, load=load)
        stream.apply(cluster_beat(name, gateways=[gateway]), 0.0)
        view.set_gateway_status(GatewayId(name, address, 443), UP)
    east = [instance("a", "10.1.0.1", version="1.2.3", tags=["Canary"])]
    stream.apply(service_state("east", "payments", "shop", instances=east))
    west = [instance("w", "10.2.0.1", version="2.0.0")]
    stream.apply(service_state("west", "payments", "shop", instances=west))
    return view


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("1-2-3.version.payments.shop.svc.syncmesh.internal", ("1-2-3", None)),
        ("canary.tag.payments.shop.svc.syncmesh.internal.", (None, "canary")),
        ("east.payments.shop.svc.syncmesh.internal", (None, None)),
        ("payments", (None, None)),
    ],
)
def test_parse_subset(name: str, expected: tuple[str | None, str | None]) -> None:
    version, tag, rest = render.parse_subset(name)
    assert (version, tag) == expected
    if version or tag:
        assert render.parse_name(rest, None) == ("payments", "shop", None)


def test_request_subset_is_in_label_form_or_an_error() -> None:
    assert request_subset("1.2.3", ["Canary", "eu"]) == Subset(
        version="1-2-3", tags=frozenset({"canary", "eu"})
    )
    assert request_subset(None, []) == Subset()
    assert "no label form" in str(request_subset("...", []))
    assert "no label form" in str(request_subset(None, ["x" * 64]))


def test_resolve_reply_by_version_and_tag() -> None:
    view = view_with_versions()
    by_version = resolve_reply(
        view, ResolveRequest(namespace="shop", service="payments", version="2.0.0")
    )
    assert [c.cluster for c in by_version.clusters] == ["west"]
    by_tag = resolve_reply(
        view, ResolveRequest(namespace="shop", service="payments", tags=["canary"])
    )
    assert [(c.cluster, c.reason, c.load) for c in by_tag.clusters] == [("east", "overloaded", 80)]
    neither = resolve_reply(
        view, ResolveRequest(namespace="shop", service="payments", version="2.0.0", tags=["canary"])
    )
    assert neither.known and neither.clusters == []
    bad = resolve_reply(view, ResolveRequest(namespace="shop", service="payments", version="--"))
    assert bad.error and not bad.known


def test_resolve_text_shows_the_subset_and_loads() -> None:
    view = view_with_versions()
    reply = resolve_reply(view, ResolveRequest(namespace="shop", service="payments"))
    text = render.resolve_text(reply, None, subset="tag canary")
    assert text.startswith("payments.shop.svc.syncmesh.internal (tag canary)")
    assert "DNS answers 192.0.2.2 (cluster west" in text
    assert "LOAD" in text and "80%" in text
