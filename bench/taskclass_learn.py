"""Does the task classifier learn from the pool's experiences? Held-out accuracy before and after.

Before: the built-in classifier (166 labelled prompts, four classes). Experiences: the routing bench's tasks
(`bench/route.py`, 30 per class in arithmetic, code, facts, prose and copy — a class the built-in classifier
does not know), each routed through a real `Router` (a tiny member answers one token) into a real SQLite
store with the class stated by the caller, as the bench's outcome table does. After: a router opened on that
store, whose classifier was refit from those experiences. Measured on `taskclass.HELD_OUT` (30 prompts, the
four built-in classes) with `taskclass.HELD_OUT_COPY` (8 copy prompts), fixed in code before this first ran,
and on `taskclass.HELD_OUT_2` (24 prompts, five classes), fixed after the first run and before the
complement form was measured on it; all disjoint from the experiences. Both forms of naive Bayes are
measured (`TaskClassifier(form=...)`); the router uses the complement form.

    python bench/taskclass_learn.py [--per-class 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=30)
    args = ap.parse_args()
    import torch

    from route import build_tasks

    from k1.pool.config import PoolSettings
    from k1.pool.pool import Pool
    from k1.pool.route.router import Router
    from k1.pool.route.taskclass import (HELD_OUT, HELD_OUT_2, HELD_OUT_COPY, TaskClassifier, held_out_accuracy,
                                         learned_examples, training_prompts)
    from k1.pool.store import PoolStore
    from k1.pool.testing import tiny_hf_member

    torch.set_num_threads(1)
    tasks = build_tasks(args.per_class)
    sets = {"four classes": HELD_OUT, "with copy": HELD_OUT + HELD_OUT_COPY, "second set": HELD_OUT_2}
    overlap = {p for s in sets.values() for p, _ in s} & {t["prompt"] for t in tasks}
    assert not overlap, f"held-out prompts among the experiences: {overlap}"
    member = tiny_hf_member("tiny", seed=0, hidden=32, layers=1)
    with tempfile.TemporaryDirectory() as d:
        store = Path(d) / "pool.sqlite"
        r = Router(Pool([member], PoolSettings(seed=0)), PoolStore(store))
        for t in tasks:
            prompt = [{"role": "user", "content": t["prompt"]}] if t["chat"] else t["prompt"]
            r.generate(prompt, context=t["cls"], max_tokens=1)
        r.close()
        t0 = time.process_time()
        r = Router(Pool([member], PoolSettings(seed=0)), PoolStore(store))  # refit when the pool opens
        refit_cpu_s = time.process_time() - t0
        learned = learned_examples(r.store)
        router_form = r.task_classes.form
        r.close()
    out = {"command": " ".join(["python"] + sys.argv), "experiences": len(tasks), "learned": len(learned),
           "router_form": router_form, "router_open_cpu_s": refit_cpu_s, "results": {}}
    for form in ("multinomial", "complement"):
        for when, examples in (("before", training_prompts()), ("after", training_prompts() + learned)):
            clf = TaskClassifier(examples, form=form)
            res = out["results"][f"{form}/{when}"] = {k: held_out_accuracy(clf, v) for k, v in sets.items()}
            for k, v in res.items():
                per = ", ".join(f"{c} {a:.0%}" for c, a in v["per_class"].items())
                print(f"{form:11s} {when:6s} {k:13s} {v['accuracy']:6.1%} of {v['n']} ({per}); wrong: "
                      + "; ".join(f"{w['prompt'][:40]!r} → {w['got']}" for w in v["wrong"]))
    print(json.dumps(out))

if __name__ == "__main__":
    main()
