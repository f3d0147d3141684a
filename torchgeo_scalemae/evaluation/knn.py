# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Exact, batched, memory-bounded k-nearest-neighbour classification.

The algorithm of the Scale-MAE kNN evaluation (reference ``mae/eval/knn.py``, the InstDisc/DINO protocol):
L2-normalised features, cosine similarity, the ``k`` most similar bank entries vote for
their class, each vote weighted by ``exp(similarity / temperature)`` (or with weight 1 for a
plain majority vote), and the class with the largest vote wins.

Differences from the reference implementation (``mae/eval/knn.py``):

* the bank holds exactly one column per bank sample (no zero-filled padding columns
  labelled 0 for a partial last batch);
* the similarity matrix is computed in chunks of queries and bank entries, so memory is
  ``O(query_chunk_size * (bank_chunk_size + k))`` whatever the dataset size;
* neighbour selection and voting ties are resolved deterministically (see
  :func:`knn_scores`).

.. versionadded:: 0.1
"""

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ('KNNVote', 'knn_accuracy', 'knn_predict', 'knn_scores', 'knn_topk')

#: How neighbours vote: ``'weighted'`` (``exp(sim / T)``, as the reference) or ``'majority'``.
KNNVote = Literal['weighted', 'majority']


def _check_tensor(value: object, name: str, shape: str) -> None:
    """Raise a TypeError naming ``value`` unless it is a tensor."""
    if not isinstance(value, Tensor):
        raise TypeError(
            f'{name} must be a tensor of shape {shape}, got {type(value).__name__}: '
            f'{value!r:.60}'
        )


def _check_int(value: object, name: str) -> None:
    """Raise unless ``value`` is an int (not a bool) >= 1, naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f'{name} must be an int >= 1, got {value!r}')
    if value < 1:
        raise ValueError(f'{name} must be >= 1, got {value}')


def _check_finite(features: Tensor, name: str) -> None:
    """Raise if ``features`` holds NaN or infinite values (one device read)."""
    if features.is_floating_point() and not bool(torch.isfinite(features).all()):
        raise ValueError(
            f'{name} holds NaN or infinite features: every similarity would be '
            'undefined; check the encoder outputs'
        )


def _check_features(query: Tensor, bank: Tensor, bank_labels: Tensor) -> None:
    _check_tensor(bank_labels, 'bank_labels', '(N,)')
    if query.ndim != 2:
        raise ValueError(f'query must have shape (Q, D), got {tuple(query.shape)}')
    if bank.ndim != 2:
        raise ValueError(f'bank must have shape (N, D), got {tuple(bank.shape)}')
    if query.shape[1] != bank.shape[1]:
        raise ValueError(
            f'query and bank feature sizes differ: {query.shape[1]} != {bank.shape[1]}'
        )
    if bank.shape[0] == 0:
        raise ValueError('bank is empty: at least one bank sample is needed')
    if bank_labels.shape != (bank.shape[0],):
        raise ValueError(
            f'bank_labels must have shape ({bank.shape[0]},), '
            f'got {tuple(bank_labels.shape)}'
        )
    if bank_labels.dtype.is_floating_point or bank_labels.dtype == torch.bool:
        raise ValueError(f'bank_labels must be integers, got {bank_labels.dtype}')


def _check_chunk(name: str, value: int) -> None:
    _check_int(value, name)


def _chunk_topk(sim: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k of each row of ``sim`` (q, b), ordered by value desc then index asc.

    ``torch.topk`` leaves ties unordered and may pick any of several entries tied at
    the k-th value; rows where more than k entries reach the k-th value are redone
    with a stable sort, so the lowest indices win. Such rows are rare (duplicated
    features), so the cost is that of ``topk`` plus one comparison pass.
    """
    vals, idx = sim.topk(k, dim=1)
    ambiguous = (sim >= vals[:, -1:]).sum(dim=1) > k
    if bool(ambiguous.any()):
        rows = ambiguous.nonzero()[:, 0]
        exact_vals, exact_idx = torch.sort(
            sim[rows], dim=1, descending=True, stable=True
        )
        vals[rows] = exact_vals[:, :k]
        idx[rows] = exact_idx[:, :k]
    idx, order = idx.sort(dim=1)
    vals = vals.gather(1, order)
    vals, order = vals.sort(dim=1, descending=True, stable=True)
    return vals, idx.gather(1, order)


def knn_topk(
    query: Tensor,
    bank: Tensor,
    k: int = 20,
    *,
    normalize: bool = True,
    query_chunk_size: int = 512,
    bank_chunk_size: int = 16384,
) -> tuple[Tensor, Tensor]:
    """Find the ``k`` most similar bank entries of each query, exactly, in chunks.

    Similarity is the dot product of L2-normalised features (cosine similarity) when
    *normalize* is true, else the plain dot product. Neighbours are ordered by decreasing
    similarity; among equal similarities the bank entry with the **lower index comes
    first** (a stable sort), so the result is deterministic and independent of the chunk
    sizes.

    Args:
        query: Query features, shape (Q, D).
        bank: Bank features, shape (N, D), on the same device as *query*.
        k: Number of neighbours, ``k >= 1``. If ``k > N`` all ``N`` bank entries are
            returned.
        normalize: L2-normalise *query* and *bank* (computed in float32).
        query_chunk_size: Queries per similarity block.
        bank_chunk_size: Bank entries per similarity block. Peak extra memory is about
            ``2 * query_chunk_size * bank_chunk_size`` floats.

    Returns:
        ``(similarity, index)``, both of shape (Q, min(k, N)): float32 similarities in
        decreasing order and int64 indices into *bank*.

    Raises:
        TypeError: If *query* or *bank* is not a tensor, or *k* or a chunk size is
            not an int.
        ValueError: If shapes are inconsistent, *k* or a chunk size is below 1, the
            bank is empty, or a feature is NaN or infinite.
    """
    _check_tensor(query, 'query', '(Q, D)')
    _check_tensor(bank, 'bank', '(N, D)')
    if query.ndim != 2 or bank.ndim != 2 or query.shape[1] != bank.shape[1]:
        raise ValueError(
            'query (Q, D) and bank (N, D) must be 2-D with the same D, got '
            f'{tuple(query.shape)} and {tuple(bank.shape)}'
        )
    _check_int(k, 'k')
    _check_chunk('query_chunk_size', query_chunk_size)
    _check_chunk('bank_chunk_size', bank_chunk_size)
    num_bank = bank.shape[0]
    if num_bank == 0:
        raise ValueError('bank is empty: at least one bank sample is needed')
    _check_finite(query, 'query')
    _check_finite(bank, 'bank')
    k = min(k, num_bank)
    query = query.float()
    bank = bank.float()
    if normalize:
        query = F.normalize(query, dim=1)
        bank = F.normalize(bank, dim=1)

    sims: list[Tensor] = []
    idxs: list[Tensor] = []
    for q_start in range(0, query.shape[0], query_chunk_size):
        q = query[q_start : q_start + query_chunk_size]
        best_sim = q.new_empty((q.shape[0], 0))
        best_idx = torch.empty((q.shape[0], 0), dtype=torch.long, device=q.device)
        for b_start in range(0, num_bank, bank_chunk_size):
            sim = q @ bank[b_start : b_start + bank_chunk_size].T
            sim, idx = _chunk_topk(sim, min(k, sim.shape[1]))
            idx = idx + b_start
            # The running best entries come from earlier chunks (lower indices), so
            # putting them first and sorting stably keeps the tie order global.
            sim = torch.cat([best_sim, sim], dim=1)
            idx = torch.cat([best_idx, idx], dim=1)
            sim, order = torch.sort(sim, dim=1, descending=True, stable=True)
            best_sim = sim[:, :k]
            best_idx = torch.gather(idx, 1, order[:, :k])
        sims.append(best_sim)
        idxs.append(best_idx)
    if not sims:
        empty = query.new_empty((0, k))
        return empty, torch.empty((0, k), dtype=torch.long, device=query.device)
    return torch.cat(sims), torch.cat(idxs)


def knn_scores(
    query: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    vote: KNNVote = 'weighted',
    *,
    normalize: bool = True,
    query_chunk_size: int = 512,
    bank_chunk_size: int = 16384,
) -> Tensor:
    """Class vote shares of each query from its ``k`` nearest bank entries.

    With ``vote='weighted'`` neighbour ``j`` of a query votes for its class with weight
    ``exp(s_j / temperature)`` (``s_j`` its cosine similarity, as the reference); with
    ``vote='majority'`` every neighbour votes with weight 1. The votes of each query are
    divided by their sum, so each row sums to 1 (the ranking of classes, and hence the
    prediction, is the same as with the unnormalised sums of the reference; the
    weights are computed as ``exp((s_j - s_1) / temperature)``, which cannot overflow).

    Neighbour ties are broken towards the lower bank index (:func:`knn_topk`).

    Args:
        query: Query features, shape (Q, D).
        bank: Bank features, shape (N, D), same device as *query*.
        bank_labels: Integer class of each bank entry, shape (N,), values in
            ``[0, num_classes)``.
        num_classes: Number of classes C.
        k: Number of neighbours (``min(k, N)`` are used).
        temperature: Softmax temperature T of the weighted vote, > 0.
        vote: ``'weighted'`` or ``'majority'``.
        normalize: L2-normalise the features first (cosine similarity).
        query_chunk_size: Queries per similarity block.
        bank_chunk_size: Bank entries per similarity block.

    Returns:
        Vote shares, float32, shape (Q, C), rows summing to 1.

    Raises:
        TypeError: If an input is not a tensor, or *num_classes*, *k*, a chunk size
            or *temperature* is not a number of the right kind.
        ValueError: On inconsistent shapes, labels outside ``[0, num_classes)``, a
            non-positive or infinite *temperature*, *num_classes* below 1, an unknown
            *vote*, or NaN or infinite features.
    """
    _check_tensor(query, 'query', '(Q, D)')
    _check_tensor(bank, 'bank', '(N, D)')
    _check_features(query, bank, bank_labels)
    _check_int(num_classes, 'num_classes')
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise TypeError(f'temperature must be a number > 0, got {temperature!r}')
    if not 0 < temperature < float('inf'):
        raise ValueError(f'temperature must be finite and > 0, got {temperature}')
    if vote not in ('weighted', 'majority'):
        raise ValueError(f"vote must be 'weighted' or 'majority', got {vote!r}")
    if bank_labels.numel() and (
        int(bank_labels.min()) < 0 or int(bank_labels.max()) >= num_classes
    ):
        raise ValueError(
            f'bank_labels must lie in [0, {num_classes}), got values in '
            f'[{int(bank_labels.min())}, {int(bank_labels.max())}]'
        )
    sim, idx = knn_topk(
        query,
        bank,
        k,
        normalize=normalize,
        query_chunk_size=query_chunk_size,
        bank_chunk_size=bank_chunk_size,
    )
    labels = bank_labels.to(idx.device).long()[idx]  # (Q, k)
    if vote == 'weighted':
        weight = torch.exp((sim - sim[:, :1]) / temperature)
    else:
        weight = torch.ones_like(sim)
    scores = sim.new_zeros((sim.shape[0], num_classes))
    scores.scatter_add_(1, labels, weight)
    return scores / scores.sum(dim=1, keepdim=True).clamp_min(torch.finfo().tiny)


def knn_predict(
    query: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    vote: KNNVote = 'weighted',
    *,
    normalize: bool = True,
    query_chunk_size: int = 512,
    bank_chunk_size: int = 16384,
) -> Tensor:
    """Predict the class of each query by a kNN vote (see :func:`knn_scores`).

    Voting ties (equal vote shares, common with ``vote='majority'``) go to the **lowest
    class index** (``torch.argmax`` returns the first maximum).

    Args:
        query: Query features, shape (Q, D).
        bank: Bank features, shape (N, D).
        bank_labels: Integer classes of the bank, shape (N,).
        num_classes: Number of classes C.
        k: Number of neighbours.
        temperature: Temperature of the weighted vote.
        vote: ``'weighted'`` or ``'majority'``.
        normalize: L2-normalise the features first.
        query_chunk_size: Queries per similarity block.
        bank_chunk_size: Bank entries per similarity block.

    Returns:
        Predicted classes, int64, shape (Q,).
    """
    scores = knn_scores(
        query,
        bank,
        bank_labels,
        num_classes,
        k,
        temperature,
        vote,
        normalize=normalize,
        query_chunk_size=query_chunk_size,
        bank_chunk_size=bank_chunk_size,
    )
    return scores.argmax(dim=1)


def knn_accuracy(
    query: Tensor,
    query_labels: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    vote: KNNVote = 'weighted',
    *,
    normalize: bool = True,
    query_chunk_size: int = 512,
    bank_chunk_size: int = 16384,
) -> float:
    """Top-1 accuracy of the kNN classifier on labelled queries.

    Args:
        query: Query features, shape (Q, D), Q >= 1.
        query_labels: True classes of the queries, shape (Q,).
        bank: Bank features, shape (N, D).
        bank_labels: Integer classes of the bank, shape (N,).
        num_classes: Number of classes C.
        k: Number of neighbours.
        temperature: Temperature of the weighted vote.
        vote: ``'weighted'`` or ``'majority'``.
        normalize: L2-normalise the features first.
        query_chunk_size: Queries per similarity block.
        bank_chunk_size: Bank entries per similarity block.

    Returns:
        Fraction of queries whose predicted class equals their label, in [0, 1].

    Raises:
        TypeError: If an input is not a tensor (see :func:`knn_scores`).
        ValueError: If there are no queries, *query_labels* has the wrong shape, is
            not integer or lies outside ``[0, num_classes)``, or as
            :func:`knn_scores`.
    """
    _check_tensor(query, 'query', '(Q, D)')
    _check_tensor(query_labels, 'query_labels', '(Q,)')
    if query.ndim != 2 or query.shape[0] == 0:
        raise ValueError(f'query must have shape (Q, D), Q >= 1, got {query.shape}')
    if query_labels.shape != (query.shape[0],):
        raise ValueError(
            f'query_labels must have shape ({query.shape[0]},), '
            f'got {tuple(query_labels.shape)}'
        )
    if query_labels.dtype.is_floating_point or query_labels.dtype == torch.bool:
        raise ValueError(f'query_labels must be integers, got {query_labels.dtype}')
    _check_int(num_classes, 'num_classes')
    low, high = int(query_labels.min()), int(query_labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(
            f'query_labels must lie in [0, {num_classes}), got values in '
            f'[{low}, {high}]'
        )
    pred = knn_predict(
        query,
        bank,
        bank_labels,
        num_classes,
        k,
        temperature,
        vote,
        normalize=normalize,
        query_chunk_size=query_chunk_size,
        bank_chunk_size=bank_chunk_size,
    )
    return float((pred == query_labels.to(pred.device)).float().mean())
