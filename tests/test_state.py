import pytest
import torch

from lengthgen.models.state import RecurrentState


def make_state(b=3, arch="mamba2"):
    g = torch.Generator().manual_seed(0)
    return RecurrentState.from_layers(
        arch,
        [{"ssm": torch.randn(b, 2, 4, 5, generator=g), "conv": torch.randn(b, 6, 3, generator=g)} for _ in range(2)],
    )


def test_mask_zeroes_only_false_rows_and_returns_new_state():
    s = make_state()
    keep = torch.tensor([True, False, True])
    m = s.mask(keep)
    assert m is not s
    for (_, _, a), (_, _, b) in zip(s.tensors(), m.tensors()):
        assert torch.equal(b[0], a[0]) and torch.equal(b[2], a[2])
        assert torch.count_nonzero(b[1]) == 0
        assert torch.count_nonzero(a[1]) > 0  # original untouched


def test_mask_restricted_to_components():
    s = make_state()
    m = s.mask(torch.tensor([False, False, False]), components=["ssm"])
    assert all(torch.count_nonzero(t) == 0 for _, n, t in m.tensors() if n == "ssm")
    assert all(torch.equal(t, s.layers[i][n]) for i, n, t in m.tensors() if n == "conv")


@pytest.mark.parametrize("keep", [torch.tensor([True, False]), torch.tensor([1, 0, 1]), torch.ones(3, 1, dtype=torch.bool)])
def test_mask_rejects_bad_keep(keep):
    with pytest.raises(ValueError, match="bool tensor of shape"):
        make_state().mask(keep)


def test_detach_cuts_the_graph():
    x = torch.randn(2, 3, requires_grad=True)
    s = RecurrentState.from_layers("gla", [{"ssm": x * 2}])
    assert s.layers[0]["ssm"].requires_grad
    d = s.detach()
    assert not d.layers[0]["ssm"].requires_grad
    assert torch.equal(d.layers[0]["ssm"], s.layers[0]["ssm"])


def test_batch_size_mismatch_between_components_is_an_error():
    with pytest.raises(ValueError, match="batch size"):
        RecurrentState.from_layers("mamba2", [{"ssm": torch.zeros(2, 1), "conv": torch.zeros(3, 1)}])


def test_check_compatible_errors():
    ref = make_state(b=3)
    with pytest.raises(ValueError, match="batch size 2 does not match"):
        make_state(b=2).check_compatible(ref)
    with pytest.raises(ValueError, match="arch 'gla'"):
        make_state(b=3, arch="gla").check_compatible(ref)
    make_state(b=3).check_compatible(ref)


def test_state_dict_roundtrip_cat_select():
    s = make_state()
    r = RecurrentState.from_state_dict(s.state_dict())
    assert all(torch.equal(a, b) for (_, _, a), (_, _, b) in zip(s.tensors(), r.tensors()))
    c = RecurrentState.cat([s, s.select(slice(0, 1))])
    assert c.batch_size == 4
    assert torch.equal(c.layers[1]["ssm"][3], s.layers[1]["ssm"][0])
    assert s.numel_per_sample(["ssm"]) == 2 * 2 * 4 * 5
