"""DNS settings: validation and normalisation of names."""

from __future__ import annotations

import msgspec
import pytest

from dns_server.config import DnsConfig

pytestmark = pytest.mark.core


@pytest.mark.parametrize(
    "bad",
    [
        {"port": 70000},
        {"address": "not-an-ip"},
        {"zone": "."},
        {"max_udp_payload": 100},
        {"unknown": 1},
    ],
)
def test_config_rejects_bad_settings(bad: dict[str, object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(bad, DnsConfig)


def test_config_normalises_names() -> None:
    config = msgspec.convert({"zone": "Mesh.Example", "ns_names": ["NS1.mesh.example"]}, DnsConfig)
    assert config.zone == "mesh.example." and config.ns_names == ["ns1.mesh.example."]
    assert config.soa_mname == "ns1.mesh.example." and config.ns_addresses == {
        "ns1.mesh.example.": ["127.0.0.1"]
    }
