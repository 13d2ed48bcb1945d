"""Synthetic copying: examples, deterministic batches, metrics against a direct computation, the stage."""

import json
import random

import pytest
import torch
import yaml

from lengthgen.cli import main
from lengthgen.models import build_model
from lengthgen.results import read_result
from lengthgen.tasks import copying
from lengthgen.tasks.batches import SeededBatches


def test_examples_and_answers():
    ids = copying.example("abz")
    assert ids == [copying.BOS, 0, 1, 25, copying.SEP, 0, 1, 25, copying.EOS]
    assert copying.answer_of(ids) == "abz" and copying.decode(ids) == "<bos>abz<sep>abz<eos>"
    with pytest.raises(ValueError, match="a-z"):
        copying.encode("aB")
    with pytest.raises(ValueError, match="SEP"):
        copying.answer_of([0, 1, 2])


def test_rows_and_batches_are_deterministic():
    make = lambda rng: copying.train_row(rng, 3, 6)  # noqa: E731
    context = copying.row_context(6)
    a, b = SeededBatches(make, 4, context, seed=0), SeededBatches(make, 4, context, seed=0)
    first = next(a)
    assert torch.equal(first.inputs, next(b).inputs)
    assert not torch.equal(first.inputs, next(SeededBatches(make, 4, context, seed=1)).inputs)
    second = next(a)
    resumed = SeededBatches(make, 4, context, seed=0)
    resumed.load_state_dict({"step": 1})
    assert torch.equal(next(resumed).targets, second.targets)
    for x, y in zip(first.inputs, first.targets):
        row = x.tolist() + [y[-1].item()]
        copy = copying.answer_of(row)
        assert row[row.index(copying.BOS) + 1:row.index(copying.SEP)] == copying.encode(copy)
        scored = [t for t in y.tolist() if t != -100]
        assert scored == copying.encode(copy) + [copying.EOS]                   # only the copy and EOS count
        assert 3 <= len(copy) <= 6
    assert copying.eval_strings(5, 3, 0) == copying.eval_strings(5, 3, 0) != copying.eval_strings(5, 3, 1)


def test_prefetched_batches_are_the_batches_built_in_turn():
    make = lambda rng: copying.train_row(rng, 3, 6)  # noqa: E731
    context = copying.row_context(6)
    plain = SeededBatches(make, 4, context, seed=3, prefetch=False)
    ahead = SeededBatches(make, 4, context, seed=3)
    for _ in range(5):
        x, y = next(plain), next(ahead)
        assert torch.equal(x.inputs, y.inputs) and torch.equal(x.targets, y.targets)
    assert ahead._ahead[0] == 5                                    # batch 5 is being built
    for step in (2, 9, 5):                                          # resume jumps back, ahead, onto the prefetched one
        ahead.load_state_dict({"step": step})
        assert torch.equal(next(ahead).inputs, plain.batch(step).inputs)
        assert ahead.state_dict() == {"step": step + 1}
    ahead.close()
    assert torch.equal(next(ahead).inputs, plain.batch(6).inputs)  # closed: built in turn
    assert ahead._ahead is None


def test_metrics_match_a_direct_computation():
    torch.manual_seed(0)
    model = build_model("mamba2", preset="tiny", vocab_size=copying.VOCAB_SIZE).double().eval()
    strings = copying.eval_strings(3, 3, seed=0)
    got = copying.evaluate(model, strings, chunk_size=2, batch_size=2)
    tf, gr = [], []
    with torch.no_grad():
        for s in strings:
            ids = torch.tensor([copying.example(s)])
            pred = model(ids)[0][0, 4:7].argmax(-1)                  # position 4 (SEP) predicts copy[0]
            tf.append(pred == ids[0, 5:8])
            seq = ids[:, :5]
            for _ in range(3):
                seq = torch.cat([seq, model(seq)[0][:, -1].argmax(-1, keepdim=True)], 1)
            gr.append(seq[0, 5:] == ids[0, 5:8])
    tf, gr = torch.stack(tf), torch.stack(gr)
    assert got["teacher_forced"]["char_accuracy"] == pytest.approx(float(tf.double().mean()))
    assert got["teacher_forced"]["string_accuracy"] == pytest.approx(float(tf.all(1).double().mean()))
    assert got["greedy"]["char_accuracy"] == pytest.approx(float(gr.double().mean()))
    assert got["teacher_forced"]["by_position"] == pytest.approx(tf.double().mean(0).tolist())
    assert got["greedy"]["by_position"] == pytest.approx(gr.double().mean(0).tolist())
    assert len(got["greedy"]["by_position"]) == 3
    with pytest.raises(ValueError, match="one length"):
        copying.evaluate(model, ["ab", "abc"])


def test_stage_trains_with_state_passing_and_evaluates(tmp_path):
    cfg = {"seed": 0, "eval": {"device": "cpu", "batch_size": 4},
           "intervention": {"name": "state_passing"},
           "train": {"precision": "fp32", "device": "cpu", "progress": False, "checkpoint_every": 1000},
           "tasks": {"copying": {"min_length": 3, "max_length": 5, "eval_length": 9, "eval_sequences": 4,
                                 "steps": 3, "batch_size": 4}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "copy.json"
    assert main(["task-copying", "--config", str(tmp_path / "c.yaml"), "--out", str(out)]) == 0
    data = read_result(out, "task-copying")["data"]
    assert data["intervention"] == "state_passing" and data["train"]["steps"] == 3
    assert data["eval_length"]["length"] == 9 and data["train_length"]["length"] == 5
    for split in ("train_length", "eval_length"):
        for mode in ("teacher_forced", "greedy"):
            assert 0.0 <= data[split][mode]["char_accuracy"] <= 1.0
            by_pos = data[split][mode]["by_position"]
            assert len(by_pos) == data[split]["length"]
            assert sum(by_pos) / len(by_pos) == pytest.approx(data[split][mode]["char_accuracy"], abs=1e-5)
    assert data["train"]["sequences"] == 3 * 4 and data["train"]["batch_size"] == 4
    from lengthgen.models import build_model as bm
    assert data["parameters"] == sum(p.numel() for p in bm("mamba2", preset="tiny", vocab_size=30).parameters())
    assert (tmp_path / "copy.json.train" / "final").is_dir()
    # a rerun over the finished run folder (a call that stopped in the evaluation) evaluates the same
    # model and reports the loss its last step logged
    first = json.loads((tmp_path / "copy.json.train" / "metrics.jsonl").read_text().splitlines()[-1])
    assert data["train"]["final_loss"] == first["loss"] and first["step"] == 3
    out.unlink()
    assert main(["task-copying", "--config", str(tmp_path / "c.yaml"), "--out", str(out)]) == 0
    again = read_result(out, "task-copying")["data"]
    assert again["train"]["final_loss"] == first["loss"]
    assert again["eval_length"] == data["eval_length"] and again["train_length"] == data["train_length"]
