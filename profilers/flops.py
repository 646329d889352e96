"""FLOP counting on top of ``torch.utils.flop_counter.FlopCounterMode``.

Convention: **one multiply-add = 2 FLOPs**, everywhere (torch's convention too). Like torch, only
matrix-multiply-like work is counted (mm, addmm, bmm, convolution, attention); element-wise ops,
normalizations and reductions count 0 FLOPs but are *listed* in :attr:`FlopCount.uncounted_ops`
so nothing that ran is silently dropped. Causal masks are not discounted (full attention
arithmetic is counted, as kernels without block skipping do it).

Formulas torch lacks are added through its own extension point, ``FlopCounterMode(custom_mapping=...)``
(:data:`EXTRA_FORMULAS`):

* ``aten._scaled_dot_product_flash_attention_for_cpu`` (+ backward): the CPU SDPA kernel;
* ``aten._native_multi_head_attention``: the fused ``nn.MultiheadAttention`` fast path (eval, no_grad);
* ``aten._transformer_encoder_layer_fwd``: the fused ``nn.TransformerEncoderLayer`` fast path;
* ``aten._int_mm`` and ``aten._weight_int8pack_mm``: int8 matmuls of quantized models (torchao);
* ``aten.convolution_backward`` (replaced): torch's counts grouped convolutions' weight gradient
  ``groups`` times over.

Besides FLOPs, every executed op's bytes touched (inputs read + outputs written) is recorded per
op signature (:attr:`FlopCount.ops`), which the roofline projection uses. A batched matmul that runs
directly inside an attention module (its innermost module's class name ends in "Attention", as
transformers and torch name them: the ``QK^T`` and ``PV`` products of attention run eagerly) records
the bytes of its score / probability operand as ``onchip_bytes``: the ``s_q x s_k`` matrix a fused
attention kernel never writes to memory. For ``C[b,m,n] = A[b,m,k] @ B[b,k,n]`` it is the operand
without the smallest of m, k, n (the head dimension): ``C`` when k is smallest (``QK^T``), ``A`` when
n is (``PV``), ``B`` when m is (backward products such as ``Q^T dS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch.utils import flop_counter as fc
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from .config import ConfigError, invalid, serializable
from .profile import OpRecord

__all__ = ["FlopCount", "OpRecord", "count_flops", "EXTRA_FORMULAS", "op_class"]

aten = torch.ops.aten


# --------------------------------------------------------------------------------------------
# formulas torch's flop_counter lacks (pure functions of shapes, like torch's own)
# --------------------------------------------------------------------------------------------


def sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """CPU flash SDPA: QK^T and AV, as torch's ``sdpa_flop`` for the CUDA kernels."""
    return fc.sdpa_flop_count(query_shape, key_shape, value_shape)


def sdpa_cpu_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return fc.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _seq_lengths(t: torch.Tensor) -> tuple[int, list[int], int]:
    """(batch, per-sequence lengths, feature dim) of a dense [B, L, E], [L, E] or nested tensor."""
    if t.is_nested:
        sizes = t._nested_tensor_size().tolist()
        return len(sizes), [int(s[0]) for s in sizes], int(sizes[0][-1]) if sizes else 0
    if t.dim() == 2:
        return 1, [int(t.shape[0])], int(t.shape[1])
    return int(t.shape[0]), [int(t.shape[1])] * int(t.shape[0]), int(t.shape[2])


def native_mha_flop(query, key, value, embed_dim, num_head, qkv_weight, *args, out_val=None, **kwargs) -> int:
    """Fused ``nn.MultiheadAttention`` forward (raw tensors, nested allowed).

    Per sequence with Lq queries, Lk keys, width E:
    q proj 2*Lq*E*E + k,v proj 2*2*Lk*E*E + scores 2*Lq*Lk*E + AV 2*Lq*Lk*E + out proj 2*Lq*E*E.
    """
    _, lq, e = _seq_lengths(query)
    _, lk, _ = _seq_lengths(key)
    total = 0
    for a, b in zip(lq, lk):
        total += 2 * a * e * e + 4 * b * e * e + 4 * a * b * e + 2 * a * e * e
    return total


def transformer_encoder_layer_flop(src, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias,
                                   use_gelu, norm_first, eps, norm_weight_1, norm_bias_1, norm_weight_2,
                                   norm_bias_2, ffn_weight_1, *args, out_val=None, **kwargs) -> int:
    """Fused ``nn.TransformerEncoderLayer`` forward: self-attention as above plus the FFN.

    Per sequence of length L, width E, FFN width F: qkv 2*L*E*3E + scores and AV 2*2*L*L*E +
    out proj 2*L*E*E + FFN 2*2*L*E*F.
    """
    _, lens, e = _seq_lengths(src)
    f = int(ffn_weight_1.shape[0])
    return sum(6 * n * e * e + 4 * n * n * e + 2 * n * e * e + 4 * n * e * f for n in lens)


def int_mm_flop(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """``aten._int_mm`` (int8 x int8 -> int32, torchao's int8 dynamic path): as ``mm``."""
    return fc.mm_flop(a_shape, b_shape)


def weight_int8pack_mm_flop(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    """``aten._weight_int8pack_mm``: x [M, K] times int8 w [N, K] transposed: 2 * M * N * K."""
    m, k = x_shape[-2], x_shape[-1]
    return 2 * m * w_shape[0] * k * (x_shape[0] if len(x_shape) == 3 else 1)


def conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                       _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """Convolution backward: each requested gradient (input, weight) costs the forward's FLOPs.

    Replaces torch 2.13's formula, whose weight-gradient term ignores ``groups`` (it counts a
    grouped / depthwise convolution's weight gradient ``groups`` times over; fixed upstream in
    pytorch/pytorch#183405, not in this release).
    """
    forward = fc.conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _raw(fn: Callable) -> Callable:
    fn._get_raw = True  # FlopCounterMode passes raw tensors (nested ones included) to these
    return fn


#: op packet -> formula; passed to ``FlopCounterMode(custom_mapping=...)``
EXTRA_FORMULAS: dict[Any, Callable] = {
    aten._scaled_dot_product_flash_attention_for_cpu: sdpa_cpu_flop,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: sdpa_cpu_backward_flop,
    aten._native_multi_head_attention: _raw(native_mha_flop),
    aten._int_mm: int_mm_flop,
    aten.convolution_backward: conv_backward_flop,
    aten._weight_int8pack_mm: weight_int8pack_mm_flop,
    aten._transformer_encoder_layer_fwd: _raw(transformer_encoder_layer_flop),
}


# --------------------------------------------------------------------------------------------
# op classes (for the roofline) and byte accounting
# --------------------------------------------------------------------------------------------

_MATMUL = {"mm", "addmm", "bmm", "baddbmm", "_scaled_mm", "linear", "matmul", "_int_mm",
           "_weight_int8pack_mm", "_weight_int4pack_mm", "_weight_int4pack_mm_for_cpu"}
_CONV = {"convolution", "_convolution", "cudnn_convolution", "convolution_overrideable",
         "_slow_conv2d_forward", "convolution_backward", "mkldnn_convolution"}
_FREE = {"view", "_unsafe_view", "reshape", "expand", "permute", "transpose", "t", "unsqueeze",
         "squeeze", "select", "slice", "as_strided", "alias", "detach", "split", "split_with_sizes",
         "unbind", "chunk", "_reshape_alias", "lift_fresh", "empty", "empty_like", "empty_strided",
         "new_empty", "new_empty_strided", "unfold", "diagonal", "narrow", "ones_like",
         "zeros_like", "scalar_tensor", "_local_scalar_dense", "sym_size", "is_same_size",
         "set_", "resize_", "_nested_tensor_size"}


def op_class(name: str) -> str:
    """Roofline class of an aten op name: matmul, conv, attention, free (no arithmetic) or memory."""
    base = name.removeprefix("aten::").removeprefix("aten.").split(".")[0]
    if base in _MATMUL:
        return "matmul"
    if base in _CONV:
        return "conv"
    if "attention" in base or base in ("_transformer_encoder_layer_fwd",):
        return "attention"
    if base in _FREE:
        return "free"
    return "memory"


_FLOAT_NAMES = {torch.float32: "fp32", torch.float64: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
_FP8 = {d for d in (getattr(torch, n, None) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
                                                       "float8_e5m2fnuz")) if d is not None}


def compute_dtype(tensors: Any) -> str:
    """The dtype an op computes in, from its tensor inputs: ``"fp8"`` when one is fp8 (scaled fp8
    matmuls take fp32 scales beside fp8 operands), else the widest floating input (weight-only
    int8 dequantizes into the activations' dtype), else ``"int8"`` for integer inputs of a
    quantized matmul (``_int_mm``: int8 x int8); ``""`` for none of these (indices, shapes)."""
    dtypes = [t.dtype for t in tensors if isinstance(t, torch.Tensor)]
    if any(d in _FP8 for d in dtypes):
        return "fp8"
    floats = [d for d in dtypes if d in _FLOAT_NAMES]
    if floats:
        return _FLOAT_NAMES[max(floats, key=lambda d: torch.finfo(d).bits)]
    if any(d in (torch.int8, torch.uint8) for d in dtypes):
        return "int8"
    return ""


def _tensor_bytes(t: Any) -> int:
    if not isinstance(t, torch.Tensor):
        return 0
    if t.is_nested:
        return int(t._nested_tensor_size().prod(dim=1).sum()) * t.element_size()
    return t.numel() * t.element_size()


@serializable("flop_count")
@dataclass(frozen=True)
class FlopCount:
    """The result of :func:`count_flops`.

    ``total``: FLOPs (2 per multiply-add). ``by_module``: module path (as torch's ModuleTracker
    names it, the root module's class name first) -> FLOPs. ``by_op``: aten op -> FLOPs.
    ``uncounted_ops``: aten ops that ran with no FLOP formula -> number of calls (view and other
    arithmetic-free ops included). ``ops``: per op signature records (FLOPs and bytes) for the
    roofline. ``train``: forward + backward when True.
    """

    total: int
    by_module: dict[str, int]
    by_op: dict[str, int]
    uncounted_ops: dict[str, int]
    ops: tuple[OpRecord, ...] = ()
    train: bool = False

    @property
    def total_bytes(self) -> int:
        return sum(r.total_bytes for r in self.ops)

    def by_class(self) -> dict[str, dict[str, int]]:
        """op class -> {"flops": ..., "bytes": ..., "calls": ...}."""
        out: dict[str, dict[str, int]] = {}
        for r in self.ops:
            d = out.setdefault(r.op_class, {"flops": 0, "bytes": 0, "calls": 0})
            d["flops"] += r.total_flops
            d["bytes"] += r.total_bytes
            d["calls"] += r.calls
        return out

    def table(self, depth: int = 2) -> str:
        """A plain-text table of FLOPs per module down to ``depth`` levels."""
        from .render import text_table

        rows = [[m, f"{v:,}", f"{v / self.total:.1%}" if self.total else "0.0%"]
                for m, v in sorted(self.by_module.items()) if m != "Global" and m.count(".") < depth]
        lines = [text_table(["module", "FLOPs", "share"], [*rows, ["total", f"{self.total:,}", ""]], align="lrr")]
        if self.uncounted_ops:
            arith = {k: v for k, v in self.uncounted_ops.items() if op_class(k) != "free"}
            lines.append(f"ops with no FLOP formula (counted 0): {len(arith)} with arithmetic, "
                         f"{len(self.uncounted_ops) - len(arith)} view/copy-like")
        return "\n".join(lines)


def _score_bytes(name: str, args: Any, out: Any) -> int:
    """Bytes of the attention score / probability operand of a batched matmul (see the module
    docstring), 0 for a matmul of another shape."""
    base = name.removeprefix("aten.").split(".")[0]
    if base not in ("bmm", "baddbmm", "matmul") or not isinstance(out, torch.Tensor) or out.dim() < 3:
        return 0
    a, b = (args[1], args[2]) if base == "baddbmm" else (args[0], args[1])
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.dim() < 3 or b.dim() < 3:
        return 0
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    smallest = min(m, k, n)
    return _tensor_bytes(out if k == smallest else a if n == smallest else b)


class _OpRecorder(TorchDispatchMode):
    """Sits outside FlopCounterMode and sees the leaf ops it executes (after its decompositions)."""

    def __init__(self, registry: Mapping[Any, Callable], scope: Callable[[], str] = lambda: "") -> None:
        super().__init__()
        self.registry = registry
        self.records: dict[tuple, list] = {}
        self.uncounted: dict[str, int] = {}
        self.scope = scope  # class name of the innermost module running now ("" if unknown)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        name = str(packet)
        counted = packet in self.registry
        flops = 0
        if counted:
            formula = self.registry[packet]
            flops = int(formula(*args, **kwargs, out_val=out))
        else:
            self.uncounted[name] = self.uncounted.get(name, 0) + 1
        nbytes, dtype = 0, ""
        cls = op_class(name)
        if cls != "free":
            ins, _ = tree_flatten((args, kwargs))
            outs, _ = tree_flatten(out)
            nbytes = sum(_tensor_bytes(t) for t in ins) + sum(_tensor_bytes(t) for t in outs)
            dtype = compute_dtype(ins)
        onchip = _score_bytes(name, args, out) if cls == "matmul" and self.scope().endswith("Attention") else 0
        key = (name, flops, nbytes, dtype, onchip)
        rec = self.records.get(key)
        if rec is None:
            self.records[key] = [name, cls, 1, flops, nbytes, dtype, onchip]
        else:
            rec[2] += 1
        return out


def _default_loss(out: Any) -> torch.Tensor:
    leaves = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if not leaves:
        raise ConfigError("count_flops(train=True): the model's output has no floating-point tensor "
                          "to back-propagate from; pass loss_fn=.")
    return sum(t.float().sum() for t in leaves)


def call_model(model: Callable, inputs: Any) -> Any:
    """``model(inputs)``, ``model(*inputs)`` for a tuple/list, ``model(**inputs)`` for a dict."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def check_model(model: Any, owner: str) -> None:
    if not isinstance(model, torch.nn.Module):
        raise invalid(owner, "model", "a torch.nn.Module", type(model).__name__)


def run_model(model: torch.nn.Module, inputs: Any, owner: str) -> Any:
    """Call ``model`` on ``inputs`` (a tensor, a tuple of positional args or a dict of kwargs),
    turning a failure into an error that names the model, the input shapes and the cause."""
    try:
        return call_model(model, inputs)
    except Exception as e:  # re-raised with context, never swallowed
        shapes = describe_inputs(inputs)
        raise ConfigError(
            f"{owner}: {type(model).__name__} raised {type(e).__name__} on inputs {shapes}: {e}"
        ) from e


def float_dtype(model: torch.nn.Module) -> torch.dtype | None:
    """The dtype of ``model``'s first plain floating parameter (tensor subclasses such as torchao's
    quantized weights are skipped), or ``None`` when it has none: the dtype its inputs run in."""
    for p in model.parameters():
        if type(p.data) is torch.Tensor and p.is_floating_point():
            return p.dtype
    return None


def cast_inputs(inputs: Any, dev: torch.device | None, dtype: torch.dtype) -> Any:
    """``inputs`` on ``dev`` (``None``: where they are), floating tensors in ``dtype`` (integer ones,
    e.g. token ids, unchanged)."""
    def move(t: Any) -> Any:
        if isinstance(t, torch.Tensor):
            t = t if dev is None else t.to(dev)
            return t.to(dtype) if t.is_floating_point() else t
        return t

    return tree_map(move, inputs)


def describe_inputs(inputs: Any) -> str:
    def d(x: Any) -> str:
        if isinstance(x, torch.Tensor):
            return f"Tensor{list(x.shape)}:{str(x.dtype).removeprefix('torch.')}"
        return type(x).__name__

    if isinstance(inputs, Mapping):
        return "{" + ", ".join(f"{k}: {d(v)}" for k, v in inputs.items()) + "}"
    if isinstance(inputs, (tuple, list)):
        return "(" + ", ".join(d(v) for v in inputs) + ")"
    return d(inputs)


def count_flops(model: torch.nn.Module, inputs: Any, *, train: bool = False,
                loss_fn: Callable[[Any], torch.Tensor] | None = None, owner: str = "count_flops") -> FlopCount:
    """Count FLOPs of one forward (``train=False``, run under ``no_grad``) or one forward +
    backward (``train=True``) of ``model`` on ``inputs``.

    ``inputs`` is a tensor, a tuple/list of positional arguments or a dict of keyword arguments.
    Works on real, meta and fake tensors. Floating inputs are cast to the dtype of the model's
    floating parameters (:func:`float_dtype`), as :func:`profilers.measure` does, so a model cast to
    bf16/fp16 (``Quantize("bf16")``) counts on the workload's fp32 inputs, and the op bytes the
    roofline reads are those of its own format. The model's train/eval mode is left as the caller
    set it (``nn.TransformerEncoderLayer`` takes its fused fast path only in eval under no_grad;
    both paths count the same FLOPs).

        >>> import torch
        >>> fc = count_flops(torch.nn.Linear(6, 5, bias=False), torch.randn(4, 6))
        >>> fc.total  # 4 * 6 * 5 multiply-adds * 2
        240
    """
    check_model(model, owner)
    dtype = float_dtype(model)
    if dtype is not None:
        inputs = cast_inputs(inputs, None, dtype)
    counter = fc.FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS)
    # module path (as the counter's ModuleTracker names it) -> class name, for the attention scope
    classes = {f"{type(model).__name__}.{n}" if n else type(model).__name__: type(m).__name__
               for n, m in model.named_modules()}

    def scope() -> str:
        parents = counter.mod_tracker.parents
        return classes.get(max(parents, key=len), "") if parents else ""

    recorder = _OpRecorder(counter.flop_registry, scope)
    grads = {p: p.grad for p in model.parameters()} if train else {}
    try:
        with recorder, counter:
            if train:
                out = run_model(model, inputs, owner)
                loss = (loss_fn or _default_loss)(out)
                if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
                    raise ConfigError(f"{owner}(train=True): the loss does not require grad (no trainable "
                                      f"parameter or input reaches the output of {type(model).__name__}); "
                                      "count with train=False.")
                loss.backward()
            else:
                with torch.no_grad():
                    run_model(model, inputs, owner)
    finally:
        for p, g in grads.items():  # leave the caller's gradients as they were
            p.grad = g
    counts = counter.get_flop_counts()
    by_module = {m: int(sum(v.values())) for m, v in counts.items()}
    by_op: dict[str, int] = {}
    for op, v in counts.get("Global", {}).items():
        by_op[str(op)] = by_op.get(str(op), 0) + int(v)
    ops = tuple(OpRecord(*rec) for rec in recorder.records.values())
    return FlopCount(
        total=int(counter.get_total_flops()),
        by_module=by_module,
        by_op=by_op,
        uncounted_ops=dict(sorted(recorder.uncounted.items())),
        ops=ops,
        train=bool(train),
    )
