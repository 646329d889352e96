"""Collective communication costs (bandwidth terms of the standard ring algorithms).

With ``n`` ranks, a message of ``S`` bytes (the full tensor) and a per-rank, per-direction link
bandwidth ``B`` (Patarasuk & Yuan 2009; Thakur et al. 2005):

* ring all-reduce:      ``2 (n-1)/n * S / B``
* all-gather:           ``(n-1)/n * S / B``   (``S`` = the gathered tensor)
* reduce-scatter:       ``(n-1)/n * S / B``   (``S`` = the tensor before scattering)
* point-to-point:       ``S / B``

Latency terms (``alpha``) are left out: they matter below ~1 MB messages, which large-model
training rarely sends.

Which bandwidth a group gets (:func:`group_bandwidth`): ranks are laid out tensor-parallel fastest,
then data-parallel, then pipeline-parallel (Megatron's order). A group whose ranks all sit in one
node uses the intra-node link (NVLink); a group spanning nodes with ``k`` members per node runs a
hierarchical ring whose inter-node step moves ``1/k`` of the data through each member's NIC, so its
effective bandwidth is ``min(intra, k * network)`` per rank (``k = 1``: just the NIC).
"""

from __future__ import annotations

import math

from ..config import invalid
from ..hardware import DeviceSpec

__all__ = ["ring_all_reduce_s", "all_gather_s", "reduce_scatter_s", "p2p_s", "group_bandwidth", "spans_nodes"]


def _check(n: int, nbytes: float, bw: float) -> None:
    if not isinstance(n, int) or n < 1:
        raise invalid("collective", "n", "an integer >= 1", n)
    if nbytes < 0:
        raise invalid("collective", "bytes", "a number >= 0", nbytes)
    if not bw > 0:
        raise invalid("collective", "bandwidth", "a number > 0 (bytes/s)", bw)


def ring_all_reduce_s(nbytes: float, n: int, bandwidth: float) -> float:
    """Seconds for a ring all-reduce of ``nbytes`` over ``n`` ranks."""
    _check(n, nbytes, bandwidth)
    return 2.0 * (n - 1) / n * nbytes / bandwidth if n > 1 else 0.0


def all_gather_s(nbytes: float, n: int, bandwidth: float) -> float:
    """Seconds for a ring all-gather producing ``nbytes`` on every rank."""
    _check(n, nbytes, bandwidth)
    return (n - 1) / n * nbytes / bandwidth if n > 1 else 0.0


def reduce_scatter_s(nbytes: float, n: int, bandwidth: float) -> float:
    """Seconds for a ring reduce-scatter of an ``nbytes`` tensor."""
    _check(n, nbytes, bandwidth)
    return (n - 1) / n * nbytes / bandwidth if n > 1 else 0.0


def p2p_s(nbytes: float, bandwidth: float) -> float:
    """Seconds to send ``nbytes`` to one peer."""
    _check(2, nbytes, bandwidth)
    return nbytes / bandwidth


def spans_nodes(device: DeviceSpec, size: int, stride: int) -> bool:
    """Whether a group of ``size`` ranks, ``stride`` apart, crosses a node boundary."""
    return size > 1 and stride * (size - 1) + 1 > device.devices_per_node


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
    per_node = max(1, device.devices_per_node // stride) if stride < device.devices_per_node else 1
    return min(intra, per_node * net) if per_node > 1 else net
