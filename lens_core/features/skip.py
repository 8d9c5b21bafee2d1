"""Skip transcoders: a transcoder plus a linear skip term from its input to its output.

    forward(x) = decode(encode(x)) + x @ W_skip        W_skip [d_in, d_out]

(Paulo, Shabalin & Belrose 2025, "Transcoders beat sparse autoencoders for interpretability").
circuit-tracer stores the transposed matrix (``x @ W_skip.T``) and Gemma Scope 2 an
``affine_skip_connection`` used as ``x @ A``; the readers convert both to this layout.

Everything that reads only features (``encode``, ``decode``, feature dashboards, steering by feature)
works unchanged; the reconstruction of the MLP output is ``reconstruct(x)`` (= ``forward``), which
includes the skip term. In an attribution graph built by ``lens_core.experiments.graphs`` the skip
term is a linear path of the frozen replacement model (from the layer's input to its output, carrying gradient
like the residual stream), not a node; the error node is what the reconstruction with the skip term misses.
"""

from __future__ import annotations

import torch
from torch import nn

from .transcoder import Transcoder, TranscoderConfig


class SkipTranscoder(Transcoder):
    """A Transcoder with a linear skip term ``x @ W_skip`` added to its output."""

    kind = "skip transcoder"

    def __init__(self, cfg: TranscoderConfig) -> None:
        super().__init__(cfg)
        self.W_skip = nn.Parameter(torch.zeros(cfg.d_in, cfg.d_out))

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        """[..., d_in] -> [..., d_out], the linear term alone."""
        return x @ self.W_skip

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)) + self.skip(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(x)
