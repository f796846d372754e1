"""SparseGPT (Frantar & Alistarh, ICML'23): one-shot pruning with OBS weight reconstruction.

For a layer ``Y = W X`` and calibration Hessian ``H = 2 X X^T`` (dampened by ``lambda I``,
``lambda`` a fraction of the mean diagonal), the columns are processed left to right. Pruning
weight ``w_iq`` costs ``w_iq^2 / [H^-1]_qq`` and the optimal update of the not yet processed
columns of row ``i`` is

    delta_i = -(w_iq / [H^-1]_qq) * [H^-1]_{q, :}    (on columns after q),

where ``H^-1`` is read from the upper Cholesky factor of ``H^-1`` (which equals the inverse
Hessian of the remaining columns after each step). Columns go in blocks of ``block_size``: the
updates inside a block are applied at once per column, the rest of the matrix gets the block's
accumulated error in one product (lazy batch updates). The mask is chosen per block: the lowest
``w^2 / [H^-1]_qq^2`` of the block for a sparsity, or of every ``m`` columns for N:M.

With ``column_order="hessian"`` (sparsity targets only), the columns are processed in order of
decreasing ``H_jj``, so the inputs carrying most signal are decided first and the later, weaker
columns absorb the reconstruction error (the "act-order" heuristic of GPTQ); the result is put
back in the original column order.
"""

from __future__ import annotations

import torch

from metaprune.errors import PruneError
from metaprune.prune.layerwise import LAYERWISE_METHODS, InputStats, SparsityTarget, lowest_mask

#: Dampening added to the Hessian's diagonal, as a fraction of its mean (keeps the Cholesky stable).
DAMPENING = 0.01
#: Columns per lazy-update block.
BLOCK_SIZE = 128


#: Orders in which the columns may be processed.
COLUMN_ORDERS = ("natural", "hessian")


def inverse_hessian_factor(stats: InputStats, weight: torch.Tensor, dampening: float = DAMPENING,
                           order: torch.Tensor | None = None) -> torch.Tensor:
    """Upper Cholesky factor of ``(H + lambda I)^-1`` (rows and columns of ``H`` permuted by ``order``, as
    ``weight``'s columns already are); columns never seen in calibration get ``H_jj = 1`` (and their
    weights are zeroed in ``weight``, in place, as they carry no signal there).

    With dense targets (``stats.cross`` = ``G``), ``weight`` is first replaced, in place, by the
    regularised least-squares map from the pruned model's inputs to the dense outputs,
    ``W (G + lambda I)^T (H + lambda I)^-1`` (``W`` itself when the inputs are the dense ones):
    pruning that map with ``H`` minimises the error against the dense outputs."""
    scale = 2.0 / max(stats.tokens, 1)
    hessian = scale * stats.hessian
    cross = scale * stats.cross if stats.cross is not None else None
    if order is not None:
        hessian = hessian[order][:, order]
        cross = cross[order][:, order] if cross is not None else None
    dead = torch.diagonal(hessian) == 0
    hessian[dead, dead] = 1.0
    weight[:, dead] = 0.0
    damping = dampening * torch.diagonal(hessian).mean() * torch.eye(hessian.shape[0], dtype=hessian.dtype)
    hessian += damping
    try:
        lower = torch.linalg.cholesky(hessian)
        if cross is not None:  # the dampening pulls towards the dense weight, not towards zero
            weight.copy_(torch.cholesky_solve((cross + damping) @ weight.T, lower).T)
        return torch.linalg.cholesky(torch.cholesky_inverse(lower), upper=True)
    except torch.linalg.LinAlgError as error:
        raise PruneError(f"the calibration Hessian is not positive definite even with dampening {dampening}: "
                         "use more calibration data or a larger dampening") from error


@LAYERWISE_METHODS.register("sparsegpt")
def sparsegpt(weight: torch.Tensor, stats: InputStats, target: SparsityTarget, block_size: int = BLOCK_SIZE,
              dampening: float = DAMPENING, column_order: str = "natural") -> torch.Tensor:
    """The SparseGPT reconstruction of ``weight`` at ``target`` (a new tensor).

    Args:
        weight: the dense ``out x in`` weight; stats: its input statistics.
        target: the sparsity or N:M pattern.
        block_size: columns per lazy-update block (a multiple of M for N:M).
        dampening: added to the Hessian's diagonal, as a fraction of its mean.
        column_order: ``natural`` or ``hessian`` (decreasing ``H_jj``; sparsity targets only).
    """
    if column_order not in COLUMN_ORDERS:
        raise PruneError(f"unknown column order {column_order!r}; choose from {', '.join(COLUMN_ORDERS)}")
    if column_order == "hessian" and target.n_m is not None:
        raise PruneError("an N:M pattern needs the natural column order (its groups are consecutive columns)")
    if target.n_m is not None and block_size % target.n_m[1]:
        raise PruneError(f"the block size {block_size} must be a multiple of M={target.n_m[1]}")
    order = torch.argsort(torch.diagonal(stats.hessian), descending=True) if column_order == "hessian" else None
    work = weight.detach().to(torch.float64).clone()
    if order is not None:
        work = work[:, order]
    factor = inverse_hessian_factor(stats, work, dampening, order)
    columns = work.shape[1]
    for start in range(0, columns, block_size):
        end = min(start + block_size, columns)
        block = work[:, start:end].clone()
        inverse = factor[start:end, start:end]
        diagonal = torch.diagonal(inverse)
        mask = lowest_mask(block ** 2 / diagonal.unsqueeze(0) ** 2, target, per_row=False) \
            if target.sparsity is not None else None
        errors = torch.zeros_like(block)
        for column in range(end - start):
            if target.n_m is not None and column % target.n_m[1] == 0:
                n, m = target.n_m
                window = block[:, column:column + m] ** 2 / diagonal[column:column + m].unsqueeze(0) ** 2
                drop = lowest_mask(window, SparsityTarget(n_m=(n, m)), per_row=True)
                mask_window = drop
            values = block[:, column]
            if target.n_m is not None:
                pruned = values.masked_fill(mask_window[:, column % target.n_m[1]], 0.0)
            else:
                pruned = values.masked_fill(mask[:, column], 0.0)  # type: ignore[index]
            error = (values - pruned) / inverse[column, column]
            block[:, column] = pruned
            block[:, column + 1:] -= error.unsqueeze(1) * inverse[column, column + 1:].unsqueeze(0)
            errors[:, column] = error
        work[:, start:end] = block
        work[:, end:] -= errors @ factor[start:end, end:]
    if order is not None:
        work = work[:, torch.argsort(order)]
    return work.to(weight.dtype)
