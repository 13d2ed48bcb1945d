"""Measurements on trained models: position-wise loss and the length-generalization verdict,
Effective Remembrance, state statistics over positions (docs/evaluation.md).

```python
from lengthgen.evaluate import positionwise_loss, length_generalization, effective_remembrance, state_statistics
loss = positionwise_loss(model, input_ids, chunk_size=2048)          # (batch, length - 1)
verdict = length_generalization(loss.mean(0), train_context=T)       # paper Def. 3.2
effrem = effective_remembrance(model, input_ids, [0, 512, 1000])     # (3,), paper Def. 3.3
stats = state_statistics(model, input_ids, stride=64)                # paper Figs. 4, 9
```
Every function takes any model with the forward contract ``logits, state = model(ids, state)``.
"""

from .perplexity import PositionwiseMean, bucket_means, log_buckets, loss_graphs, perplexity, positionwise_loss, token_nll
from .remembrance import DISTANCES, effective_remembrance, log_cut_points, suffix_probs
from .state_stats import StatsMean, measure_state, state_statistics
from .generate import greedy_generate
from .streaming import stream
from .verdict import Verdict, length_generalization, smooth

__all__ = [
    "DISTANCES", "PositionwiseMean", "StatsMean", "Verdict", "bucket_means", "effective_remembrance", "greedy_generate", "length_generalization",
    "log_buckets", "log_cut_points", "loss_graphs", "token_nll", "measure_state", "perplexity", "positionwise_loss", "smooth",
    "state_statistics", "stream", "suffix_probs",
]
