"""The training recipe's pieces: LR / weight-decay schedules, AdamW groups, budgets, batch layout."""

import math

import pytest
import torch

from lengthgen.config import ConfigError, resolve
from lengthgen.models import build_model
from lengthgen.train.budget import batch_layout, budget_tokens, milestone_steps, total_steps
from lengthgen.train.optim import build_optimizer, param_groups, set_schedule
from lengthgen.train.schedule import lr_at, warmup_steps, weight_decay_at


def test_lr_schedule_warmup_cosine_to_min():
    peak, lo, total = 1e-3, 1e-5, 100
    lrs = [lr_at(s, total, peak, lo, 0.1) for s in range(total)]
    assert warmup_steps(total, 0.1) == 10 and warmup_steps(total, 0.25) == 25 and warmup_steps(total, 0) == 0
    assert lrs[:10] == pytest.approx([peak * (s + 1) / 10 for s in range(10)])   # linear warm-up to the peak
    assert lrs[9] == pytest.approx(peak) and lrs[10] == pytest.approx(peak)
    assert lrs[-1] == pytest.approx(lo)                                         # cosine ends at min_lr
    mid = 10 + (89 / 2)                                                         # half-way through the decay
    assert lr_at(int(mid), total, peak, lo, 0.1) == pytest.approx(
        lo + 0.5 * (peak - lo) * (1 + math.cos(math.pi * (int(mid) - 10) / 89)))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))                      # monotone decay
    assert lr_at(0, 1, peak, lo, 0.1) == peak
    longer = [lr_at(s, total, peak, lo, 0.25) for s in range(total)]           # Fig. 11's 25% warm-up
    assert longer[24] == pytest.approx(peak) and longer[9] < peak


def test_weight_decay_follows_the_lr_shape():
    assert weight_decay_at(5e-4, 1e-3, 0.01) == pytest.approx(0.005)
    assert weight_decay_at(1e-3, 1e-3, 0.01) == pytest.approx(0.01)


def test_param_groups_and_schedule():
    model = build_model("mamba2", "tiny", seed=0)
    decay, no_decay = param_groups(model)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay}
    skipped = {names[id(p)] for p in no_decay}
    assert len(decay) + len(no_decay) == len({id(p) for p in model.parameters()})   # tied head counted once
    assert "backbone.embedding.weight" in skipped
    assert all(p.dim() >= 2 for p in decay)
    assert not any(n.endswith(("A_log", "D", "dt_bias")) or "norm" in n for n in decayed)
    assert any(n.endswith("in_proj.weight") for n in decayed)
    opt = build_optimizer(model, 1e-3, 0.01, (0.9, 0.95))
    assert opt.defaults["betas"] == (0.9, 0.95)
    set_schedule(opt, 2e-4, 0.002)
    assert [g["lr"] for g in opt.param_groups] == [2e-4, 2e-4]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.002, 0.0]


def test_budgets_and_steps():
    assert budget_tokens(1000, 50) == 1000
    assert budget_tokens("1x", 50) == 20 * 50                  # Chinchilla: 20 tokens per parameter
    assert budget_tokens("20x", 45_000_000) == 18_000_000_000
    assert budget_tokens("2.5x", 1000) == 50_000
    with pytest.raises(ConfigError, match="Chinchilla multiple"):
        budget_tokens("20 x", 10)
    train = resolve({"train": {"context": 64, "batch_tokens": 512, "micro_batch": 2, "tokens": "2x"}})["train"]
    layout = batch_layout(train, world_size=2)
    assert (layout.rows, layout.rows_per_rank, layout.accumulation, layout.tokens_per_step) == (8, 4, 2, 512)
    assert layout.micro_rows(1) == [range(4, 6), range(6, 8)]
    assert total_steps(train, layout, num_params=1000) == math.ceil(40_000 / 512)
    assert total_steps({**train, "steps": 7}, layout, 1000) == 7
    with pytest.raises(ConfigError, match="set train.steps or train.tokens"):
        total_steps({**train, "tokens": None}, layout, 1000)
    assert milestone_steps(["1x", 1024], layout, 1000, 79) == {"1x": 40, "1024": 2}
    with pytest.raises(ConfigError, match="beyond the run"):
        milestone_steps(["3x"], layout, 1000, 79)


def test_layout_errors_name_the_keys():
    with pytest.raises(ConfigError, match="train.batch_tokens=500 must be a multiple of train.context=64"):
        batch_layout({"context": 64, "batch_tokens": 500, "micro_batch": 2})
    with pytest.raises(ConfigError, match="train.micro_batch=3 x 2 process"):
        batch_layout({"context": 64, "batch_tokens": 512, "micro_batch": 3}, world_size=2)
    with pytest.raises(ConfigError, match="3 processes cannot share"):
        batch_layout({"context": 64, "batch_tokens": 512, "micro_batch": None}, world_size=3)


def test_micro_batch_null_runs_each_rank_rows_at_once():
    layout = batch_layout({"context": 64, "batch_tokens": 1024, "micro_batch": None}, world_size=2)
    assert (layout.rows_per_rank, layout.micro_batch, layout.accumulation) == (8, 8, 1)
    assert layout.micro_rows(1) == [range(8, 16)]


def test_adamw_step_matches_reference_update():
    """One optimizer step with the schedule applied equals the AdamW formula (decayed group)."""
    w = torch.nn.Parameter(torch.tensor([[1.0, -2.0]], dtype=torch.float64))
    model = torch.nn.Linear(2, 1, bias=False).double()
    model.weight = w
    opt = build_optimizer(model, 1e-2, 0.1)
    set_schedule(opt, 1e-2, 0.05)
    w.grad = torch.tensor([[0.5, 0.25]], dtype=torch.float64)
    opt.step()
    g = torch.tensor([[0.5, 0.25]], dtype=torch.float64)
    m, v = 0.1 * g, 0.05 * g * g
    expected = torch.tensor([[1.0, -2.0]], dtype=torch.float64) * (1 - 1e-2 * 0.05)
    expected -= 1e-2 * (m / 0.1) / ((v / 0.05).sqrt() + 1e-8)
    assert torch.allclose(w.detach(), expected, atol=1e-15)
