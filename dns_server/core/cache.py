"""Precomputed answers, in two levels, and who maps to which ranking class.

Level 2, ``answers(cls)[question]``: the ``Rendered`` wire templates of one
question (lower-case name + qtype + qclass) for one ranking class.

Level 1, ``by_host[client][packet_key(packet)]``: whole responses (minus the
id) for a query packet as a client sent it (same flags and OPT) but with the
question name folded to lower case, built from level 2 without dnslib. A hit
is two dict lookups and one concatenation; it is what keeps Python near a C
server. Only queries whose answer depends on nothing but the packet and the
client's class go there (no ECS, no other EDNS option).

``make_lookup`` builds the one function every UDP reader calls for that hit.
Why the name is folded: a resolver doing 0x20 (Unbound ``use-caps-for-id``,
Knot Resolver by default) randomises the case of every query it sends, so a
key of the exact bytes would miss nearly always. The answer must still echo
the question byte for byte, so a folded hit splices the client's name in.

Both levels, and the map of clients to classes, are bounded; a view change
drops exactly the level-2 entries its tags name and every level-1 packet
built from them. When full, each evicts its oldest entry (first in, first
out) rather than clearing itself: a working set just over the bound used to
lose every hot packet at each clear, and a stream of new client addresses
(many resolvers, or a spoofed flood) threw every known client's class away.
The hot path does not record use (it would cost the hit path a write), so
it is FIFO, not LRU; a popular entry evicted comes back on its next miss.
"""

from __future__ import annotations

import ipaddress
import itertools
import sys
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator

from dns_server.core.render import Rendered
from dns_server.core.resolver import CountsTag, NamespaceTag, Tag
from syncmesh.view_api import ViewChange

__all__ = [
    "AnswerCache",
    "HostKey",
    "HotLookup",
    "Packets",
    "PacketEntry",
    "ipv4_key",
    "make_lookup",
    "packet_key",
]

# (the response without the id, or the rotation of them when the answer's records
# rotate; the hit counter cell of the answer). A single response is kept as bytes:
# at 100,000 names the hit path's reads of a rotation object were cache misses.
PacketEntry = tuple[bytes | Iterator[bytes], list[int]]
Packets = dict[bytes, PacketEntry]
# A client address as text, or an IPv4 address as the integer ``ipv4_key`` gives:
# the batched UDP reader finds it in the kernel's sockaddr without building a string.
HostKey = str | int
# (query packet, client address) -> the response, or None: not a level-1 hit.
HotLookup = Callable[[bytes, HostKey], bytes | None]
# (class, key): a level-2 answer, or a level-1 packet.
_Slot = tuple[str | None, bytes]


def packet_key(data: bytes) -> bytes:
    """The level-1 key of a query packet: ``data[2:]`` with ASCII letters of the
    question name lowered (DNS compares names case-insensitively, RFC 4343).

    Only bytes before the first zero byte after the header are folded: that is
    the whole name unless a label holds a zero byte, and then the rest is kept
    as sent, so the key still never merges two different questions. Bytes
    past the name (qtype 0x41 is HTTPS, 0x61 is not) are never touched.
    """
    end = data.find(0, 12)
    if end < 0:
        return data[2:]
    return data[2:12] + data[12:end].lower() + data[end:]


def ipv4_key(address: str) -> int | None:
    """The integer the batched reader reads for this IPv4 address: its four
    network-order bytes as one native-order machine word (None: not IPv4)."""
    try:
        packed = ipaddress.IPv4Address(address).packed
    except ValueError:
        return None
    return int.from_bytes(packed, sys.byteorder)


def make_lookup(by_host: dict[HostKey, Packets]) -> HotLookup:
    """The level-1 lookup, the measured hot path of every UDP reader (loop,
    thread, batch): the response to ``data`` from ``host``, or None.

    Stored keys and the question names inside the stored responses are
    folded (``packet_key``), so a query already in lower case (stub
    resolvers, dnsperf) hits with one lookup and one concatenation. A query
    with upper-case letters misses that lookup; it is then folded, looked up again and answered with its own name
    spliced in (same length, so the compression pointers after it hold).
    A closure over ``by_host``: locals are the cheapest reads Python has, and
    ``by_host`` is only ever mutated in place.
    """

    one = bytes  # a closure cell: cheaper to read than the builtin

    def lookup(data: bytes, host: HostKey) -> bytes | None:
        # get() rather than [] in a try: behind a 0x20 resolver most queries
        # miss the first probe, and a raised KeyError cost more than the fold.
        packets = by_host.get(host)
        if packets is None:
            return None
        entry = packets.get(data[2:])
        if entry is not None:
            entry[1][0] += 1
            stored = entry[0]
            return data[:2] + (stored if stored.__class__ is one else next(stored))  # type: ignore[arg-type]
        # The fold of ``packet_key``, inlined: ``end`` is needed for the splice.
        end = data.find(0, 12)
        if end < 0:
            return None
        name = data[12:end]
        entry = packets.get(data[2:12] + name.lower() + data[end:])
        if entry is None:
            return None
        entry[1][0] += 1
        stored = entry[0]
        response: bytes = stored if stored.__class__ is one else next(stored)  # type: ignore[arg-type]
        return data[:2] + response[:10] + name + response[end - 2 :]

    return lookup


class AnswerCache:
    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._answers: dict[str | None, dict[bytes, Rendered]] = {}
        self._packets: dict[str | None, Packets] = {}
        self._packet_count = 0
        # Client address -> level-1 dict of its class (the hot path's first lookup).
        self.by_host: dict[HostKey, Packets] = {}
        self.lookup: HotLookup = make_lookup(self.by_host)
        # Client address or ECS subnet -> class, for the slow path; oldest first.
        self._classes: OrderedDict[Hashable, str | None] = OrderedDict()
        # Every level-1 packet, oldest first, with the answer it was built from.
        self._packet_order: OrderedDict[_Slot, Rendered] = OrderedDict()
        self._order: OrderedDict[_Slot, frozenset[Tag]] = OrderedDict()
        self._index: dict[Tag, set[_Slot]] = {}

    def __len__(self) -> int:
        return len(self._order)

    @property
    def packet_count(self) -> int:
        return self._packet_count

    # -- client classes -------------------------------------------------------

    def known_class(self, client: Hashable) -> tuple[bool, str | None]:
        if client in self._classes:
            return True, self._classes[client]
        return False, None

    def remember_class(self, client: Hashable, client_class: str | None) -> None:
        if client not in self._classes and len(self._classes) >= self._max:
            oldest, _ = self._classes.popitem(last=False)
            if isinstance(oldest, str):
                self.by_host.pop(oldest, None)
                alias = ipv4_key(oldest)
                if alias is not None:
                    self.by_host.pop(alias, None)
        self._classes[client] = client_class
        if isinstance(client, str):
            packets = self.by_host[client] = self._packets_of(client_class)
            alias = ipv4_key(client)
            if alias is not None:
                self.by_host[alias] = packets

    def _packets_of(self, client_class: str | None) -> Packets:
        packets = self._packets.get(client_class)
        if packets is None:
            packets = self._packets[client_class] = {}
        return packets

    # -- level 2 --------------------------------------------------------------

    def answers(self, client_class: str | None) -> dict[bytes, Rendered]:
        answers = self._answers.get(client_class)
        if answers is None:
            answers = self._answers[client_class] = {}
        return answers

    def store(
        self, client_class: str | None, key: bytes, rendered: Rendered, tags: frozenset[Tag]
    ) -> None:
        slot = (client_class, key)
        if slot in self._order:
            self._drop(slot)
        while len(self._order) >= self._max:
            self._drop(next(iter(self._order)))
        self.answers(client_class)[key] = rendered
        self._order[slot] = tags
        for tag in tags:
            self._index.setdefault(tag, set()).add(slot)

    def _drop(self, slot: _Slot) -> None:
        tags = self._order.pop(slot, None)
        rendered = self._answers.get(slot[0], {}).pop(slot[1], None)
        if rendered is not None and rendered.packets:
            packets = self._packets_of(slot[0])
            for packet in rendered.packets:
                if packets.pop(packet, None) is not None:
                    self._packet_count -= 1
                self._packet_order.pop((slot[0], packet), None)
        for tag in tags or ():
            members = self._index.get(tag)
            if members is not None:
                members.discard(slot)
                if not members:
                    del self._index[tag]

    # -- level 1 --------------------------------------------------------------

    def store_packet(
        self, client_class: str | None, key: bytes, rendered: Rendered, responses: list[bytes]
    ) -> bytes:
        """Remember the responses (without id, question name as in ``key``) to the
        packets whose ``packet_key`` is ``key``; returns the one for this packet (the
        next hit gets the next one when there are several)."""
        packets = self._packets_of(client_class)
        if key not in packets:
            while self._packet_count >= self._max and self._packet_order:
                self._evict_oldest_packet()
            self._packet_count += 1
        first = responses[0]
        stored: bytes | Iterator[bytes] = first
        if len(responses) > 1:
            stored = itertools.cycle(responses)
            first = next(stored)
        packets[key] = (stored, rendered.cell)
        rendered.packets.add(key)
        slot = (client_class, key)
        previous = self._packet_order.pop(slot, None)
        if previous is not None and previous is not rendered:
            previous.packets.discard(key)
        self._packet_order[slot] = rendered
        return first

    def _evict_oldest_packet(self) -> None:
        (client_class, key), rendered = self._packet_order.popitem(last=False)
        rendered.packets.discard(key)
        if self._packets_of(client_class).pop(key, None) is not None:
            self._packet_count -= 1

    def _clear_packets(self) -> None:
        for packets in self._packets.values():
            packets.clear()
        for answers in self._answers.values():
            for rendered in answers.values():
                rendered.packets.clear()
        self._packet_order.clear()
        self._packet_count = 0

    # -- view changes ---------------------------------------------------------

    def invalidate(self, change: ViewChange) -> int:
        """Drop what ``change`` affects; returns how many level-2 entries went."""
        if change.everything:
            dropped = len(self._order)
            # Cleared in place: ``by_host`` shares the level-1 dicts, and is
            # cleared too because client classes may have moved.
            for answers in self._answers.values():
                answers.clear()
            self._clear_packets()
            self._classes.clear()
            self.by_host.clear()
            self._order.clear()
            self._index.clear()
            return dropped
        dropped = 0
        tags: list[Tag] = []
        for key in change.services:
            tags += (key, NamespaceTag(key.namespace))
        tags += map(CountsTag, change.counts)
        for tag in tags:
            for slot in list(self._index.get(tag, ())):
                self._drop(slot)
                dropped += 1
        return dropped
