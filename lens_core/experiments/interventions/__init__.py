"""Interventions: change activations and measure the answer's metric.

- ``patching``: activation patching sweeps (clean ↔ corrupted) over residual streams, sublayers, heads,
  q/k/v and patterns, batched within a memory budget; ``_suffix`` reruns only the layers after a patch.
- ``attribution``: attribution patching, the first-order (gradient) estimate of the same sweeps.
- ``path_patching``: patching a sender's effect along paths into chosen receivers only.
- ``ablation``: zero / mean / resample ablation of chosen components, and sweeps over all of them.
"""
