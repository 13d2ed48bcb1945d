"""Mamba-1/2 on CUDA: our models against mamba-ssm's ``MambaLMHeadModel`` holding the same
weights (written by upstream's own ``save_pretrained``, read by our ``load_model``), and
split-and-carry through the real kernels. fp32 throughout, TF32 off.

mamba-ssm may be installed without its compiled extensions. Then the upstream reference runs
with two stand-ins for the missing compiled pieces only: a plain-torch depthwise causal conv
for ``causal_conv1d_fn`` and mamba-ssm's own ``selective_scan_ref`` for the compiled selective
scan. Everything else (Triton RMSNorm, fused add-norm, Triton SSD, gated norm) is upstream's.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lengthgen.models import build_model, load_model
from lengthgen.models.state import RecurrentState

DEVICE = "cuda"
VOCAB = 1000


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def torch_causal_conv1d_fn(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
                           final_states_out=None, activation=None):  # fmt: skip
    """Stand-in for causal-conv1d's compiled ``causal_conv1d_fn`` (zero initial window only)."""
    if seq_idx is not None or initial_states is not None or return_final_states:
        raise NotImplementedError("the test stand-in supports only the plain causal conv")
    width = weight.shape[-1]
    y = F.conv1d(F.pad(x, (width - 1, 0)), weight.unsqueeze(1), bias, groups=x.shape[1])
    return F.silu(y) if activation in ("silu", "swish") else y


@pytest.fixture(scope="module")
def upstream(request):
    """mamba-ssm's MambaLMHeadModel and MambaConfig, with stand-ins for missing compiled parts."""
    from lengthgen.ops import _mamba_import

    try:
        _mamba_import.mamba_chunk_scan_combined()  # registers stand-ins for missing extensions
        from mamba_ssm.models.config_mamba import MambaConfig
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel
        import mamba_ssm.modules.mamba2 as m2
        import mamba_ssm.modules.mamba_simple as m1
        from mamba_ssm.ops.selective_scan_interface import selective_scan_ref
    except ImportError as e:
        pytest.skip(f"mamba-ssm is not importable: {e}")
    patch = pytest.MonkeyPatch()
    request.addfinalizer(patch.undo)
    for module in (m1, m2):
        if getattr(module, "causal_conv1d_fn", None) is None:
            patch.setattr(module, "causal_conv1d_fn", torch_causal_conv1d_fn, raising=False)
    if not _mamba_import.compiled_selective_scan_available():
        patch.setattr(m1, "selective_scan_fn", selective_scan_ref)
    return MambaLMHeadModel, MambaConfig


@pytest.fixture(autouse=True)
def no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


SSM_CFGS = {
    "mamba1": {"layer": "Mamba1", "d_state": 16, "use_fast_path": False},
    "mamba2": {"layer": "Mamba2", "d_state": 64, "headdim": 32, "ngroups": 2, "chunk_size": 64,
               "use_mem_eff_path": False},
}  # fmt: skip
# our tiny models with the same shapes, so every test reuses the same compiled kernels
OURS = {
    "mamba1": dict(vocab_size=VOCAB, d_model=128, d_state=16),
    "mamba2": dict(vocab_size=VOCAB, d_model=128, d_state=64, headdim=32, ngroups=2, chunk_size=64),
}


def upstream_and_ours(upstream, arch, tmp_path):
    MambaLMHeadModel, MambaConfig = upstream
    config = MambaConfig(
        d_model=128, n_layer=2, vocab_size=VOCAB, ssm_cfg=dict(SSM_CFGS[arch]), rms_norm=True,
        residual_in_fp32=True, fused_add_norm=True, pad_vocab_size_multiple=16,
    )  # fmt: skip
    torch.manual_seed(0)
    ref = MambaLMHeadModel(config, device=DEVICE, dtype=torch.float32).eval()
    with torch.no_grad():  # non-trivial norm weights and conv biases
        for name, p in ref.named_parameters():
            if name.endswith("norm.weight") or name.endswith("norm_f.weight"):
                p.uniform_(0.5, 1.5)
            if name.endswith("conv1d.bias"):
                p.normal_(0, 0.3)
    ref.save_pretrained(str(tmp_path))
    ours = load_model(tmp_path, device=DEVICE).eval()
    assert ours.arch == arch
    return ref, ours


@pytest.mark.parametrize("arch", ["mamba1", "mamba2"])
def test_logits_match_mamba_ssm(upstream, arch, tmp_path):
    ref, ours = upstream_and_ours(upstream, arch, tmp_path)
    ids = torch.randint(0, VOCAB, (2, 300), device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(1))
    with torch.no_grad():
        expected = ref(ids).logits
        logits, state = ours(ids)
    assert logits.shape == expected.shape
    assert rel_err(logits, expected) < 1e-3
    assert state.dtype == torch.float32 and state.device.type == "cuda"


@pytest.mark.parametrize("arch", ["mamba1", "mamba2"])
def test_split_and_carry_through_the_kernels(arch):
    model = build_model(arch, "tiny", seed=0, device=DEVICE, **OURS[arch]).eval()
    ids = torch.randint(0, VOCAB, (3, 400), device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(2))
    with torch.no_grad():
        whole, final = model(ids)
        state, pieces = None, []
        for lo, hi in [(0, 1), (1, 2), (2, 130), (130, 257), (257, 400)]:  # across chunks of 64
            out, state = model(ids[:, lo:hi], state=state)
            pieces.append(out)
    assert rel_err(torch.cat(pieces, 1), whole) < 1e-3
    for (_, name, a), (_, _, b) in zip(state.tensors(), final.tensors()):
        assert rel_err(a, b) < 1e-3, name


@pytest.mark.parametrize("arch", ["mamba1", "mamba2"])
def test_kernels_match_the_float64_cpu_reference(arch):
    model = build_model(arch, "tiny", seed=0, **OURS[arch]).eval()
    ids = torch.randint(0, VOCAB, (2, 200), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        _, start = model.double()(ids[:, :50])
        ref, ref_state = model(ids[:, 50:], state=start)
        model.float().to(DEVICE)
        got, got_state = model(ids[:, 50:].to(DEVICE), state=start.to(device=DEVICE, dtype=torch.float32))
    assert rel_err(got.cpu(), ref) < 1e-3
    assert isinstance(got_state, RecurrentState)
    for (_, name, a), (_, _, b) in zip(got_state.tensors(), ref_state.tensors()):
        assert rel_err(a.cpu(), b) < 1e-3, name


def none_vs_zero_state(model, ids, precision: str) -> dict[str, float]:
    """Relative differences of logits, final state and every parameter gradient between a step from
    ``state=None`` and one from an explicit zero state (the loss uses the final state too)."""
    runs = []
    for state in (None, model.zero_state(ids.shape[0])):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", torch.bfloat16, enabled=precision == "bf16"):
            logits, final = model(ids, state=state)
        (logits.float().square().mean() + sum(t.square().sum() for _, _, t in final.tensors())).backward()
        runs.append((logits.detach(), final.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (a, fa, ga), (b, fb, gb) = runs
    errors = {"logits": rel_err(a, b)}
    errors.update({f"state[{i}].{n}": rel_err(x, y) for (i, n, x), (_, _, y) in zip(fa.tensors(), fb.tensors())})
    errors.update({f"grad {n}": rel_err(ga[n], gb[n]) for n in ga if gb[n].norm() > 0})
    return errors


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("arch", ["mamba1", "mamba2", "gla", "rwkv6"])
def test_no_state_matches_the_zero_state_through_the_kernels(arch, precision):
    """``state=None`` gives the kernels no initial state; logits, final state and gradients match
    those from an explicit zero state (tests/test_models.py checks bit equality on the CPU)."""
    if arch in ("gla", "rwkv6"):
        pytest.importorskip("fla")
    model = build_model(arch, "tiny", seed=0, device=DEVICE, **OURS.get(arch, {}))
    ids = torch.randint(0, VOCAB if arch in OURS else model.config.vocab_size, (4, 200), device=DEVICE,
                        generator=torch.Generator(DEVICE).manual_seed(4))
    errors = none_vs_zero_state(model, ids, precision)
    worst = max(errors, key=errors.get)
    print(f"\n{arch} {precision}: no state vs zero state, worst {worst} = {errors[worst]:.2e}, "
          f"bit-identical: {all(v == 0 for v in errors.values())}")
    assert all(v < 1e-5 for v in errors.values()), {k: v for k, v in errors.items() if v >= 1e-5}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_one_chunk_kernel_matches_the_chunked_kernels_in_a_model(precision):
    """A Mamba-2 step at T = chunk_size from no state runs the one-chunk SSD kernel; from an
    explicit zero state it runs mamba-ssm's chunked kernels. Logits, final state (in the loss, so
    its gradient reaches the kernel) and every parameter gradient agree."""
    from lengthgen.ops import _backend

    if _backend.kernel_unavailable_reason("triton_ssd_one_chunk") or _backend.kernel_unavailable_reason("mamba_ssd"):
        pytest.skip("needs the one-chunk kernel and mamba-ssm's SSD kernels")
    model = build_model("mamba2", "tiny", seed=0, device=DEVICE, vocab_size=VOCAB, chunk_size=64, d_state=128,
                        headdim=32, d_model=128)
    ids = torch.randint(0, VOCAB, (8, 64), device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(5))
    errors = none_vs_zero_state(model, ids, precision)
    worst = max(errors, key=errors.get)
    print(f"\nmamba2 {precision}: one-chunk kernel vs chunked kernels, worst {worst} = {errors[worst]:.2e}")
    limit = 1e-4 if precision == "fp32" else 3e-2
    assert all(v < limit for v in errors.values()), {k: v for k, v in errors.items() if v >= limit}
