"""GLA and RWKV-6 on CUDA against fla 0.6.0 itself: fla's GLAForCausalLM / RWKV6ForCausalLM with
random weights, their state_dict loaded into our models by name, the same logits (fp32; fla's
kernels use tf32 dots, so agreement is to ~1e-4, not exact).  Also split-and-carry through the
real kernels, and the kernels against our float64 torch reference.  Errors are printed (-s)."""

import pytest
import torch

fla = pytest.importorskip("fla")

from lengthgen.models import gla, rwkv6  # noqa: E402
from lengthgen.models.checkpoint import model_from_state_dict  # noqa: E402

LENGTH, SPLIT = 200, 77  # > 64 tokens, so fla runs its chunk kernels as we do


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def fla_model(arch):
    if arch == "gla":
        from fla.models import GLAConfig, GLAForCausalLM

        cfg = GLAConfig(hidden_size=128, num_hidden_layers=2, num_heads=2, vocab_size=512, use_cache=False)
        model = GLAForCausalLM(cfg)
    else:
        from fla.models import RWKV6Config, RWKV6ForCausalLM

        cfg = RWKV6Config(hidden_size=128, num_hidden_layers=2, num_heads=2, vocab_size=512, proj_low_rank_dim=16,
                          gate_low_rank_dim=32, use_cache=False)  # fmt: skip
        model = RWKV6ForCausalLM(cfg)
    torch.manual_seed(0)
    with torch.no_grad():  # fla leaves the token-shift mixes, bonus and LoRA input at zero: perturb all
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.cuda().float().eval()


def ours_from(arch, theirs):
    module = {"gla": gla, "rwkv6": rwkv6}[arch]
    config = module.config_from_fla(theirs.config.to_dict(), "fla config")
    sd = module.from_fla_state_dict({k: v.detach().cpu() for k, v in theirs.state_dict().items()})
    return model_from_state_dict(arch, config, sd, "fla state_dict").cuda().float().eval()


@pytest.mark.parametrize("arch", ["gla", "rwkv6"])
def test_logits_match_fla(arch):
    theirs = fla_model(arch)
    ours = ours_from(arch, theirs)
    x = torch.randint(0, 512, (2, LENGTH), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    with torch.no_grad():
        ref = theirs(input_ids=x, use_cache=False).logits
        got, _ = ours(x)
    err = rel(got, ref)
    print(f"\n{arch}: ours vs fla {fla.__version__} logits, relative error {err:.3e}")
    assert err < 1e-3


@pytest.mark.parametrize("arch", ["gla", "rwkv6"])
def test_split_and_carry_through_kernels(arch):
    ours = ours_from(arch, fla_model(arch))
    x = torch.randint(0, 512, (2, LENGTH), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    with torch.no_grad():
        whole, final = ours(x)
        a, state = ours(x[:, :SPLIT])
        b, state = ours(x[:, SPLIT:], state=state)
        ref64, final64 = ours.double()(x)  # float64 -> the torch reference scans
    err = rel(torch.cat([a, b], 1), whole)
    err_state = max(rel(s, f) for (_, _, s), (_, _, f) in zip(state.tensors(), final.tensors()))
    err_ref = rel(whole, ref64)
    err_ref_state = max(rel(s, f) for (_, _, s), (_, _, f) in zip(final.tensors(), final64.tensors()))
    print(f"\n{arch}: split at {SPLIT} vs whole: logits {err:.3e}, state {err_state:.3e}; "
          f"kernels (fp32) vs float64 torch reference: logits {err_ref:.3e}, state {err_ref_state:.3e}")  # fmt: skip
    assert err < 1e-3 and err_state < 1e-3
    assert err_ref < 1e-3 and err_ref_state < 1e-3
