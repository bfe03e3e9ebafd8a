"""What makes a study folder the same study, and who may drive it: the config fingerprint a resume must match, and
the lock that keeps one driver per folder (``filelock``; released by the OS when a driver is killed)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from medtransfer.config import to_dict
from medtransfer.errors import UserError
from medtransfer.studies.config import HOW_IT_RUNS, StudyConfig
from medtransfer.studies.executors import EXECUTORS
from medtransfer.studies.ledger import Ledger

LOCK_FILE = ".lock"


# How the report reads a study, not what its trials run: not part of its identity, so a resume may change them, and
# `medtransfer report` takes them from the study's config.yaml.
REPORT_ONLY = ("notes", "target", "margin", "unit", "keep_degenerate")

# The revision of medtransfer's training defaults that a study's trials ran under. A config key left at null means
# "the default", so a change of a default changes what a trial does without changing the config: a study started
# under an older revision is not resumed with a newer one (its trials would mix two trainings).
#   1: until 2026-12 (constant LR for scratch / finetune / the simple strategies; random-resized-crop zoom for every
#      task kind; a tie in the validation score kept the earlier epoch)
#   2: cosine LR by default; no zoom for regression targets (train.zoom: null = the task kind's); ties keep the later
#      epoch (issue [2/4], docs/benchmarks.md "Defaults against a plain loop")
DEFAULTS_REVISION = 2


def fingerprint(cfg: StudyConfig) -> dict:
    """The config a resumed study must match: everything except how (and where) its trials run and its notes.

    The executor and its settings are left out, except the settings its ``fingerprint_keys`` name (none for the
    built-in ones, so a study resumes with any of them): ``study.executor: {NAME: {KEY: VALUE}}`` when there are.
    """

    data = to_dict(cfg)
    for key in (*HOW_IT_RUNS, *REPORT_ONLY):
        data["study"].pop(key, None)
    executor = EXECUTORS.get(cfg.study.executor)
    if kept := executor.identity(cfg.study):
        data["study"]["executor"] = {executor.name: kept}
    data["train"].pop("compile", None)  # speed only
    data["defaults_revision"] = DEFAULTS_REVISION
    return json.loads(json.dumps(data))


def check_same_study(ledger: Ledger, cfg: StudyConfig) -> None:
    now = fingerprint(cfg)
    text = json.dumps(now, sort_keys=True)
    stored = ledger.get_meta("config")
    if stored is None:
        ledger.set_meta("config", text)
        ledger.set_meta("config_sha1", hashlib.sha1(text.encode()).hexdigest())
        ledger.set_meta("created", time.strftime("%Y-%m-%d %H:%M:%S"))
        return
    revision = json.loads(stored).get("defaults_revision", 1)
    if revision != DEFAULTS_REVISION:
        raise UserError(
            f"{ledger.path.parent} was started under medtransfer's training defaults revision {revision}, this "
            f"version trains with revision {DEFAULTS_REVISION} (see studies/identity.py): resuming would mix two "
            "trainings in one study; finish it with the version that started it, or start a new --out"
        )
    if stored != text:
        diff = diff_configs(json.loads(stored), now, fingerprint(StudyConfig()))
        if not diff:  # only keys a newer medtransfer added (at their defaults) or removed: the same study
            return
        raise UserError(
            f"{ledger.path.parent} was run with another config ({'; '.join(diff[:4])}); "
            "resume with the same config, or start a new --out"
        )


def diff_configs(a: dict, b: dict, defaults: dict | None = None, prefix: str = "") -> list[str]:
    """Keys whose values differ between the stored config ``a`` and ``b``. With ``defaults``, a key only one side
    has counts only if its value there is not the default (a config key added by a newer version, or removed)."""
    out = []
    defaults = defaults or {}
    for key in sorted(set(a) | set(b)):
        va, vb, where = a.get(key), b.get(key), f"{prefix}{key}"
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff_configs(va, vb, defaults.get(key) if isinstance(defaults.get(key), dict) else {}, where + ".")
        elif key not in a or key not in b:
            value = vb if key not in a else va
            if key not in defaults or value != defaults[key]:
                out.append(f"{where}: {va!r} → {vb!r}")
        elif va != vb:
            out.append(f"{where}: {va!r} → {vb!r}")
    return out


@contextlib.contextmanager
def study_lock(out: Path) -> Iterator[None]:
    """One driver per study folder: a second one (or a resume while the first still runs) is refused at once."""
    lock = FileLock(out / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(f"another medtransfer study is running in {out}; wait for it or stop it first") from None
    try:
        yield
    finally:
        lock.release()
