"""Quality P(M): the workload's own held-out evaluation, and fidelity to an original model."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from profilers.techniques import Quantize, apply, fidelity, quality
from profilers.workload import Workload


class Lambda(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


# ---------------------------------------------------------------------------------------------
# quality
# ---------------------------------------------------------------------------------------------


def test_quality_is_the_workloads_own_evaluation(base, wl):
    q = quality(base, wl)
    assert q == wl.evaluate(base)
    assert 0.95 <= q <= 1.0  # the baseline bar for the digits CNN


def test_quality_of_an_untrained_model_is_near_chance(wl):
    torch.manual_seed(0)
    fresh = wl.scaled_model(1.0)  # same architecture, untrained
    assert quality(fresh, wl) < 0.5  # 10 classes: ~0.1; so quality really measures the weights


def test_quality_runs_in_eval_mode_without_grad():
    seen = {}

    def evaluate(model):
        seen["training"], seen["grad"] = model.training, torch.is_grad_enabled()
        return 0.25

    m = nn.Linear(2, 2).train()
    w = Workload(name="probe", model=lambda: m, inputs=lambda n: torch.zeros(n, 2), evaluate=evaluate)
    assert quality(m, w) == 0.25
    assert seen == {"training": False, "grad": False}


def test_quality_without_evaluate_says_what_is_missing():
    w = Workload(name="unlabeled", model=lambda: nn.Linear(2, 2), inputs=lambda n: torch.zeros(n, 2))
    msg = "quality.workload must be a Workload with an evaluate(model) function; got 'unlabeled'."
    with pytest.raises(ValueError, match=re.escape(msg)):
        quality(nn.Linear(2, 2), w)
    with pytest.raises(ValueError, match=re.escape("quality.workload must be a Workload with an evaluate(model) "
                                                   "function; got 'str'.")):
        quality(nn.Linear(2, 2), "digits")


# ---------------------------------------------------------------------------------------------
# fidelity
# ---------------------------------------------------------------------------------------------


def test_a_model_against_itself_has_perfect_fidelity(base, wl):
    x = wl.inputs(64)
    assert fidelity(base, base, x, kind="top1") == 1.0
    assert fidelity(base, base, x, kind="cosine") == pytest.approx(1.0, abs=1e-6)
    assert fidelity(base, base, x) == pytest.approx(1.0, abs=1e-6)  # cosine is the default


def test_top1_agreement_is_the_share_of_equal_argmax():
    x = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0]])
    flipped = Lambda(lambda t: t.flip(-1))
    # argmax of x: 0, 1, 2, 1; of x flipped: 2, 1, 0, 1 -> rows 1 and 3 agree: 2 / 4
    assert fidelity(flipped, nn.Identity(), x, kind="top1") == 0.5


def test_cosine_is_the_mean_per_sample_cosine():
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    rot = Lambda(lambda t: torch.stack([t[:, 1], t[:, 0]], -1))  # swap the coordinates
    # sample 0: (0, 1) vs (1, 0) -> cos 0; sample 1: (1, 1) vs (1, 1) -> cos 1; mean 0.5
    assert fidelity(rot, nn.Identity(), x, kind="cosine") == pytest.approx(0.5)
    assert fidelity(Lambda(lambda t: -t), nn.Identity(), x) == pytest.approx(-1.0)


def test_cosine_reads_embedding_outputs():
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    emb = Lambda(lambda t: {"sentence_embedding": t})
    assert fidelity(emb, emb, x) == pytest.approx(1.0, abs=1e-6)
    scaled = Lambda(lambda t: {"sentence_embedding": 3 * t})
    assert fidelity(scaled, emb, x) == pytest.approx(1.0, abs=1e-6)  # cosine ignores scale


def test_int8_model_keeps_high_fidelity_to_the_original():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).eval()
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
    q = apply(mlp, Quantize("int8_dynamic"), device="cpu", cache=False)
    assert fidelity(q, mlp, x) > 0.99
    assert fidelity(q, mlp, x, kind="top1") >= 0.9
    torch.manual_seed(1)
    other = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).eval()
    assert fidelity(other, mlp, x) < 0.9  # an unrelated model does not agree


def test_fidelity_of_a_bf16_model_to_its_fp32_original():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    x = torch.randn(8, 16)
    q = apply(mlp, Quantize("bf16"), device="cpu", cache=False)
    assert fidelity(q, mlp, x) > 0.99


def test_fidelity_kind_validation(base, wl):
    msg = "fidelity.kind must be 'top1' or 'cosine'; got 'l2'."
    with pytest.raises(ValueError, match=re.escape(msg)):
        fidelity(base, base, wl.inputs(4), kind="l2")
