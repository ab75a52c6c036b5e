"""What one sandboxed call may use."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Bounds for one call. Memory, CPU and file size are per process (`setrlimit`); `processes` bounds the
    sandbox's process count (threads included), so its whole tree holds at most processes x memory_bytes of
    address space, plus `/tmp` (16 MiB)."""

    timeout_s: float = 5.0          # wall clock for the whole call, start-up included
    memory_bytes: int = 512 << 20   # address space per process
    cpu_s: int = 5                  # CPU seconds per process
    file_bytes: int = 1 << 20       # largest file the code may write
    open_files: int = 64
    processes: int = 1              # processes in the sandbox, the code's own included: 1 = it cannot fork
    answer_bytes: int = 1 << 20     # largest encoded value one call may return
