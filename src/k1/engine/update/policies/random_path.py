"""`random-path`: attribution's update with the agents chosen at random — the control for *which* agents.

Attribution does two things at once: it chooses one agent per level by blame, and it moves them by fixed
per-level scales (5 / 5 / 15 % for root / node / agent, 100 % for the culprit). A control that updates K
random agents at full scale (`random`) differs from it in both, so it cannot tell whether the choice
matters. This policy keeps everything but the choice: a path root → leaf of the same length, drawn
uniformly child by child (from the policy's own generator, so a resumed run draws the same paths), moved
with attribution's scales.
"""

from typing import Literal

from pydantic import Field

from k1.engine.model.plan import UpdatePlan
from k1.engine.update.policies.attribution import AttributionConfig, AttributionPolicy
from k1.engine.update.policies.base import POLICIES


class RandomPathConfig(AttributionConfig):
    name: Literal["random-path"] = "random-path"  # type: ignore[assignment]
    mode: Literal["fixed"] = "fixed"  # type: ignore[assignment]  # proportional scales would read the gradient
    path_scales: list[float] = Field(default=[0.05, 0.05, 0.15], min_length=1)


@POLICIES.register("random-path")
class RandomPathPolicy(AttributionPolicy):
    def plan(self, signals, trust, step) -> UpdatePlan:
        noise = self.random_scores(signals.grad_rms)  # uniform scores: the drill-down picks a random child
        return self.path_plan(signals.grad_rms, self.blame_path(noise, signals.parents))
