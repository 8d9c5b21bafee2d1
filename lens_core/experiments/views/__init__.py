"""Views: what the model computes on one prompt, read without changing it.

- ``predictions``: next-token predictions and per-token loss.
- ``attention``: every head's attention pattern.
- ``logit_lens``: the residual stream read through the final norm and unembedding, layer by layer.
- ``dla``: direct logit attribution of an answer (or a contrast) to heads, MLPs and neurons.
- ``detectors``: previous-token, duplicate-token and induction scores of every head.
- ``circuits``: weights-only QK/OV circuits of a head and composition scores between heads.
- ``features``: transcoder features active on a prompt, one unit's activation, and steering edits.
"""
