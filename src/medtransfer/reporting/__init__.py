"""The study report: tables, figures, Markdown and self-contained HTML. Reads plain results, never imports training.

``tables.py`` (results and per-arm × N summary), ``compare.py`` (DeLong per seed, paired tests across seeds,
matching the baseline, transferability ranking vs outcome), ``figures.py`` (learning curves, paired differences),
``document.py`` (one block model rendered to Markdown and HTML), ``sections.py`` (the report's sections) and
``report.py`` (:func:`write_report`).
"""

from medtransfer.reporting.report import write_report
from medtransfer.reporting.tables import format_summary_table

__all__ = ["format_summary_table", "write_report"]
