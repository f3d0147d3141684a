# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

import numpy as np
import pytest
import torch

from torchgeo_scalemae.evaluation import knn_accuracy, knn_predict, knn_scores, knn_topk


def brute_force(
    query: np.ndarray,
    bank: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    k: int,
    temperature: float,
    vote: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference kNN in float64 NumPy, one query at a time (as ``mae/eval/knn.py``)."""
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    k = min(k, len(b))
    scores = np.zeros((len(q), num_classes))
    for i, row in enumerate(q):
        sim = b @ row
        order = sorted(range(len(b)), key=lambda j: (-sim[j], j))[:k]
        for j in order:
            weight = np.exp(sim[j] / temperature) if vote == 'weighted' else 1.0
            scores[i, labels[j]] += weight
    scores /= scores.sum(axis=1, keepdims=True)
    return scores, scores.argmax(axis=1)


@pytest.mark.parametrize('vote', ['weighted', 'majority'])
@pytest.mark.parametrize(
    ('num_query', 'num_bank', 'k', 'q_chunk', 'b_chunk'),
    [
        (37, 101, 20, 8, 16),  # neither size divisible by the chunk sizes
        (5, 7, 20, 512, 16384),  # k larger than the bank
        (64, 300, 1, 7, 33),
        (50, 200, 20, 50, 200),  # one chunk exactly
    ],
)
def test_matches_numpy_brute_force(
    vote: str, num_query: int, num_bank: int, k: int, q_chunk: int, b_chunk: int
) -> None:
    rng = np.random.default_rng(0)
    num_classes = 6
    query = rng.normal(size=(num_query, 16)).astype(np.float32)
    bank = rng.normal(size=(num_bank, 16)).astype(np.float32)
    labels = rng.integers(0, num_classes, num_bank)
    expected_scores, expected_pred = brute_force(
        query.astype(np.float64),
        bank.astype(np.float64),
        labels,
        num_classes,
        k,
        0.07,
        vote,
    )
    scores = knn_scores(
        torch.from_numpy(query),
        torch.from_numpy(bank),
        torch.from_numpy(labels),
        num_classes,
        k=k,
        temperature=0.07,
        vote=vote,  # type: ignore[arg-type]
        query_chunk_size=q_chunk,
        bank_chunk_size=b_chunk,
    )
    assert scores.shape == (num_query, num_classes)
    np.testing.assert_allclose(scores.numpy(), expected_scores, rtol=1e-4, atol=1e-5)
    pred = knn_predict(
        torch.from_numpy(query),
        torch.from_numpy(bank),
        torch.from_numpy(labels),
        num_classes,
        k=k,
        vote=vote,  # type: ignore[arg-type]
        query_chunk_size=q_chunk,
        bank_chunk_size=b_chunk,
    )
    np.testing.assert_array_equal(pred.numpy(), expected_pred)


def test_chunking_does_not_change_neighbours_with_ties() -> None:
    # Duplicated bank rows give tied similarities across chunk borders. Small integer
    # features without normalisation make every dot product exact, so the ties are
    # exact whatever the summation order of the matrix product.
    base = torch.randint(-4, 5, (10, 8)).float()
    bank = torch.cat([base, base, base])  # row j, j + 10, j + 20 identical
    query = torch.randint(-4, 5, (13, 8)).float()
    full_sim, full_idx = knn_topk(query, bank, k=7, normalize=False)
    for q_chunk, b_chunk in [(1, 1), (3, 4), (5, 11), (13, 30)]:
        sim, idx = knn_topk(
            query,
            bank,
            k=7,
            normalize=False,
            query_chunk_size=q_chunk,
            bank_chunk_size=b_chunk,
        )
        torch.testing.assert_close(sim, full_sim)
        torch.testing.assert_close(idx, full_idx)
    # Ties resolve to the lowest bank index.
    exact = (query @ bank.T).tolist()
    for row, got in zip(exact, full_idx.tolist(), strict=True):
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))[:7]
        assert got == order


def test_majority_tie_goes_to_lowest_class() -> None:
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([3, 1])
    query = torch.tensor([[1.0, 1.0]])  # equally similar to both
    pred = knn_predict(query, bank, labels, num_classes=4, k=2, vote='majority')
    assert pred.tolist() == [1]


def test_no_padding_artefact() -> None:
    # The reference bank has zero columns labelled 0 for a partial last batch; a
    # query orthogonal to every real bank entry would then vote for class 0. Here the
    # bank holds only real samples, so class 0 never appears.
    bank = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.1, 0.0], [0.9, 0.0, 0.1]])
    labels = torch.tensor([2, 2, 1])
    query = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    scores = knn_scores(query, bank, labels, num_classes=3, k=20)
    assert (scores[:, 0] == 0).all()
    torch.testing.assert_close(scores.sum(1), torch.ones(2))


def test_accuracy() -> None:
    bank = torch.eye(4)
    labels = torch.tensor([0, 1, 2, 3])
    query = torch.eye(4) + 0.01
    acc = knn_accuracy(query, torch.tensor([0, 1, 2, 0]), bank, labels, 4, k=1)
    assert acc == pytest.approx(0.75)


def test_weighted_is_overflow_safe() -> None:
    bank = torch.randn(30, 4) * 1e3
    labels = torch.randint(0, 3, (30,))
    scores = knn_scores(torch.randn(5, 4), bank, labels, 3, normalize=False)
    assert torch.isfinite(scores).all()


def test_features_in_half_precision() -> None:
    bank = torch.randn(40, 8)
    labels = torch.randint(0, 3, (40,))
    query = torch.randn(9, 8)
    expected = knn_predict(query, bank, labels, 3)
    assert (
        knn_predict(query.half(), bank.half(), labels, 3) == expected
    ).float().mean() > 0.7


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'k': 0}, 'k must be'),
        ({'temperature': 0.0}, 'temperature'),
        ({'vote': 'soft'}, 'vote'),
        ({'num_classes': 2}, 'bank_labels must lie'),
        ({'query_chunk_size': 0}, 'query_chunk_size'),
    ],
)
def test_validation(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {
        'query': torch.randn(3, 4),
        'bank': torch.randn(5, 4),
        'bank_labels': torch.tensor([0, 1, 2, 0, 1]),
        'num_classes': 3,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        knn_scores(**args)  # type: ignore[arg-type]


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match='feature sizes differ'):
        knn_scores(
            torch.randn(3, 4), torch.randn(5, 3), torch.zeros(5, dtype=torch.long), 2
        )
    with pytest.raises(ValueError, match='bank_labels must have shape'):
        knn_scores(
            torch.randn(3, 4), torch.randn(5, 4), torch.zeros(4, dtype=torch.long), 2
        )
    with pytest.raises(ValueError, match='bank is empty'):
        knn_scores(
            torch.randn(3, 4), torch.randn(0, 4), torch.zeros(0, dtype=torch.long), 2
        )
    with pytest.raises(ValueError, match='integers'):
        knn_scores(torch.randn(3, 4), torch.randn(5, 4), torch.zeros(5), 2)


def _knn_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.rand(4, 8), torch.rand(10, 8), torch.arange(10) % 3


@pytest.mark.parametrize('name', ['query', 'bank', 'bank_labels'])
@pytest.mark.parametrize('bad', [None, 'abc', [1.0, 2.0]])
def test_knn_rejects_non_tensors(name: str, bad: object) -> None:
    query, bank, labels = _knn_inputs()
    inputs = {'query': query, 'bank': bank, 'bank_labels': labels, name: bad}
    with pytest.raises(TypeError, match=rf'{name} must be a tensor of shape .*got'):
        knn_scores(num_classes=3, k=3, **inputs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ('kwargs', 'error', 'match'),
    [
        ({'k': float('inf')}, TypeError, 'k must be an int >= 1, got inf'),
        ({'k': 2.5}, TypeError, 'got 2.5'),
        ({'num_classes': float('nan')}, TypeError, 'num_classes must be an int'),
        ({'num_classes': 0}, ValueError, 'num_classes must be >= 1, got 0'),
        ({'query_chunk_size': float('nan')}, TypeError, 'query_chunk_size'),
        ({'bank_chunk_size': float('inf')}, TypeError, 'bank_chunk_size'),
        ({'temperature': float('inf')}, ValueError, 'finite and > 0, got inf'),
        ({'temperature': float('nan')}, ValueError, 'got nan'),
        (
            {'temperature': 'abc'},
            TypeError,
            "temperature must be a number > 0, got 'abc'",
        ),
    ],
)
def test_knn_rejects_bad_numbers(
    kwargs: dict[str, object], error: type, match: str
) -> None:
    query, bank, labels = _knn_inputs()
    arguments: dict[str, object] = {'num_classes': 3, 'k': 3, **kwargs}
    with pytest.raises(error, match=match):
        knn_scores(query, bank, labels, **arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize('name', ['query', 'bank'])
@pytest.mark.parametrize('value', [float('nan'), float('inf')])
def test_knn_rejects_non_finite_features(name: str, value: float) -> None:
    query, bank, labels = _knn_inputs()
    (query if name == 'query' else bank)[1, 2] = value
    with pytest.raises(ValueError, match=f'{name} holds NaN or infinite features'):
        knn_topk(query, bank, 3)
    with pytest.raises(ValueError, match=f'{name} holds NaN or infinite features'):
        knn_predict(query, bank, labels, 3, 3)


@pytest.mark.parametrize(
    ('labels', 'match'),
    [
        (None, 'query_labels must be a tensor'),
        (torch.rand(4), 'query_labels must be integers, got torch.float32'),
        (
            torch.tensor([0, 1, 2, 3]),
            r'query_labels must lie in \[0, 3\), got .*\[0, 3\]',
        ),
        (torch.tensor([0, -1, 2, 1]), r'got values in \[-1, 2\]'),
    ],
)
def test_knn_accuracy_checks_query_labels(labels: object, match: str) -> None:
    query, bank, bank_labels = _knn_inputs()
    with pytest.raises((TypeError, ValueError), match=match):
        knn_accuracy(query, labels, bank, bank_labels, 3, 3)  # type: ignore[arg-type]
