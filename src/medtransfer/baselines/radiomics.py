"""The radiomics baseline: pyradiomics features of each image, standardised, L2 logistic regression with C by CV
(a regression target: ridge regression with alpha by CV).

This is the published non-neural comparison (Romero et al., Med Phys 2020). It runs as one arm of a study, on the
same training subsets and test images as the networks: :func:`radiomics_arm` is one trial.

Features are 2-D (``force2D``) over the first-order, texture (GLCM, GLRLM, GLSZM, GLDM, NGTDM) and 2-D shape classes,
with a fixed bin count: radiographs have no calibrated intensity unit, so grey levels are binned relative to each
ROI's own range. Features are cached per image on disk, so a learning curve extracts each image once.

pyradiomics is an optional extra (``pip install -e '.[radiomics]'``); it is imported only when features are computed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import multiprocessing
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from medtransfer.baselines.base import BASELINES, Baseline
from medtransfer.errors import DataError, UserError
from medtransfer.io import atomic_write, atomic_write_text
from medtransfer.optional import optional_import
from medtransfer.tasks.base import task_kind

try:
    import fcntl
except ImportError:  # not POSIX: cache writes are still atomic per file, just not merged (see _locked)
    fcntl = None

log = logging.getLogger(__name__)

FEATURE_CLASSES = ("firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm", "shape2D")
C_GRID = tuple(float(c) for c in np.logspace(-4, 3, 15))  # half-decade steps; ties go to the smaller C
ALPHA_GRID = tuple(float(a) for a in np.logspace(-3, 4, 15))  # ridge (regression targets)
MAX_FOLDS = 5
CACHE_VERSION = "1"  # bump when the feature computation changes, so old caches are not reused


def _radiomics(module: str = "radiomics") -> ModuleType:
    """``module`` of the optional extra (pyradiomics, SimpleITK), both checked: a one-line UserError with the
    install hint when either is missing."""
    purpose = "the radiomics baseline (pyradiomics and SimpleITK)"
    return optional_import(module, extra="radiomics", purpose=purpose, also=("radiomics", "SimpleITK"))


def _settings(bin_count: int) -> dict[str, Any]:
    # force2D with force2Ddimension=0 on a (1, H, W) volume is pyradiomics' 2-D mode: texture matrices use in-plane
    # neighbours only. (A 2-D SimpleITK image with force2D=True would keep only one axis of angles.)
    return {"binCount": int(bin_count), "force2D": True, "force2Ddimension": 0, "label": 1, "additionalInfo": False}


@functools.lru_cache(maxsize=4)
def _extractor(bin_count: int) -> Any:
    """One extractor per process and setting (construction parses settings and logs)."""
    featureextractor = _radiomics("radiomics.featureextractor")
    # pyradiomics warns on every construction that a fixed bin count is enabled; that is our deliberate choice
    # for uncalibrated 8-bit images, so that one warning is silenced for the construction only.
    logger = logging.getLogger("radiomics.featureextractor")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        extractor = featureextractor.RadiomicsFeatureExtractor(**_settings(bin_count))
    finally:
        logger.setLevel(level)
    extractor.disableAllFeatures()
    extractor.enableFeaturesByName(**_enabled_features())
    # Per image, pyradiomics logs each feature class at INFO (8 lines an image, thousands in a study's output,
    # seen in worker processes whose root logger is at INFO); its warnings and errors still show.
    logging.getLogger("radiomics").setLevel(logging.WARNING)
    return extractor


def _enabled_features() -> dict[str, list[str] | None]:
    """Every non-deprecated feature of :data:`FEATURE_CLASSES` (``None`` = all) except GLCM SumAverage.

    With a symmetric GLCM, SumAverage is exactly 2 x JointAverage, and pyradiomics warns about it on every image.
    """
    glcm = _radiomics().getFeatureClasses()["glcm"].getFeatureNames()
    enabled: dict[str, list[str] | None] = dict.fromkeys(FEATURE_CLASSES)
    enabled["glcm"] = [name for name, deprecated in glcm.items() if not deprecated and name != "SumAverage"]
    return enabled


def extract_features(image: np.ndarray, mask: np.ndarray | None = None, *, bin_count: int = 32) -> dict[str, float]:
    """pyradiomics features of one 2-D image ``(H, W)`` on ``mask`` (nonzero = ROI), or on the whole image.

    Any numeric dtype; values are used as they are (no rescaling). Returns ``{name: value}`` in pyradiomics' order,
    names like ``'original_firstorder_Mean'``.

    Example:
        >>> img = np.random.default_rng(0).integers(0, 256, (28, 28)).astype(np.uint8)
        >>> feats = extract_features(img)                        # doctest: +SKIP
        >>> feats["original_firstorder_Mean"] == img.mean()     # doctest: +SKIP
        True
    """
    sitk = _radiomics("SimpleITK")  # checks pyradiomics too: the install hint before any work
    img = np.asarray(image)
    if img.ndim != 2 or not np.issubdtype(img.dtype, np.number):
        raise DataError(
            f"extract_features needs one numeric 2-D image (H, W); got dtype {img.dtype}, shape {img.shape}"
        )
    img = img.astype(np.float64)
    if not np.isfinite(img).all():
        raise DataError("the image has NaN or infinite pixels; pyradiomics needs finite values")
    roi = np.ones(img.shape, np.uint8) if mask is None else (np.asarray(mask) != 0).astype(np.uint8)
    if roi.shape != img.shape:
        raise DataError(f"the mask is {roi.shape} but the image is {img.shape}; they must match")
    if roi.sum() < 2:
        raise DataError(f"the mask has {int(roi.sum())} pixel(s); radiomics features need an ROI of 2 or more")
    try:
        raw = _extractor(bin_count).execute(sitk.GetImageFromArray(img[None]), sitk.GetImageFromArray(roi[None]))
    except ValueError as err:  # pyradiomics reports an unusable ROI (e.g. a single row) as ValueError
        raise DataError(f"pyradiomics rejected the ROI: {err}") from err
    return {name: float(value) for name, value in raw.items()}


def _as_2d(images: np.ndarray, i: int) -> np.ndarray:
    img = np.asarray(images[i], dtype=np.float64)
    return img.mean(axis=0) if img.ndim == 3 else img  # (C, S, S): colour images use the channel mean


def _extract_row(args: tuple[np.ndarray, np.ndarray | None, int]) -> dict[str, float]:
    image, mask, bin_count = args
    return extract_features(image, mask, bin_count=bin_count)


def _cache_folder(
    images: np.ndarray, masks: np.ndarray | None, cache_dir: str | Path, key: str, bin_count: int
) -> Path:
    radiomics = _radiomics()
    mask_digest = None
    if masks is not None:
        sha = hashlib.sha1()
        for start in range(0, len(masks), 1024):  # in blocks: masks may be a large memmap
            sha.update(np.packbits(np.asarray(masks[start : start + 1024]) != 0).tobytes())
        mask_digest = sha.hexdigest()
    ident = {
        "version": CACHE_VERSION,
        "pyradiomics": radiomics.__version__,
        "settings": _settings(bin_count),
        "classes": FEATURE_CLASSES,
        "shape": list(images.shape),
        "masks": mask_digest,
    }
    digest = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir).expanduser() / "radiomics" / f"{key.replace('/', '_')}-{digest}"


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Serialise cache writes between processes (parallel trials share a dataset's cache)."""
    if fcntl is None:  # not POSIX: writes are still atomic per file, just not merged
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _load_cache(folder: Path, n: int) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    paths = folder / "features.npy", folder / "done.npy", folder / "names.json"
    if not all(p.is_file() for p in paths):
        return None
    try:
        feats, done, names = np.load(paths[0]), np.load(paths[1]), json.loads(paths[2].read_text())
    except (OSError, ValueError) as err:
        log.warning("radiomics cache %s is unreadable (%s); recomputing", folder, err)
        return None
    if feats.shape != (n, len(names)) or done.shape != (n,) or done.dtype != bool:
        log.warning("radiomics cache %s does not match the images; recomputing", folder)
        return None
    return feats, done, names


def _save_npy(path: Path, arr: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.save on a path would append '.npy' to the temporary name
            np.save(fh, arr)

    atomic_write(path, write)


def _flush(folder: Path, feats: np.ndarray, done: np.ndarray, names: list[str]) -> None:
    """Merge rows another process has saved meanwhile, then write features before 'done' (a crash between the two
    only makes finished rows look unfinished)."""
    with _locked(folder):
        disk = _load_cache(folder, len(done))
        if disk is not None and disk[2] == names:
            theirs = disk[1] & ~done
            feats[theirs], done[theirs] = disk[0][theirs], True
        atomic_write_text(folder / "names.json", json.dumps(names))
        _save_npy(folder / "features.npy", feats)
        _save_npy(folder / "done.npy", done)


def _compute(
    images: np.ndarray, masks: np.ndarray | None, todo: list[int], workers: int, chunk_size: int, bin_count: int
) -> Iterator[tuple[int, dict[str, float]]]:
    def job(i: int) -> tuple[np.ndarray, np.ndarray | None, int]:
        return _as_2d(images, i), None if masks is None else np.squeeze(np.asarray(masks[i])), bin_count

    if workers <= 1:
        for i in todo:
            image, mask, _ = job(i)
            yield i, extract_features(image, mask, bin_count=bin_count)
        return
    # spawn, not fork: the parent may hold torch/CUDA or BLAS threads, which do not survive a fork
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            for start in range(0, len(todo), chunk_size):  # one chunk in flight bounds the pickled images held
                chunk = todo[start : start + chunk_size]
                per_task = max(1, len(chunk) // (4 * workers))
                results = pool.map(_extract_row, [job(i) for i in chunk], chunksize=per_task)
                yield from zip(chunk, results, strict=True)
        except BaseException:  # an error or Ctrl-C: don't wait for the rest of the chunk
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def feature_matrix(
    images: np.ndarray,
    indices: np.ndarray,
    cache_dir: str | Path,
    key: str,
    *,
    masks: np.ndarray | None = None,
    workers: int = 1,
    progress: bool = True,
    bin_count: int = 32,
    chunk_size: int = 256,
) -> tuple[np.ndarray, list[str]]:
    """Features ``(len(indices), F)`` of ``images[indices]`` and their names, computing only uncached images.

    ``images`` is medtransfer's uint8 array ``(N, C, S, S)`` (multi-channel images use the channel mean); ``masks``,
    if given, is ``(N, S, S)`` or ``(N, 1, S, S)`` with nonzero = ROI, otherwise the whole image is the ROI.
    The cache lives in ``cache_dir/radiomics/<key>-<hash of settings, shape and masks>/`` and is saved every
    ``chunk_size`` images (and when an error stops the run), so an interrupted run loses at most one chunk.
    ``workers > 1`` extracts in that many processes.

    Example:
        >>> arr = cached_images(ds, 64)                                             # doctest: +SKIP
        >>> x, names = feature_matrix(arr, np.arange(len(arr)), cache_dir, "chest-64")  # doctest: +SKIP
        >>> x.shape, names[0]                                                         # doctest: +SKIP
        ((8, 101), 'original_shape2D_Elongation')
    """
    if images.ndim != 4:
        raise DataError(f"images must be (N, C, S, S) as medtransfer caches them; got shape {images.shape}")
    n = len(images)
    if masks is not None and (len(masks) != n or np.squeeze(np.asarray(masks[:1])).shape != images.shape[2:]):
        raise DataError(f"masks {masks.shape} do not match images {images.shape}; expected (N, S, S) or (N, 1, S, S)")
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= n):
        raise DataError(f"indices must lie in [0, {n}); got {indices.min()}..{indices.max()}")
    folder = _cache_folder(images, masks, cache_dir, key, bin_count)
    cached = _load_cache(folder, n)
    feats, done, names = cached if cached else (None, np.zeros(n, bool), None)
    todo = [int(i) for i in np.unique(indices) if not done[i]]
    if todo:
        log.info(
            "radiomics: extracting %d image(s) (%d cached) into %s",
            len(todo),
            len(np.unique(indices)) - len(todo),
            folder,
        )
        columns = (
            TextColumn(f"radiomics {key}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeRemainingColumn(),
        )
        unsaved = 0
        with Progress(*columns, disable=not progress, transient=True) as bar:
            task = bar.add_task("radiomics", total=len(todo))
            try:
                for i, row in _compute(images, masks, todo, workers, chunk_size, bin_count):
                    if names is None:
                        names = list(row)
                        feats = np.full((n, len(names)), np.nan)
                    elif list(row) != names:
                        raise DataError(
                            f"image {i} gave {len(row)} features named unlike the first image's {len(names)}; "
                            f"delete {folder} if the pyradiomics installation changed"
                        )
                    feats[i], done[i] = list(row.values()), True
                    unsaved += 1
                    bar.advance(task)
                    if unsaved >= chunk_size:
                        _flush(folder, feats, done, names)
                        unsaved = 0
            finally:
                if unsaved:
                    _flush(folder, feats, done, names)
    if names is None:  # no index requested and nothing cached
        return np.zeros((0, 0)), []
    return feats[indices].copy(), list(names)


def _usable_columns(x: np.ndarray) -> np.ndarray:
    """Columns finite on every training row and not constant."""
    finite = np.isfinite(x).all(axis=0)
    spread = np.zeros(x.shape[1], bool)
    if len(x):
        spread[finite] = np.ptp(x[:, finite], axis=0) > 0
    return finite & spread


def _fit_cv(x: np.ndarray, y: np.ndarray, seed: int, scoring: str) -> tuple[Any, float]:
    """Standardise → L2 logistic regression, C by stratified CV on ``(x, y)``; the scaler is refitted per fold."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, random_state=seed))
    k = min(MAX_FOLDS, int(np.unique(y, return_counts=True)[1].min()))
    # Many tiny fits: BLAS/OpenMP threads only add spin-wait overhead (4-5x slower on a busy 2-core machine),
    # and parallel trials would oversubscribe the cores. The limit holds for this call only.
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        # large C on separable folds stops at max_iter; those candidates score poorly and are simply not chosen
        warnings.simplefilter("ignore", ConvergenceWarning)
        if k < 2:  # a class with one row cannot be in every fold: no CV possible
            log.warning(
                "radiomics: a class has a single training row; logistic regression uses C=1 without cross-validation"
            )
            return model.fit(x, y), 1.0
        folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        search = GridSearchCV(model, {"logisticregression__C": list(C_GRID)}, scoring=scoring, cv=folds)
        search.set_params(error_score="raise").fit(x, y)
    return search.best_estimator_, float(search.best_params_["logisticregression__C"])


@dataclass
class Fitted:
    """A fitted radiomics model: which feature columns it uses, their training mean (stands in for a test image's
    non-finite value), and per label a fitted pipeline or a constant score."""

    task: str
    keep: np.ndarray
    train_mean: np.ndarray
    n_outputs: int
    models: list[Any] = field(default_factory=list)  # per output column: estimator or float (constant); multiclass: 1
    present: np.ndarray | None = None  # multiclass: the classes the model predicts, in its column order
    chosen: list[float] = field(default_factory=list)  # C (classification) or alpha (regression) per model

    def predict(self, x_test: np.ndarray) -> np.ndarray:
        xte = np.asarray(x_test, np.float64)[:, self.keep].copy()
        bad = ~np.isfinite(xte)
        if bad.any():  # the training mean standardises to 0: a neutral value for a feature the test image lacks
            log.warning("radiomics: %d non-finite test value(s) replaced by the training mean", bad.sum())
            xte[bad] = np.broadcast_to(self.train_mean, xte.shape)[bad]
        out = np.zeros((len(xte), self.n_outputs))
        if self.present is not None:  # one multinomial model (or the class prevalences) over the present classes
            model = self.models[0]
            out[:, self.present] = model if isinstance(model, np.ndarray) else model.predict_proba(xte)
            return out
        regression = not task_kind(self.task).probabilities
        for j, model in enumerate(self.models):
            if isinstance(model, float):
                out[:, j] = model
            else:
                out[:, j] = model.predict(xte) if regression else model.predict_proba(xte)[:, 1]
        return out


def _fit(x_train: np.ndarray, y_train: np.ndarray, task: str, seed: int) -> Fitted:
    """Fit per label (or one multinomial model, or one ridge per regression target) on the training rows."""
    kind = task_kind(task)
    if not kind.supervised or kind.family != "images":
        raise UserError(f"the radiomics baseline needs 2-D images with labels; task '{task}' has none")
    x_train = np.asarray(x_train, np.float64)
    y = np.asarray(y_train, np.float64)
    y = y[:, None] if y.ndim == 1 else y
    if len(x_train) != len(y):
        raise DataError(f"x_train {x_train.shape} and y_train {y.shape} do not fit together")
    try:
        kind.check_labels(y, [f"label {k}" for k in range(y.shape[1])])
    except UserError as e:
        raise DataError(f"radiomics: {e}") from None
    keep = _usable_columns(x_train)
    if (~keep).any():
        log.info("radiomics: dropping %d constant or non-finite feature column(s) of %d", (~keep).sum(), len(keep))
    xtr = x_train[:, keep]
    fitted = Fitted(task, keep, xtr.mean(axis=0) if len(xtr) else np.zeros(keep.sum()), y.shape[1])
    K = y.shape[1]
    if kind.one_hot:
        known = np.isfinite(y).all(axis=1) & (y.sum(axis=1) > 0)
        cls = y[known].argmax(axis=1)
        present, counts = np.unique(cls, return_counts=True)
        fitted.present = present
        if len(present) < 2 or not keep.any():
            log.warning(
                "radiomics: training rows have %d class(es) and %d usable feature(s); scores are the class prevalences",
                len(present),
                keep.sum(),
            )
            fitted.models, fitted.chosen = [counts / max(counts.sum(), 1)], [float("nan")]
            return fitted
        if len(present) < K:
            log.warning(
                "radiomics: class(es) %s have no training row and get score 0", sorted(set(range(K)) - set(present))
            )
        model, c = _fit_cv(xtr[known], cls, seed, "roc_auc_ovr")
        fitted.models, fitted.chosen = [model], [c]
        return fitted
    for j in range(K):
        rows = np.isfinite(y[:, j])
        yj = y[rows, j]
        if not kind.probabilities:
            if len(yj) < 3 or not keep.any():
                log.warning("radiomics: target %d has %d known rows; its prediction is the training mean", j, len(yj))
                fitted.models.append(float(yj.mean()) if len(yj) else 0.0)
                fitted.chosen.append(float("nan"))
                continue
            model, alpha = _fit_ridge(xtr[rows], yj, seed)
            fitted.models.append(model)
            fitted.chosen.append(alpha)
            continue
        if len(np.unique(yj)) < 2 or not keep.any():
            prevalence = float(yj.mean()) if len(yj) else 0.5
            log.warning(
                "radiomics: label %d has %s in training and %d usable feature(s); its score is the constant %.3g",
                j,
                f"only class {yj[0]:g}" if len(yj) else "no known rows",
                keep.sum(),
                prevalence,
            )
            fitted.models.append(prevalence)
            fitted.chosen.append(float("nan"))
            continue
        model, c = _fit_cv(xtr[rows], yj.astype(int), seed, "roc_auc")
        fitted.models.append(model)
        fitted.chosen.append(c)
    return fitted


def _fit_ridge(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[Any, float]:
    """Standardise → ridge regression, alpha by k-fold CV (mean absolute error) over :data:`ALPHA_GRID`."""
    model = make_pipeline(StandardScaler(), Ridge())
    k = min(MAX_FOLDS, len(y))
    with threadpool_limits(limits=1):
        folds = KFold(n_splits=k, shuffle=True, random_state=seed)
        search = GridSearchCV(model, {"ridge__alpha": list(ALPHA_GRID)}, scoring="neg_mean_absolute_error", cv=folds)
        search.set_params(error_score="raise").fit(x, y)
    return search.best_estimator_, float(search.best_params_["ridge__alpha"])


def _fit_predict(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, task: str, seed: int
) -> tuple[np.ndarray, list[float], int]:
    """:func:`fit_predict`, also returning the chosen C (or alpha) per model (NaN where none was fitted) and the
    number of feature columns used."""
    x_test = np.asarray(x_test, np.float64)
    if x_test.shape[1:] != np.asarray(x_train).shape[1:]:
        raise DataError(f"x_train {np.asarray(x_train).shape} and x_test {x_test.shape} do not fit together")
    fitted = _fit(x_train, y_train, task, seed)
    return fitted.predict(x_test), fitted.chosen, int(fitted.keep.sum())


def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, task: str, seed: int = 0) -> np.ndarray:
    """Scores ``(m, K)`` in [0, 1] for ``x_test`` from standardised L2 logistic regression fitted on the training rows.

    ``y_train`` is the data contract's ``(n, K)`` float array with NaN = unknown. ``binary``/``multilabel``: one
    classifier per label on the rows where it is known; ``multiclass``: one multinomial model on one-hot rows.
    C comes from stratified k-fold CV (ROC AUC, k = min(5, smallest class count)) over :data:`C_GRID`. Feature
    columns that are constant or non-finite on the training rows are dropped; a label with a single class in
    training gets its prevalence as a constant score (and a warning).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = (rng.random((40, 1)) < 0.5).astype(float)
        >>> x = rng.normal(size=(40, 5)) + 2 * y
        >>> fit_predict(x[:30], y[:30], x[30:], "binary").shape
        (10, 1)
    """
    return _fit_predict(x_train, y_train, x_test, task, seed)[0]


def radiomics_arm(
    images: np.ndarray,
    labels: np.ndarray,
    task: str,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    seed: int,
    cache_dir: str | Path,
    key: str,
    *,
    masks: np.ndarray | None = None,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """One trial of the radiomics arm: cached features of the train and test rows, then :func:`fit_predict`.

    Returns ``scores`` ``(len(test_idx), K)``, ``n_features`` (extracted per image), ``n_features_used`` (after
    dropping constant/non-finite columns), ``C`` (one per label; one for a multiclass model; NaN where no model was
    fitted), ``seconds_features`` and ``seconds_fit``.

    Example:
        >>> out = radiomics_arm(arr, labels, "binary", train, test, 0, cache_dir, "chest-64")  # doctest: +SKIP
        >>> out["scores"].shape, out["n_features"]                                            # doctest: +SKIP
        ((20, 1), 101)
    """
    train_idx, test_idx = np.asarray(train_idx, np.int64), np.asarray(test_idx, np.int64)
    start = time.perf_counter()
    x, names = feature_matrix(
        images, np.concatenate([train_idx, test_idx]), cache_dir, key, masks=masks, workers=workers, progress=progress
    )
    seconds_features = time.perf_counter() - start
    start = time.perf_counter()
    scores, chosen, used = _fit_predict(
        x[: len(train_idx)], np.asarray(labels)[train_idx], x[len(train_idx) :], task, seed
    )
    return {
        "scores": scores,
        "n_features": len(names),
        "n_features_used": used,
        "C": chosen,
        "seconds_features": seconds_features,
        "seconds_fit": time.perf_counter() - start,
    }


class Radiomics(Baseline):
    """pyradiomics features + L2 logistic regression (C by CV), or ridge regression (alpha by CV)."""

    name = "radiomics"
    description = "pyradiomics features + L2 logistic regression (C by CV); ridge for a regression target"

    def check(self, task: str) -> None:
        kind = task_kind(task)
        if not kind.supervised or kind.family != "images":
            raise UserError(f"the radiomics baseline needs 2-D images with labels; task '{task}' has none")
        _radiomics()

    def features(self, images, idx, cache_dir, key, *, workers=1, progress=True) -> np.ndarray:
        return feature_matrix(images, idx, cache_dir, key, workers=workers, progress=progress)[0]

    def fit(self, x: np.ndarray, y: np.ndarray, task: str, seed: int) -> Fitted:
        return _fit(x, y, task, seed)

    def predict(self, fitted: Fitted, x: np.ndarray) -> np.ndarray:
        return fitted.predict(x)

    def describe(self, fitted: Fitted) -> dict[str, Any]:
        regression = not task_kind(fitted.task).probabilities
        return {"alpha" if regression else "C": fitted.chosen, "n_features_used": int(fitted.keep.sum())}


BASELINES.register("radiomics", Radiomics())
