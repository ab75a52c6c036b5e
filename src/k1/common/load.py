"""Whether a timed row ran while other work competed for the cores: a tokens/s measured under load says how
busy the machine was, not how fast the code is, and the tables say so beside the number."""

from __future__ import annotations

import os
import threading


class LoadMeter:
    """Samples the machine's 1-minute load average while one row trains. When it shows other work competing
    for the cores (more than half a core's worth beyond the row's own threads, on a machine with no core to
    spare), the row is marked `under_load`: its tokens/s measured the machine's load, not the code, and the
    tables say so beside the number."""

    def __init__(self, threads: int, every_s: float = 2.0, sample=getattr(os, "getloadavg", None),
                 cores: int | None = None):
        self.threads, self.every_s, self.sample = threads, every_s, sample
        self.cores = cores or os.cpu_count() or 1
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append(self.sample()[0])
            if self._stop.wait(self.every_s):
                return

    def __enter__(self) -> LoadMeter:
        if self.sample is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def result(self) -> dict:
        if not self.samples:
            return {"load_avg": None, "under_load": None}
        load = sum(self.samples) / len(self.samples)
        others = load - self.threads
        return {"load_avg": round(load, 2), "under_load": others > 0.5 and load > self.cores - 0.5}


def tokens_cell(r: dict) -> str:
    """Tokens/s, with a * when the row was measured under load (`LoadMeter`)."""
    return f"{r['tokens_per_s']:,.0f}" + ("*" if r.get("under_load") else "")


def under_load_note(rows: list[dict]) -> str:
    """The footnote for the rows `tokens_cell` marked with *, naming each one's load average."""
    marked = [r for r in rows if r.get("under_load")]
    if not marked:
        return ""
    return ("* measured while other work competed for the cores (mean 1-minute load average "
            + ", ".join(f"{r['policy']} {r['load_avg']:.1f}" for r in marked)
            + "): these rows' tokens/s say how busy the machine was, not how fast the code is.")
