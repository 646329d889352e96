"""Device specs: a catalog kept as a dated, sourced data file (``profilers/data/devices.toml``).

Torch-free. Units are SI in code (FLOP/s, bytes, bytes/s, W); the data file uses TFLOP/s, GB
(10^9 bytes) and GB/s for readability. Every row carries ``source`` and ``date``.

    >>> from profilers import hardware
    >>> h100 = hardware.get("H100-SXM")
    >>> h100.peak_flops_per_s("bf16") / 1e12
    989.4
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Mapping

from .config import ConfigError, check_non_negative, check_positive, invalid, serializable

__all__ = ["DTYPES", "DeviceSpec", "get", "names", "catalog", "load", "register", "host"]

#: dtypes a device may list a dense peak for (the key in ``DeviceSpec.peak_tflops``)
DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8")


@serializable("device_spec")
@dataclass(frozen=True)
class DeviceSpec:
    """One device's published (or measured, for the host) figures.

    ``peak_tflops`` maps dtype -> dense peak in TFLOP/s (TOPS for int8), without structured
    sparsity. A dtype that is absent is unsupported on the device. Bandwidths are per device and
    per direction, in GB/s.
    """

    name: str
    kind: str  # "gpu", "cpu" or "accelerator"
    vendor: str
    peak_tflops: Mapping[str, float]
    memory_gb: float
    memory_bandwidth_gbps: float
    intra_node_gbps: float = 0.0  # NVLink / Infinity Fabric, per device, one direction
    pcie_gbps: float = 0.0  # host link, one direction
    network_gbps: float = 0.0  # inter-node bytes/s per device (e.g. one 400 Gb/s NIC = 50 GB/s)
    devices_per_node: int = 1
    tdp_watts: float = 0.0
    #: architecture generation ("turing", "ampere", "ada", "hopper", "blackwell", "cdna3", "cpu"): a
    #: device without calibration rows of its own takes its generation's calibrated efficiency
    generation: str = ""
    source: str = ""
    date: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        owner = f"DeviceSpec[{self.name!r}]"
        if not isinstance(self.name, str) or not self.name:
            raise invalid("DeviceSpec", "name", "a non-empty string", self.name)
        if self.kind not in ("gpu", "cpu", "accelerator"):
            raise invalid(owner, "kind", "one of 'gpu', 'cpu', 'accelerator'", self.kind)
        if not isinstance(self.peak_tflops, Mapping) or not self.peak_tflops:
            raise invalid(owner, "peak_tflops", "a non-empty mapping dtype -> TFLOP/s", self.peak_tflops)
        for dt, v in self.peak_tflops.items():
            if dt not in DTYPES:
                raise invalid(owner, "peak_tflops", "keyed by " + ", ".join(DTYPES), dt)
            check_positive(owner, f"peak_tflops[{dt!r}]", v)
        object.__setattr__(self, "peak_tflops", dict(self.peak_tflops))
        check_positive(owner, "memory_gb", self.memory_gb)
        check_positive(owner, "memory_bandwidth_gbps", self.memory_bandwidth_gbps)
        for f in ("intra_node_gbps", "pcie_gbps", "network_gbps", "tdp_watts"):
            check_non_negative(owner, f, getattr(self, f))
        if not isinstance(self.devices_per_node, int) or self.devices_per_node < 1:
            raise invalid(owner, "devices_per_node", "an integer >= 1", self.devices_per_node)

    def __hash__(self) -> int:
        # the generated frozen-dataclass hash fails on the peak_tflops dict; hash its items instead
        return hash((self.name, self.kind, tuple(sorted(self.peak_tflops.items())), self.memory_gb,
                     self.memory_bandwidth_gbps))

    # ---- SI accessors -------------------------------------------------------------------------
    def supports(self, dtype: str) -> bool:
        return dtype in self.peak_tflops

    def peak_flops_per_s(self, dtype: str) -> float:
        """Dense peak FLOP/s for ``dtype``; a clear error when the device does not support it."""
        if dtype not in self.peak_tflops:
            raise invalid(
                f"DeviceSpec[{self.name!r}]", "dtype",
                "one of the dtypes this device supports: " + ", ".join(self.peak_tflops), dtype,
            )
        return self.peak_tflops[dtype] * 1e12

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * 1e9

    @property
    def memory_bandwidth_bytes_per_s(self) -> float:
        return self.memory_bandwidth_gbps * 1e9

    @property
    def intra_node_bytes_per_s(self) -> float:
        return self.intra_node_gbps * 1e9

    @property
    def network_bytes_per_s(self) -> float:
        return self.network_gbps * 1e9


# --------------------------------------------------------------------------------------------
# the catalog
# --------------------------------------------------------------------------------------------

_CATALOG: dict[str, DeviceSpec] = {}


def _rows_from_toml(text: str, origin: str) -> list[DeviceSpec]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"devices file {origin} is not valid TOML: {e}") from None
    rows = data.get("device")
    if not isinstance(rows, list):
        raise invalid(f"devices file {origin}", "device", "an array of [[device]] tables", type(rows).__name__)
    out = []
    known = {f.name for f in dataclasses.fields(DeviceSpec)}
    for i, row in enumerate(rows):
        extra = set(row) - known
        if extra:
            raise invalid(f"{origin}: device[{i}]", "<field name>", "one of " + ", ".join(sorted(known)), sorted(extra)[0])
        for req in ("name", "kind", "vendor", "peak_tflops", "memory_gb", "memory_bandwidth_gbps", "source", "date"):
            if req not in row:
                raise invalid(f"{origin}: device[{i}]", req, "present (every row is dated and sourced)", None)
        out.append(DeviceSpec(**row))
    return out


def _ensure_loaded() -> None:
    if _CATALOG:
        return
    text = resources.files("profilers").joinpath("data/devices.toml").read_text()
    for spec in _rows_from_toml(text, "profilers/data/devices.toml"):
        _CATALOG[spec.name.lower()] = spec


def register(spec: DeviceSpec) -> DeviceSpec:
    """Add or replace a device in this process's catalog."""
    if not isinstance(spec, DeviceSpec):
        raise invalid("hardware.register", "spec", "a DeviceSpec", type(spec).__name__)
    _ensure_loaded()
    _CATALOG[spec.name.lower()] = spec
    return spec


def read(path: str | Path) -> list[DeviceSpec]:
    """The ``[[device]]`` rows of a TOML file (same schema as ours), without adding them to the catalog."""
    p = Path(path)
    if not p.is_file():
        raise invalid("hardware.read", "path", "an existing TOML file", str(path))
    return _rows_from_toml(p.read_text(), str(p))


def load(path: str | Path) -> list[DeviceSpec]:
    """Add the ``[[device]]`` rows of a user's TOML file to the catalog (same schema as ours)."""
    p = Path(path)
    if not p.is_file():
        raise invalid("hardware.load", "path", "an existing TOML file", str(path))
    return [register(s) for s in _rows_from_toml(p.read_text(), str(p))]


def names() -> list[str]:
    _ensure_loaded()
    return [s.name for s in _CATALOG.values()]


def catalog() -> dict[str, DeviceSpec]:
    _ensure_loaded()
    return {s.name: s for s in _CATALOG.values()}


def get(name: str | DeviceSpec) -> DeviceSpec:
    """Look a device up by name (case-insensitive); ``"host"`` is this machine's CPU."""
    if isinstance(name, DeviceSpec):
        return name
    _ensure_loaded()
    if isinstance(name, str) and name.lower() == "host":
        return host()
    spec = _CATALOG.get(name.lower()) if isinstance(name, str) else None
    if spec is None:
        raise invalid("hardware", "device", "one of " + ", ".join(names()) + ", 'host'", name)
    return spec


def host() -> DeviceSpec:
    """This machine's CPU as a DeviceSpec (see ``profilers.host``)."""
    from .host import host_spec

    return host_spec()
