"""The study ledger: one SQLite row per trial (parameters, status, timings, metrics, error).

SQLite is the embedded default (no server) and makes every update atomic: after a crash or ``kill -9`` the file
holds the last committed state. Only the study driver writes it; worker processes return results to the driver.

States and the only transitions allowed::

    pending ──start──▶ running ──finish──▶ done
       ▲                  │ └────fail────▶ failed
       └────requeue───────┘                  │
       └────────────────retry────────────────┘

``recover()`` (on ``--resume``) requeues the trials a dead driver left ``running``; their folders keep the last
epoch checkpoint, so they continue rather than start again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medtransfer.errors import UserError
from medtransfer.io import MARKERS

STATES = ("pending", "running", "done", "failed")
LEDGER_FILE = "study.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    arm TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT,
    strategy TEXT,
    n INTEGER NOT NULL,
    n_label TEXT NOT NULL,
    seed INTEGER NOT NULL,
    folder TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    started REAL,
    finished REAL,
    seconds REAL,
    score REAL,  -- the trial's score: its task kind's primary metric (test AUC, MAE, mean Dice)
    metric TEXT,  -- the name of that metric (auc, mae, dice)
    metrics TEXT,
    error TEXT,
    degenerate TEXT,  -- why a finished trial's model did not learn (TaskKind.collapse_reason), or NULL
    worker TEXT,
    peak_rss_mb REAL,
    peak_gpu_mb REAL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class LedgerError(RuntimeError):
    """An illegal state transition: a bug in the driver, never a user error."""


class Ledger:
    """The trials of one study in ``DIR/study.sqlite``.

    Example:
        >>> led = Ledger(tmp / "study.sqlite")                                   # doctest: +SKIP
        >>> led.add(trials); led.start(trials[0].id, "pid 1")                    # doctest: +SKIP
        >>> led.finish(trials[0].id, {"metric": "auc", "score": 0.91}, seconds=12.0)  # doctest: +SKIP
        >>> led.counts()                                                         # doctest: +SKIP
        {'pending': 11, 'running': 0, 'done': 1, 'failed': 0}
    """

    def __init__(self, path: str | Path, create: bool = True) -> None:
        """Open (``create``: or make) the ledger; an existing one is integrity-checked first (``PRAGMA
        quick_check``), and a damaged, empty or (without ``create``) missing file is a one-line error."""
        self.path = Path(path)
        existed = self.path.is_file()
        if not create and (not existed or self.path.stat().st_size == 0):
            what = "is missing" if not existed else "is empty (0 bytes)"
            raise UserError(f"{self.path} {what}: the study's ledger is damaged; {damaged_hint(self.path.parent)}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if existed:
                _quick_check(self.path)
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # autocommit; explicit BEGIN
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a committed state survives power loss, not only kill -9
            self._db.executescript(_SCHEMA)
            self._migrate()
        except sqlite3.DatabaseError as e:
            raise UserError(
                f"{self.path} cannot be read ({e}): the study's ledger is damaged; {damaged_hint(self.path.parent)}"
            ) from None

    def _migrate(self) -> None:
        """Ledgers written before the task kinds kept the score in an ``auc`` column (AUC, or Dice): rename it and
        add the metric's name, filled from each trial's metrics."""
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(trials)")}
        if "degenerate" not in columns:  # ledgers before collapsed trials were caught
            with self._tx():
                self._db.execute("ALTER TABLE trials ADD COLUMN degenerate TEXT")
                for row in self._db.execute("SELECT id, metrics FROM trials WHERE metrics IS NOT NULL").fetchall():
                    reason = (json.loads(row[1]) or {}).get("degenerate")
                    if reason:
                        self._db.execute("UPDATE trials SET degenerate = ? WHERE id = ?", (reason, row[0]))
        if "auc" in columns and "score" not in columns:
            with self._tx():
                self._db.execute("ALTER TABLE trials RENAME COLUMN auc TO score")
                self._db.execute("ALTER TABLE trials ADD COLUMN metric TEXT")
                for row in self._db.execute("SELECT id, metrics FROM trials WHERE metrics IS NOT NULL").fetchall():
                    m = json.loads(row[1]) or {}
                    metric = m.get("metric") or ("dice" if "dice" in m else "auc")
                    self._db.execute("UPDATE trials SET metric = ? WHERE id = ?", (metric, row[0]))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ meta
    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row["value"]

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # ------------------------------------------------------------------ rows
    def add(self, trials: Iterable[Any]) -> int:
        """Insert the trials not yet in the ledger (a resumed study adds nothing); returns how many were new."""
        rows = [
            (t.id, i, t.arm, t.kind, t.source, t.strategy, t.n, t.n_label, t.seed, str(t.folder))
            for i, t in enumerate(trials)
        ]
        with self._tx():
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO trials (id, position, arm, kind, source, strategy, n, n_label, seed, folder) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            return self._db.total_changes - before

    def rows(self, status: str | None = None) -> list[dict[str, Any]]:
        """All trials in grid order (``metrics`` decoded), or those with ``status``."""
        sql = "SELECT * FROM trials" + (" WHERE status = ?" if status else "") + " ORDER BY position"
        out = []
        for r in self._db.execute(sql, (status,) if status else ()):
            d = dict(r)
            d["metrics"] = json.loads(d["metrics"]) if d["metrics"] else {}
            out.append(d)
        return out

    def get(self, trial_id: str) -> dict[str, Any]:
        r = self._db.execute("SELECT * FROM trials WHERE id = ?", (trial_id,)).fetchone()
        if r is None:
            raise LedgerError(f"no trial {trial_id!r} in {self.path}")
        d = dict(r)
        d["metrics"] = json.loads(d["metrics"]) if d["metrics"] else {}
        return d

    def pending(self) -> list[str]:
        return [r["id"] for r in self._db.execute("SELECT id FROM trials WHERE status = 'pending' ORDER BY position")]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for r in self._db.execute("SELECT status, COUNT(*) AS c FROM trials GROUP BY status"):
            out[r["status"]] = r["c"]
        return out

    # ------------------------------------------------------------------ transitions
    def start(self, trial_id: str, worker: str) -> None:
        self._move(
            trial_id,
            ("pending",),
            "running",
            "attempts = attempts + 1, started = ?, worker = ?, error = NULL",
            (time.time(), worker),
        )

    def finish(
        self,
        trial_id: str,
        metrics: dict[str, Any],
        seconds: float,
        peak_rss_mb: float | None = None,
        peak_gpu_mb: float | None = None,
    ) -> None:
        metric = metrics.get("metric") or next((k for k in ("auc", "dice", "mae") if k in metrics), None)
        score = metrics.get("score", metrics.get(metric) if metric else None)
        self._move(
            trial_id,
            ("running",),
            "done",
            "finished = ?, seconds = ?, score = ?, metric = ?, metrics = ?, peak_rss_mb = ?, peak_gpu_mb = ?, "
            "degenerate = ?",
            (
                time.time(),
                seconds,
                score,
                metric,
                json.dumps(metrics),
                peak_rss_mb,
                peak_gpu_mb,
                metrics.get("degenerate"),
            ),
        )

    def fail(self, trial_id: str, error: str, seconds: float | None = None) -> None:
        self._move(
            trial_id, ("running",), "failed", "finished = ?, seconds = ?, error = ?", (time.time(), seconds, error)
        )

    def requeue(self, trial_id: str, reason: str | None = None, refund: bool = False) -> None:
        """Back to pending; ``refund`` takes back the attempt (the trial was not the cause of the interruption)."""
        sets = "error = ?" + (", attempts = attempts - 1" if refund else "")
        self._move(trial_id, ("running",), "pending", sets, (reason,))

    def retry_failed(self) -> int:
        """Failed trials back to pending (``--retry-failed``); returns how many."""
        with self._tx():
            cur = self._db.execute("UPDATE trials SET status = 'pending' WHERE status = 'failed'")
            return cur.rowcount

    def recover(self) -> list[str]:
        """Requeue every ``running`` trial (call only when no other driver runs: the study holds a lock)."""
        with self._tx():
            ids = [r["id"] for r in self._db.execute("SELECT id FROM trials WHERE status = 'running'")]
            self._db.execute(
                "UPDATE trials SET status = 'pending', error = 'interrupted; resumed from its last checkpoint' "
                "WHERE status = 'running'"
            )
        return ids

    def _move(self, trial_id: str, allowed: tuple[str, ...], to: str, sets: str, params: tuple) -> None:
        marks = ", ".join("?" for _ in allowed)
        with self._tx():
            cur = self._db.execute(
                f"UPDATE trials SET status = ?, {sets} WHERE id = ? AND status IN ({marks})",
                (to, *params, trial_id, *allowed),
            )
            if cur.rowcount != 1:
                row = self._db.execute("SELECT status FROM trials WHERE id = ?", (trial_id,)).fetchone()
                now = "absent" if row is None else row["status"]
                raise LedgerError(f"trial {trial_id!r}: cannot go {now} → {to} (allowed from {list(allowed)})")

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)


def _quick_check(path: Path) -> None:
    """``PRAGMA quick_check`` on a read-only, immutable view of the file: a damaged ledger is detected without
    creating its ``-wal``/``-shm`` companions or changing a byte of it."""
    db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        check = db.execute("PRAGMA quick_check").fetchone()[0]
    finally:
        db.close()
    if check != "ok":
        raise sqlite3.DatabaseError(check)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def open_existing(study_dir: str | Path) -> Ledger:
    """The ledger of an existing study folder, or a one-line error."""
    path = Path(study_dir) / LEDGER_FILE
    if not path.is_file() and not (Path(study_dir) / STUDY_MARKER).is_file():
        raise UserError(f"{study_dir} is not a study folder: no {LEDGER_FILE} and no {STUDY_MARKER} marker in it")
    return Ledger(path, create=False)


STUDY_MARKER = MARKERS["study"]  # written into every study folder: what --out and --resume recognise


def damaged_hint(study_dir: Path) -> str:
    return (
        f"rebuild it from the trial folders with `medtransfer study {study_dir} --repair` "
        "(the damaged file is kept beside it), then --resume or report as before"
    )
