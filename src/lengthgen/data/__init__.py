"""Data: tokenizers, corpora, memory-mapped token shards and samplers (paper B.1).

The API the training and evaluation layers use::

    from lengthgen.data import open_dataset, prepare, ShuffledWindows, ContiguousStreams, ValidationSequences

    path = prepare(cfg)                  # tokenize cfg["data"]'s corpus into <data.root>/<corpus>-<tokenizer>/
    ds = open_dataset(cfg)               # TokenDataset; verifies the shards against manifest.json
    ds.train, ds.val                     # 1-D token arrays (memory-mapped shards, concatenated)
    ds.vocab_size, ds.eos_id, ds.tokenizer, ds.manifest

    batches = ShuffledWindows(ds.train, context=T, batch_size=B, seed=s, rank=r, world_size=w)
    x = next(batches)                    # LongTensor (B // w, T + 1): inputs x[:, :-1], targets x[:, 1:]
    state = batches.state_dict()         # later: batches.load_state_dict(state) -> the same next batches

    tbtt = ContiguousStreams(ds.train, context=T, batch_size=B, rank=r, world_size=w)
    x = next(tbtt); tbtt.reset_rows      # bool (B // w,): rows that do not continue the last step's row

    for x in ValidationSequences(ds.val, length=L, num_sequences=n, batch_size=b): ...  # (<=b, L + 1)

``batch_size`` is always the global number of rows; each rank reads its slice. Every error here
is a :class:`DataError` (a ``ValueError``) whose message names the fix. Formats: docs/data.md.
"""

from .corpora import CorpusError, build_corpus
from .samplers import ContiguousStreams, SamplerError, ShuffledWindows, ValidationSequences
from .shards import DataError, TokenArray, TokenDataset, dataset_dir, open_dataset, prepare
from .tokenizers import ByteTokenizer, TokenizerError, build_tokenizer

__all__ = [
    "ByteTokenizer", "ContiguousStreams", "CorpusError", "DataError", "SamplerError", "ShuffledWindows",
    "TokenArray", "TokenDataset", "TokenizerError", "ValidationSequences", "build_corpus",
    "build_tokenizer", "dataset_dir", "open_dataset", "prepare",
]
