"""Measure data-parallel training (torch.distributed, gloo, 2 processes on 127.0.0.1) and set it
against profilers.parallel's prediction for the same layout on this host.

    python benchmarks/ddp_measure.py              # measure and print
    python benchmarks/ddp_measure.py --shapes 4x128,1x32 --write   # as in results/parallel.md

The model is a GPT-2-layout transformer in plain torch (so ``TransformerShape(layout="gpt")``
counts its parameters exactly; checked at start). Each rank runs one thread (the machine's cores
are shared between the two ranks), fp32, AdamW, DistributedDataParallel (bucketed gradient
all-reduce overlapped with backward). Bounded: ``--steps`` timed steps after ``--warmup``.

The prediction needs the host's figures. ``hardware.get("host")`` gives a datasheet-style peak if
the catalog has it; here we *measure* instead, on one thread: the fp32 GEMM rate (the "peak", used
with efficiency 1.0, i.e. nothing fitted), the copy bandwidth (the memory-bound term) and the gloo
all-reduce bandwidth between the two ranks (the communication term: for n=2 a ring all-reduce of S
bytes takes S / B, so B = S / t).
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

from profilers.hardware import DeviceSpec
from profilers.parallel import ParallelConfig, TimeModel, TransformerShape, memory_per_device, step_time

RESULTS = Path(__file__).parent / "results" / "parallel.md"
COMMAND = "python benchmarks/ddp_measure.py --shapes 4x128,1x32 --write"


# ---- a GPT-2-layout model in plain torch ------------------------------------------------------
class Block(nn.Module):
    def __init__(self, h: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(h), nn.LayerNorm(h)
        self.qkv, self.proj = nn.Linear(h, 3 * h), nn.Linear(h, h)
        self.fc, self.out = nn.Linear(h, 4 * h), nn.Linear(4 * h, h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(h, dim=-1)
        q, k, v = (t.view(b, s, self.heads, h // self.heads).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, s, h)
        x = x + self.proj(a)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TinyGPT(nn.Module):
    def __init__(self, shape: TransformerShape):
        super().__init__()
        h = shape.hidden
        self.wte, self.wpe = nn.Embedding(shape.vocab, h), nn.Embedding(shape.max_positions, h)
        self.blocks = nn.ModuleList(Block(h, shape.heads) for _ in range(shape.layers))
        self.ln_f = nn.LayerNorm(h)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for blk in self.blocks:
            x = blk(x)
        logits = self.ln_f(x) @ self.wte.weight.T  # tied LM head
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), idx[:, 1:].reshape(-1))


def make_shape(args: argparse.Namespace) -> TransformerShape:
    return TransformerShape(layers=args.layers, hidden=args.hidden, heads=args.heads, vocab=args.vocab,
                            seq_len=args.seq, layout="gpt", dropout=False, name="tiny-gpt")


def _train_steps(model: nn.Module, opt: torch.optim.Optimizer, data: torch.Tensor, warmup: int, steps: int) -> list[float]:
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss = model(data)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def count_ops(model: nn.Module, opt: torch.optim.Optimizer, data: torch.Tensor) -> int:
    """aten ops dispatched by one training step (forward, backward, AdamW, zero_grad), counted with a
    TorchDispatchMode (the backward runs on this thread on a CPU, so its ops are counted too)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    with Count():
        loss = model(data)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return Count.n


def measure_op_overhead(reps: int = 20000) -> float:
    """Seconds of host dispatch per op: a 1-element multiply recorded by autograd, timed in a loop
    (its arithmetic is nil, so the time is the framework's)."""
    x = torch.zeros(1, requires_grad=True)
    for _ in range(1000):
        torch.mul(x, 1.0)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.mul(x, 1.0)
    return (time.perf_counter() - t0) / reps


def measure_rates(args: argparse.Namespace) -> tuple[float, float]:
    """(fp32 GEMM FLOP/s, copy bytes/s) on one thread. The GEMM has the model's MLP shape,
    (batch*seq x hidden) @ (hidden x 4*hidden): the device's achievable rate for this workload."""
    m, k, n = args.batch * args.seq, args.hidden, 4 * args.hidden
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    reps, t0 = 30, time.perf_counter()
    for _ in range(reps):
        a @ b
    gemm = 2 * m * k * n * reps / (time.perf_counter() - t0)
    x = torch.empty(args.copy_mib * 2**18)  # fp32: 2**18 elements per MiB
    y = torch.empty_like(x)
    y.copy_(x)
    t0 = time.perf_counter()
    for _ in range(5):
        y.copy_(x)
    copy = 2 * x.numel() * 4 * 5 / (time.perf_counter() - t0)  # read + write
    return gemm, copy


# ---- the two ranks ----------------------------------------------------------------------------
def _rank(rank: int, world: int, port: int, args: argparse.Namespace, out) -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        shape = make_shape(args)
        model = nn.parallel.DistributedDataParallel(TinyGPT(shape))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(1 + rank)
        data = torch.randint(0, shape.vocab, (args.batch, shape.seq_len), generator=g)
        dist.barrier()
        gemm, copy = measure_rates(args)  # both ranks at once: what each rank gets while the other runs
        dist.barrier()
        times = _train_steps(model, opt, data, args.warmup, args.steps)
        # gloo all-reduce of a gradient-sized fp32 buffer
        n_params = sum(p.numel() for p in model.parameters())
        buf = torch.ones(n_params)
        ar = []
        for i in range(args.allreduce_reps + 1):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(buf)
            if i:
                ar.append(time.perf_counter() - t0)
        out.put((rank, times, ar, n_params * 4, gemm, copy))
        dist.barrier()  # neither rank tears gloo down while the other still talks to it
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ddp(args: argparse.Namespace) -> dict:
    """Spawn 2 gloo ranks; median step time (slowest rank) and gloo all-reduce bandwidth."""
    ctx = mp.get_context("spawn")
    q = ctx.SimpleQueue()
    mp.start_processes(_rank, args=(2, _free_port(), args, q), nprocs=2, join=True, start_method="spawn")
    res = sorted(q.get() for _ in range(2))
    step_s = max(statistics.median(r[1]) for r in res)
    ar_s = max(statistics.median(r[2]) for r in res)
    nbytes = res[0][3]
    return {"step_s": step_s, "step_times": [r[1] for r in res], "allreduce_s": ar_s, "allreduce_bytes": nbytes,
            "allreduce_bytes_per_s": nbytes / ar_s, "gemm_flops_per_s": min(r[4] for r in res),
            "copy_bytes_per_s": min(r[5] for r in res)}


# ---- single-thread host figures ---------------------------------------------------------------
def measure_host(args: argparse.Namespace) -> dict:
    """One process alone: its rates and the same training step without communication."""
    torch.set_num_threads(1)
    gemm, copy = measure_rates(args)
    torch.manual_seed(0)
    shape = make_shape(args)
    model = TinyGPT(shape)
    n_params = sum(p.numel() for p in model.parameters())
    if n_params != shape.parameters():
        raise AssertionError(f"TransformerShape counts {shape.parameters()} parameters, the module has {n_params}")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = torch.randint(0, shape.vocab, (args.batch, shape.seq_len))
    single = statistics.median(_train_steps(model, opt, data, args.warmup, args.steps))
    ops = count_ops(model, opt, data)
    op_s = measure_op_overhead()
    return {"gemm_flops_per_s": gemm, "copy_bytes_per_s": copy, "single_step_s": single, "parameters": n_params,
            "ops_per_step": ops, "op_overhead_s": op_s}


def host_device(rates: dict, allreduce_bytes_per_s: float = 0.0) -> DeviceSpec:
    """This host as a 2-'device' node, from measured rates (one thread per rank)."""
    return DeviceSpec(
        name="host (measured, 1 thread/rank)", kind="cpu", vendor=platform.processor() or "cpu",
        peak_tflops={"fp32": rates["gemm_flops_per_s"] / 1e12}, memory_gb=max(1.0, _mem_gb()),
        memory_bandwidth_gbps=rates["copy_bytes_per_s"] / 1e9,
        intra_node_gbps=allreduce_bytes_per_s / 1e9, devices_per_node=2,
        source="measured by benchmarks/ddp_measure.py", date=time.strftime("%Y-%m-%d"))


def _mem_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        return 8.0


def predict(args: argparse.Namespace, host: dict, ddp: dict) -> dict:
    shape = make_shape(args)
    alone = host_device(host)
    pair = host_device(ddp, ddp["allreduce_bytes_per_s"])
    cfg = ParallelConfig(dp=2, micro_batch=args.batch, global_batch=2 * args.batch, precision="fp32")
    single = ParallelConfig(dp=1, micro_batch=args.batch, global_batch=args.batch, precision="fp32")
    # the per-step framework overhead: aten ops per step x the measured dispatch cost per op (DDP adds
    # its bucket copies and hooks on top; the count is the single process's). gloo's latency is in the
    # measured all-reduce time, so NCCL's latency model stays off.
    framework = host["ops_per_step"] * host["op_overhead_s"]
    kw = dict(efficiency=1.0, latency=False, jitter=0.0)
    on, off = TimeModel(**kw, step_overhead_s=framework), TimeModel(**kw, overlap_dp_comm=False, step_overhead_s=framework)
    bare = TimeModel(**kw, step_overhead_s=0.0)
    return {"device": pair, "shape": shape, "config": cfg, "framework_s": framework,
            "ddp": step_time(shape, cfg, pair, on), "ddp_no_overlap": step_time(shape, cfg, pair, off),
            "ddp_no_framework": step_time(shape, cfg, pair, bare),
            "single": step_time(shape, single, alone, on), "single_no_framework": step_time(shape, single, alone, bare),
            "memory": memory_per_device(shape, cfg, pair)}


def render(args: argparse.Namespace, host: dict, ddp: dict, pred: dict) -> str:
    """One measured configuration: host figures and measured vs predicted step times."""
    st, st_no, single = pred["ddp"], pred["ddp_no_overlap"], pred["single"]
    err = st.total_s / ddp["step_s"] - 1
    lines = [
        f"### micro-batch {args.batch} x seq {args.seq} per rank ({host['parameters']:,} parameters)",
        "",
        f"* fp32 GEMM of the model's MLP shape ({args.batch * args.seq}x{args.hidden} @ {args.hidden}x{4 * args.hidden}): "
        f"alone {host['gemm_flops_per_s'] / 1e9:.1f} GFLOP/s, per rank with both running {ddp['gemm_flops_per_s'] / 1e9:.1f} GFLOP/s",
        f"* copy bandwidth ({args.copy_mib} MiB, read + write): alone {host['copy_bytes_per_s'] / 1e9:.2f} GB/s, per rank "
        f"{ddp['copy_bytes_per_s'] / 1e9:.2f} GB/s",
        f"* gloo all-reduce, 2 ranks, {ddp['allreduce_bytes'] / 1e6:.1f} MB fp32: {ddp['allreduce_s'] * 1e3:.1f} ms "
        f"-> B = S / t = {ddp['allreduce_bytes_per_s'] / 1e9:.2f} GB/s",
        f"* framework overhead: {host['ops_per_step']} aten ops per step (counted with a TorchDispatchMode) x "
        f"{host['op_overhead_s'] * 1e6:.2f} us per op (a 1-element autograd multiply, timed) = {pred['framework_s'] * 1e3:.2f} ms per step",
        f"* load average (1 min) before / after: {ddp.get('load_before', float('nan')):.1f} / {ddp.get('load_after', float('nan')):.1f}",
        "",
        "| quantity | measured | predicted | error |",
        "|---|---:|---:|---:|",
        f"| one process, no communication: s/step | {host['single_step_s']:.4f} | {single.total_s:.4f} | {single.total_s / host['single_step_s'] - 1:+.1%} |",
        f"| DDP 2 ranks: s/step (slowest rank, median of {args.steps}) | {ddp['step_s']:.4f} | {st.total_s:.4f} | {err:+.1%} |",
        f"| DDP 2 ranks, prediction without overlap | | {st_no.total_s:.4f} | {st_no.total_s / ddp['step_s'] - 1:+.1%} |",
        f"| DDP 2 ranks, prediction without the framework overhead | | {pred['ddp_no_framework'].total_s:.4f} | "
        f"{pred['ddp_no_framework'].total_s / ddp['step_s'] - 1:+.1%} |",
        f"| one process, prediction without the framework overhead | | {pred['single_no_framework'].total_s:.4f} | "
        f"{pred['single_no_framework'].total_s / host['single_step_s'] - 1:+.1%} |",
        f"| added by DDP (DDP minus one process) | {ddp['step_s'] - host['single_step_s']:.4f} | "
        f"{st.total_s - single.total_s:.4f} | |",
        f"| gradient all-reduce per step (unhidden) | {ddp['allreduce_s']:.4f} (standalone, in the ranks) | {st.dp_comm_unhidden_s:.4f} (= S / B, by construction) | |",
        "",
        f"Predicted split (overlap on): compute {st.compute_s:.4f} s (memory-bound {st.memory_bound_s:.4f} s), exposed dp "
        f"{st.dp_comm_s:.4f} s, optimizer {st.optimizer_s:.4f} s, framework {st.framework_s:.4f} s; memory {pred['memory'].total_bytes / 1e6:.0f} MB per rank.",
        "",
    ]
    return "\n".join(lines)


def render_header(args: argparse.Namespace, n_params: int) -> str:
    return "\n".join([
        "## Data-parallel training measured on this host vs the model",
        "",
        f"Command: `{COMMAND}` (`--steps {args.steps} --warmup {args.warmup}`). Measured on {_cpu_name()}, {os.cpu_count()} "
        f"logical CPUs, torch {torch.__version__}, gloo over 127.0.0.1, 2 processes x 1 thread, fp32, AdamW, DDP.",
        f"Model: GPT-2 layout in plain torch, {args.layers} layers, hidden {args.hidden}, {args.heads} heads, vocab {args.vocab}, "
        "parameters as `TransformerShape.parameters()` counts them (checked), no gradient accumulation. Two per-rank "
        "batch shapes: compute-heavy and communication-heavy.",
        "",
        "The prediction uses host figures measured in the same run on one thread (the GEMM rate is the 'peak', used with "
        "efficiency 1.0; nothing fitted), once with one process alone and once in each rank while the other rank runs "
        "the same benchmark, which is what a rank gets during DDP: the two logical CPUs of this VM do not behave as two "
        "independent cores. The host was shared with other jobs during the run (load averages below), so figures move "
        "between runs; the rates are measured in the same run to cancel part of that. The per-step framework overhead "
        "(`TimeModel.step_overhead_s`) is the counted aten ops of one step times a separately timed per-op dispatch "
        "cost: measured, not fitted to the step times it is checked against. Not represented by the model: gloo's "
        "threads competing with compute on the same cores, elementwise kernels beyond the counted activation traffic.",
        "",
    ])


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4, help="sequences per rank per step")
    ap.add_argument("--shapes", default="", help="comma-separated BATCHxSEQ per rank to measure, e.g. 4x128,1x32 "
                    "(default: --batch x --seq)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--allreduce-reps", type=int, default=10)
    ap.add_argument("--copy-mib", type=int, default=64, help="buffer size of the copy-bandwidth measurement")
    ap.add_argument("--write", action="store_true")
    return ap.parse_args(argv)


def measure_one(args: argparse.Namespace) -> tuple[dict, dict, dict]:
    host = measure_host(args)
    before = os.getloadavg()[0]
    ddp = run_ddp(args)
    ddp.update(load_before=before, load_after=os.getloadavg()[0])
    return host, ddp, predict(args, host, ddp)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    shapes = [tuple(int(x) for x in sh.split("x")) for sh in args.shapes.split(",") if sh] or [(args.batch, args.seq)]
    blocks, n_params = [], 0
    for batch, seq in shapes:
        a = argparse.Namespace(**{**vars(args), "batch": batch, "seq": seq})
        host, ddp, pred = measure_one(a)
        n_params = host["parameters"]
        blocks.append(render(a, host, ddp, pred))
        print(blocks[-1], flush=True)
    text = render_header(args, n_params) + "\n" + "\n".join(blocks)
    if args.write:
        sys.path.insert(0, str(Path(__file__).parent))
        from megatron_validation import write_section

        write_section("ddp_measure", text)
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
