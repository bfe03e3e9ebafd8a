"""Which source transfers best to a target: scores from frozen features on the target's training split.

* LogME (You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer Learning", ICML 2021):
  the log marginal evidence of a Bayesian linear regression from features to each label, maximised over
  the prior/noise precisions (alpha, beta) by the paper's fixed-point iteration, per label column (both
  classes of a binary label, every class of a multi-class one), then averaged. Higher is better.
* a cross-validated logistic-regression probe AUC (:func:`~medtransfer.pretrain.features.cv_probe_auc`).

Both need one forward pass over the training images per source: a small fraction of fine-tuning. The features
(:func:`source_features`) can be computed once and scored on any subset of the images (:func:`score_features`), as
a study does for each of its training-set sizes.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from medtransfer.config import Config, ModelConfig, from_dict, load_config
from medtransfer.errors import UserError
from medtransfer.models.catalogue import list_sources, lookup
from medtransfer.models.weights import CARD_FILE, create_model, resolve_weights
from medtransfer.pretrain import features as probes  # probes.cv_probe_auc: looked up per call (tests replace it)
from medtransfer.pretrain.features import frozen_features
from medtransfer.tasks.base import task_kind
from medtransfer.training.run import pick_device, prepare


def logme_evidence(f: np.ndarray, y: np.ndarray, max_iter: int = 100, tol: float = 1e-3) -> float:
    """LogME of features ``f`` (n, D) for one real target ``y`` (n,): the maximised log evidence / n.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> f = rng.normal(size=(200, 8))
        >>> logme_evidence(f, f[:, 0]) > logme_evidence(f, rng.normal(size=200))
        True
    """
    f, y = np.asarray(f, np.float64), np.asarray(y, np.float64)
    n, d = f.shape
    sigma, v = np.linalg.eigh(f.T @ f)  # F^T F = V diag(sigma) V^T
    sigma = np.clip(sigma, 0.0, None)
    proj = v.T @ (f.T @ y)  # V^T F^T y
    alpha, beta = 1.0, 1.0
    for _ in range(max_iter):
        gamma = float((beta * sigma / (alpha + beta * sigma)).sum())
        m = v @ (beta * proj / (alpha + beta * sigma))  # posterior mean of the weights
        mm = float(m @ m)
        res = float(((y - f @ m) ** 2).sum())
        alpha_new = gamma / (mm + 1e-10)
        beta_new = (n - gamma) / (res + 1e-10)
        done = abs(alpha_new / beta_new - alpha / beta) / (alpha / beta) < tol
        alpha, beta = alpha_new, beta_new
        if done:
            break
    m = v @ (beta * proj / (alpha + beta * sigma))
    mm, res = float(m @ m), float(((y - f @ m) ** 2).sum())
    evidence = (
        d / 2 * np.log(alpha)
        + n / 2 * np.log(beta)
        - alpha / 2 * mm
        - beta / 2 * res
        - 0.5 * np.log(alpha + beta * sigma).sum()
        - n / 2 * np.log(2 * np.pi)
    )
    return float(evidence / n)


def logme(features: np.ndarray, labels: np.ndarray, task: str) -> float:
    """LogME averaged over label columns: every class of a multi-class task, both classes of each binary label, the
    standardised target of a regression (the task kind's :meth:`~medtransfer.tasks.base.TaskKind.logme_targets`).

    ``labels`` is the data contract's ``(n, K)`` array; rows with a NaN label are left out for that label.
    """
    kind = task_kind(task)
    scores = []
    for k in range(labels.shape[1]):
        known = np.isfinite(labels[:, k])
        f, y = features[known], labels[known, k]
        scores += [logme_evidence(f, t) for t in kind.logme_targets(y)]
    return float(np.mean(scores)) if scores else float("nan")


@dataclass(frozen=True)
class RankRow:
    name: str
    source: str
    logme: float
    probe_auc: float
    seconds: float


@dataclass
class Target:
    """A target's training images and labels, and the backbone that ``scratch``/``imagenet`` use."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    task: str
    channels: int
    backbone: str
    seed: int


def load_target(target: str, backbone: str | None = None, progress: bool = False) -> Target:
    """A train config (.yaml/.yml) or a dataset (path or ``synthetic:...`` spec, 64 px, default split)."""
    path = Path(target).expanduser()
    if path.suffix.lower() in (".yaml", ".yml"):
        cfg = load_config(path)
    else:
        cfg = from_dict(Config, {"data": {"path": target}})
    prep = prepare(cfg, progress)
    task = cfg.task or prep.ds.task
    kind = task_kind(task)
    if not kind.supervised or kind.family != "images":
        raise UserError(f"target {target} has no labels ({task}); ranking needs a labelled training split")
    idx = prep.split.train_subset(cfg.train.n_train)
    return Target(
        str(target), prep.images, prep.ds.labels, idx, task, prep.ds.channels, backbone or cfg.model.backbone, cfg.seed
    )


def source_features(source: str, target: Target, device: str = "auto") -> np.ndarray:
    """Frozen features ``(len(target.indices), F)`` of ``source`` on ``target.images[target.indices]``, in that order.

    ``scratch`` is the same random network every time (seeded by ``target.seed``). Compute them once and score any
    subset of the rows with :func:`score_features`.
    """
    backbone = target.backbone
    if source not in ("scratch", "imagenet") and not source.startswith("imagenet:"):
        backbone = _card_backbone(source) or backbone
    resolve_weights(source, backbone)  # fail early (one line) for a source that cannot load
    torch.manual_seed(target.seed)  # scratch: the same random network every time
    model_cfg = ModelConfig(backbone=backbone, source=source, in_chans=target.channels)
    model, _ = create_model(model_cfg, num_outputs=1, image_size=int(target.images.shape[-1]))
    dev = pick_device(device)
    model.to(dev)
    return frozen_features(model, target.images, target.indices, dev)


def score_features(
    features: np.ndarray, labels: np.ndarray, task: str, seed: int = 0, probe: bool = True
) -> tuple[float, float]:
    """``(LogME, CV probe AUC)`` of ``features`` ``(n, F)`` for ``labels`` ``(n, K)`` (rows aligned).

    The probe AUC is a classification score: NaN for a regression target, with ``probe=False``, and where it cannot
    be computed (too few images of a class for a stratified split, as at a tiny N). LogME is NaN where no label
    column has two values.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = (np.arange(40) % 2).astype(float)[:, None]
        >>> score, auc = score_features(np.c_[y, rng.normal(size=(40, 3))], y, "binary")
        >>> auc > 0.9
        True
        >>> score_features(rng.normal(size=(3, 4)), np.array([[0.0], [1.0], [1.0]]), "binary")[1]
        nan
    """
    score = logme(features, labels, task) if len(features) else float("nan")
    auc = float("nan")
    if probe and task_kind(task).probabilities and len(features):
        try:
            auc = probes.cv_probe_auc(features, labels, task, seed=seed)
        except ValueError:  # scikit-learn refuses a degenerate fold: the probe is undefined at this N
            auc = float("nan")
    return score, auc


def score_source(name: str, source: str, target: Target, probe: bool = True, device: str = "auto") -> RankRow:
    """Frozen features of ``source`` on the target's training images → LogME (and the CV probe AUC)."""
    t0 = time.perf_counter()
    feats = source_features(source, target, device)
    score, auc = score_features(feats, target.labels[target.indices], target.task, target.seed, probe)
    return RankRow(name, source, score, auc, time.perf_counter() - t0)


def _card_backbone(source: str) -> str | None:
    card = Path(source) / CARD_FILE
    if card.is_file():
        try:
            data = yaml.safe_load(card.read_text())
        except yaml.YAMLError:
            return None
        return str(data["backbone"]) if isinstance(data, dict) and data.get("backbone") else None
    return None


def rank_sources(
    target: str | Target,
    sources: list[str] | None = None,
    sources_dir: str | Path | None = None,
    backbone: str | None = None,
    probe: bool = True,
    device: str = "auto",
) -> list[RankRow]:
    """Score each source (catalogue names, ``scratch``, ``imagenet`` or folders) and sort best first by LogME.

    ``sources=None``: every usable catalogue entry (``imagenet`` only when it is cached).

    Example:
        >>> rows = rank_sources("target.yaml", ["scratch", "mednist-sup"])  # doctest: +SKIP
        >>> rows[0].name                                                    # doctest: +SKIP
        'mednist-sup'
    """
    if sources is not None:
        if not sources:
            raise UserError("--sources is empty; give names like scratch,imagenet,<folder under the catalogue>")
        named = [(s, lookup(s, sources_dir)) for s in sources]  # every name is checked before any work
    tgt = target if isinstance(target, Target) else load_target(target, backbone)
    if backbone:
        tgt = dataclasses.replace(tgt, backbone=backbone)
    if sources is None:  # imagenet only when cached for the target's backbone
        entries = list_sources(sources_dir, backbone=tgt.backbone)
        named = [(e.name, e.source) for e in entries if e.error is None and e.available]
    rows = [score_source(name, src, tgt, probe, device) for name, src in named]
    return sorted(rows, key=lambda r: (-r.logme if np.isfinite(r.logme) else np.inf, r.name))
