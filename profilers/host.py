"""This machine's CPU as a :class:`~profilers.hardware.DeviceSpec`: detected, then measured.

Detection (:func:`cpu_info`) reads psutil, ``/proc/cpuinfo``, the process's affinity mask and the
cgroup CPU/memory limits; it imports no torch and is cheap. :func:`host_spec` additionally times a
large ``torch.matmul`` loop (peak FLOP/s) and a large tensor copy (memory bandwidth) and builds a
DeviceSpec from those *measured* numbers; the formula peak

    peak FLOP/s = cores x GHz x FLOP/cycle,   FLOP/cycle = SIMD fp32 lanes x 2 (FMA) x FMA units

is recorded in the spec's ``notes`` next to the measured one. torch is imported only inside the
measuring functions, so ``profilers.hardware`` stays torch-free.

    >>> from profilers.host import host_spec, host_device_name
    >>> host_device_name()                      # doctest: +SKIP
    'cpu: AMD EPYC (2 cores)'
    >>> host_spec().peak_flops_per_s("fp32")   # doctest: +SKIP
    145000000000.0

Run ``python -m profilers.host`` to print the figures.
"""

from __future__ import annotations

import datetime
import functools
import math
import os
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path

from .config import invalid
from .hardware import DeviceSpec

__all__ = [
    "CpuInfo",
    "HostMeasurement",
    "cpu_info",
    "formula_peak_flops",
    "measure_matmul_flops",
    "measure_memory_bandwidth",
    "measure_host",
    "host_spec",
    "host_device_name",
]


@dataclass(frozen=True)
class CpuInfo:
    """What the OS tells us about this CPU (no measurement)."""

    model: str
    vendor: str
    family: int | None  # x86 "cpu family" (25 = AMD Zen 3/4, 26 = Zen 5, 6 = Intel Core/Xeon)
    physical_cores: int  # whole machine
    logical_cores: int  # whole machine (SMT threads)
    usable_logical: int  # logical CPUs this process may run on (affinity mask, cgroup quota)
    usable_cores: int  # physical cores behind them (SMT siblings merged)
    ghz: float
    ghz_source: str
    flags: tuple[str, ...]  # sorted CPU feature flags
    memory_bytes: int  # physical memory, capped by a cgroup memory limit

    def has(self, flag: str) -> bool:
        return flag in self.flags

    @property
    def simd(self) -> tuple[str, ...]:
        """The SIMD/matrix features relevant to peak FLOP/s that this CPU reports."""
        wanted = ("sse2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile",
                  "asimd", "sve")
        return tuple(f for f in wanted if f in self.flags)


# --------------------------------------------------------------------------------------------
# detection
# --------------------------------------------------------------------------------------------


def _cpuinfo_fields() -> dict[str, str]:
    """The first processor block of /proc/cpuinfo (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if out:
                break
            continue
        key, _, value = line.partition(":")
        out.setdefault(key.strip().lower(), value.strip())
    return out


def _read_int_file(path: str) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _cgroup_cpu_limit() -> float | None:
    """CPUs allowed by a cgroup quota (v2 ``cpu.max`` or v1 ``cfs_quota_us``), or None."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    quota_us = _read_int_file("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
    period_us = _read_int_file("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    if quota_us and period_us and quota_us > 0:
        return quota_us / period_us
    return None


def _cgroup_memory_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        v = _read_int_file(path)
        if v is not None and 0 < v < 2**60:
            return v
    return None


def _clock_ghz(model: str, fields: dict[str, str]) -> tuple[float, str]:
    """Best available core clock and where it came from (highest-authority source first)."""
    try:
        import psutil

        freq = psutil.cpu_freq()
    except Exception:  # psutil missing or no cpufreq on this platform
        freq = None
    if freq is not None and freq.max and freq.max > 0:
        return freq.max / 1000.0, "cpufreq max"
    m = re.search(r"@\s*([0-9.]+)\s*GHz", model)
    if m:
        return float(m.group(1)), "nominal clock in the model name"
    if "cpu mhz" in fields:
        try:
            return float(fields["cpu mhz"]) / 1000.0, "/proc/cpuinfo 'cpu MHz'"
        except ValueError:
            pass
    if freq is not None and freq.current and freq.current > 0:
        return freq.current / 1000.0, "psutil current frequency"
    return 2.0, "unknown; 2.0 GHz assumed"


@functools.cache
def cpu_info() -> CpuInfo:
    """Detect this machine's CPU (cached per process; no torch)."""
    import psutil

    fields = _cpuinfo_fields()
    model = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    model = re.sub(r"\s+", " ", model).strip()
    vendor_id = fields.get("vendor_id", "")
    vendor = {"AuthenticAMD": "AMD", "GenuineIntel": "Intel"}.get(vendor_id, vendor_id)
    if not vendor:
        vendor = "AMD" if "AMD" in model else "Intel" if "Intel" in model else platform.machine() or "unknown"
    try:
        family: int | None = int(fields["cpu family"])
    except (KeyError, ValueError):
        family = None
    flags = tuple(sorted(set((fields.get("flags") or fields.get("features") or "").split())))

    logical = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or logical
    try:
        usable_logical = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable_logical = logical
    quota = _cgroup_cpu_limit()
    if quota is not None:
        usable_logical = max(1, min(usable_logical, math.ceil(quota)))
    threads_per_core = max(1, round(logical / physical))
    usable_cores = max(1, min(physical, math.ceil(usable_logical / threads_per_core)))

    memory = int(psutil.virtual_memory().total)
    limit = _cgroup_memory_limit()
    if limit is not None:
        memory = min(memory, limit)

    ghz, ghz_source = _clock_ghz(model, fields)
    return CpuInfo(model=model, vendor=vendor, family=family, physical_cores=physical,
                   logical_cores=logical, usable_logical=usable_logical, usable_cores=usable_cores,
                   ghz=ghz, ghz_source=ghz_source, flags=flags, memory_bytes=memory)


def formula_peak_flops(info: CpuInfo | None = None, dtype: str = "fp32") -> tuple[float, str]:
    """Peak FLOP/s from cores x GHz x FLOP/cycle, and the formula written out.

    FLOP/cycle per core = SIMD lanes x 2 (an FMA is 2 FLOP) x FMA units. Lanes: 16 fp32 with
    AVX-512 (8 on AMD family 25, Zen 4, whose AVX-512 runs on 256-bit pipes), 8 with AVX/AVX2,
    4 with SSE2/NEON. FMA units: 2 when the CPU has FMA (Haswell+, Zen; an upper bound for Xeon
    parts with one AVX-512 FMA unit), otherwise 1 (a separate add and multiply pipe give the same
    2 FLOP per lane per cycle). bf16: AMX does 1024 bf16 multiply-adds per cycle per core
    (2048 FLOP); AVX512_BF16 doubles the fp32 lanes.
    """
    info = info or cpu_info()
    if dtype not in ("fp32", "bf16"):
        raise invalid("host.formula_peak_flops", "dtype", "'fp32' or 'bf16'", dtype)
    if info.has("avx512f"):
        lanes, isa = (8, "AVX-512 on 256-bit pipes") if (info.vendor == "AMD" and info.family == 25) else (16, "AVX-512")
    elif info.has("avx2") or info.has("avx"):
        lanes, isa = 8, "AVX2" if info.has("avx2") else "AVX"
    else:
        lanes, isa = 4, "SSE2/NEON"
    units = 2 if (info.has("fma") or info.has("asimd")) else 1
    if dtype == "bf16":
        if info.has("amx_bf16"):
            per_cycle, how = 2048, "2048 FLOP/cycle (AMX-BF16: 1024 multiply-adds)"
        elif info.has("avx512_bf16"):
            per_cycle = 2 * lanes * 2 * units
            how = f"{per_cycle} FLOP/cycle ({2 * lanes} bf16 lanes [AVX512_BF16] x 2 FLOP per FMA x {units} FMA units)"
        else:
            raise invalid(f"host[{info.model!r}]", "dtype",
                          "'fp32' (no avx512_bf16 or amx_bf16 flag on this CPU)", dtype)
    else:
        per_cycle = lanes * 2 * units
        how = f"{per_cycle} FLOP/cycle ({lanes} fp32 lanes [{isa}] x 2 FLOP per FMA x {units} FMA units)"
    flops = info.usable_cores * info.ghz * 1e9 * per_cycle
    text = (f"{dtype} formula peak {flops / 1e9:.1f} GFLOP/s = {info.usable_cores} cores x "
            f"{info.ghz:.3f} GHz ({info.ghz_source}) x {how}")
    return flops, text


# --------------------------------------------------------------------------------------------
# measurement (torch imported lazily, here only)
# --------------------------------------------------------------------------------------------


def measure_matmul_flops(dtype: str = "fp32", n: int | None = None, budget_s: float = 0.35) -> tuple[float, int]:
    """Best-of-loop ``torch.matmul`` rate in FLOP/s (2*n^3 FLOP per n x n product) and the n used.

    One warm-up product, then products until ``budget_s`` has passed (at least two); the
    fastest one counts, as a peak should.
    """
    import torch

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(dtype)
    if torch_dtype is None:
        raise invalid("host.measure_matmul_flops", "dtype", "'fp32' or 'bf16'", dtype)
    if n is None:
        n = 2048 if torch.get_num_threads() >= 16 else 1024
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(torch_dtype)
    b = torch.randn(n, n, generator=gen).to(torch_dtype)
    out = torch.empty(n, n, dtype=torch_dtype)
    torch.matmul(a, b, out=out)  # warm-up: thread pool, packing buffers
    best = math.inf
    start = time.perf_counter()
    reps = 0
    while reps < 2 or time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        torch.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
        reps += 1
        if reps >= 200:
            break
    return 2.0 * n**3 / best, n


def measure_memory_bandwidth(nbytes: int | None = None, budget_s: float = 0.25) -> tuple[float, int]:
    """Best-of-loop tensor copy rate in bytes/s, counting read + write bytes, and the buffer size.

    The buffer (128 MiB by default, less when memory is short) is several times a typical L3,
    so the copy streams from DRAM.
    """
    import psutil
    import torch

    if nbytes is None:
        nbytes = min(128 * 2**20, max(8 * 2**20, psutil.virtual_memory().available // 8))
    numel = nbytes // 4
    src = torch.ones(numel, dtype=torch.float32)  # written once: pages are touched before timing
    dst = torch.zeros(numel, dtype=torch.float32)
    dst.copy_(src)  # warm-up
    best = math.inf
    start = time.perf_counter()
    reps = 0
    while reps < 3 or time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
        reps += 1
        if reps >= 100:
            break
    return 2.0 * numel * 4 / best, numel * 4


@dataclass(frozen=True)
class HostMeasurement:
    """Everything :func:`measure_host` found, before it becomes a DeviceSpec."""

    info: CpuInfo
    formula_fp32_flops: float
    formula_fp32_text: str
    fp32_flops: float
    matmul_n: int
    bf16_flops: float | None
    formula_bf16_text: str | None
    bandwidth_bytes_per_s: float
    copy_bytes: int
    threads: int
    torch_version: str
    elapsed_s: float


def measure_host() -> HostMeasurement:
    """Detect and measure this host (about 1 s; not cached, see :func:`host_spec`)."""
    import torch

    t0 = time.perf_counter()
    info = cpu_info()
    formula, formula_text = formula_peak_flops(info)
    fp32, n = measure_matmul_flops("fp32")
    bf16 = bf16_text = None
    if info.has("avx512_bf16") or info.has("amx_bf16"):
        bf16, _ = measure_matmul_flops("bf16")
        bf16_text = formula_peak_flops(info, "bf16")[1]
    bandwidth, copy_bytes = measure_memory_bandwidth()
    return HostMeasurement(info=info, formula_fp32_flops=formula, formula_fp32_text=formula_text,
                           fp32_flops=fp32, matmul_n=n, bf16_flops=bf16, formula_bf16_text=bf16_text,
                           bandwidth_bytes_per_s=bandwidth, copy_bytes=copy_bytes,
                           threads=torch.get_num_threads(), torch_version=torch.__version__,
                           elapsed_s=time.perf_counter() - t0)


def _spec_from(m: HostMeasurement) -> DeviceSpec:
    info = m.info
    peaks = {"fp32": m.fp32_flops / 1e12}
    if m.bf16_flops is not None:
        peaks["bf16"] = m.bf16_flops / 1e12
    notes = [
        m.formula_fp32_text + f"; measured/formula = {m.fp32_flops / m.formula_fp32_flops:.2f}"
        + ("" if info.ghz_source == "cpufreq max" else
           " (the clock is not the turbo maximum, so the formula can undershoot)"),
        f"peak_tflops measured: best {m.matmul_n}x{m.matmul_n} torch.matmul with {m.threads} threads",
        f"memory bandwidth measured: {m.copy_bytes / 2**20:.0f} MiB tensor copy, read+write bytes counted",
        f"cores: {info.physical_cores} physical / {info.logical_cores} logical on the machine, "
        f"{info.usable_logical} logical usable by this process ({info.usable_cores} cores)",
        "SIMD: " + (", ".join(info.simd) or "none detected"),
        "tdp_watts unknown (0)",
    ]
    if m.formula_bf16_text:
        notes.insert(1, m.formula_bf16_text)
    return DeviceSpec(
        name=f"host ({info.model})",
        kind="cpu",
        vendor=info.vendor,
        peak_tflops=peaks,
        memory_gb=info.memory_bytes / 1e9,
        memory_bandwidth_gbps=m.bandwidth_bytes_per_s / 1e9,
        devices_per_node=1,
        source=f"measured on this host by profilers.host, torch {m.torch_version}",
        date=datetime.date.today().isoformat(),
        notes="; ".join(notes) + ".",
    )


@functools.cache
def host_spec() -> DeviceSpec:
    """This machine's CPU as a DeviceSpec with measured peaks (measured once per process)."""
    return _spec_from(measure_host())


def host_device_name() -> str:
    """Short name for provenance strings, e.g. ``"cpu: AMD EPYC (2 cores)"`` (no measurement)."""
    info = cpu_info()
    return f"cpu: {info.model} ({info.usable_cores} cores)"


def _main() -> None:  # python -m profilers.host
    m = measure_host()
    spec = _spec_from(m)
    print(host_device_name())
    print(f"torch {m.torch_version}, {m.threads} threads, measured in {m.elapsed_s:.2f} s")
    print(f"fp32 matmul peak (measured, n={m.matmul_n}): {m.fp32_flops / 1e9:.1f} GFLOP/s")
    print(m.formula_fp32_text)
    print(f"measured / formula: {m.fp32_flops / m.formula_fp32_flops:.2f}")
    if m.bf16_flops is not None:
        print(f"bf16 matmul peak (measured): {m.bf16_flops / 1e9:.1f} GFLOP/s; {m.formula_bf16_text}")
    else:
        print("bf16: not listed (no avx512_bf16 / amx_bf16 flag)")
    print(f"memory bandwidth (measured, {m.copy_bytes / 2**20:.0f} MiB copy, read+write): "
          f"{m.bandwidth_bytes_per_s / 1e9:.1f} GB/s")
    print(f"memory: {spec.memory_gb:.1f} GB; SIMD: {', '.join(m.info.simd)}")


if __name__ == "__main__":
    _main()
