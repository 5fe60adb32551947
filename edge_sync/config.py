"""Settings of one edge agent, validated by msgspec.

Loaded by ``syncmesh.configfile.load_config(path, EdgeConfig, "SYNCMESH_EDGE")``:
an unknown key or a bad value is rejected with the key's path and the reason.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from syncmesh.limits import LimitsConfig
from syncmesh.nats_config import NatsConfig
from syncmesh.schema import Gateway, Label, Locality, Port
from syncmesh.validate import is_ip, parse_cidr

__all__ = [
    "FileSourceConfig",
    "ConsulSourceConfig",
    "NacosSourceConfig",
    "SourceConfig",
    "FilterConfig",
    "LoadSourceConfig",
    "GatewayLoadConfig",
    "HaConfig",
    "EdgeConfig",
    "RESERVED_CLUSTER_NAMES",
    "SourceKind",
    "DEFAULT_METRICS_PORT",
]

SourceKind = Literal["file", "consul", "nacos"]
# The agent's HTTP endpoints when metrics_port is left out (the OpenTelemetry
# prometheus exporter's customary port).
DEFAULT_METRICS_PORT = 9464
PositiveSeconds = Annotated[float, Meta(gt=0, le=86400)]
# DNS subset names (``<version>.version.<service>.<namespace>.svc``) put these words
# where a gateway target name has its cluster: a cluster of that name would make
# its SRV target names read as subset names.
RESERVED_CLUSTER_NAMES = frozenset({"version", "tag"})


class FileSourceConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    """A TOML or YAML service file (``.yaml``/``.yml`` is YAML, anything else TOML)."""

    path: str = "services.toml"
    poll_interval_s: Annotated[float, Meta(gt=0, le=60)] = 0.2
    # A full re-read even when mtime and size look unchanged (coarse-mtime filesystems).
    rehash_interval_s: Annotated[float, Meta(gt=0, le=3600)] = 2.0


class ConsulSourceConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    address: str = "127.0.0.1:8500"
    scheme: Literal["http", "https"] = "http"
    token: str = ""
    # The ACL token from a file, read again when the file changes (rotation without
    # a restart: the next request carries the new token).
    token_file: str = ""
    ca_file: str = ""
    datacenter: str = ""
    # Blocking-query wait; Consul caps it at 10 minutes.
    wait_s: Annotated[float, Meta(ge=1, le=600)] = 55.0
    # Hard bound of TCP connections to Consul (one aiohttp connector for all requests).
    max_connections: Annotated[int, Meta(ge=4, le=64)] = 48
    # Concurrent /v1/health/service/<name> fetches; two more connections hold the long polls.
    fetch_concurrency: Annotated[int, Meta(ge=1, le=62)] = 32
    # Token bucket for the blocking-query loops, so an erroring Consul is not hammered.
    rate_per_s: Annotated[float, Meta(gt=0, le=1000)] = 5.0
    burst: Annotated[int, Meta(ge=1, le=1000)] = 10
    request_timeout_s: PositiveSeconds = 10.0
    # A catalog change that no check change explains waits this long for one before a re-list.
    attribution_grace_s: Annotated[float, Meta(ge=0, le=60)] = 1.0
    # Unexplained changes in a churning catalog must not turn into back-to-back full re-lists.
    min_relist_interval_s: Annotated[float, Meta(ge=0, le=3600)] = 30.0
    # Anti-entropy: re-fetch every service this often (0 = never).
    full_relist_interval_s: Annotated[float, Meta(ge=0, le=86400)] = 600.0
    # Consul's own server entry is infrastructure, not a routable service.
    skip_services: list[str] = msgspec.field(default_factory=lambda: ["consul"])

    def __post_init__(self) -> None:
        if self.token and self.token_file:
            raise ValueError("consul: set token or token_file, not both")
        if self.fetch_concurrency + 2 > self.max_connections:
            raise ValueError(
                f"fetch_concurrency ({self.fetch_concurrency}) + 2 long polls must not exceed "
                f"max_connections ({self.max_connections})"
            )


class NacosSourceConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    server_addr: str = "127.0.0.1:8848"
    username: str = ""
    password: str = ""
    # The password from a file; when the file changes the agent logs in again with it.
    password_file: str = ""
    # How often a password_file is checked for a new password.
    secret_check_s: Annotated[float, Meta(gt=0, le=3600)] = 5.0
    # Nacos namespace ids; "public" (or "") is syncmesh namespace "default".
    namespaces: list[str] = msgspec.field(default_factory=lambda: ["public"])
    groups: Annotated[list[str], Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["DEFAULT_GROUP"]
    )
    # New services are found only by listing (pushes cover known ones): 1 s keeps a new
    # service within the 1.5 s Nacos-to-DNS goal; one paged list per namespace and group.
    list_interval_s: Annotated[float, Meta(gt=0, le=3600)] = 1.0
    # Safety net under the pushes: every known service's instances are read again at
    # least once per this many seconds, a slice per listing round (0 = never, pushes only).
    # Idle cost is the listing plus services/reread_interval_s reads per second.
    reread_interval_s: Annotated[float, Meta(ge=0, le=86400)] = 300.0
    page_size: Annotated[int, Meta(ge=1, le=1000)] = 500
    # Where the SDK may write its cache and logs; "" = a private temporary folder.
    # The SDK's disk cache is never read at start (it could resurrect old instances).
    work_dir: str = ""
    timeout_ms: Annotated[int, Meta(ge=100, le=120000)] = 10000

    def __post_init__(self) -> None:
        if self.password and self.password_file:
            raise ValueError("nacos: set password or password_file, not both")


class SourceConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    kind: SourceKind = "file"
    file: FileSourceConfig = msgspec.field(default_factory=FileSourceConfig)
    consul: ConsulSourceConfig = msgspec.field(default_factory=ConsulSourceConfig)
    nacos: NacosSourceConfig = msgspec.field(default_factory=NacosSourceConfig)


class FilterConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    """Opt-out filters: every service is synced unless excluded.

    Patterns are shell globs matched against the source name and against
    ``<namespace>/<source name>``.
    """

    include: list[str] = msgspec.field(default_factory=lambda: ["*"])
    exclude: list[str] = []


LoadSourceKind = Literal["file", "http", "consul", "nacos"]
_LOAD_REQUIRED: dict[str, tuple[str, ...]] = {
    "file": ("path",),
    "http": ("url",),
    "consul": ("service",),
    "nacos": ("service", "metadata_key"),
}


class LoadSourceConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    """Where one gateway's load comes from: a number from 0 to 100 (``42``, ``42.4``
    and ``42%`` all read as 42). A source that fails or says anything else makes the
    load unknown, never 0."""

    # The gateway it describes, as listed in [[gateways]].
    address: str
    port: Port
    kind: LoadSourceKind
    # file: a file holding the number.
    path: str = ""
    # http: GET this URL (2xx); the body is the number.
    url: str = ""
    # consul, nacos: the service one of whose instances is this gateway (same address
    # and port; Consul also any tagged address, or the instance with service_id).
    service: str = ""
    # consul: the instance's Service.ID, when no address of it is the gateway's.
    service_id: str = ""
    # consul: the service meta key holding the number (unless check_id is set).
    meta_key: str = "load"
    # consul: read the output of the instance's check with this CheckID instead
    # (a TTL or script check; an HTTP check's "... Output: 42" reads as 42).
    check_id: str = ""
    # nacos: the group and namespace id of service, and the instance metadata key.
    group: str = "DEFAULT_GROUP"
    namespace: str = "public"
    metadata_key: str = "load"

    def __post_init__(self) -> None:
        for name in _LOAD_REQUIRED[self.kind]:
            if not getattr(self, name):
                raise ValueError(
                    f"load source {self.address}:{self.port}: kind {self.kind!r} needs {name}"
                )
        if self.kind == "consul" and not (self.meta_key or self.check_id):
            raise ValueError(
                f"load source {self.address}:{self.port}: kind 'consul' needs meta_key or check_id"
            )


class GatewayLoadConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    """Gateway loads for the beat (``Gateway.load``): registries rank an overloaded
    cluster last and weigh SRV records by headroom. A gateway without a source has an
    unknown load. Consul and Nacos sources use the connection settings of
    [source.consul] / [source.nacos], whatever source.kind is."""

    # Every source is read this often; the beat after a read carries the value.
    interval_s: Annotated[float, Meta(ge=0.1, le=3600)] = 2.0
    # A read that moves a gateway's load by this many points from what the last
    # beat said (or turns it known or unknown) sends a beat at once instead of at
    # the next beat interval; 5 matches the registries' default step_pct, below
    # which they do not change answers. 0: loads wait for the next beat.
    beat_on_change_pct: Annotated[int, Meta(ge=0, le=100)] = 5
    # A read that takes longer fails (the load turns unknown).
    timeout_s: Annotated[float, Meta(gt=0, le=60)] = 1.0
    sources: list[LoadSourceConfig] = []


def _gateway_key(address: str, port: int) -> tuple[str, int]:
    """Addresses compared in canonical form (``FD00::9`` is ``fd00::9``)."""
    try:
        return str(ipaddress.ip_address(address)), port
    except ValueError:
        return address, port


class HaConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    """Several agents for one cluster, one of which publishes (docs/edge.md, "Standby agents")."""

    # Part of a standby group: start as a standby while another agent leads, take over
    # when its lease runs out, and step down to standby (instead of exiting with
    # status 3) when another agent took over. Off: the newest starter always claims.
    standby: bool = False
    # The leader's lease: this many of its beat intervals since its claim or its last
    # beat, measured on the NATS server's clock (the stored messages' timestamps). Keep
    # it below the registries' stale.after_beats (3): a takeover then completes before
    # any registry sees the cluster stale.
    lease_beats: Annotated[float, Meta(ge=1.5, le=100)] = 2.5
    # How often a standby reads the claim and the beat and announces itself; 0 = half
    # the beat interval (at most 1 s).
    poll_interval_s: Annotated[float, Meta(ge=0, le=60)] = 0.0


class EdgeConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    cluster: Label
    nats: NatsConfig = msgspec.field(default_factory=NatsConfig)
    source: SourceConfig = msgspec.field(default_factory=SourceConfig)
    gateways: list[Gateway] = []
    locality: Locality = Locality()
    client_cidrs: list[str] = []
    beat_interval_s: Annotated[float, Meta(gt=0, le=3600)] = 2.0
    # /metrics, /healthz and /readyz. Left out: DEFAULT_METRICS_PORT, or an ephemeral
    # port (logged) when that one is taken (several agents on one host or in one
    # process); 0 = off; -1 = an ephemeral port; any other port must be free.
    metrics_address: str = "127.0.0.1"
    metrics_port: Annotated[int, Meta(ge=-1, le=65535)] | None = None
    filters: FilterConfig = msgspec.field(default_factory=FilterConfig)
    publish_batch: Annotated[int, Meta(ge=1, le=10000)] = 256
    publish_timeout_s: Annotated[float, Meta(gt=0, le=120)] = 5.0
    # Tombstones expire from the stream after this long (Nats-TTL header); every
    # consumer that was running has seen them by then, and one that starts later has
    # nothing to forget. 0 = keep them forever.
    tombstone_ttl_s: Annotated[int, Meta(ge=0, le=315_360_000)] = 86400
    agent_version: str = ""
    # What the registry accepts (syncmesh.limits); set it like the registry's `limits`
    # so that the agent refuses what the registry would reject.
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    load: GatewayLoadConfig = msgspec.field(default_factory=GatewayLoadConfig)
    ha: HaConfig = msgspec.field(default_factory=HaConfig)

    def __post_init__(self) -> None:
        if self.cluster in RESERVED_CLUSTER_NAMES:
            raise ValueError(
                f"cluster: {self.cluster!r} is reserved (DNS subset names use it as a marker: "
                f"<version>.version.<service>.<namespace>.svc); choose another name"
            )
        # The registry's own checks (syncmesh.validate) on what goes into every beat:
        # a config it would reject is refused here, naming the key.
        for i, cidr in enumerate(self.client_cidrs):
            try:
                parse_cidr(cidr)
            except ValueError as exc:
                raise ValueError(
                    f"client_cidrs[{i}]: {cidr!r} is not an address range ({exc})"
                ) from None
        for i, gateway in enumerate(self.gateways):
            if not is_ip(gateway.address):
                # Gateways become A/AAAA records and are probed by every replica: a host
                # name would need CNAME chasing by resolvers and a lookup on each replica
                # per probe (docs/decisions.md, "Gateways are IP addresses").
                raise ValueError(
                    f"gateways[{i}].address: {gateway.address!r} is not an IP address "
                    "(gateways are answered as A/AAAA records; host names are not supported)"
                )
            if gateway.load is not None:
                raise ValueError(
                    f"gateways[{i}].load: set by the agent from [load] sources, not in the config"
                )
        if len(self.gateways) > self.limits.max_gateways_per_cluster:
            raise ValueError(
                f"gateways: {len(self.gateways)} > limits.max_gateways_per_cluster "
                f"({self.limits.max_gateways_per_cluster})"
            )
        if len(self.client_cidrs) > self.limits.max_client_cidrs:
            raise ValueError(
                f"client_cidrs: {len(self.client_cidrs)} > limits.max_client_cidrs "
                f"({self.limits.max_client_cidrs})"
            )
        gateways = {_gateway_key(g.address, g.port) for g in self.gateways}
        seen: set[tuple[str, int]] = set()
        for i, source in enumerate(self.load.sources):
            key = _gateway_key(source.address, source.port)
            if key not in gateways:
                raise ValueError(
                    f"load.sources[{i}]: {source.address}:{source.port} is not one of [[gateways]]"
                )
            if key in seen:
                raise ValueError(
                    f"load.sources[{i}]: a second source for {source.address}:{source.port}"
                )
            seen.add(key)
