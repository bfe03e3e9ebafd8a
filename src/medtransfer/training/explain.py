"""``medtransfer explain``: where a trained run looks, on the images it is most sure about.

The run is loaded and its images scored exactly as ``evaluate`` does (:mod:`medtransfer.training.inference`: the
model's preprocessing, the run's own test split on its own data, no test-time augmentation so the score shown is the
score of the image the map was taken on). Then ``n`` images are chosen (:func:`choose_images`) and each gets a PNG,
the image and its saliency map over it side by side (:mod:`medtransfer.training.saliency`), plus an index
(``index.csv``, ``index.html``) and the settings (``explain.json``), written into ``--out`` atomically.

Which output a map is of: binary, the positive class; multiclass, the predicted class; multilabel, each image's top
label (its highest score); regression, the first target's predicted value.

Which images (``select='confident'``, the default): half (rounded down) the most confidently *wrong* and the rest
the most confidently *correct*, each group most confident first; confidence is the score of the decision (``s``
when the score reaches the run's validation threshold, else ``1 - s``; 0.5 without one; the top probability for
multiclass). When a group has too few images the other fills in, then the highest scores among images without a
label. A regression run: the smallest and the largest absolute errors. ``select='random'``: ``n`` images drawn
with ``seed``. Ties are broken by a permutation drawn from ``seed``, so a fixed seed gives the same images.

Example:
    >>> explain_run("runs/pneumonia", "runs/pneumonia_explain", n=8)  # doctest: +SKIP
"""

from __future__ import annotations

import html
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.data.cache import cached_images
from medtransfer.errors import UserError
from medtransfer.io import check_out_folder, write_folder
from medtransfer.tasks.base import kind_names, task_kind
from medtransfer.training.batches import Batches
from medtransfer.training.checkpoint import run_task
from medtransfer.training.inference import _load_target, _scores, _select, check_labels, load_run
from medtransfer.training.run import pick_device
from medtransfer.training.saliency import METHODS, Explainer

log = logging.getLogger(__name__)

SELECTIONS = ("confident", "random")
INDEX_COLUMNS = ["file", "image_id", "patient_id", "label", "map_for", "score", "rank", "n_scored", "outcome", "group"]


# --------------------------------------------------------------------------------------------- choosing images
def choose_images(
    kind,
    labels: np.ndarray,
    scores: np.ndarray,
    n: int,
    seed: int = 0,
    select: str = "confident",
    thresholds: dict[str, float] | None = None,
    names: list[str] | None = None,
) -> pd.DataFrame:
    """``n`` rows of ``scores`` to explain, in the order to show them (see the module docstring for the rule).

    Args:
        kind: the run's task kind (:class:`~medtransfer.tasks.base.TaskKind`).
        labels, scores: ``(m, K)`` true labels (NaN unknown) and the model's scores of the same images.
        thresholds: the run's decision thresholds by label name (binary, multilabel); 0.5 where missing.
        names: the label names (the keys of ``thresholds``).

    Returns:
        One row per chosen image: ``pos`` (row of ``scores``), ``target`` (the output explained), ``score``,
        ``rank`` (1 = the highest score of that output among the ``m`` images), ``outcome`` (correct / wrong /
        unknown; for regression the absolute error), ``group``.

    Example:
        >>> choose_images(task_kind("binary"), np.array([[0.], [1.]]), np.array([[0.9], [0.8]]), 2)["group"].tolist()
        ['confidently correct', 'confidently wrong']
    """
    if select not in SELECTIONS:
        raise UserError(f"--select must be one of {list(SELECTIONS)}, got {select!r}")
    m = len(scores)
    n = min(int(n), m)
    tie = np.random.default_rng(seed).permutation(m)  # equal scores: the seed decides, the same way every time
    if kind.probabilities:
        o = _classified(labels, scores, kind.one_hot, thresholds, names)
    else:
        o = _regressed(labels, scores)
    if select == "random":
        chosen = sorted(np.random.default_rng(seed).choice(m, size=n, replace=False).tolist())
        groups = ["random"] * n
    else:
        chosen, groups = _confident(o, n, tie, by_error=not kind.probabilities)
    idx = np.asarray(chosen, dtype=int)
    rank = [1 + int((scores[:, o.target[i]] > o.score[i]).sum()) for i in idx]
    return pd.DataFrame(
        {
            "pos": idx,
            "target": o.target[idx],
            "score": o.score[idx],
            "rank": rank,
            "outcome": o.outcome[idx] if len(idx) else [],
            "group": groups,
        }
    )


@dataclass
class _Outcomes:
    """Per image: the output explained, its score, whether its outcome is known and right, the keys that order the
    good and the bad group (most confident first), the outcome's text; and the two groups' names."""

    target: np.ndarray
    score: np.ndarray
    known: np.ndarray
    right: np.ndarray
    good_key: np.ndarray
    bad_key: np.ndarray
    outcome: np.ndarray
    good_name: str
    bad_name: str


def _classified(
    labels: np.ndarray, scores: np.ndarray, one_hot: bool, thresholds: dict[str, float] | None, names: list[str] | None
) -> _Outcomes:
    """A classifier's outcomes: the map is of the top output; the decision is the predicted class (one-hot) or the
    score reaching the output's threshold; confidence is the score of the decision."""
    m = len(scores)
    rows = np.arange(m)
    target = scores.argmax(axis=1)  # binary (one output): 0, the positive class
    s = scores[rows, target]
    if one_hot:
        positive = np.ones(m, bool)  # the predicted class is the decision
    else:
        cut = np.array([(thresholds or {}).get(nm, 0.5) for nm in (names or [""] * scores.shape[1])])[target]
        positive = s >= cut
    y = labels[rows, target]
    known = np.isfinite(y)
    right = positive == (y == 1)
    confidence = np.where(positive, s, 1.0 - s)  # the confidence of the decision
    outcome = np.where(known, np.where(right, "correct", "wrong"), "unknown").astype(object)
    return _Outcomes(
        target, s, known, right, confidence, confidence, outcome, "confidently correct", "confidently wrong"
    )


def _regressed(labels: np.ndarray, scores: np.ndarray) -> _Outcomes:
    """A regression's outcomes: the first target's value and its absolute error."""
    m = len(scores)
    s = scores[:, 0]
    err = np.abs(s - labels[:, 0])
    right = np.zeros(m, bool)  # unused: the groups are the smallest and the largest errors
    outcome = np.array([f"error {e:.4g}" if math.isfinite(e) else "unknown" for e in err], dtype=object)
    good_key, bad_key = -np.nan_to_num(err), np.nan_to_num(err)
    return _Outcomes(
        np.zeros(m, dtype=int),
        s,
        np.isfinite(err),
        right,
        good_key,
        bad_key,
        outcome,
        "smallest error",
        "largest error",
    )


def _confident(o: _Outcomes, n: int, tie: np.ndarray, by_error: bool) -> tuple[list[int], list[str]]:
    """``select='confident'``: half (rounded down) of ``n`` from the bad group and the rest from the good one, each
    most confident first, the other group filling in when one is short, then the highest scores; with
    ``by_error`` (regression) the groups are the two halves of the images ordered by error."""
    m = len(o.score)
    rows = np.arange(m)

    def ordered(mask: np.ndarray, key: np.ndarray) -> list[int]:
        pick = rows[mask]
        return pick[np.lexsort((tie[pick], -key[pick]))].tolist()

    if by_error:
        by_err = ordered(o.known, o.bad_key)  # largest error first; the smallest come from its far end
        half = len(by_err) // 2
        bad, good = by_err[:half], by_err[half:][::-1]
    else:
        good, bad = ordered(o.known & o.right, o.good_key), ordered(o.known & ~o.right, o.bad_key)
    n_bad = min(n // 2, len(bad))
    n_good = min(n - n_bad, len(good))
    n_bad = min(n - n_good, len(bad))
    chosen = good[:n_good] + bad[:n_bad]
    groups = [o.good_name] * n_good + [o.bad_name] * n_bad
    taken = set(chosen)
    rest = [i for i in ordered(np.ones(m, bool), o.score) if i not in taken]
    fill = rest[: n - len(chosen)]
    return chosen + fill, groups + ["highest score"] * len(fill)


# ------------------------------------------------------------------------------------------------------- maps
def saliency_maps(
    tm,
    images: np.ndarray,
    positions: np.ndarray,
    targets: np.ndarray,
    method: str,
    layer: str | None = None,
    device: str = "auto",
) -> tuple[list[np.ndarray], str | None]:
    """Maps of output ``targets[j]`` on cached image ``images[positions[j]]`` of a loaded run ``tm``
    (:class:`~medtransfer.training.inference.TrainedModel`), preprocessed as ``evaluate`` does; and the Grad-CAM
    layer used (``None`` for occlusion)."""

    dev = pick_device(device)
    norm = tm.model.normalization
    dummy = np.zeros((len(images), len(tm.label_names)), np.float32)
    batch = 32  # Grad-CAM of a batch at once (per distinct target); occlusion goes image by image anyway
    batches = Batches(images, dummy, np.asarray(positions), batch, norm["mean"], norm["std"], dev)
    xs = [x for x, _ in batches.epoch(0, 0)]
    if not xs:
        return [], None
    task = tm.task.to(dev)
    explainer = Explainer(tm.model, xs[0][:1], layer, activate=task.scores, absolute=not tm.task.kind.probabilities)
    targets = [int(k) for k in targets]
    maps: list[np.ndarray] = []
    for b, x in enumerate(xs):
        maps += explainer.saliency(x, targets[b * batch : (b + 1) * batch], method)
    return maps, explainer.layer if METHODS.get(method).needs_layer else None


def display_image(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """A cached uint8 ``(C, S, S)`` image as matplotlib shows it: grey (with its colour map) or RGB."""
    if image.shape[0] == 3:
        return np.moveaxis(image, 0, -1), None
    return image[0], "gray"


def draw_overlay(image: np.ndarray, heat: np.ndarray, title: str, path: Path) -> Path:
    """The image and the map over it, side by side, titled; one PNG (the same bytes for the same inputs)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown, cmap = display_image(image)
    # fixed axes (no layout engine): drawing is most of explain's time, and a layout pass doubles it
    fig = Figure(figsize=(6.4, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.add_axes((0.01, 0.03, 0.43, 0.76)), fig.add_axes((0.45, 0.03, 0.43, 0.76))
    for ax in (left, right):
        ax.imshow(shown, cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
        ax.set_axis_off()
    im = right.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
    fig.colorbar(im, cax=fig.add_axes((0.895, 0.08, 0.018, 0.66)), ticks=[0, 0.5, 1])
    left.set_title("image", fontsize=8)
    right.set_title("saliency (1 = most)", fontsize=8)
    fig.text(0.5, 0.98, title, ha="center", va="top", fontsize=8)
    fig.savefig(path, format="png")
    return path


# ----------------------------------------------------------------------------------------------- the command
@dataclass
class Explained:
    out: Path
    index: pd.DataFrame
    method: str
    layer: str | None
    split: str
    n_scored: int
    note: str | None


def check_explainable(run_dir: str | Path) -> None:
    """Refuse a folder that is not a finished 2-D run, naming what ``explain`` supports."""
    task = run_task(run_dir)
    if task in kind_names() and task_kind(task).family != "images":
        raise UserError(
            f"{run_dir} is a {task} run (3-D volumes); explain supports 2-D image runs: binary, multiclass, "
            "multilabel and regression"
        )


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_")[:60] or "image"


def explain_run(
    run_dir: str | Path,
    out: str | Path,
    data: str | None = None,
    n: int = 16,
    method: str = "gradcam",
    split: str | None = None,
    seed: int = 0,
    select: str = "confident",
    format: str | None = None,
    labels: list[str] | None = None,
    layer: str | None = None,
    device: str = "auto",
    force: bool = False,
) -> Explained:
    """Saliency maps of ``n`` images of ``data`` (default: the run's own data, its test split) under ``out``.

    Everything the user can get wrong (the run, the method, ``n``, ``--out``) is checked before the images are
    read and anything is written; ``out`` appears complete or not at all.
    """

    info = _check_request(run_dir, method, select, n)
    tm = load_run(run_dir)
    data = data or tm.cfg.data.path
    if not data:
        raise UserError(f"{run_dir} records no data.path; pass --data")
    reads = (Path(run_dir), *([Path(data).expanduser()] if Path(data).expanduser().exists() else []))
    out = check_out_folder(Path(out), force, keep=reads)  # --force never removes the run or the data
    ds = _load_target(tm, data, format, labels)
    check_labels(tm, ds, data)
    idx, split_name, note = _select(tm, ds, data, split)
    scores = _scores(tm, ds, idx, 0, device)
    kind = tm.task.kind
    chosen = choose_images(kind, ds.labels[idx], scores, n, seed, select, tm.thresholds, tm.label_names)
    images = cached_images(ds, tm.image_size, tm.cfg.data.cache_dir, resize=tm.cfg.data.resize)
    positions = idx[chosen["pos"].to_numpy()]
    maps, used = saliency_maps(tm, images, positions, chosen["target"].to_numpy(), method, layer, device)

    rows = _index_rows(chosen, positions, ds, tm, len(idx))
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    settings = {
        "run": str(run_dir),
        "data": str(data),
        "split": split_name,
        "method": method,
        "layer": used,
        "select": select,
        "seed": seed,
        "n": len(index),
        "n_scored": len(idx),
        "task": kind.name,
        "map_of": map_of(kind),
    }

    overlays = list(zip(rows, maps, positions, strict=True))
    write_folder(out, lambda folder: _write_explained(folder, images, overlays, info.title, index, settings, note))
    return Explained(out, index, method, used, split_name, len(idx), note)


def _check_request(run_dir: str | Path, method: str, select: str, n: int):
    """The method (its :data:`~medtransfer.training.saliency.METHODS` entry, returned), ``select``, ``n`` and the run
    folder, checked before anything is read."""
    info = METHODS.get(method)
    if select not in SELECTIONS:
        raise UserError(f"--select must be one of {list(SELECTIONS)}, got {select!r}")
    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}")
    check_explainable(run_dir)
    return info


def _index_rows(chosen: pd.DataFrame, positions: np.ndarray, ds, tm, n_scored: int) -> list[dict]:
    """One ``index.csv`` row (:data:`INDEX_COLUMNS`) per chosen image of dataset ``ds``, in the order shown."""
    kind = tm.task.kind
    meta = ds.meta.iloc[positions].reset_index(drop=True)
    rows = []
    for j, (c, pos) in enumerate(zip(chosen.to_dict("records"), positions, strict=True)):
        image_id = str(meta.at[j, "image_id"])
        rows.append(
            {
                "file": f"{j + 1:02d}_{_safe_name(image_id)}.png",
                "image_id": image_id,
                "patient_id": str(meta.at[j, "patient_id"]),
                "label": kind.label_text(tm.label_names, ds.labels[pos]),
                "map_for": tm.label_names[int(c["target"])],
                "score": float(c["score"]),
                "rank": int(c["rank"]),
                "n_scored": n_scored,
                "outcome": c["outcome"],
                "group": c["group"],
            }
        )
    return rows


def _write_explained(
    folder: Path,
    images: np.ndarray,
    overlays: list[tuple[dict, np.ndarray, int]],
    title: str,
    index: pd.DataFrame,
    settings: dict,
    note: str | None,
) -> None:
    """Write the overlays (``(index row, map, position in images)``, each titled with the method's ``title``),
    ``index.csv``, ``explain.json`` and ``index.html`` into ``folder``."""
    for r, heat, pos in overlays:
        text = (
            f"{r['image_id']}  label: {r['label']}  ({r['outcome']})\n"
            f"{title} of {r['map_for']}: score {r['score']:.3f}, rank {r['rank']} of {r['n_scored']}  "
            f"[{r['group']}]"
        )
        draw_overlay(np.asarray(images[pos]), heat, text, folder / r["file"])
    index.to_csv(folder / "index.csv", index=False)
    (folder / "explain.json").write_text(json.dumps(settings, indent=2) + "\n")
    (folder / "index.html").write_text(_index_html(index, settings, note), encoding="utf-8")


def map_of(kind) -> str:
    """Which output a map is of, in words, for a run of task ``kind``."""
    if not kind.probabilities:
        return "the first target's predicted value"
    if kind.one_hot:
        return "the predicted class"
    return "each image's top label" if kind.several_columns else "the positive class"


def _index_html(index: pd.DataFrame, settings: dict, note: str | None) -> str:
    """A small page: the settings, then one row per image with its overlay."""
    e = html.escape
    what = METHODS.get(settings["method"]).title + (f" at {settings['layer']}" if settings["layer"] else "")
    head = (
        f"<h1>Where {e(Path(settings['run']).name)} looks</h1>"
        f"<p>{e(what)}, map of {e(settings['map_of'])}; {settings['n']} of the {settings['n_scored']} images of "
        f"{e(settings['data'])} ({e(settings['split'])} split), chosen: {e(_selection_text(settings))}.</p>"
    )
    if note:
        head += f"<p>{e(note)}</p>"
    cols = [c for c in INDEX_COLUMNS if c != "file"]
    header = "".join(f"<th>{e(c)}</th>" for c in ["overlay", *cols])
    body = []
    for r in index.to_dict("records"):
        cells = [f'<td><a href="{e(r["file"])}"><img src="{e(r["file"])}" width="384" alt="{e(r["file"])}"></a></td>']
        cells += [f"<td>{e(f'{r[c]:.4f}' if c == 'score' else str(r[c]))}</td>" for c in cols]
        body.append("<tr>" + "".join(cells) + "</tr>")
    style = "body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px}"
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>explain</title><style>{style}</style></head><body>'
        f"{head}<table><tr>{header}</tr>{''.join(body)}</table></body></html>\n"
    )


def _selection_text(settings: dict) -> str:
    if settings["select"] == "random":
        return f"at random (seed {settings['seed']})"
    if settings["task"] == "regression":
        return "the smallest and the largest absolute errors"
    return f"the most confidently correct, then the most confidently wrong (ties by seed {settings['seed']})"
