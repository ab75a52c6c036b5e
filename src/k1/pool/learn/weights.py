"""DREAM's student weights: saved as safetensors beside the pool's store and applied again whenever the pool
is opened (kept apart from dream.py so the router can apply them without importing the DREAM phase)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from k1.pool.members.local import LocalMember


def _model(m):
    from k1.pool.members.local import LocalMember
    return getattr(m, "model", None) if isinstance(m, LocalMember) else None


def save_student(router, member: LocalMember, weights_dir: str | Path | None) -> Path | None:
    """Write the student's weights beside the store and remember them (reapplied by `apply_dream_weights`)."""
    from safetensors.torch import save_model

    root = Path(weights_dir) if weights_dir else router.store.home / "dream"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{member.name}.safetensors"
    save_model(member.model, str(path))
    router.store.set_meta(f"dream_weights:{member.name}", str(path))
    return path


def forget_cached_states(member) -> None:
    """Drop the member's reusable KV states: they were computed by its old weights, and a prompt sharing a
    prefix with one of them (every chat prompt shares the template's header) would resume from stale keys."""
    cache = getattr(member, "prefix_cache", None)
    if cache is not None:
        cache.clear()


def apply_dream_weights(router) -> list[str]:
    """Load the latest DREAM weights into the members that have them; → their names."""
    from safetensors.torch import load_model

    done = []
    for name, m in router.pool.members.items():
        path = router.store.get_meta(f"dream_weights:{name}")
        if path and Path(path).is_file() and _model(m) is not None:
            load_model(m.model, path)
            forget_cached_states(m)
            done.append(name)
    return done
