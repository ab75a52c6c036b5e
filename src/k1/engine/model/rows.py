"""`select_rows`: the agent rows one step touches, found once per step and shared by the deferred weight
gradients (`AgentLevel.finish_weight_grads`) and the optimizer (`SparseOptimizer.step`).

Agent i of level lv owns row i of every stacked parameter of that level, so "which agents" is "which rows".
Two ways to find them:

- **host** (the default on CPU): the plan's mask (scale > 0), copied to the host once and searched there.
  A level's rows are then a slice when they are consecutive (attribution's path has one agent per level: a view, updated in
  place), an index tensor otherwise (gathered and written back), nothing when the level has no selected
  agent (skipped), or every row (the dense policy: updated in place on the whole tensor). On CPU the read
  is free; on GPU it is a host sync.
- **static** (the default on GPU, for plans with a blame path): one row per level, read from `plan.path`
  on the device. Shapes are fixed, so nothing waits for the device. Where the path does not reach a level
  (a leaf above the last level) the row gathered there has scale 0, and the masked update (optim.py)
  leaves it bit-identical. A plan with a path selects only path agents (the attribution policy's
  contract, tested in tests/engine/test_sparse_updates.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from k1.engine.model.plan import UpdatePlan


@dataclass(frozen=True)
class LevelRows:
    """The rows of one level: `index` None = every row; a slice = consecutive rows (a view); a long tensor =
    rows gathered by index. `static`: the rows came from the device without a sync, so some of them may be
    unselected (scale 0) and every update of them must be masked."""

    index: slice | torch.Tensor | None
    static: bool = False

    @property
    def empty(self) -> bool:
        return isinstance(self.index, slice) and self.index.start == self.index.stop


def select_rows(plan: UpdatePlan, offsets: list[int], sizes: list[int], static: bool = False) -> list[LevelRows]:
    """Per level, the rows `plan` selects (module docstring). `static` applies to plans with a path only;
    any other plan is read on the host."""
    if static and plan.path is not None:
        return [LevelRows((plan.path[lv] - o).clamp(0, n - 1).view(1), static=True)
                for lv, (o, n) in enumerate(zip(offsets, sizes))]
    # the step's one host read: the mask comes to the host once, and is searched there
    flat = plan.scale.gt(0).cpu().nonzero().squeeze(1).tolist()
    out = []
    for o, n in zip(offsets, sizes):
        rows = [i - o for i in flat if o <= i < o + n]
        if len(rows) == n:
            out.append(LevelRows(None))
        elif not rows or rows == list(range(rows[0], rows[0] + len(rows))):
            start = rows[0] if rows else 0
            out.append(LevelRows(slice(start, start + len(rows))))
        else:
            index = torch.tensor(rows, dtype=torch.long)
            out.append(LevelRows(index.to(plan.scale.device, non_blocking=True)))  # no wait on a GPU
    return out


def take(t: torch.Tensor, rows: LevelRows) -> torch.Tensor:
    """Rows of a stacked tensor: the whole tensor, a view (slice), or a gathered copy (index tensor)."""
    if rows.index is None:
        return t
    if isinstance(rows.index, slice):
        return t[rows.index]
    return t.index_select(0, rows.index)
