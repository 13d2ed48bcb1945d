"""A Mamba-2 model through lengthgen's Triton kernels (one-chunk SSD, causal conv), run on the CPU in
Triton's interpreter, against the same model on the torch references.

On the CPU the ops pick their torch references; here the subprocess makes ``ssd_scan`` and
``causal_conv1d`` take their kernel paths instead (mamba-ssm's chunked kernels are absent, so a
step of one chunk from no state is the only SSD kernel path), so the kernels see the real mixer's
tensors: the strided views of the padded in_proj output, the transposed conv output, float32
parameters. fp32 throughout; the norms stay on their references.
"""

import json
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from _interpreter import interpret, run_group  # noqa: E402


def _model_case(seed, length, with_state_in_loss, headdim):
    import lengthgen.ops.conv as conv
    import lengthgen.ops.ssd as ssd
    from lengthgen.models import build_model

    # in_proj: 2 * 64 + 2 * 16 + 64 / headdim outputs: 168 (aligned) at headdim 8, 164 (padded to 168) at 16
    model = build_model("mamba2", "tiny", seed=seed, vocab_size=97, d_model=32, d_state=16, headdim=headdim,
                        chunk_size=32)
    ids = torch.randint(0, 97, (2, length), generator=torch.Generator().manual_seed(seed))

    def step():
        model.zero_grad(set_to_none=True)
        logits, final = model(ids)
        loss = logits.square().mean()
        if with_state_in_loss:
            loss = loss + sum(t.square().sum() for _, _, t in final.tensors())
        loss.backward()
        return logits.detach(), [t.detach() for _, _, t in final.tensors()], \
            {n: p.grad.clone() for n, p in model.named_parameters()}

    ref = step()
    calls = {"ssd": 0, "conv": 0}
    one_chunk, triton_conv = ssd._one_chunk, conv._triton_conv_kernel

    def counted_one_chunk(*a):
        ok = one_chunk(*a)
        calls["ssd"] += ok
        return ok

    def counted_conv(*a):
        calls["conv"] += 1
        return triton_conv(*a)

    ssd.use_kernel = conv.use_kernel = lambda *a: True
    ssd._one_chunk, conv._triton_conv_kernel = counted_one_chunk, counted_conv
    ker = step()
    rel = lambda a, b: ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()  # noqa: E731
    out = {"logits": rel(ker[0], ref[0]), "calls": calls}
    out.update({f"state{i}": rel(a, b) for i, (a, b) in enumerate(zip(ker[1], ref[1]))})
    out["grads"] = {n: rel(ker[2][n], ref[2][n]) for n in ref[2] if ref[2][n].norm() > 0}
    return out


GROUPS = {
    "a": {"one_chunk": lambda: _model_case(0, 32, True, headdim=8)},
    "b": {"shorter_than_chunk_padded_in_proj": lambda: _model_case(1, 19, False, headdim=16)},
}


@pytest.fixture(scope="module")
def interp():
    return interpret(__file__, GROUPS)


@pytest.mark.parametrize("case", ["one_chunk", "shorter_than_chunk_padded_in_proj"])
def test_mamba2_through_the_triton_kernels_matches_the_references(interp, case):
    r = interp[case]
    assert r["calls"] == {"ssd": 2, "conv": 2}        # both layers took both kernels
    errors = {k: v for k, v in r.items() if k not in ("calls", "grads")} | r["grads"]
    assert len(r["grads"]) > 10
    assert not {k: v for k, v in errors.items() if not v < 1e-5}, errors


if __name__ == "__main__":
    print(json.dumps(run_group("lengthgen.ops.triton.ssd_one_chunk", GROUPS, sys.argv[1])))
