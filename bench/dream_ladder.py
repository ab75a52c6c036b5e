"""DREAM on the real ladder: can distilling SmolLM2 heal a student cut from it on one task class?

1. Open the default pool (SmolLM2 and its 15- and 6-layer students) in $K1_POOL_DIR, or --pool-dir; with
   --models-from, the converted models of another pool folder are hard-linked in instead of converted again,
   and with --calibration-from its stored calibration rows are copied instead of calibrating again.
2. Experiences, made as a user makes them: `--experiences N` arithmetic training problems (d2, none of them
   among the 16 held-out calibration problems DREAM measures the student on) are routed through the pool with
   model "auto", each judged by its verifier; the pool's classifier decides their class.
   With --route-only it stops there; --store-from starts another run from a copy of that store instead.
3. DREAM on `--task-class arithmetic`, teacher smollm2 → `--student`: the report's before/after numbers are
   the student's success on the 16 held-out problems, its bits per byte of and agreement with the teacher's
   answers on held-out experiences, and the router's replay cost on those prompts.

    K1_POOL_DIR=/tmp/dream-pool/a python bench/dream_ladder.py --student smollm2-15l --experiences 96 --k 96
    python bench/dream_ladder.py --pool-dir /tmp/d/base --experiences 160 --route-only
    python bench/dream_ladder.py --pool-dir /tmp/d/s0 --store-from /tmp/d/base/pool.sqlite --experiences 160 \
        --k 160 --seed 0 --teacher-system "Answer in one short line." --verified-only --ce-weight 0.5 \
        --epochs 12 --lr 5e-4 --val 0.15 --patience 4 --holdout 0.2     # the recipe in docs/pool.md

Prints the report as one JSON object on the last line (and writes it to --out).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

MODEL_DIRS = ("smollm2-135m-instruct", "smollm2-student-15l", "smollm2-student-6l")


def link_models(src: Path, dst: Path) -> None:
    """Hard-link another pool folder's converted models (read-only for the pool: DREAM writes beside the store)."""
    for name in MODEL_DIRS:
        if (dst / name).exists() or not (src / name).is_dir():
            continue
        (dst / name).mkdir(parents=True)
        for f in (src / name).iterdir():
            os.link(f, dst / name / f.name)


def training_tasks(n: int, seed: int) -> list:
    """n arithmetic d2 problems that are not among the held-out calibration problems, by problem: the commuted
    twin of a held-out sum is held out too (before, 6 of the 16 held-out sums had their twin in training)."""
    from k1.pool.learn.calibrate import reserved_problems
    from k1.tasks.split import problem_key
    from k1.tasks.task import arithmetic_tasks

    held = reserved_problems()
    pool = [t for t in arithmetic_tasks("d2") if problem_key(t) not in held]
    return random.Random(f"dream-train-{seed}").sample(pool, min(n, len(pool)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool-dir", type=Path, default=None, help="pool folder (default: $K1_POOL_DIR)")
    ap.add_argument("--models-from", type=Path, default=None, help="a pool folder whose converted models to link")
    ap.add_argument("--calibration-from", type=Path, default=None, help="a pool store whose calibration to copy")
    ap.add_argument("--student", default="smollm2-15l")
    ap.add_argument("--experiences", type=int, default=96, help="training problems routed through the pool")
    ap.add_argument("--k", type=int, default=96, help="experiences DREAM consolidates")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verified-only", action="store_true", help="train only on teacher answers the verifier accepts")
    ap.add_argument("--samples", type=int, default=0, help="rejection sampling: teacher samples per training "
                    "experience, verified answers kept (implies --verified-only)")
    ap.add_argument("--sample-temperature", type=float, default=0.8)
    ap.add_argument("--ce-weight", type=float, default=0.0, help="cross-entropy share of the loss (rest: logit KD)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--topk", type=int, default=64, help="teacher logits cached as top-k (0: the whole vocabulary)")
    ap.add_argument("--holdout", type=float, default=0.25, help="share of experiences held out for DREAM's replay")
    ap.add_argument("--val", type=float, default=0.0, help="share of training experiences for early stopping")
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--schedule", choices=["cosine", "constant"], default="cosine")
    ap.add_argument("--teacher-system", default=None, help="system message the teacher answers under during DREAM "
                    "(context distillation), e.g. 'Answer in one short line.'")
    ap.add_argument("--store-from", type=Path, default=None, help="start from a copy of this pool store (its "
                    "calibration and routed experiences) instead of routing the training problems again")
    ap.add_argument("--route-only", action="store_true", help="stop after routing the training problems")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--remeasure", action="store_true", help="only measure the student as the pool folder holds it "
                    "(DREAM's weights reapplied in a fresh process) on the 16 held-out problems")
    args = ap.parse_args()
    if args.pool_dir is not None:
        os.environ["K1_POOL_DIR"] = str(args.pool_dir)
    root = Path(os.environ.get("K1_POOL_DIR", "~/.cache/k1/pool")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    if args.models_from is not None:
        link_models(args.models_from, root)
    if args.store_from is not None:
        if (root / "pool.sqlite").exists():
            sys.exit(f"{root / 'pool.sqlite'} exists; --store-from needs a fresh pool folder")
        import sqlite3

        src, dst = sqlite3.connect(f"file:{args.store_from}?mode=ro", uri=True), sqlite3.connect(root / "pool.sqlite")
        src.backup(dst)
        src.close()
        dst.close()

    import torch

    torch.manual_seed(args.seed)
    from k1.pool.default import default_pool_file
    from k1.pool.learn.calibrate import calibrate, missing
    from k1.pool.learn.dream import dream
    from k1.pool.members.base import prompt_text
    from k1.pool.pool import load_pool
    from k1.pool.session import open_router
    from k1.tasks.verifiers import verify

    t0 = time.process_time()
    router = open_router(load_pool(default_pool_file(quiet=args.quiet)))  # with DREAM's saved weights
    if args.calibration_from is not None:
        import sqlite3  # read-only and raw: that store may have been written by another k1 version

        old = sqlite3.connect(f"file:{args.calibration_from}?mode=ro", uri=True)
        old.row_factory = sqlite3.Row
        for name in router.pool.names:
            rows = [{"cls": r["task_class"], **{k: r[k] for k in ("task", "prompt", "response", "score", "atp")}}
                    for r in old.execute("SELECT * FROM calibration WHERE member = ? ORDER BY id", (name,))]
            if rows and not router.store.calibration_rows(name):
                router.store.set_calibration(name, rows)
        old.close()
    if args.remeasure:
        from k1.pool.learn.calibrate import calibrate_member, calibration_tasks

        rows = calibrate_member(router.ledger, router.pool[args.student],
                               [c for c in calibration_tasks(16) if c.cls == "arithmetic"])
        result = {"command": " ".join(["python"] + sys.argv), "student": args.student,
                  "consolidated": router.consolidated, "success": sum(r["score"] for r in rows) / len(rows),
                  "n": len(rows), "answers": [(r["task"], r["response"], r["score"]) for r in rows]}
        router.pool.close()
        router.close()
        print(json.dumps(result))
        return
    todo = missing(router)
    if todo:
        calibrate(router, todo, quiet=args.quiet)
    cal = {f"{m}/{c}": f"{v['solved']:g}/{v['n']}" for (m, c), v in router.store.calibration_summary().items()}

    tasks = training_tasks(args.experiences, args.seed)
    by_text = {prompt_text([{"role": "user", "content": t.prompt}]): t for t in tasks}
    from k1.pool.learn.calibrate import calibration_tasks
    by_text.update({c.text: c for c in calibration_tasks(16) if c.cls == "arithmetic"})

    def verifier(prompt: str, answer: str):
        t = by_text.get(prompt)
        if t is None:
            return None
        return float(t.judge(answer)) if hasattr(t, "judge") else float(bool(verify(t, answer)))

    t1 = time.process_time()
    routed: dict = {"members": {}, "classes": {}, "solved": 0}
    if args.store_from is not None:  # the copied store holds the routed experiences: counted, not routed again
        for e in router.store.experiences():
            if e["session"] and e["session"].startswith("dream-ladder"):
                routed["members"][e["member"]] = routed["members"].get(e["member"], 0) + 1
                routed["classes"][e["context"]] = routed["classes"].get(e["context"], 0) + 1
                routed["solved"] += bool(e["outcome"])
        tasks = []
    for t in tasks:
        out = router.generate([{"role": "user", "content": t.prompt}], session=f"dream-ladder-{args.seed}",
                              max_tokens=args.max_tokens, temperature=0.0, verifier=verifier)
        routed["members"][out.member] = routed["members"].get(out.member, 0) + 1
        routed["classes"][out.task_class] = routed["classes"].get(out.task_class, 0) + 1
        routed["solved"] += bool(out.outcome)
    routed["cpu_s"] = time.process_time() - t1

    if args.route_only:
        router.pool.close()
        router.close()
        print(json.dumps({"command": " ".join(["python"] + sys.argv), "routed": routed, "calibration": cal}))
        return
    t2 = time.process_time()
    rep = dream(router, student=args.student, k=args.k, epochs=args.epochs, lr=args.lr, temperature=args.temperature,
                max_tokens=args.max_tokens, verifier=verifier, seed=args.seed, quiet=args.quiet,
                task_class="arithmetic", verified_only=args.verified_only, samples=args.samples,
                sample_temperature=args.sample_temperature, first_line=True, ce_weight=args.ce_weight,
                batch_size=args.batch_size, topk=args.topk, holdout=args.holdout, val=args.val,
                patience=args.patience, schedule=args.schedule, teacher_system=args.teacher_system)
    rep["cpu_s"] = time.process_time() - t2
    router.pool.close()
    router.close()
    result = {"command": " ".join(["python"] + sys.argv), "pool_dir": str(root), "calibration": cal,
              "routed": routed, "dream": rep, "cpu_s": time.process_time() - t0,
              "settings": {k: v for k, v in vars(args).items() if k not in ("out", "quiet")}}
    cb, ca = rep["class_before"], rep["class_after"]
    b, a = rep["before"], rep["after"]
    print(f"routed {sum(routed['members'].values())} training problems: {routed['members']}, classes {routed['classes']}, "
          f"solved {routed['solved']}")
    print(f"DREAM {rep['teacher']} → {rep['student']} ({rep['method']}, {rep['train']} train / {rep['held_out']} "
          f"held-out experiences, {args.epochs} epochs, lr {args.lr})")
    print(f"held-out calibration problems solved: {cb['success']:.1%} → {ca['success']:.1%} of {ca['n']}")
    print(f"held-out experiences: bits/byte {b['bits_per_byte']:.3f} → {a['bits_per_byte']:.3f}, agreement "
          f"{b['agreement']:.1%} → {a['agreement']:.1%}, verifier {b['verifier_success']} → {a['verifier_success']}")
    print(f"replay ATP {rep['replay_before']['atp']:.3f} → {rep['replay_after']['atp']:.3f} "
          f"({rep['replay_before']['members']} → {rep['replay_after']['members']})")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
