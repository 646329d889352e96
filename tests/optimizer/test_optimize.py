"""Your own model, end to end, through the public API: ``optimize`` from a model and an evaluation
function (plain MLP on sklearn data, a Hugging Face model built from a config), the README's first
example, failing fast on a misconfigured space, an evaluate() that raises, and knobs of your own
(``transform_knob``) on the model and on the workload."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from cost_models import CostModel, Scenario, ServingPlan
from cost_models.scenario import PeoplePlan
from optimizer import EvaluationStopped, SearchSpace, default_space, optimize, search
from optimizer.space import transform_knob
from profilers import Workload
from profilers.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
FAST = dict(devices=("T4", "L4"), batch_sizes=(64,), profile_time_cap_s=0.1)
BUSY = Scenario(serving=ServingPlan(avg_requests_per_s=200_000, latency_slo_s=0.05))


@pytest.fixture(scope="module")
def mlp():
    """A small MLP trained on sklearn's breast-cancer data: (model, accuracy, x_train, y_train, x_test)."""
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = torch.tensor((x - x.mean(0)) / x.std(0), dtype=torch.float32)
    y = torch.tensor(y)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 64), nn.ReLU(), nn.Linear(64, 2))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[:400]), y[:400]).backward()
        opt.step()

    def accuracy(m):
        return (m(x[400:]).argmax(1) == y[400:]).float().mean().item()

    return model.eval(), accuracy, x[:400], y[:400], x[400:]


def _loader(x, y):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)


def test_the_readme_opens_with_the_one_call_path_and_it_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    first = re.search(r"```python\n(.*?)```", text, re.S)
    assert first and "optimize(" in first.group(1) and len(first.group(1).splitlines()) <= 15
    assert text.index(first.group(0)) < text.index("## On a fresh machine")  # the README opens with it
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(first.group(1), "README.md", "exec"), scope)  # noqa: S102 - the documented example itself
    res = scope["res"]
    assert res.status == "optimal" and res.best is not None and res.best.quality >= 0.9
    assert res.best.quality_source == "measured" and res.baseline is not None


def test_a_plain_mlp_with_a_dataloader(mlp):
    model, accuracy, xtr, ytr, xte = mlp
    notes = []
    res = optimize(model, accuracy, example_inputs=xte[:16], train_data=_loader(xtr, ytr), min_quality=0.9,
                   scenario=BUSY, method="exhaustive", log=notes.append, **FAST)
    assert res.status == "optimal" and res.best.quality >= 0.9
    evaluated = [t for t in res.trials if t.quality is not None]
    assert len(evaluated) == len(res.trials) == 9  # prune 0/25/50 % x quantize none/int8 weight-only/int8 dynamic
    assert any("no distillation" in n for n in notes)  # no scaled_model: said, not silently dropped
    # fine-tuning after pruning trained on the DataLoader's batches: a 50 % pruned MLP keeps its accuracy
    pruned = {t.variant: t.quality for t in res.trials}["w1-p0.5-qnone"]
    assert pruned >= 0.85
    assert (model(xte[:4]) == model(xte[:4])).all()  # the caller's model is untouched


def _tiny_bert(*, hidden: int, samples: int, tokens: int) -> tuple[nn.Module, dict]:
    """A 2-layer BERT classifier built from a config (no download), and a batch of random token ids."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=4 * hidden, max_position_embeddings=max(64, tokens), num_labels=2)
    ids = torch.randint(0, 100, (samples, tokens))
    return transformers.BertForSequenceClassification(cfg).eval(), {"input_ids": ids,
                                                                     "attention_mask": torch.ones_like(ids)}


def test_a_hugging_face_model_built_from_a_config_without_training_data():
    model, batch = _tiny_bert(hidden=32, samples=64, tokens=16)
    reference = model(**batch).logits.argmax(-1)

    def agreement(m):  # a ModelOutput, read as it is
        return (m(**batch).logits.argmax(-1) == reference).float().mean().item()

    notes = []
    res = optimize(model, agreement, example_inputs={k: v[:8] for k, v in batch.items()}, min_quality=0.8,
                   scenario=BUSY, log=notes.append, **FAST)
    assert any("no training data" in n and "no fine-tuning" in n for n in notes)
    assert res.best is not None and res.best.quality >= 0.8
    assert res.baseline.quality == 1.0  # the model as given agrees with itself


def test_a_torchvision_model_works_without_an_adapter():
    torchvision = pytest.importorskip("torchvision", reason="torchvision is not installed here (PyPI's build does "
                                                              "not load beside torch 2.13.0+cpu)")
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(8, 3, 32, 32)
    ref = model(x).argmax(1)
    res = optimize(model, lambda m: (m(x).argmax(1) == ref).float().mean().item(), example_inputs=x,
                   min_quality=0.5, scenario=BUSY, **FAST)
    assert res.best is not None


def test_the_default_space_follows_the_data(mlp):
    model, accuracy, xtr, ytr, xte = mlp
    bare = Workload.from_model(model, accuracy, example_inputs=xte[:8])
    space, notes = default_space(bare)
    assert space.finetune_steps == 0 and space.distill_width == (1.0,) and "no training data" in notes[0]
    full = Workload.from_model(model, accuracy, example_inputs=xte[:8], train_data=_loader(xtr, ytr),
                               scaled_model=lambda w: nn.Sequential(nn.Linear(30, round(64 * w)), nn.ReLU(),
                                                                    nn.Linear(round(64 * w), 2)))
    space, notes = default_space(full)
    assert space.finetune_steps > 0 and space.distill_width == (1.0, 0.5) and not notes
    assert full.train_samples == 400 and full.batch_size == 8
    x, y = full.train_batch(5, torch.Generator().manual_seed(0))
    assert x.shape == (5, 30) and y.shape == (5,) and y.dtype == torch.int64
    assert full.inputs(20).shape == (20, 30)  # example inputs repeated to any batch


@pytest.mark.parametrize("bad, match", [
    (dict(example_inputs=[1, 2]), r"from_model\.example_inputs must be a tensor, a tuple of tensors or a dict"),
    (dict(example_inputs={"a": torch.ones(2, 3), "b": torch.ones(3, 3)}), r"one batch size .*got \[2, 3\]"),
    (dict(train_data=[]), r"from_model\.train_data must be at least one batch"),
    (dict(train_data=5), r"from_model\.train_data must be a DataLoader or an iterable of batches; got 'int'"),
    (dict(train_data=[(torch.ones(2, 30), torch.ones(3))]), r"train_data\[0\] targets must be a tensor with 2 rows"),
])
def test_bad_inputs_name_the_field(mlp, bad, match):
    model, accuracy, *_, xte = mlp
    with pytest.raises(ConfigError, match=match):
        Workload.from_model(model, accuracy, **{"example_inputs": xte[:4], **bad})


def test_a_misconfigured_space_fails_before_anything_runs_with_everything_missing(mlp):
    model, accuracy, *_, xte = mlp
    calls = []

    def counted(m):
        calls.append(1)
        return accuracy(m)

    space = SearchSpace(distill_width=(1.0, 0.5), prune_amount=(0.0, 0.5), finetune_steps=50, devices=("T4",),
                        batch_sizes=(64,))
    with pytest.raises(ConfigError) as info:
        optimize(model, counted, example_inputs=xte[:8], min_quality=0.9, scenario=BUSY, space=space)
    msg = str(info.value)
    assert msg.startswith("search.space must hold only techniques that workload 'Sequential' can run; got 3")
    assert "distill_width=0.5 (distill_0.5): needs training data" in msg
    assert "distill_width=0.5 (distill_0.5): needs a student architecture" in msg
    assert "prune_amount=0.5 (prune_structured_0.5_ft50): needs training data" in msg and "finetune_steps=0" in msg
    assert not calls  # nothing was evaluated


def test_an_evaluate_that_raises_stops_optimize_with_the_users_traceback(mlp, tmp_path):
    model, accuracy, xtr, ytr, xte = mlp
    seen = []

    def evaluate(m):
        seen.append(1)
        if len(seen) == 2:
            raise KeyError("my metric's lookup table")
        return accuracy(m)

    with pytest.raises(EvaluationStopped) as info:
        optimize(model, evaluate, example_inputs=xte[:8], train_data=_loader(xtr, ytr), min_quality=0.9,
                 scenario=BUSY, method="exhaustive", output_dir=tmp_path, **FAST)
    assert isinstance(info.value.__cause__, KeyError)
    assert any(f.name == "evaluate" for f in __import__("traceback").extract_tb(info.value.__cause__.__traceback__))
    rows = (tmp_path / "evaluations.jsonl").read_text().splitlines()
    assert len(rows) == 2  # the finished evaluation and the failed one are kept
    res = optimize(model, evaluate, example_inputs=xte[:8], train_data=_loader(xtr, ytr), min_quality=0.9,
                   scenario=BUSY, method="exhaustive", output_dir=tmp_path, on_error="skip", **FAST)
    assert res.best is not None  # resumed: the failed variant retried, the rest evaluated


# ---- knobs of your own ---------------------------------------------------------------------------
def low_rank(model: nn.Module, fraction: float) -> nn.Module:
    """Each hidden Linear as two of rank ``fraction`` x min(in, out) (truncated SVD): a technique of one's own."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and child.out_features > 10:
                r = max(1, round(fraction * min(child.in_features, child.out_features)))
                u, s, vh = torch.linalg.svd(child.weight.detach(), full_matrices=False)
                a, b = nn.Linear(child.in_features, r, bias=False), nn.Linear(r, child.out_features)
                a.weight.data, b.weight.data = (s[:r, None] * vh[:r]).contiguous(), u[:, :r].contiguous()
                b.bias.data = child.bias.detach().clone()
                setattr(parent, name, nn.Sequential(a, b))
    return model


@pytest.fixture(autouse=True)
def own_registries():
    """The knobs a test declares (transforms, techniques with their hours) end with it."""
    from cost_models import scenario
    from profilers.techniques import transform

    techniques, transforms = dict(scenario._TECHNIQUES), dict(transform._SPECS)
    yield
    scenario._TECHNIQUES.clear()
    scenario._TECHNIQUES.update(techniques)
    transform._SPECS.clear()
    transform._SPECS.update(transforms)


def rank_space() -> type:
    @dataclass(frozen=True)
    class RankSpace(SearchSpace):
        rank: tuple[float, ...] = transform_knob("low_rank", (1.0, 0.5, 0.1), low_rank, off=1.0,
                                                 order=lambda v: -v, engineer_hours=16,
                                                 describe=lambda v: f"low rank {v:g}")
    return RankSpace


def test_a_knob_of_your_own_on_the_model_is_priced_and_measured_like_the_built_in_ones(wl, tmp_path):
    cm = CostModel(Scenario(serving=ServingPlan(avg_requests_per_s=50_000, samples_per_request=100,
                                                latency_slo_s=0.05)))
    space = rank_space()(devices=("T4",), batch_sizes=(4096,))
    kw = dict(min_quality=0.9, profile_time_cap_s=0.1, raise_infeasible=False)
    ex = search(wl, space, cm, method="exhaustive", output_dir=tmp_path / "ex", **kw)
    lazy = search(wl, space, cm, method="lazy", output_dir=tmp_path / "lazy", **kw)
    by = {t.variant: t for t in ex.trials}
    assert set(by) == {"w1-p0-qnone-low_rank1", "w1-p0-qnone-low_rank0.5", "w1-p0-qnone-low_rank0.1"}
    assert by["w1-p0-qnone-low_rank0.1"].label == "low rank 0.1"
    assert by["w1-p0-qnone-low_rank0.1"].quality < by["w1-p0-qnone-low_rank1"].quality  # measured, not assumed
    # priced: its engineer hours (16 h at the price book's rate) on top of the same deployment
    assert by["w1-p0-qnone-low_rank0.5"].cost_usd > by["w1-p0-qnone-low_rank1"].cost_usd
    assert lazy.best.variant == ex.best.variant and ex.status == lazy.status == "optimal"
    from profilers.config import loads

    saved = loads((tmp_path / "ex" / "results.json").read_text())
    assert saved.trials == ex.trials  # the transform round-trips through results.json


def test_a_knob_of_your_own_on_the_workload_changes_what_is_profiled_and_evaluated():
    model, batch = _tiny_bert(hidden=128, samples=16, tokens=256)
    seen_lengths = []

    def agreement(m):
        out = m(**batch).logits.argmax(-1)
        return (out == model(**batch).logits.argmax(-1)).float().mean().item()

    class Cut(nn.Module):
        def __init__(self, inner: nn.Module, n: int) -> None:
            super().__init__()
            self.inner, self.n = inner, n

        def forward(self, input_ids, attention_mask):
            seen_lengths.append(self.n)
            return self.inner(input_ids=input_ids[:, :self.n], attention_mask=attention_mask[:, :self.n])

    def seq_len(w: Workload, n: int) -> Workload:  # serve and evaluate on the first n tokens
        return dataclasses.replace(w, inputs=lambda b: {k: v[:, :n] for k, v in w.inputs(b).items()},
                                   evaluate=lambda m: w.evaluate(Cut(m, n)), seq_len=n)

    @dataclass(frozen=True)
    class SeqSpace(SearchSpace):
        seq: tuple[int, ...] = transform_knob("seq_len", (256, 32), seq_len, on="workload", off=256,
                                                order=lambda v: -v, engineer_hours=0)

    scenario = Scenario(serving=ServingPlan(avg_requests_per_s=200_000, samples_per_request=10, latency_slo_s=0.1))
    res = optimize(model, agreement, example_inputs={k: v[:8] for k, v in batch.items()}, min_quality=0.0,
                   scenario=scenario, space=SeqSpace(devices=("T4",), batch_sizes=(64,)), method="exhaustive",
                   profile_time_cap_s=0.1)
    by = {t.variant: t for t in res.trials}
    assert seen_lengths and set(seen_lengths) == {32}  # the variant was evaluated on 32 tokens
    # profiled on 32-token inputs: an eighth of the MLP work and less of the attention, so serving costs less
    assert by["w1-p0-qnone-seq_len32"].cost_usd < by["w1-p0-qnone-seq_len256"].cost_usd


def test_a_knob_without_its_engineer_hours_fails_fast(wl):
    @dataclass(frozen=True)
    class Unpriced(SearchSpace):
        rank: tuple[float, ...] = transform_knob("unpriced_rank", (1.0, 0.5), low_rank, off=1.0, order=lambda v: -v)

    cm = CostModel(Scenario(serving=ServingPlan(avg_requests_per_s=10, latency_slo_s=0.05)))
    with pytest.raises(ConfigError, match=r"rank=0\.5 \(unpriced_rank_0\.5\): needs its engineer hours: "
                                          r"transform_knob\(\.\.\., engineer_hours=\.\.\.\)"):
        search(wl, Unpriced(devices=("T4",), batch_sizes=(64,)), cm, min_quality=0.9)
    # the hours a knob declares are an assumption a scenario overrides like any technique's
    rank_space()
    cheap = Scenario(serving=ServingPlan(avg_requests_per_s=10, latency_slo_s=0.05),
                     people=PeoplePlan(hours={"low_rank": 1}))
    assert cheap.engineer_hours("low_rank") == 1 and Scenario().engineer_hours("low_rank") == 16
    with pytest.raises(ConfigError, match=r"PeoplePlan\.hours\['pruning'\] must be keyed by"):
        PeoplePlan(hours={"pruning": 3}) and Scenario(people=PeoplePlan(hours={"pruning": 3}))
