"""DREAM's student weights: saved as safetensors beside the pool's store and applied again whenever the pool
is opened (kept apart from dream.py so the router can apply them without importing the DREAM phase)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from k1.pool.members.local import LocalMember

log = logging.getLogger(__name__)


def _model(m):
    from k1.pool.members.local import LocalMember
    return getattr(m, "model", None) if isinstance(m, LocalMember) else None


def publish_student(router, member: LocalMember, grades, class_rows, task_class: str | None, fallback_class: str,
                    weights_dir: str | Path | None) -> Path | None:
    """What DREAM commits once its student is measured: the class's prior (what it solves now, when probed), its
    trust (one graded outcome per held-out item), then its weights. → where the weights went."""
    if class_rows is not None:
        router.store.set_calibration(member.name, class_rows, task_class)
    for it, grade in grades:
        router.store.record_outcome(member.name, it["context"] or fallback_class, grade, "dream")
    return save_student(router, member, weights_dir)


def save_student(router, member: LocalMember, weights_dir: str | Path | None) -> Path | None:
    """Write the student's weights beside the store and remember them (reapplied by `apply_dream_weights`)."""
    from safetensors.torch import save_model

    root = Path(weights_dir) if weights_dir else router.store.home / "dream"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{member.name}.safetensors"
    tmp = path.with_suffix(".tmp")  # a replica loading the file meanwhile reads the old one whole, not half
    save_model(member.model, str(tmp))
    os.replace(tmp, path)
    router.store.set_meta(f"dream_weights:{member.name}", str(path))
    version = router.store.publish(f"student:{member.name}", str(path))  # replicas poll it (take_up_new_students)
    _seen(router)[member.name] = version
    return path


def _seen(router) -> dict[str, int]:
    """member → the version of its published weights this router holds."""
    return router.__dict__.setdefault("_student_versions", {})


def held_versions(router) -> dict[str, int]:
    """member → the version of its published weights this router has loaded (for /v1/pool)."""
    return {n: v for n, v in _seen(router).items() if v}


def take_up_new_students(router, wait: bool = False) -> list[str]:
    """Load the weights of every student whose published version moved since this router last looked (another
    replica ran DREAM); → their names. One indexed read per local member: cheap enough to call every few
    seconds. The member's gate is held while its weights change, so a call answers wholly on the old weights or
    wholly on the new; a member busy answering is left for the next call, or waited for (`wait`, in the turn
    a request would get)."""
    from safetensors.torch import load_model

    from k1.pool.errors import Busy

    done = []
    for name in list(router.pool.members):
        if not _newer(router, name):
            continue
        gate = getattr(router, "gates", {}).get(name)
        if gate is not None:
            if wait:
                try:
                    gate.acquire(name)
                except Busy:
                    continue
            elif not gate.try_acquire():
                continue
        try:
            v = _newer(router, name)  # again, holding the gate: another thread may have loaded it meanwhile
            if not v:
                continue
            m = router.pool.members[name]
            load_model(m.model, v[1])
            forget_cached_states(m)
            _seen(router)[name] = v[0]
            done.append(name)
        finally:
            if gate is not None:
                gate.release()
    return done


def _newer(router, name: str) -> tuple[int, str] | None:
    """(version, file) of `name`'s published weights if they are newer than those it holds and it is loaded."""
    m = router.pool.members[name]
    v = router.store.version(f"student:{name}") if _model(m) is not None else None
    if v is None or v[0] <= _seen(router).get(name, 0) or not Path(v[1]).is_file():
        return None
    return v


class StudentPoll:
    """What a serving router runs as a request comes in (`route.intake`) and from the server's background
    thread (`k1.pool.sleep`): at most every `every_s` seconds, and with no lock held, it takes up the students
    another replica's DREAM published (`take_up_new_students`)."""

    def __init__(self, router, every_s: float = 5.0):
        self.router, self.every_s = router, every_s
        self.last = time.monotonic()

    def look(self, force: bool = False, wait: bool = False) -> list[str]:
        now = time.monotonic()
        if not force and now - self.last < self.every_s:
            return []
        self.last = now  # two requests racing here both look: harmless (a member's gate lets one load it)
        try:
            names = take_up_new_students(self.router, wait=wait)
        except Exception as e:  # a missing or unreadable file never fails a request
            log.warning("published student not taken up: %s: %s", type(e).__name__, e)
            return []
        self.router.consolidated += [n for n in names if n not in self.router.consolidated]
        return names


def reapply(router, name: str, member) -> None:
    """A member REST unloaded is loaded again from its pool-file entry: give it the newest weights DREAM
    published for it (or none), before any call can use it."""
    from safetensors.torch import load_model

    try:
        v = router.store.version(f"student:{name}")
        path = v[1] if v else router.store.get_meta(f"dream_weights:{name}")
        if path and Path(path).is_file() and _model(member) is not None:
            load_model(member.model, path)
            forget_cached_states(member)
        _seen(router)[name] = v[0] if v else 0
    except Exception as e:  # stored data never stops a member from answering: it answers with its base weights
        _seen(router)[name] = 0
        log.warning("DREAM weights not applied to %s: %s: %s", name, type(e).__name__, e)


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
        v = router.store.version(f"student:{name}")
        _seen(router)[name] = v[0] if v else 0  # what is loaded now; take_up_new_students loads what comes after
        path = router.store.get_meta(f"dream_weights:{name}")
        if path and Path(path).is_file() and _model(m) is not None:
            load_model(m.model, path)
            forget_cached_states(m)
            done.append(name)
    return done
