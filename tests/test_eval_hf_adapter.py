"""The Hugging Face adapter: same contract, exact streamed loss, Effective Remembrance and decoding."""

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

from lengthgen.evaluate import DISTANCES, effective_remembrance, greedy_generate, positionwise_loss  # noqa: E402
from lengthgen.evaluate.hf_adapter import HFCausalLM  # noqa: E402


def gpt2():   # learned absolute positions
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50, n_positions=64,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg)


def llama():  # rotary positions
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                   num_key_value_heads=2, vocab_size=50, max_position_embeddings=64,
                                   bos_token_id=0, eos_token_id=0)
    return transformers.LlamaForCausalLM(cfg)


@pytest.fixture(params=[gpt2, llama], ids=["gpt2", "llama"], scope="module")
def hf(request):
    torch.manual_seed(0)
    return request.param().double().eval()


def test_streamed_loss_equals_one_shot(hf):
    model = HFCausalLM(hf)
    assert model.vocab_size == 50
    ids = torch.randint(0, 50, (2, 17))
    with torch.no_grad():
        ref = F.cross_entropy(hf(ids).logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
    for chunk in (1, 5, 17):
        torch.testing.assert_close(positionwise_loss(model, ids, chunk), ref, rtol=0, atol=1e-10)


def test_effective_remembrance_restarts_rows_exactly(hf):
    model = HFCausalLM(hf)
    ids = torch.randint(0, 50, (2, 15))
    cuts = [0, 3, 9, 14]
    got = effective_remembrance(model, ids, cuts, "tv", chunk_size=4, group_size=2, reduction="none")
    with torch.no_grad():
        p = torch.softmax(hf(ids).logits[:, -1], -1)
        ref = torch.stack([DISTANCES["tv"](p, torch.softmax(hf(ids[:, t:]).logits[:, -1], -1)) for t in cuts], 1)
    torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-10)


def test_greedy_decoding_uses_the_cache(hf):
    model = HFCausalLM(hf)
    ids = torch.randint(0, 50, (2, 9))
    got = greedy_generate(model, ids, 3, chunk_size=4)
    x = ids
    with torch.no_grad():
        for _ in range(3):
            x = torch.cat([x, hf(x).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(got, x[:, 9:])


def test_state_errors(hf):
    model = HFCausalLM(hf)
    _, state = model(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="batch size"):
        model(torch.zeros(1, 2, dtype=torch.long), state)
    with pytest.raises(ValueError, match="bool"):
        state.mask(torch.ones(3, dtype=torch.bool))
