"""The parallel-training model: layouts, memory per device, time per step, and a planner.

    >>> from profilers import hardware
    >>> from profilers.parallel import TransformerShape, ParallelConfig, memory_per_device, step_time, plan
    >>> shape = TransformerShape(layers=32, hidden=4096, heads=32, ffn_hidden=11008, vocab=32000,
    ...                          seq_len=4096, layout="llama", tied_embeddings=False)
    >>> cfg = ParallelConfig(dp=8, zero_stage=1, micro_batch=1, global_batch=1024, recompute="selective")
    >>> memory_per_device(shape, cfg, hardware.get("H100-SXM")).fits
    True

Torch-free. Formulas and their sources are in each module's docstring.
"""

from .comm import all_gather_s, group_bandwidth, p2p_s, reduce_scatter_s, ring_all_reduce_s
from .config import ParallelConfig, TransformerShape
from .flops import TrainingFlops, layer_forward_flops, megatron_flops, training_flops
from .memory import MemoryBreakdown, MemoryModel, activation_bytes_per_layer, memory_per_device
from .planner import PlanCandidate, PlanResult, enumerate_configs, evaluate, plan
from .timing import LayerTime, StepTime, TimeModel, gemm_efficiency, layer_time, step_time

__all__ = [
    "TransformerShape", "ParallelConfig",
    "TrainingFlops", "training_flops", "layer_forward_flops", "megatron_flops",
    "MemoryModel", "MemoryBreakdown", "activation_bytes_per_layer", "memory_per_device",
    "TimeModel", "LayerTime", "StepTime", "layer_time", "step_time", "gemm_efficiency",
    "ring_all_reduce_s", "all_gather_s", "reduce_scatter_s", "p2p_s", "group_bandwidth",
    "PlanCandidate", "PlanResult", "enumerate_configs", "evaluate", "plan",
]
