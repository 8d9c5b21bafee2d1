"""A matrix kept as the product of two factors, ``M = A @ B``.

Attention circuits are low-rank: a head's OV circuit ``W_V @ W_O`` is
``[d_model, d_model]`` but has rank ``d_head``, and the full OV circuit
``W_E W_V W_O W_U`` is ``[d_vocab, d_vocab]`` (50k x 50k for GPT-2: 10 GB dense).
:class:`FactoredMatrix` never forms the product unless asked (``.AB``): the
SVD, the eigenvalues and the Frobenius norm all come from ``mdim x mdim``
matrices, where ``mdim`` is the shared inner dimension.

Shapes: ``A [..., ldim, mdim]``, ``B [..., mdim, rdim]``; leading dims broadcast
(a stack of heads is ``[n_layers, n_heads, ldim, mdim]``).
"""

from __future__ import annotations

from functools import cached_property
from typing import Union

import torch


def _linalg_dtype(x: torch.Tensor) -> torch.Tensor:
    """Half-precision factors are decomposed in float32 (LAPACK has no half kernels)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x

Index = Union[int, slice, torch.Tensor, tuple]


def _keep_dim(index: Index, size: int) -> Index:
    """An integer index as a length-1 slice, so the indexed dim survives."""
    if isinstance(index, int):
        index = index % size
        return slice(index, index + 1)
    return index


class FactoredMatrix:
    def __init__(self, A: torch.Tensor, B: torch.Tensor) -> None:
        if A.dim() < 2 or B.dim() < 2:
            raise ValueError(f"factors must be at least 2-D, got {tuple(A.shape)} and {tuple(B.shape)}")
        if A.shape[-1] != B.shape[-2]:
            raise ValueError(f"inner dimensions differ: A {tuple(A.shape)} @ B {tuple(B.shape)}")
        batch = torch.broadcast_shapes(A.shape[:-2], B.shape[:-2])
        self.A = A.expand(*batch, *A.shape[-2:])
        self.B = B.expand(*batch, *B.shape[-2:])
        self.ldim, self.mdim = A.shape[-2], A.shape[-1]
        self.rdim = B.shape[-1]

    # ---- shape ---------------------------------------------------------------
    @property
    def shape(self) -> torch.Size:
        return torch.Size((*self.A.shape[:-2], self.ldim, self.rdim))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def has_leading_dims(self) -> bool:
        return self.ndim > 2

    def __repr__(self) -> str:
        return f"FactoredMatrix(shape={tuple(self.shape)}, mdim={self.mdim})"

    # ---- products ------------------------------------------------------------
    @property
    def AB(self) -> torch.Tensor:
        """The dense product ``[..., ldim, rdim]`` (can be large)."""
        return self.A @ self.B

    @property
    def BA(self) -> torch.Tensor:
        """``B @ A`` ``[..., mdim, mdim]``: same nonzero eigenvalues as ``AB`` (square only)."""
        if self.ldim != self.rdim:
            raise ValueError(f"BA needs a square matrix, this one is {self.ldim} x {self.rdim}")
        return self.B @ self.A

    @property
    def T(self) -> "FactoredMatrix":
        return FactoredMatrix(self.B.transpose(-1, -2), self.A.transpose(-1, -2))

    def transpose(self) -> "FactoredMatrix":
        return self.T

    @property
    def pair(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.A, self.B

    def __matmul__(self, other: Union[torch.Tensor, "FactoredMatrix"]) -> Union[torch.Tensor, "FactoredMatrix"]:
        # TransformerLens's rule for the new inner dimension: keep the factors while that keeps it
        # small (rdim > mdim), else multiply out the side that is no bigger than a factor.
        if isinstance(other, FactoredMatrix):
            return (self @ other.A) @ other.B
        if other.dim() < 2:
            return (self.A @ (self.B @ other.unsqueeze(-1))).squeeze(-1)  # a vector: the result is dense
        if other.shape[-2] != self.rdim:
            raise ValueError(f"inner dimensions differ: {tuple(self.shape)} @ {tuple(other.shape)}")
        if self.rdim > self.mdim:
            return FactoredMatrix(self.A, self.B @ other)
        return FactoredMatrix(self.AB, other)

    def __rmatmul__(self, other: torch.Tensor) -> Union[torch.Tensor, "FactoredMatrix"]:
        if other.shape[-1] != self.ldim:
            raise ValueError(f"inner dimensions differ: {tuple(other.shape)} @ {tuple(self.shape)}")
        if other.dim() < 2:
            return ((other.unsqueeze(-2) @ self.A) @ self.B).squeeze(-2)
        if self.ldim > self.mdim:
            return FactoredMatrix(other @ self.A, self.B)
        return FactoredMatrix(other, self.AB)

    def __mul__(self, scalar: Union[float, torch.Tensor]) -> "FactoredMatrix":
        if isinstance(scalar, torch.Tensor) and scalar.numel() != 1:
            raise ValueError(f"* takes a scalar, got shape {tuple(scalar.shape)}: use @ for matrix products")
        return FactoredMatrix(self.A * scalar, self.B)

    __rmul__ = __mul__

    # ---- indexing ------------------------------------------------------------
    def __getitem__(self, index: Index) -> "FactoredMatrix":
        """Index the leading (batch) dims; an index for the last two dims picks rows of A / columns of B.

        Integer indices on the last two dims keep them as size-1 dims, so the
        result is always a (possibly 1-row) matrix.
        """
        if not isinstance(index, tuple):
            index = (index,)
        if any(item is Ellipsis for item in index):
            if sum(item is Ellipsis for item in index) > 1:
                raise IndexError("An index can only have a single ellipsis")
            at = next(i for i, item in enumerate(index) if item is Ellipsis)
            index = index[:at] + (slice(None),) * (self.ndim - len(index) + 1) + index[at + 1:]
        n_batch = self.ndim - 2
        if len(index) > self.ndim:
            raise IndexError(f"too many indices ({len(index)}) for a factored matrix of shape {tuple(self.shape)}")
        batch_index = index[:n_batch]
        A, B = self.A[batch_index], self.B[batch_index]
        rest = index[n_batch:]
        if rest:
            A = A[..., _keep_dim(rest[0], self.ldim), :]
        if len(rest) > 1:
            B = B[..., :, _keep_dim(rest[1], self.rdim)]
        return FactoredMatrix(A, B)

    def unsqueeze(self, k: int) -> "FactoredMatrix":
        return FactoredMatrix(self.A.unsqueeze(k), self.B.unsqueeze(k))

    # ---- spectra -------------------------------------------------------------
    @cached_property
    def _svd(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        A, B = _linalg_dtype(self.A), _linalg_dtype(self.B)
        Qa, Ra = torch.linalg.qr(A)  # [..., ldim, ka], [..., ka, mdim]
        Qb, Rb = torch.linalg.qr(B.transpose(-1, -2))  # [..., rdim, kb], [..., kb, mdim]
        U_core, S, Vh_core = torch.linalg.svd(Ra @ Rb.transpose(-1, -2), full_matrices=False)
        k = min(self.ldim, self.mdim, self.rdim)
        return (Qa @ U_core)[..., :k], S[..., :k], (Qb @ Vh_core.transpose(-1, -2))[..., :k]

    def svd(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Thin SVD ``AB = U diag(S) V^T`` with ``U [..., ldim, k]``, ``S [..., k]``, ``V [..., rdim, k]``.

        ``k = min(ldim, mdim, rdim)``. Computed from QR factors: with ``A = Qa Ra`` and
        ``B^T = Qb Rb``, ``AB = Qa (Ra Rb^T) Qb^T`` and only the small middle matrix is decomposed.
        Computed once per matrix (cached), in float32 for half-precision factors.
        """
        return self._svd

    U = property(lambda self: self._svd[0], doc="Left singular vectors [..., ldim, k].")
    S = property(lambda self: self._svd[1], doc="Singular values [..., k], descending.")
    V = property(lambda self: self._svd[2], doc="Right singular vectors [..., rdim, k].")

    @property
    def Vh(self) -> torch.Tensor:
        """TransformerLens's name for ``V`` (it has always returned V, [..., rdim, k], not its transpose)."""
        return self._svd[2]

    def collapse_l(self) -> torch.Tensor:
        """``diag(S) V^T`` [..., k, rdim]: the product with its left orthogonal factor ``U`` removed."""
        return self.S[..., :, None] * self.V.transpose(-1, -2)

    def collapse_r(self) -> torch.Tensor:
        """``U diag(S)`` [..., ldim, k]: the product with its right orthogonal factor removed."""
        return self.U * self.S[..., None, :]

    def make_even(self) -> "FactoredMatrix":
        """The same matrix as ``(U sqrt(S), sqrt(S) V^T)``: each factor carries half of the spectrum."""
        root = self.S.sqrt()
        return FactoredMatrix(self.U * root[..., None, :], root[..., :, None] * self.V.transpose(-1, -2))

    @property
    def eigenvalues(self) -> torch.Tensor:
        """The ``mdim`` eigenvalues of ``BA`` (complex): the nonzero eigenvalues of ``AB`` plus zeros."""
        return torch.linalg.eigvals(_linalg_dtype(self.BA))

    def norm(self) -> torch.Tensor:
        """Frobenius norm of ``AB`` without forming it: ``||AB||^2 = sum((A^T A) * (B B^T))``."""
        A, B = _linalg_dtype(self.A), _linalg_dtype(self.B)
        gram_a = A.transpose(-1, -2) @ A  # [..., mdim, mdim]
        gram_b = B @ B.transpose(-1, -2)  # [..., mdim, mdim]
        return (gram_a * gram_b).sum(dim=(-1, -2)).clamp_min(0).sqrt()

    def get_corner(self, k: int = 3) -> torch.Tensor:
        """The first ``k`` entries along every axis of the dense product (for a quick look)."""
        corner = self.A[..., :k, :] @ self.B[..., :, :k]
        return corner[tuple(slice(k) for _ in range(corner.dim()))]
