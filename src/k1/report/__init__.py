"""`k1 report`: one self-contained HTML page (plots embedded) for a run, compare or continual directory."""

from k1.report.html import build_report, write_report

__all__ = ["build_report", "write_report"]
