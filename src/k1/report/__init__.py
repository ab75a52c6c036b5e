"""`k1 report`: one self-contained HTML page (plots embedded) for a run, compare or continual directory.

`build_report` and `write_report` are imported on first use, so that `k1` (which registers the command)
does not pay for matplotlib on every invocation.
"""

__all__ = ["build_report", "write_report"]


def __getattr__(name: str):
    if name in __all__:
        from k1.report import html

        return getattr(html, name)
    raise AttributeError(f"module 'k1.report' has no attribute {name!r}")
