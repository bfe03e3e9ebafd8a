"""The study report's gallery: where the best network and scratch look, on a few test images at the smallest N.

For the best network at the smallest N (ranked as the Findings rank it: by mean validation score,
:func:`~medtransfer.reporting.findings.rank_networks`) and for the scratch reference arm (``study.reference`` when it
trains from scratch, else the first scratch arm), one trial (the lowest seed whose folder kept its model) is
explained on its own test predictions: the most confidently correct and the most confidently wrong test images
(:func:`~medtransfer.training.explain.choose_images`; regression: the smallest and largest errors), each shown
with its Grad-CAM map. The figure goes to ``figures/gallery.png`` and its caption to ``figures/gallery.json``, which
:mod:`medtransfer.reporting.gallery` turns into the report's section.

Nothing here may fail a report: a study with no network arm, no kept model or 3-D cases simply gets no gallery (an
earlier one is left as it was: it still shows the trials it names), and an error is logged as one warning.
Everything runs on the CPU and is deterministic (the selection's ties are broken by the trial's seed).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medtransfer.data.cache import cached_images
from medtransfer.errors import UserError
from medtransfer.io import atomic_write, atomic_write_text
from medtransfer.reporting.findings import degenerate_reasons, rank_networks, usable
from medtransfer.reporting.gallery import GALLERY_JSON
from medtransfer.reporting.tables import metric_spec, n_levels, normalise_trials
from medtransfer.studies.trial import EXTERNAL_PREDICTIONS
from medtransfer.tasks.base import kind_of_metric
from medtransfer.training.explain import choose_images, display_image, map_of, saliency_maps
from medtransfer.training.inference import _load_target, load_run

log = logging.getLogger(__name__)

GALLERY_FIGURE = "figures/gallery.png"
PER_GROUP = 3  # images per group (correct, wrong) and arm: two rows of six at most
METHOD = "gradcam"


@dataclass
class _Panel:
    arm: str
    role: str
    seed: int
    images: list[np.ndarray]
    maps: list[np.ndarray]
    titles: list[str]
    groups: tuple[str, str]
    n_test: int
    test: str
    layer: str | None
    map_of: str


def write_gallery(
    study_dir: str | Path,
    trials: pd.DataFrame,
    reference: str | None,
    metric: str,
    config: dict,
    keep_degenerate: bool = False,
) -> dict | None:
    """Draw the gallery of a study with trial folders; returns its ``gallery.json`` entry, or ``None`` when there
    is nothing to draw (or drawing failed, logged as a warning)."""
    threads = torch.get_num_threads()
    # a dozen small images gain nothing from threads, and the driver's threads would contend with trial workers
    torch.set_num_threads(1)
    try:
        return _write_gallery(Path(study_dir), trials, reference, metric, config, keep_degenerate)
    except Exception as e:  # noqa: BLE001 - an illustration; the report must not fail for it
        log.warning("the report's gallery of saliency maps was not drawn: %s: %s", type(e).__name__, e)
        return None
    finally:
        torch.set_num_threads(threads)


def _write_gallery(
    out: Path, trials: pd.DataFrame, reference: str | None, metric: str, config: dict, keep_degenerate: bool
) -> dict | None:
    if kind_of_metric(metric).unit != "images" or trials.empty:
        return None
    m = metric_spec(metric)
    t = normalise_trials(trials, m.key)
    t["degenerate"] = degenerate_reasons(t)
    nets = usable(t, m.key, keep_degenerate)
    nets = nets[nets["kind"] != "baseline"]
    if nets.empty:
        return None
    levels = n_levels(t)
    level = next(lv for lv in levels["n_label"] if (nets["n_label"] == lv).any())
    tick = levels.set_index("n_label").at[level, "tick"]
    ranked, by = rank_networks(nets, level, m)
    scratch_arms = list(dict.fromkeys(nets.loc[nets["source"] == "scratch", "arm"]))
    scratch = reference if reference in scratch_arms else (scratch_arms[0] if scratch_arms else None)
    roles = {}
    if ranked:
        roles[ranked[0]] = f"the best network at N = {tick} by mean {by} {m.name}"
    if scratch is not None:
        roles[scratch] = roles.get(scratch, "") + (" and " if scratch in roles else "") + "the scratch reference"
    panels = []
    for arm, role in roles.items():
        cell = nets[(nets["arm"] == arm) & (nets["n_label"] == level)].sort_values("seed")
        for row in cell.itertuples():
            try:
                panel = _explain_trial(out, row, arm, role, config)
            except UserError as e:  # e.g. a transformer arm: no feature map for Grad-CAM; the other arm still shows
                log.warning("no gallery panel for %s: %s", arm, e)
                break
            if panel is not None:
                panels.append(panel)
                break
    if not panels:
        return None
    path = _draw(panels, out / GALLERY_FIGURE)
    entry = {"file": GALLERY_FIGURE, "caption": _caption(panels, tick), "alt": f"Grad-CAM gallery at N = {tick}"}
    entry["trials"] = [{"arm": p.arm, "n_label": level, "seed": p.seed, "method": METHOD} for p in panels]
    atomic_write_text(out / GALLERY_JSON, json.dumps([entry], indent=2) + "\n")
    log.info("drew the gallery of saliency maps: %s", path)
    return entry


def _explain_trial(out: Path, row, arm: str, role: str, config: dict) -> _Panel | None:
    """The panel of one trial, or ``None`` when its folder kept no model or no test predictions."""
    folder = out / str(row.folder)
    if not (folder / "model.safetensors").is_file():
        return None
    test = (config.get("study") or {}).get("test") or {}
    external = (folder / EXTERNAL_PREDICTIONS).is_file() and test.get("path")
    pred_file = folder / (EXTERNAL_PREDICTIONS if external else "predictions.csv")
    if not pred_file.is_file():
        return None
    tm = load_run(folder)
    preds = pd.read_csv(pred_file, dtype={"image_id": str, "patient_id": str})
    names = tm.label_names
    if not all(f"score:{n}" in preds.columns for n in names):
        return None
    data, fmt = (test["path"], test.get("format")) if external else (tm.cfg.data.path, tm.cfg.data.format)
    ds = _load_target(tm, data, fmt, None)
    pos = pd.Index(ds.meta["image_id"].astype(str)).get_indexer(preds["image_id"])
    if (pos < 0).any():
        log.warning("%s: %d predicted images are not in %s; no gallery panel", folder, int((pos < 0).sum()), data)
        return None
    labels = preds[[f"label:{n}" for n in names]].to_numpy(float)
    scores = preds[[f"score:{n}" for n in names]].to_numpy(float)
    kind = tm.task.kind
    chosen = choose_images(kind, labels, scores, 2 * PER_GROUP, int(row.seed), "confident", tm.thresholds, names)
    images = cached_images(ds, tm.image_size, tm.cfg.data.cache_dir, progress=False, resize=tm.cfg.data.resize)
    positions = pos[chosen["pos"].to_numpy()]
    maps, layer = saliency_maps(tm, images, positions, chosen["target"].to_numpy(), METHOD, device="cpu")
    score = "p" if kind.probabilities else "predicted"
    titles = [
        f"{c['group'].split()[-1]}: {kind.label_text(names, labels[c['pos']])}\n"
        f"{score} {names[c['target']]} = {c['score']:.3g}"
        for c in chosen.to_dict("records")
    ]
    groups = ("confidently correct", "confidently wrong") if kind.probabilities else ("smallest", "largest")
    return _Panel(
        arm,
        role,
        int(row.seed),
        [np.asarray(images[p]) for p in positions],
        maps,
        titles,
        groups,
        len(preds),
        "external test set " + str(test["path"]) if external else "test split",
        layer,
        map_of(kind),
    )


def _draw(panels: list[_Panel], path: Path) -> Path:
    """Per arm two rows, the images and their maps; one column per image."""
    cols = max(len(p.images) for p in panels)
    fig = Figure(figsize=(1.6 * cols, 3.5 * len(panels)), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    subfigs = fig.subfigures(len(panels), 1, squeeze=False)[:, 0]
    for sub, p in zip(subfigs, panels, strict=True):
        axes = sub.subplots(2, cols, squeeze=False)
        for ax in axes.flat:
            ax.set_axis_off()
        for j, (image, heat, title) in enumerate(zip(p.images, p.maps, p.titles, strict=True)):
            shown, cmap = display_image(image)
            for ax in axes[:, j]:
                ax.imshow(shown, cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
            axes[1, j].imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
            axes[0, j].set_title(title, fontsize=7)
        sub.suptitle(f"{p.arm}, seed {p.seed} ({p.role})", fontsize=8)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    return path


def _caption(panels: list[_Panel], tick: str) -> str:
    p0 = panels[0]
    what = (
        f"the {PER_GROUP} most confidently correct test images (left) and the {PER_GROUP} most confidently wrong "
        "(right; fewer when a trial has fewer)"
        if p0.groups[0] == "confidently correct"
        else f"the {PER_GROUP} test images with the smallest absolute error (left) and the {PER_GROUP} with the "
        "largest (right)"
    )
    rows = "; ".join(
        f"rows {2 * i + 1}–{2 * i + 2}: {p.arm} ({p.role}), N = {tick}, seed {p.seed}, layer {p.layer}"
        for i, p in enumerate(panels)
    )
    return (
        f"Grad-CAM (Selvaraju et al. 2017) of {p0.map_of}, on {what} of the {p0.n_test} images of the "
        f"{p0.test}, chosen by each trial's test predictions (the score above each image); the top row of each pair "
        f"is the image, the bottom row its map (red: most evidence). {rows[0].upper()}{rows[1:]}. A map illustrates "
        "single predictions of single trials; it is not a test."
    )
