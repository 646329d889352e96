"""Collective communication costs: bandwidth terms of the standard ring algorithms plus NCCL's
latency model, flat or hierarchical over nodes.

With ``n`` ranks, a message of ``S`` bytes (the full tensor) and a per-rank, per-direction link
bandwidth ``B`` (Patarasuk & Yuan 2009; Thakur et al. 2005), the bandwidth terms are:

* ring all-reduce:      ``2 (n-1)/n * S / B``
* all-gather:           ``(n-1)/n * S / B``   (``S`` = the gathered tensor)
* reduce-scatter:       ``(n-1)/n * S / B``   (``S`` = the tensor before scattering)
* point-to-point:       ``S / B``

**Latency** (:class:`Latency`) follows NCCL's own tuning model (``src/graph/tuning.cc``, Simple
protocol, the one large messages use): a collective costs a base latency plus one hop latency per
ring step, ``base + (steps - inter) * intra_step + inter * inter_step``, where a ring all-reduce has
``2 (n-1)`` steps of which ``2 (N-1)`` cross nodes (``N`` nodes), and all-gather / reduce-scatter
``n - 1`` steps of which ``N - 1`` cross. NCCL's constants: base 8.4 us, NVLink hop 3.4 us, network
hop 9.6 us. They matter for small messages over many ranks: a ZeRO-3 all-gather over 1,536 ranks pays
~1,535 hops whatever its size.

Which bandwidth a group gets (:func:`group_bandwidth`): ranks are laid out tensor-parallel fastest,
then data-parallel, then pipeline-parallel (Megatron's order). A group whose ranks all sit in one
node uses the intra-node link (NVLink); a group spanning nodes with ``k`` members per node runs rings
whose inter-node hops are spread over the ``k`` NICs (one NCCL channel per NIC), so its effective
bandwidth is ``min(intra, k * network)`` per rank (``k = 1``: just the NIC).

**Hierarchical all-reduce** over nodes (:func:`collective_s`): reduce-scatter inside each node
(``k`` ranks, NVLink), all-reduce of ``S / k`` across the ``N`` nodes (each of the ``k`` ranks on its
own NIC), all-gather inside the node. Its bandwidth cost is about the flat ring's, its latency
``2 (N-1)`` network hops instead of ``2 (n-1)`` hops; the cheaper of the two is used, as NCCL picks
the faster algorithm per call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import invalid
from ..hardware import DeviceSpec

__all__ = [
    "ring_all_reduce_s", "all_gather_s", "reduce_scatter_s", "p2p_s", "group_bandwidth", "spans_nodes",
    "Latency", "NCCL_LATENCY", "NO_LATENCY", "group_nodes", "collective_s",
]


@dataclass(frozen=True)
class Latency:
    """Per-collective latency: ``base_s`` once, ``intra_step_s`` per ring step inside a node and
    ``inter_step_s`` per step that crosses nodes."""

    base_s: float = 0.0
    intra_step_s: float = 0.0
    inter_step_s: float = 0.0

    def ring_s(self, steps: int, inter_steps: int) -> float:
        if steps <= 0:
            return 0.0
        return self.base_s + (steps - inter_steps) * self.intra_step_s + inter_steps * self.inter_step_s


#: NCCL's tuning model, Ring / Simple protocol (NVIDIA/nccl src/graph/tuning.cc, ``baseLat`` and
#: ``hwLat``; read at commit 01afd20a): 8.4 us base, 3.4 us per NVLink hop, 9.6 us per network hop.
NCCL_LATENCY = Latency(base_s=8.4e-6, intra_step_s=3.4e-6, inter_step_s=9.6e-6)
NO_LATENCY = Latency()


def _check(n: int, nbytes: float, bw: float) -> None:
    if not isinstance(n, int) or n < 1:
        raise invalid("collective", "n", "an integer >= 1", n)
    if nbytes < 0:
        raise invalid("collective", "bytes", "a number >= 0", nbytes)
    if not bw > 0:
        raise invalid("collective", "bandwidth", "a number > 0 (bytes/s)", bw)


def ring_all_reduce_s(nbytes: float, n: int, bandwidth: float, latency_s: float = 0.0) -> float:
    """Seconds for a ring all-reduce of ``nbytes`` over ``n`` ranks (+ ``latency_s`` when n > 1)."""
    _check(n, nbytes, bandwidth)
    return 2.0 * (n - 1) / n * nbytes / bandwidth + latency_s if n > 1 else 0.0


def all_gather_s(nbytes: float, n: int, bandwidth: float, latency_s: float = 0.0) -> float:
    """Seconds for a ring all-gather producing ``nbytes`` on every rank."""
    _check(n, nbytes, bandwidth)
    return (n - 1) / n * nbytes / bandwidth + latency_s if n > 1 else 0.0


def reduce_scatter_s(nbytes: float, n: int, bandwidth: float, latency_s: float = 0.0) -> float:
    """Seconds for a ring reduce-scatter of an ``nbytes`` tensor."""
    _check(n, nbytes, bandwidth)
    return (n - 1) / n * nbytes / bandwidth + latency_s if n > 1 else 0.0


def p2p_s(nbytes: float, bandwidth: float, latency_s: float = 0.0) -> float:
    """Seconds to send ``nbytes`` to one peer."""
    _check(2, nbytes, bandwidth)
    return nbytes / bandwidth + latency_s


def spans_nodes(device: DeviceSpec, size: int, stride: int) -> bool:
    """Whether a group of ``size`` ranks, ``stride`` apart, crosses a node boundary."""
    return size > 1 and stride * (size - 1) + 1 > device.devices_per_node


def _per_node(device: DeviceSpec, size: int, stride: int) -> int:
    """Members of the group in one node (when it spans nodes)."""
    return max(1, min(size, device.devices_per_node // stride)) if stride < device.devices_per_node else 1


def group_nodes(device: DeviceSpec, size: int, stride: int = 1) -> int:
    """Nodes a group of ``size`` ranks, ``stride`` apart, touches."""
    if not spans_nodes(device, size, stride):
        return 1
    return -(-size // _per_node(device, size, stride))


def group_bandwidth(device: DeviceSpec, size: int, stride: int = 1) -> float:
    """Per-rank bandwidth (bytes/s) of a group of ``size`` ranks spaced ``stride`` apart."""
    if size <= 1:
        return math.inf
    intra = device.intra_node_bytes_per_s or device.network_bytes_per_s
    if not spans_nodes(device, size, stride):
        if intra <= 0:
            raise invalid(f"DeviceSpec[{device.name!r}]", "intra_node_gbps", "> 0 for multi-device groups", device.intra_node_gbps)
        return intra
    net = device.network_bytes_per_s
    if net <= 0:
        raise invalid(f"DeviceSpec[{device.name!r}]", "network_gbps", "> 0 for groups spanning nodes", device.network_gbps)
    per_node = _per_node(device, size, stride)
    return min(intra, per_node * net) if per_node > 1 else net


def collective_s(kind: str, nbytes: float, device: DeviceSpec, size: int, stride: int = 1,
                 latency: Latency = NCCL_LATENCY) -> float:
    """Seconds of one ``kind`` collective (``"all_reduce"``, ``"all_gather"``, ``"reduce_scatter"``,
    ``"p2p"``) of ``nbytes`` over a group of ``size`` ranks ``stride`` apart on ``device``'s
    nodes: ring bandwidth term + NCCL latency; all-reduce across nodes also tries the hierarchical
    algorithm and takes the faster (module docstring)."""
    if size <= 1:
        return 0.0
    bw = group_bandwidth(device, size, stride)
    nodes = group_nodes(device, size, stride)
    if kind == "p2p":
        return p2p_s(nbytes, bw, latency.ring_s(1, 1 if nodes > 1 else 0))
    if kind in ("all_gather", "reduce_scatter"):
        fn = all_gather_s if kind == "all_gather" else reduce_scatter_s
        return fn(nbytes, size, bw, latency.ring_s(size - 1, nodes - 1))
    if kind != "all_reduce":
        raise invalid("collective_s", "kind", "one of 'all_reduce', 'all_gather', 'reduce_scatter', 'p2p'", kind)
    flat = ring_all_reduce_s(nbytes, size, bw, latency.ring_s(2 * (size - 1), 2 * (nodes - 1)))
    k = size // nodes if nodes > 1 else 1
    if nodes == 1 or k == 1:
        return flat
    intra = device.intra_node_bytes_per_s or device.network_bytes_per_s
    within = latency.ring_s(k - 1, 0)
    hier = (reduce_scatter_s(nbytes, k, intra, within) + all_gather_s(nbytes, k, intra, within)
            + ring_all_reduce_s(nbytes / k, nodes, device.network_bytes_per_s, latency.ring_s(2 * (nodes - 1), 2 * (nodes - 1))))
    return min(flat, hier)
