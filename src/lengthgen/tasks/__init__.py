"""Long-context tasks (paper Sec. 5): passkey retrieval, synthetic copying, BABILong (docs/evaluation.md).

``passkey`` and ``babilong`` build prompts to a token budget and answer by greedy decoding from the
carried state; ``copying`` trains a model from scratch; ``babi`` is the offline bAbI-style generator
and solver; ``batches`` / ``finetune`` feed task rows to the project's trainer.
"""
