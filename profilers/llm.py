"""Token generation of decoder transformers on a device: prefill, decode, KV cache, tensor parallelism.

Torch-free and analytic (a configuration prices in microseconds, so a search can sweep thousands).
For a decoder (a bundled config name, a transformers config, a dict or a config.json path: GPT-2,
GPT-J, Llama, Mistral layouts) in a serving format on a catalog device:

**Bytes.** Weight bytes per parameter of the transformer blocks by format (:data:`FORMATS`):
fp32 4, bf16/fp16 2, fp8 1, ``int8_weight_only`` 1, ``int8_dynamic`` (W8A8) 1, ``int4_weight_only``
0.5 + one fp16 scale and one fp16 zero point per ``group_size`` weights (0.5 + 4 / group_size).
Embeddings and the LM head stay in the activation dtype (bf16/fp16), as AWQ, GPTQ and TensorRT-LLM
keep them. KV-cache bytes per token = 2 (K and V) x layers x kv_heads x head_dim x kv dtype bytes
(GQA/MQA aware: ``kv_heads`` from the config). Per GPU: weights / (tp x pp), KV / tp.

**Kernels** (the fused runtime by default: TensorRT-LLM / vLLM kernels, FlashAttention): per layer,
four weight GEMMs (fused QKV, attention output, fused gate-up (or up), down), one attention kernel,
and with tp > 1 two all-reduces of the layer's activations; then the LM head. A prefill of ``n``
tokens per sequence at batch ``B`` runs them on ``B x n`` tokens (causal attention: half the
``n^2`` score work, no score matrix in memory); a decode step at context ``c`` runs them on ``B``
tokens, reading every weight once and each sequence's ``c`` cached K/V. Each kernel's roofline
``max(FLOPs / peak, bytes / bandwidth)`` is priced as :func:`profilers.project` prices any kernel:
``max(roofline / e[device, class, runtime], o[device, runtime])`` with the efficiency and per-kernel
overhead of :mod:`profilers.calibration` (a memory-bound GEMM is class "gemv", an all-reduce
"comm"), so the band of the calibration's validation errors carries over.

**Deployment.** ``tp`` GPUs of one node split weights and KV (Megatron layout: heads divided, two
all-reduces per layer over the node's link); ``pp`` stages across nodes split the layers, with
``pp`` micro-batches of ``batch`` sequences in flight and one activation transfer per stage
boundary per step. The largest ``batch`` that fits (:attr:`LLMEstimate.max_batch`) leaves
:data:`RESERVED_FRACTION` of each GPU's memory to the runtime (CUDA context, allocator slack).

:func:`estimate` prices one static batch (time to first token, time per output token, tokens/s);
:func:`serve` the steady state of continuous batching under TTFT / TPOT targets for a request mix.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

from .config import invalid, serializable
from .hardware import DeviceSpec, get
from .parallel.config import TransformerShape

__all__ = ["FORMATS", "KV_DTYPES", "LLMEstimate", "ServingEstimate", "estimate", "serve", "shape_of",
           "weight_bytes", "kv_bytes_per_token", "decode_kernels", "prefill_kernels", "RESERVED_FRACTION",
           "RequestMix"]

#: fraction of each GPU's memory left to the runtime (CUDA context, allocator slack, workspace);
#: vLLM's default gpu_memory_utilization is 0.9
RESERVED_FRACTION = 0.10
#: activation dtype -> bytes
_ACT = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass(frozen=True)
class Format:
    """A serving format: bytes per block weight, and the dtype its GEMMs compute in."""

    name: str
    weight_bytes: float  # per block parameter (int4: + scales, see weight_bytes())
    compute: str  # the dtype whose peak the GEMMs run at ("act": the activation dtype)
    act: str  # activation dtype
    technique: str  # the cost_models technique row (engineering hours, calibration data), as Quantize.SPECS
    # names it; "" for a model served in the dtype it was released in


#: format name -> Format (names follow profilers.techniques.Quantize's modes plus plain dtypes)
FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("fp32", 4.0, "fp32", "fp32", ""),
    Format("bf16", 2.0, "bf16", "bf16", ""),
    Format("fp16", 2.0, "fp16", "fp16", ""),
    Format("fp8", 1.0, "fp8", "fp16", "quantize_fp8"),
    Format("int8_weight_only", 1.0, "act", "fp16", "quantize_int8"),
    Format("int8_dynamic", 1.0, "int8", "fp16", "quantize_int8"),
    Format("int4_weight_only", 0.5, "act", "fp16", "quantize_int4"),
)}
#: KV-cache dtype -> bytes per element
KV_DTYPES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1}

#: architectures of models the calibration rows and the examples name that are not bundled as
#: config.json files: the published config.json values (Hugging Face model cards of each)
_LLAMA3_8B = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
              "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256,
              "max_position_embeddings": 8192}
_LLAMA3_70B = {**_LLAMA3_8B, "hidden_size": 8192, "num_hidden_layers": 80, "num_attention_heads": 64,
               "intermediate_size": 28672}
CONFIGS: dict[str, dict] = {
    "llama-2-13b": {"model_type": "llama", "hidden_size": 5120, "num_hidden_layers": 40, "num_attention_heads": 40,
                    "num_key_value_heads": 40, "intermediate_size": 13824, "vocab_size": 32000,
                    "max_position_embeddings": 4096},
    "llama-3-8b": _LLAMA3_8B,
    "llama-3.1-8b": {**_LLAMA3_8B, "max_position_embeddings": 131072},  # 3.1: the same shape, 128 K context
    "llama-3-70b": _LLAMA3_70B,
    "llama-3.1-70b": {**_LLAMA3_70B, "max_position_embeddings": 131072},
    "mistral-7b": {**_LLAMA3_8B, "model_type": "mistral", "vocab_size": 32000, "max_position_embeddings": 32768},
    "gpt-j-6b": {"model_type": "gptj", "n_embd": 4096, "n_layer": 28, "n_head": 16, "rotary_dim": 64,
                 "vocab_size": 50400, "n_positions": 2048},
}


def _config_dict(model: Any) -> tuple[dict | Any, str]:
    if isinstance(model, (str, Path)):
        name = str(model)
        key = name.lower()
        if key in CONFIGS:
            return CONFIGS[key], key
        bundled = resources.files("profilers").joinpath(f"data/hf_configs/{key}.json")
        if bundled.is_file():
            return json.loads(bundled.read_text()), key
        p = Path(name)
        if p.is_file():
            try:
                return json.loads(p.read_text()), p.parent.name or p.stem
            except ValueError as e:
                raise invalid("llm", "model", "a config.json that parses", f"{name} ({e})") from None
        from .analysis import bundled_configs

        raise invalid("llm", "model", "a config.json path or one of " + ", ".join(sorted({*CONFIGS,
                      *bundled_configs()})), name)
    if isinstance(model, Mapping):
        return dict(model), str(model.get("_name_or_path") or model.get("model_type") or "model")
    return model, str(getattr(model, "_name_or_path", "") or getattr(model, "model_type", "model"))


def shape_of(model: Any) -> TransformerShape:
    """The :class:`TransformerShape` of a decoder (name, config object, dict or config.json path)."""
    if isinstance(model, TransformerShape):
        return model
    cfg, name = _config_dict(model)
    get_ = (lambda k, d=None: cfg.get(k, d)) if isinstance(cfg, Mapping) else (lambda k, d=None: getattr(cfg, k, d))
    if get_("model_type") == "gptj":  # parallel attention + MLP, no GQA: the GPT block's parameter count
        h = int(get_("n_embd"))
        return TransformerShape(layers=int(get_("n_layer")), hidden=h, heads=int(get_("n_head")),
                                vocab=int(get_("vocab_size")), seq_len=int(get_("n_positions")),
                                ffn_hidden=int(get_("n_inner") or 4 * h), layout="gpt", tied_embeddings=False,
                                max_positions=int(get_("n_positions")), name=name)
    return TransformerShape.from_hf_config(cfg, name=name)


def weight_bytes(shape: TransformerShape, fmt: str, group_size: int = 128) -> float:
    """Bytes of the model's weights in ``fmt``: block matrices in the format, the rest (embeddings,
    LM head, norms) in the activation dtype. int4: 0.5 B + an fp16 scale and zero per group."""
    f = _format(fmt)
    sharded, replicated = shape.layer_parameters()
    per = f.weight_bytes + (4.0 / group_size if fmt == "int4_weight_only" else 0.0)
    rest = shape.layers * replicated + shape.embedding_parameters() + shape.head_parameters()
    return shape.layers * sharded * per + rest * _ACT[f.act]


def kv_bytes_per_token(shape: TransformerShape, kv: str) -> int:
    """K and V of one token over all layers: 2 x layers x kv_heads x head_dim x bytes."""
    if kv not in KV_DTYPES:
        raise invalid("llm", "kv", "one of " + ", ".join(map(repr, KV_DTYPES)) + " (None: the activation dtype)", kv)
    return 2 * shape.layers * shape.kv_dim * KV_DTYPES[kv]


def _format(fmt: str) -> Format:
    if fmt not in FORMATS:
        raise invalid("llm", "weights", "one of " + ", ".join(map(repr, FORMATS)), fmt)
    return FORMATS[fmt]


def _gemms(shape: TransformerShape) -> list[tuple[str, int, int]]:
    """(name, in features, out features) of one block's weight GEMMs (fused QKV, fused gate-up)."""
    h, f, kv = shape.hidden, shape.ffn_hidden, shape.kv_dim
    up = (shape.mlp_matrices - 1) * f
    return [("qkv", h, h + 2 * kv), ("attn_out", h, h), ("mlp_up", h, up), ("mlp_down", f, h)]


def _kernel(flops: float, nbytes: float, peak: float, bw: float, cls: str, calls: int = 1):
    tc, tm = flops / peak, nbytes / bw
    if cls == "matmul" and tm > tc:
        cls = "gemv"
    return (cls, calls, tc, tm)


def _step_kernels(shape: TransformerShape, device: DeviceSpec, f: Format, kv: str, tp: int, pp: int, batch: int,
                  tokens: int, context: int, prefill: bool, group_size: int) -> list[tuple[str, int, float, float]]:
    """Kernels of one pass of ``batch`` sequences x ``tokens`` new tokens over ``context`` cached ones,
    on one GPU of a tp x pp deployment, summed over the stages one token crosses."""
    peak = device.peak_flops_per_s(f.act if f.compute == "act" else f.compute)
    act_peak = device.peak_flops_per_s(f.act)
    bw = device.memory_bandwidth_bytes_per_s
    a = _ACT[f.act]
    wb = f.weight_bytes + (4.0 / group_size if f.name == "int4_weight_only" else 0.0)
    n = batch * tokens
    L = shape.layers
    out = []
    for _, k_in, k_out in _gemms(shape):
        w = k_in * k_out / tp
        out.append(_kernel(2.0 * n * w, w * wb + n * (k_in + k_out / tp) * a, peak, bw, "matmul", L))
    # attention: QK^T and PV over the context (causal prefill: half the new x new block), K/V read
    # once per sequence, new K/V written; the score matrix stays on chip
    heads = shape.heads / tp
    hd = shape.head_dim
    kvb = KV_DTYPES[kv]
    kv_heads = max(1, shape.kv_heads / tp)
    ctx_pairs = tokens * context + (tokens * (tokens + 1) / 2 if prefill else tokens)
    att_flops = 4.0 * batch * heads * hd * ctx_pairs
    att_bytes = batch * (2 * (context + tokens) * kv_heads * hd * kvb + 2 * tokens * heads * hd * a)
    out.append(_kernel(att_flops, att_bytes, act_peak, bw, "attention", L))
    if tp > 1:  # two all-reduces of the layer's output activations per layer (Megatron)
        from .parallel.comm import group_bandwidth, ring_all_reduce_s

        t = ring_all_reduce_s(n * shape.hidden * a, tp, group_bandwidth(device, tp))
        out.append(("comm", 2 * L, 0.0, t))
    # LM head (vocab-parallel over tp) on the last token of each sequence (prefill) or every new token
    head_tokens = batch if prefill else n
    v = shape.vocab * shape.hidden / tp
    out.append(_kernel(2.0 * head_tokens * v, v * a + head_tokens * shape.vocab / tp * a, act_peak, bw, "matmul", 1))
    if pp > 1:  # one activation transfer per stage boundary
        from .parallel.comm import group_bandwidth, p2p_s

        out.append(("comm", pp - 1, 0.0, p2p_s(n * shape.hidden * a, group_bandwidth(device, pp, stride=tp))))
    # each GPU runs 1/pp of the layers, but one token crosses every stage: the stages' kernels in sequence
    return out


def decode_kernels(model: Any, device: str | DeviceSpec, *, weights: str = "bf16", kv: str | None = None,
                   tp: int = 1, pp: int = 1, batch: int = 1, context: int = 1,
                   group_size: int = 128) -> list[tuple[str, int, float, float]]:
    """Kernels of one decode step (one new token for each of ``batch`` sequences at ``context``)."""
    shape, spec, f, kvd = _check(model, device, weights, kv, tp, pp, batch, context, group_size)
    return _step_kernels(shape, spec, f, kvd, tp, pp, batch, 1, context, False, group_size)


def prefill_kernels(model: Any, device: str | DeviceSpec, *, weights: str = "bf16", kv: str | None = None,
                    tp: int = 1, pp: int = 1, batch: int = 1, tokens: int = 1,
                    group_size: int = 128) -> list[tuple[str, int, float, float]]:
    """Kernels of the prefill of ``batch`` prompts of ``tokens`` tokens."""
    shape, spec, f, kvd = _check(model, device, weights, kv, tp, pp, batch, tokens, group_size)
    return _step_kernels(shape, spec, f, kvd, tp, pp, batch, tokens, 0, True, group_size)


def _check(model: Any, device: Any, weights: str, kv: str | None, tp: int, pp: int, batch: int, context: int,
           group_size: int) -> tuple[TransformerShape, DeviceSpec, Format, str]:
    shape = shape_of(model)
    spec = get(device)
    f = _format(weights)
    kvd = f.act if kv is None else kv
    kv_bytes_per_token(shape, kvd)  # checks the name
    need = {f.act, f.act if f.compute == "act" else f.compute}
    if kvd == "fp8":
        need.add("fp8")
    missing = sorted(d for d in need if not spec.supports(d))
    if missing:
        can = [n for n, g in FORMATS.items() if all(spec.supports(d) for d in {g.act, g.act if g.compute == "act"
                                                                                else g.compute})]
        what = "weights" if (f.compute in missing or f.act in missing) else "kv"
        raise invalid("llm", what, f"a format {spec.name} can run (it has no {', '.join(missing)} peak): "
                      + ", ".join(map(repr, can)), weights if what == "weights" else kv)
    for name, v in (("tp", tp), ("pp", pp), ("batch", batch), ("group_size", group_size)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise invalid("llm", name, "an integer >= 1", v)
    if tp > spec.devices_per_node:
        raise invalid("llm", "tp", f"<= devices_per_node of {spec.name} ({spec.devices_per_node}): tensor "
                      "parallelism stays inside a node", tp)
    if shape.heads % tp:
        raise invalid("llm", "tp", f"a divisor of the model's {shape.heads} attention heads", tp)
    if shape.kv_heads % tp and tp % shape.kv_heads:
        raise invalid("llm", "tp", f"a divisor or a multiple of the model's {shape.kv_heads} KV heads", tp)
    if pp > shape.layers:
        raise invalid("llm", "pp", f"<= the model's {shape.layers} layers", pp)
    if not isinstance(context, int) or context < 1 or context > shape.max_positions:
        raise invalid("llm", "tokens", f"an integer in [1, {shape.max_positions}] (the model's maximum context)",
                      context)
    return shape, spec, f, kvd


@dataclass(frozen=True)
class _Deployment:
    """What a priced LLM deployment is: the model, ``tp x pp`` GPUs of one device type, the weight
    and KV-cache formats and ``batch`` sequences (per pipeline micro-batch)."""

    model: str
    device: str
    weights: str
    kv: str
    tp: int
    pp: int
    batch: int

    @property
    def gpus(self) -> int:
        return self.tp * self.pp


@serializable("llm_estimate")
@dataclass(frozen=True)
class LLMEstimate(_Deployment):
    """One static batch of ``batch`` requests (``input_tokens`` in, ``output_tokens`` out) on a
    deployment of ``tp x pp`` GPUs. Times are projections (see the module docstring); ``*_band_s``
    are the calibration's 80 % bands."""

    input_tokens: int
    output_tokens: int
    runtime: str
    ttft_s: float
    tpot_s: float
    output_tokens_per_s: float  # the whole deployment: batch x output / (ttft + output x tpot)
    max_batch: int  # the largest batch whose weights + KV + activations fit (0: the weights alone do not)
    fits_memory: bool
    memory_bytes: dict[str, float]  # per GPU: weights, kv, activations, total, capacity
    parameters: int
    ttft_band_s: tuple[float, float] | None
    tpot_band_s: tuple[float, float] | None
    calibration_rows: tuple[int, ...]
    provenance: str
    notes: tuple[str, ...] = ()


def _memory(shape: TransformerShape, f: Format, kvd: str, tp: int, pp: int, batch: int, context: int,
            prompt: int, group_size: int) -> dict[str, float]:
    w = weight_bytes(shape, f.name, group_size) / (tp * pp)
    kvb = batch * context * kv_bytes_per_token(shape, kvd) / tp  # pp micro-batches x layers / pp
    # the prefill's transient activations of one prompt: hidden states and the MLP's widest tensor
    acts = 2.0 * prompt * (shape.hidden + shape.ffn_hidden * (shape.mlp_matrices - 1) / tp) * _ACT[f.act]
    return {"weights": w, "kv": kvb, "activations": acts, "total": w + kvb + acts}


def _max_batch(shape, f, kvd, tp, pp, context, prompt, group_size, capacity) -> int:
    m1 = _memory(shape, f, kvd, tp, pp, 1, context, prompt, group_size)
    free = capacity - m1["weights"] - m1["activations"]
    return max(0, int(free // m1["kv"])) if m1["kv"] > 0 else 0


def _time(kernels, lk) -> float:
    from .projection import kernel_time

    return kernel_time(kernels, lk.efficiency, lk.overhead_s)


def estimate(model: Any, device: str | DeviceSpec, *, weights: str = "bf16", kv: str | None = None, tp: int = 1,
             pp: int = 1, batch: int = 1, input_tokens: int = 512, output_tokens: int = 128,
             runtime: str = "fused", group_size: int = 128) -> LLMEstimate:
    """Project one static batch: time to first token (the prefill of every prompt), time per output
    token (a decode step at the mean context ``input + output / 2``), output tokens/s of the
    deployment, memory per GPU and the largest batch that fits.

        >>> from profilers import llm
        >>> e = llm.estimate("llama-2-7b", "A100-80GB", weights="fp16", batch=8)   # doctest: +SKIP
        >>> e.ttft_s, e.tpot_s, e.output_tokens_per_s, e.max_batch
    """
    from . import calibration

    shape, spec, f, kvd = _check(model, device, weights, kv, tp, pp, batch, input_tokens + output_tokens, group_size)
    if not isinstance(output_tokens, int) or output_tokens < 1:
        raise invalid("llm", "output_tokens", "an integer >= 1", output_tokens)
    if not isinstance(input_tokens, int) or input_tokens < 1:
        raise invalid("llm", "input_tokens", "an integer >= 1", input_tokens)
    lk = calibration.load().lookup(spec, runtime)
    ttft = _time(_step_kernels(shape, spec, f, kvd, tp, pp, batch, input_tokens, 0, True, group_size), lk)
    mid = input_tokens + max(1, output_tokens // 2)
    tpot = _time(_step_kernels(shape, spec, f, kvd, tp, pp, batch, 1, mid, False, group_size), lk)
    total = ttft + output_tokens * tpot
    ctx = input_tokens + output_tokens
    mem = _memory(shape, f, kvd, tp, pp, batch, ctx, input_tokens, group_size)
    cap = spec.memory_bytes * (1 - RESERVED_FRACTION)
    mem["capacity"] = cap
    mb = _max_batch(shape, f, kvd, tp, pp, ctx, input_tokens, group_size, cap)
    band = lk.band
    return LLMEstimate(
        model=shape.name, device=spec.name, weights=weights, kv=kvd, tp=tp, pp=pp, batch=batch,
        input_tokens=input_tokens, output_tokens=output_tokens, runtime=runtime, ttft_s=ttft, tpot_s=tpot,
        output_tokens_per_s=pp * batch * output_tokens / total, max_batch=mb, fits_memory=mem["total"] <= cap,
        memory_bytes=mem, parameters=shape.parameters(), ttft_band_s=(ttft * band[0], ttft * band[1]),
        tpot_band_s=(tpot * band[0], tpot * band[1]), calibration_rows=lk.rows,
        provenance=(f"projected for {tp * pp} x {spec.name} ({weights} weights, {kvd} KV cache, tp {tp}, pp {pp}, "
                    f"{runtime} runtime) by profilers.llm: per-kernel roofline of the {shape.name} shape "
                    f"({shape.parameters():,} parameters); {lk.source}; device figures: {spec.source}, {spec.date}"),
        notes=(f"TPOT at the mean context {mid} tokens; TTFT is the prefill of all {batch} prompts together",
               f"memory per GPU: weights {mem['weights'] / 1e9:.2f} GB + KV {mem['kv'] / 1e9:.2f} GB + activations "
               f"{mem['activations'] / 1e9:.2f} GB of {cap / 1e9:.1f} GB usable ({RESERVED_FRACTION:.0%} reserved)"),
    )


# --------------------------------------------------------------------------------------------
# serving: continuous batching under TTFT / TPOT targets
# --------------------------------------------------------------------------------------------

@serializable("request_mix")
@dataclass(frozen=True)
class RequestMix:
    """Requests' (input, output) token lengths with weights: one pair (fixed lengths), a histogram
    or a list. :meth:`read` takes a CSV with columns ``input_tokens,output_tokens[,count]``."""

    pairs: tuple[tuple[int, int, float], ...]

    def __post_init__(self) -> None:
        if not self.pairs:
            raise invalid("RequestMix", "pairs", "at least one (input_tokens, output_tokens, count)", self.pairs)
        out = []
        for i, p in enumerate(self.pairs):
            if len(p) == 2:
                p = (*p, 1.0)
            ok = len(p) == 3 and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in p[:2]) \
                and isinstance(p[2], (int, float)) and p[2] > 0
            if not ok:
                raise invalid("RequestMix", f"pairs[{i}]", "(input_tokens >= 1, output_tokens >= 1, count > 0)", p)
            out.append((int(p[0]), int(p[1]), float(p[2])))
        object.__setattr__(self, "pairs", tuple(out))

    @classmethod
    def fixed(cls, input_tokens: int, output_tokens: int) -> "RequestMix":
        return cls(((input_tokens, output_tokens, 1.0),))

    @classmethod
    def read(cls, path: str | Path) -> "RequestMix":
        import csv

        p = Path(path)
        if not p.is_file():
            raise invalid("RequestMix.read", "path", "an existing CSV file (input_tokens,output_tokens[,count])", str(p))
        rows = []
        with p.open(newline="") as fh:
            for i, r in enumerate(csv.DictReader(fh)):
                try:
                    rows.append((int(r["input_tokens"]), int(r["output_tokens"]), float(r.get("count") or 1)))
                except (KeyError, TypeError, ValueError):
                    raise invalid(f"RequestMix.read({p.name})", f"row {i + 2}", "integers input_tokens, "
                                  "output_tokens and an optional count > 0", r) from None
        return cls(tuple(rows))

    def mean(self) -> tuple[float, float]:
        w = sum(c for *_, c in self.pairs)
        return (sum(i * c for i, _, c in self.pairs) / w, sum(o * c for _, o, c in self.pairs) / w)

    def quantile(self, q: float, which: int) -> int:
        """The ``q`` quantile of input (``which=0``) or output (1) lengths."""
        vals = sorted((p[which], p[2]) for p in self.pairs)
        total, acc = sum(c for _, c in vals), 0.0
        for v, c in vals:
            acc += c
            if acc >= q * total - 1e-12:
                return v
        return vals[-1][0]


@serializable("serving_estimate")
@dataclass(frozen=True)
class ServingEstimate(_Deployment):
    """Continuous batching's steady state on one deployment (``tp x pp`` GPUs) at ``batch``
    sequences in flight (per pipeline micro-batch)."""

    ttft_p50_s: float
    ttft_p90_s: float
    tpot_p50_s: float
    tpot_p90_s: float
    output_tokens_per_s: float  # the deployment
    input_tokens_per_s: float
    requests_per_s: float
    prefill_share: float  # of the deployment's time
    memory_per_gpu_bytes: float  # weights + KV of ``batch`` sequences at the p90 context + activations
    fits_memory: bool
    meets_slo: bool
    why: str  # "" when it meets the targets and fits
    band: tuple[float, float]  # the calibration's 80 % band (published / predicted) on every time
    provenance: str
    notes: tuple[str, ...] = field(default_factory=tuple)


def serve(model: Any, device: str | DeviceSpec, mix: RequestMix, *, weights: str = "bf16", kv: str | None = None,
          tp: int = 1, pp: int = 1, batch: int = 1, ttft_slo_s: float | None = None, tpot_slo_s: float | None = None,
          runtime: str = "fused", group_size: int = 128) -> ServingEstimate:
    """The steady state of continuous batching with ``batch`` sequences decoding at once: per decode
    step every sequence gains a token and, on average, ``batch / mean output`` requests finish and as
    many prompts are prefilled in the same iteration (chunked prefill), so

        TPOT       = t_step(batch, mean context) + batch / O x t_prefill(I)
        throughput = pp x batch / TPOT output tokens/s;  requests/s = throughput / O
        TTFT       = t_prefill(I) + TPOT (a new prompt joins at the next iteration)

    p90s use the mix's 90th-percentile input (TTFT) and context (TPOT). ``meets_slo`` checks the
    p90s against the targets, and the KV of ``batch`` sequences at the p90 context against memory."""
    from . import calibration

    if not isinstance(mix, RequestMix):
        raise invalid("llm.serve", "mix", "a RequestMix (RequestMix.fixed(input, output) or RequestMix.read(path))",
                      type(mix).__name__)
    i_mean, o_mean = mix.mean()
    i90, o90 = mix.quantile(0.9, 0), mix.quantile(0.9, 1)
    i50 = mix.quantile(0.5, 0)
    ctx90 = i90 + o90
    shape, spec, f, kvd = _check(model, device, weights, kv, tp, pp, batch, ctx90, group_size)
    lk = calibration.load().lookup(spec, runtime)

    def prefill(n: int) -> float:
        return _time(_step_kernels(shape, spec, f, kvd, tp, pp, 1, n, 0, True, group_size), lk)

    def step(ctx: int) -> float:
        return _time(_step_kernels(shape, spec, f, kvd, tp, pp, batch, 1, ctx, False, group_size), lk)

    admit = batch / o_mean  # prompts prefilled per decode iteration
    p_mean = prefill(max(1, round(i_mean)))
    tpot50 = step(max(1, round(i_mean + o_mean / 2))) + admit * p_mean
    tpot90 = step(max(1, ctx90)) + admit * p_mean
    thr = pp * batch / tpot50
    ttft50, ttft90 = prefill(i50) + tpot50, prefill(i90) + tpot90
    cap = spec.memory_bytes * (1 - RESERVED_FRACTION)
    mem = _memory(shape, f, kvd, tp, pp, batch, ctx90, i90, group_size)
    fits = mem["total"] <= cap
    why = []
    if not fits:
        why.append(f"needs {mem['total'] / 1e9:.1f} GB per GPU of {cap / 1e9:.1f} GB usable")
    if ttft_slo_s is not None and ttft90 > ttft_slo_s:
        why.append(f"TTFT p90 {ttft90 * 1e3:.0f} ms > {ttft_slo_s * 1e3:.0f} ms")
    if tpot_slo_s is not None and tpot90 > tpot_slo_s:
        why.append(f"TPOT p90 {tpot90 * 1e3:.1f} ms > {tpot_slo_s * 1e3:.1f} ms")
    share = admit * p_mean / tpot50
    return ServingEstimate(
        model=shape.name, device=spec.name, weights=weights, kv=kvd, tp=tp, pp=pp, batch=batch,
        ttft_p50_s=ttft50, ttft_p90_s=ttft90, tpot_p50_s=tpot50, tpot_p90_s=tpot90, output_tokens_per_s=thr,
        input_tokens_per_s=thr * i_mean / o_mean, requests_per_s=thr / o_mean, prefill_share=share,
        memory_per_gpu_bytes=mem["total"], fits_memory=fits, meets_slo=fits and not why, why="; ".join(why), band=lk.band,
        provenance=(f"continuous batching on {tp * pp} x {spec.name} ({weights}, {kvd} KV, batch {batch}), "
                    f"request mix mean {i_mean:.0f} in / {o_mean:.0f} out tokens; {lk.source}"),
    )
