"""Update policies, registered by name. Importing this package registers every member below."""

from typing import Annotated, Union

from pydantic import Field

from k1.engine.update.policies.attribution import AttributionConfig, AttributionPolicy
from k1.engine.update.policies.base import POLICIES, UpdatePolicy, normalise
from k1.engine.update.policies.dense import DenseConfig, DensePolicy
from k1.engine.update.policies.grow import GrowConfig, GrowPolicy
from k1.engine.update.policies.hybrid import HybridConfig, HybridPolicy
from k1.engine.update.policies.protect import ProtectConfig, ProtectPolicy
from k1.engine.update.policies.random import RandomConfig, RandomPolicy
from k1.engine.update.policies.random_path import RandomPathConfig, RandomPathPolicy
from k1.engine.update.policies.trust import TrustConfig, TrustPolicy
from k1.engine.update.policies.usage import UsageConfig, UsagePolicy

PolicyConfig = Annotated[
    Union[DenseConfig, AttributionConfig, HybridConfig, TrustConfig, RandomConfig, ProtectConfig, UsageConfig,
          GrowConfig, RandomPathConfig],
    Field(discriminator="name"),
]


def build_policy(cfg, shape, device="cpu", seed: int = 0) -> UpdatePolicy:
    return POLICIES.get(cfg.name)(cfg, shape, device=device, seed=seed)


__all__ = [
    "POLICIES", "UpdatePolicy", "PolicyConfig", "build_policy", "normalise",
    "DenseConfig", "DensePolicy", "AttributionConfig", "AttributionPolicy", "HybridConfig", "HybridPolicy",
    "TrustConfig", "TrustPolicy", "RandomConfig", "RandomPolicy", "ProtectConfig", "ProtectPolicy",
    "UsageConfig", "UsagePolicy", "GrowConfig", "GrowPolicy", "RandomPathConfig", "RandomPathPolicy",
]
