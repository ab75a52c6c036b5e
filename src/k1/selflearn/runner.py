"""`run_loop`: per seed, split tasks → evaluate the target on held-out tasks → improve its answers on the
training tasks → write the JSONL dataset → train a copy of the target → evaluate the copy on the same
held-out tasks. The report gives before, after and the change, with their spread over seeds.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from k1.errors import ConfigError, DataError
from k1.selflearn import members
from k1.selflearn.config import LoopConfig
from k1.selflearn.evaluate import evaluate
from k1.selflearn.formats import prompt_for, training_text
from k1.selflearn.improve import METHODS
from k1.selflearn.selfinstruct import self_instruct
from k1.tasks.files import load_task_file
from k1.tasks.sandbox import require_sandbox
from k1.tasks.task import builtin_tasks, split_tasks


def load_tasks(spec: str):
    return load_task_file(spec) if spec.endswith(".jsonl") or Path(spec).is_file() else builtin_tasks(spec)


def spread(xs: list[float]) -> dict:
    return {"mean": round(statistics.fmean(xs), 4), "std": round(statistics.stdev(xs), 4) if len(xs) > 1 else 0.0,
            "min": round(min(xs), 4), "max": round(max(xs), 4), "values": [round(x, 4) for x in xs]}


def run_loop(cfg: LoopConfig, out: Path, quiet: bool = False) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    tasks = load_tasks(cfg.tasks)
    if any(t.kind == "python" for t in tasks):
        require_sandbox()  # refuse before any model runs, not halfway through
    target = members.load(cfg.target, roles=["target"])
    if target.kind not in ("k1", "hf"):
        raise ConfigError(f"target {cfg.target!r} ({target.kind}) cannot be trained here; use a k1 or hf target")
    teacher = members.load(cfg.teacher, roles=["teacher"]) if cfg.method == "teacher" else None
    judge = members.load(cfg.judge, roles=["judge"]) if cfg.judge else None
    (out / "config.json").write_text(cfg.model_dump_json(indent=1))
    dataset, si_log = (out / "dataset.jsonl").open("w"), (out / "self_instruct.jsonl").open("w")
    per_seed = []
    models = {"target": target.name, "teacher": teacher.name if teacher else None, "judge": judge.name if judge else None}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  disable=quiet) as bar:
        for seed in cfg.seeds:
            t0 = time.perf_counter()
            train, heldout = split_tasks(tasks, cfg.n_train, cfg.n_heldout, seed)
            held_prompts = {t.prompt for t in heldout}
            if cfg.self_instruct:
                seeds_ = [t for t in train if t.kind == "arithmetic"]
                extra, records = self_instruct(target, seeds_, cfg.self_instruct, exclude=held_prompts, seed=seed)
                for r in records:
                    si_log.write(json.dumps({"seed": seed, **r}) + "\n")
                train = train + extra
            job = bar.add_task(f"seed {seed}: before", total=len(heldout) * 2 + len(train))
            before = evaluate(target, heldout)
            bar.update(job, advance=len(heldout), description=f"seed {seed}: improve ({cfg.method})")
            kw = {"teacher": teacher, "n": cfg.samples} if cfg.method == "teacher" else (
                {"n": cfg.samples} if cfg.method == "rejection" else {"rounds": cfg.rounds})
            improvements = []
            for t in train:
                improvements.append(METHODS[cfg.method](target, t, temperature=cfg.temperature, seed=seed, judge=judge,
                                                        **kw))
                bar.advance(job)
            now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            for imp in improvements:
                dataset.write(json.dumps({**imp.record(), "seed": seed, "split": "train", "models": models, "time": now,
                                          "config": cfg.model_dump()}) + "\n")
            dataset.flush()
            kept = [imp for imp in improvements if imp.improved is not None]
            leaked = sum(imp.task.prompt in held_prompts for imp in kept)
            if leaked:  # split_tasks and self_instruct's `exclude` rule it out; checked (an assert vanishes under -O)
                raise DataError(f"seed {seed}: {leaked} held-out prompt(s) reached the training set, which would void "
                                "the held-out evaluation; nothing was trained")
            bar.update(job, description=f"seed {seed}: train on {len(kept)}")
            train_info, tuned = _train(cfg, target, kept, out / f"seed{seed}", seed)
            bar.update(job, description=f"seed {seed}: after")
            after = evaluate(tuned, heldout) if tuned is not None else dict(before, note="nothing to train on")
            bar.advance(job, len(heldout))
            if tuned is not None and tuned is not target:
                tuned.close()
            per_seed.append({"seed": seed, "n_train": len(train), "n_heldout": len(heldout), "improved": len(kept),
                             "train_solved_greedy": sum(imp.response.score >= 1 for imp in improvements),
                             "improve_atp": round(sum(imp.atp for imp in improvements), 3),
                             "before": before, "after": after, "delta": after["rate"] - before["rate"],
                             "train": train_info, "heldout_in_train": leaked,
                             "wall_s": round(time.perf_counter() - t0, 1)})
            _write_report(cfg, models, per_seed, out)  # after every seed: a long run that stops keeps what it measured
    dataset.close()
    si_log.close()
    return _write_report(cfg, models, per_seed, out)


def _write_report(cfg: LoopConfig, models: dict, per_seed: list[dict], out: Path) -> dict:
    report = {"config": cfg.model_dump(), "models": models, "seeds": per_seed,
              "before": spread([s["before"]["rate"] for s in per_seed]),
              "after": spread([s["after"]["rate"] for s in per_seed]),
              "delta": spread([s["delta"] for s in per_seed])}
    report["verdict"] = verdict(report["delta"])
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(render(report))
    return report


def _train(cfg: LoopConfig, target, kept, seed_dir: Path, seed: int):
    if not kept:
        return {"trained": False, "reason": "no candidate passed its verifier"}, None
    if target.kind == "k1":
        from k1.pool.members.k1 import K1Member
        from k1.pool.learn.train_k1 import finetune_k1

        summary = finetune_k1(target.run_dir, [training_text(i.task, i.improved.text) for i in kept], seed_dir / "target",
                              steps=cfg.train_steps, seed=seed)
        info = {"trained": True, "steps": cfg.train_steps, "val_loss": summary.get("val_loss"), "examples": len(kept)}
        return info, K1Member.from_run(seed_dir / "target", name=f"{target.name}+loop")
    from k1.pool.learn.train_hf import finetune_lora

    tuned, info = finetune_lora(target, [(prompt_for(target, i.task), i.improved.text) for i in kept], seed_dir,
                                epochs=cfg.epochs, lr=cfg.lr, r=cfg.lora_r, seed=seed)
    return {"trained": True, **info}, tuned


def verdict(delta: dict) -> str:
    m, s = delta["mean"], delta["std"]
    if len(delta["values"]) < 3:
        return f"held-out success {m:+.1%} from {len(delta['values'])} seed(s): too few for a spread (use 3 or more)"
    if m > 0 and m > s:
        return f"improved: held-out success +{m:.1%} (std {s:.1%} over seeds)"
    if m < 0 and -m > s:
        return f"got worse: held-out success {m:.1%} (std {s:.1%} over seeds)"
    return f"no clear change: held-out success {m:+.1%} (std {s:.1%} over seeds)"


def render(r: dict) -> str:
    c = r["config"]
    lines = [f"# k1 loop: {c['target']} on {c['tasks']} ({c['method']})", "",
             f"**{r['verdict']}**", "",
             "| seed | held-out | before | after | change | train tasks | greedy solved | improved | improve ATP |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in r["seeds"]:
        lines.append(f"| {s['seed']} | {s['n_heldout']} | {s['before']['rate']:.1%} | {s['after']['rate']:.1%} | "
                     f"{s['delta']:+.1%} | {s['n_train']} | {s['train_solved_greedy']} | {s['improved']} | "
                     f"{s['improve_atp']:.1f} |")
    b, a, d = r["before"], r["after"], r["delta"]
    lines += ["", f"before {b['mean']:.1%} ± {b['std']:.1%}, after {a['mean']:.1%} ± {a['std']:.1%}, "
              f"change {d['mean']:+.1%} ± {d['std']:.1%} (mean ± std over {len(r['seeds'])} seeds; verifiers only)", ""]
    return "\n".join(lines)
