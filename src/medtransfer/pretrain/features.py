"""Frozen features of a backbone and the linear probes fitted on them (a card's probe AUC, source ranking)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medtransfer.models.backbones import Classifier
from medtransfer.tasks.base import task_kind
from medtransfer.training.batches import Batches


@torch.no_grad()
def frozen_features(
    model: Classifier, images: np.ndarray, indices: np.ndarray, device: torch.device, batch_size: int = 128
) -> np.ndarray:
    """Pooled features ``(n, F)`` (float64) of ``images[indices]``, normalised as the weights expect, unaugmented."""
    model.eval()
    labels = np.zeros((len(images), 0), dtype=np.float32)
    norm = model.normalization
    batches = Batches(images, labels, indices, batch_size, norm["mean"], norm["std"], device)
    out = [model.features(x).float().cpu() for x, _ in batches.epoch(0, 0)]
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros((0, model.backbone.num_features))


def _probe(seed: int):
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed))


def probe_auc(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, task: str, seed: int = 0
) -> float:
    """Macro AUC of logistic-regression probes fitted on ``train`` and scored on ``test``.

    ``y`` is the data contract's ``(n, K)`` array: one-hot for multi-class (one multinomial probe, one-vs-rest
    AUC per class), 0/1/NaN per label otherwise (one probe per label on its known rows). NaN when no label
    has both classes in both sets.
    """
    aucs = []
    if task_kind(task).one_hot:  # one multinomial probe over the classes
        known_tr, known_te = np.isfinite(train_y).all(1), np.isfinite(test_y).all(1)
        cls_tr, cls_te = train_y[known_tr].argmax(1), test_y[known_te].argmax(1)
        present = np.unique(cls_tr)
        if len(present) < 2:
            return float("nan")
        scores = _probe(seed).fit(train_x[known_tr], cls_tr).predict_proba(test_x[known_te])
        for j, k in enumerate(present):
            truth = cls_te == k
            if 0 < truth.sum() < len(truth):
                aucs.append(roc_auc_score(truth, scores[:, j]))
    else:
        for k in range(train_y.shape[1]):
            tr, te = np.isfinite(train_y[:, k]), np.isfinite(test_y[:, k])
            ytr, yte = train_y[tr, k], test_y[te, k]
            if len(np.unique(ytr)) < 2 or len(np.unique(yte)) < 2:
                continue
            scores = _probe(seed).fit(train_x[tr], ytr).predict_proba(test_x[te])[:, 1]
            aucs.append(roc_auc_score(yte, scores))
    return float(np.mean(aucs)) if aucs else float("nan")


def cv_probe_auc(x: np.ndarray, y: np.ndarray, task: str, folds: int = 3, seed: int = 0) -> float:
    """:func:`probe_auc` cross-validated over ``folds`` stratified folds (by the first label / the class)."""
    strata = task_kind(task).strata(y)
    _, counts = np.unique(strata, return_counts=True)
    k = int(min(folds, counts.min())) if len(counts) > 1 else 0
    if k < 2:
        return float("nan")
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    aucs = [probe_auc(x[a], y[a], x[b], y[b], task, seed) for a, b in splitter.split(x, strata)]
    aucs = [a for a in aucs if np.isfinite(a)]
    return float(np.mean(aucs)) if aucs else float("nan")
