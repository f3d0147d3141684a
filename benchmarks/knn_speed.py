# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Speed of :func:`torchgeo_scalemae.evaluation.knn.knn_predict` vs lightly's kNN.

Baseline: ``lightly.utils.benchmarking.knn_predict`` (the MoCo/InstDisc code the
reference kNN is modelled on), which materialises the whole (Q, N) similarity matrix
and breaks ties arbitrarily. Ours is chunked (memory bounded), exact and
deterministic on ties. Both get the same L2-normalised random features; the script
prints the time of each, the ratio ours / baseline and the agreement of the
predictions (1.0 expected: random features have no ties).

Example::

    python benchmarks/knn_speed.py --sizes 8000x2000x192 25200x6300x1024
"""

import argparse
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from lightly.utils.benchmarking import knn_predict as lightly_knn_predict

from torchgeo_scalemae.evaluation.knn import knn_predict


def timed(fn: Callable[[], torch.Tensor], repeats: int) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', nargs='+', default=['8000x2000x192'], help='NxQxD')
    parser.add_argument('--classes', type=int, default=30)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu'
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f'device {args.device}, k=20, T=0.07, {args.classes} classes')
    print(
        f'{"N x Q x D":>20} {"ours (s)":>9} {"lightly (s)":>11} {"ratio":>6} {"agree":>6}'
    )
    for size in args.sizes:
        n, q, d = (int(v) for v in size.split('x'))
        bank = F.normalize(torch.randn(n, d, device=args.device), dim=1)
        labels = torch.randint(0, args.classes, (n,), device=args.device)
        query = F.normalize(torch.randn(q, d, device=args.device), dim=1)
        bank_t = bank.T.contiguous()
        ours_s, ours = timed(
            partial(knn_predict, query, bank, labels, args.classes), args.repeats
        )
        lightly = partial(
            lightly_knn_predict, query, bank_t, labels, args.classes, 20, 0.07
        )
        base_s, base = timed(lambda f=lightly: f()[:, 0], args.repeats)
        agree = float((ours == base).float().mean())
        print(
            f'{size:>20} {ours_s:>9.3f} {base_s:>11.3f} {ours_s / base_s:>6.2f} '
            f'{agree:>6.3f}'
        )


if __name__ == '__main__':
    main()
