# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Pure-torch evaluation algorithms (kNN) used by the evaluation tasks.

.. versionadded:: 0.1
"""

from .knn import KNNVote, knn_accuracy, knn_predict, knn_scores, knn_topk

__all__ = ('KNNVote', 'knn_accuracy', 'knn_predict', 'knn_scores', 'knn_topk')
