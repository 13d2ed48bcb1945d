"""Tokenizers: byte roundtrip, trained BPE determinism, HF tokenizer from a local folder."""

import json

import pytest

from lengthgen.data.tokenizers import (ByteTokenizer, TokenizerError, build_tokenizer, load_hf_tokenizer,
                                       train_bpe)

TEXTS = ["def f(x):\n    return x + 1\n", "héllo wörld ✓ — naïve", "class A:\n    pass\n"] * 20


def test_byte_tokenizer_roundtrip_and_eos():
    tok = ByteTokenizer()
    text = "héllo ✓\n\t\x00end"
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8")) and max(ids) < 256
    assert tok.decode(ids + [tok.eos_id] + ids) == text + text
    assert [a.tolist() for a in tok.encode_batch([text, ""])] == [ids, []]
    assert (tok.vocab_size, tok.eos_id, tok.id) == (257, 256, "byte")


def test_bpe_trained_is_deterministic_and_roundtrips(tmp_path):
    a = train_bpe(iter(TEXTS), 300, tmp_path / "a" / "tokenizer.json")
    b = train_bpe(iter(TEXTS), 300, tmp_path / "b" / "tokenizer.json")
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
    assert a.id == "bpe300" and a.eos_id == 0 and a.vocab_size <= 300
    for text in set(TEXTS):
        ids = a.encode(text)
        assert a.decode(ids) == text
        assert len(ids) < len(text.encode())  # merges learnt: fewer tokens than bytes
    assert a.decode(a.encode(TEXTS[0]) + [a.eos_id]) == TEXTS[0]


def test_bpe_needs_documents(tmp_path):
    with pytest.raises(TokenizerError, match="empty"):
        train_bpe(iter([]), 300, tmp_path / "tokenizer.json")


def _write_hf_folder(folder, eos="</s>", config=True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=280, special_tokens=["<pad>", eos],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    folder.mkdir(parents=True)
    tok.save(str(folder / "tokenizer.json"))
    if config:
        (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": eos}}))
    return tok


def test_hf_tokenizer_from_local_folder(tmp_path):
    ref = _write_hf_folder(tmp_path / "my-tok", eos="<|my_eos|>")
    tok = build_tokenizer({"kind": "hf", "name": str(tmp_path / "my-tok")})
    assert tok.kind == "hf" and tok.eos_id == ref.token_to_id("<|my_eos|>") == 1
    assert tok.id.startswith("my-tok-") and len(tok.id) == len("my-tok-") + 8
    assert tok.vocab_size == ref.get_vocab_size()
    text = TEXTS[1]
    assert tok.encode(text) == ref.encode(text).ids and tok.decode(tok.encode(text)) == text
    assert load_hf_tokenizer(str(tmp_path / "my-tok" / "tokenizer.json")).id == tok.id  # file or folder
    _write_hf_folder(tmp_path / "copy" / "my-tok", eos="<|my_eos|>")
    assert load_hf_tokenizer(str(tmp_path / "copy" / "my-tok")).id == tok.id  # same content, same id


def test_hf_tokenizer_eos_from_known_names_and_missing(tmp_path):
    _write_hf_folder(tmp_path / "t1", eos="</s>", config=False)
    assert load_hf_tokenizer(str(tmp_path / "t1")).eos_token == "</s>"
    _write_hf_folder(tmp_path / "t2", eos="<weird>", config=False)
    with pytest.raises(TokenizerError, match="no end-of-text token"):
        load_hf_tokenizer(str(tmp_path / "t2"))


def test_hf_tokenizer_missing_offline_says_how_to_provide_it(tmp_path):
    with pytest.raises(TokenizerError, match="huggingface-cli download nobody-xyz/no-such-tokenizer"):
        load_hf_tokenizer("nobody-xyz/no-such-tokenizer")
    with pytest.raises(TokenizerError, match="does not exist"):
        load_hf_tokenizer(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        load_hf_tokenizer(str(tmp_path / "empty"))
    with pytest.raises(TokenizerError, match="data.tokenizer.name"):
        build_tokenizer({"kind": "hf", "name": None})
