"""The commands that hand a compiled plan, or a trained run, to the runtime:
`sftc plan`, `preview`, `run`, `eval`, `generate`, `chat`, `export`, `bench`.
The runtime (and JAX) is imported only when one of them runs."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

from .check import check_spec_file
from .diagnostics import print_human, summary_line

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_REJECTED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _start_runtime() -> None:
    """Before JAX first computes: keep freed host memory for reuse (see runtime.allocator);
    before any library is imported: its warnings go to a log file (see runtime.logs)."""
    from runtime.allocator import reuse_freed_memory
    from runtime.logs import route_library_logs

    reuse_freed_memory()
    route_library_logs()


def _compile(path: str, console: Console, devices: int | None = None):
    """The lowered plan of a spec, or None after printing why it is not valid."""
    _start_runtime()
    from .emit import emit_spec
    from .lower import lower

    spec, problems = check_spec_file(path, devices=devices)
    if problems:
        print_human(problems, console)
    if spec is None or any(d.is_error for d in problems):
        console.print(f"[bold red]✗[/] {path}: {summary_line(problems)}; nothing ran")
        return None
    return lower(spec), emit_spec(spec, absolute_paths=True)


def _say(console: Console, kind: str, message: str) -> None:
    """`error: ...` / `warning: ...` without markup interpretation: messages hold [brackets]."""
    from rich.text import Text

    style = "bold red" if kind == "error" else "yellow"
    console.print(Text.assemble((kind, style), f": {message}"), soft_wrap=True)


def _runtime_error(console: Console, error: Exception) -> int:
    _say(console, "error", str(error))
    return EXIT_FAIL


def _internal_error(console: Console, error: BaseException, run_dir: Path | None = None) -> int:
    """A failure sftc did not foresee (a bug, or an environment problem): one line on the
    screen, the traceback in a file (and in `status.json` of a run), never a wall of text."""
    import os
    import traceback

    from runtime.prepare import default_cache

    if os.environ.get("SFTC_DEBUG"):
        raise error
    text = "".join(traceback.format_exception(error))
    where = (run_dir if run_dir is not None else default_cache()) / "traceback.txt"
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_text(text)
    except OSError:
        where = None
    if run_dir is not None:
        from runtime import run as rundir

        rundir.write_status(run_dir, "error", message=f"{type(error).__name__}: {error}", traceback=str(where))
    detail = f"the traceback is in {where}" if where else "set SFTC_DEBUG=1 to see the traceback"
    _say(console, "error", f"sftc failed unexpectedly: {type(error).__name__}: {error}\n  = note: {detail}; please report it")
    return EXIT_FAIL


def _runtime_errors():
    from runtime.data.errors import DataError
    from runtime.hf import CheckpointError
    from runtime.mesh import MeshError
    from runtime.prepare import PrepareError
    from runtime.tokenizer import TokenizerError

    return (DataError, CheckpointError, MeshError, PrepareError, TokenizerError)


# ---------------------------------------------------------------- plan


def cmd_plan(args: argparse.Namespace) -> int:
    from runtime.plan_report import plan_report
    from runtime.prepare import prepare

    console = Console(stderr=True, highlight=False)
    compiled = _compile(args.spec, console)
    if compiled is None:
        return EXIT_FAIL
    plan, _ = compiled
    try:
        with console.status("tokenizing and packing the data (cached after the first time)"):
            prepared = prepare(plan)
    except _runtime_errors() as error:
        return _runtime_error(console, error)
    if args.json:
        import json

        print(json.dumps(plan_report(prepared, as_dict=True), indent=2))
    else:
        Console(highlight=False, soft_wrap=True).print(plan_report(prepared))
    return EXIT_OK


# ---------------------------------------------------------------- preview


def cmd_preview(args: argparse.Namespace) -> int:
    from runtime.data.preview import preview
    from runtime.prepare import prepare

    console = Console(stderr=True, highlight=False)
    compiled = _compile(args.spec, console)
    if compiled is None:
        return EXIT_FAIL
    plan, _ = compiled
    if args.source is not None and args.source not in {s.name for s in plan.data.sources}:
        console.print(f"[bold red]error[/]: no trained source `{args.source}` (sources: {', '.join(s.name for s in plan.data.sources)})")
        return EXIT_USAGE
    try:
        with console.status("tokenizing the data"):
            prepared = prepare(plan)
        preview(prepared.pipeline, n=args.n, source=args.source, tokens=args.tokens, json=args.json)
    except _runtime_errors() as error:
        return _runtime_error(console, error)
    return EXIT_OK


# ---------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    from rich.text import Text

    from runtime import run as rundir
    from runtime.data.sources import source_fingerprint
    from runtime.data.tokenize import tokenizer_fingerprint
    from runtime.logs import route_library_logs
    from runtime.prepare import prepare
    from runtime.resume import differences

    console = Console(stderr=True, highlight=False)
    compiled = _compile(args.spec, console)
    if compiled is None:
        return EXIT_FAIL
    plan, resolved_text = compiled
    root = Path(plan.output.dir)
    started = time.time()
    try:
        with console.status("preparing: tokenizer, data (cached after the first time)"):
            prepared = prepare(plan)
        fingerprints = {s.name: source_fingerprint(s) for s in prepared.plan.data.sources}
        tokenizer_print = tokenizer_fingerprint(prepared.tokenizer)
        run_dir = None if args.fresh else rundir.unfinished(root)
        if run_dir is not None:
            changed = differences(run_dir, prepared.plan, fingerprints, tokenizer_print)
            if changed:
                console.print(Text.assemble(("error", "bold red"), f": the unfinished run {run_dir} was trained on other inputs; resuming it would mix them:"), soft_wrap=True)
                for line in changed:
                    console.print(Text("    " + line, style="yellow"), soft_wrap=True)
                console.print("  = help: `sftc run --fresh` starts a new run; or restore these inputs to resume this one", soft_wrap=True, markup=False)
                return EXIT_FAIL
    except _runtime_errors() as error:
        return _runtime_error(console, error)
    resuming = run_dir is not None
    evaluating_only = resuming and rundir.read_status(run_dir).get("status") == "trained"
    run_dir = run_dir or rundir.new_run_dir(root)
    route_library_logs(run_dir / "sftc.log")
    what = "finishing the evaluation of" if evaluating_only else ("resuming" if resuming else "run")
    console.print(f"{what} [bold]{plan.name}[/] in {run_dir}")
    plan = prepared.plan
    (run_dir / "spec.sft").write_text(f"# resolved by sftc from {plan.spec_path}\n" + resolved_text)
    rundir.write_plan(run_dir, plan)  # when resuming, only settings that do not shape the weights may differ
    rundir.write_manifest(run_dir, plan, prepared.pipeline.stats.to_dict(), fingerprints, tokenizer_print)
    if not resuming:
        prepared.tokenizer.save_pretrained(str(run_dir / "tokenizer"))
    try:
        return _train_and_evaluate(args, console, prepared, run_dir, started)
    except _runtime_errors() as error:
        rundir.write_status(run_dir, "error", message=str(error))
        return _runtime_error(console, error)
    except Exception as error:  # noqa: BLE001 - a bug: say where the details are, no traceback on screen
        return _internal_error(console, error, run_dir)


def _train_and_evaluate(args, console: Console, prepared, run_dir: Path, started: float) -> int:
    from runtime import run as rundir
    from runtime.evaluate.final import evaluate_run
    from runtime.evaluate.report import print_gates
    from runtime.train.loop import train
    from runtime.train.metrics_log import MetricsLog
    from runtime.train.progress import progress_for

    plan = prepared.plan
    console.print(prepared.pipeline.stats.summary())
    log = MetricsLog(run_dir)
    try:
        with progress_for(console) as progress:
            result = train(prepared, run_dir, progress=progress, log=log)
    finally:
        log.close()
    for note in result.notes:
        _say(console, "warning", note)
    seconds = round(time.time() - started, 1)
    if result.status != "done":
        rundir.write_status(run_dir, result.status, steps=result.steps, skipped_steps=result.skipped, seconds=seconds, message=result.message)
        if result.status == "interrupted":
            console.print(f"[yellow]{result.message}[/]")
            return EXIT_INTERRUPTED
        _say(console, "error", result.message)
        return EXIT_FAIL
    # Trained, not yet evaluated: an interruption from here on leaves `trained`, and the next
    # `sftc run` finishes the evaluation instead of training again.
    rundir.write_status(run_dir, "trained", steps=result.steps, skipped_steps=result.skipped, seconds=seconds)
    loss = f"; final train loss {result.last_loss:.4f}" if result.last_loss is not None else ""
    skipped = f"; {result.skipped} non-finite step{'s' * (result.skipped != 1)} skipped" if result.skipped else ""
    console.print(f"[bold green]✓[/] trained {result.steps} steps in {seconds:.0f}s{loss}{skipped}")
    facts = {"name": plan.name, "run_dir": str(run_dir), "steps": result.steps, "skipped_steps": result.skipped,
             "train_s": seconds, "spec_hash": plan.spec_hash}
    with console.status("evaluating: generating eval completions"):
        outcome = evaluate_run(prepared, result, run_dir, facts, force_export=args.export)
    rundir.write_status(run_dir, "done", steps=result.steps, skipped_steps=result.skipped,
                        seconds=round(time.time() - started, 1), accepted=outcome.accepted)
    if outcome.verdicts:
        print_gates(outcome.verdicts, console)
    console.print(f"report: {outcome.report}")
    if outcome.export is not None:
        console.print(f"export: {outcome.export}")
    elif not outcome.accepted and plan.output.export != "none":
        console.print("no export: the run was not accepted (`sftc run --export` exports anyway)")
    return EXIT_OK if outcome.accepted else EXIT_REJECTED


# ---------------------------------------------------------------- eval, generate, chat, export


def _load(args, console: Console):
    from runtime.inference import load_trained
    from runtime.logs import route_library_logs

    _start_runtime()
    if (Path(args.run_dir) / "plan.json").is_file():
        route_library_logs(Path(args.run_dir) / "sftc.log")
    with console.status(f"loading {args.run_dir}"):
        return load_trained(args.run_dir, getattr(args, "step", None))


def cmd_eval(args: argparse.Namespace) -> int:
    """Re-evaluate a run's checkpoint, with its own gates or those of an edited spec."""
    import dataclasses

    from runtime.evaluate.gates import accepted, compute_metrics, judge
    from runtime.evaluate.generation import generate_eval
    from runtime.evaluate.report import print_gates, write_report
    from runtime.run import new_run_dir
    from runtime.train.loop import token_metrics

    console = Console(stderr=True, highlight=False)
    try:
        trained = _load(args, console)
        plan = trained.plan
        if args.spec is not None:
            compiled = _compile(args.spec, console)
            if compiled is None:
                return EXIT_FAIL
            edited, _ = compiled
            plan = dataclasses.replace(plan, gates=edited.gates, eval=edited.eval)
            trained.prepared.plan = plan
        with console.status("evaluating"):
            prepared = trained.with_data()
            by_source = token_metrics(trained.engine, trained.frozen, prepared.pipeline, trained.params)
            sources = [s.name for s in plan.data.sources if s.eval is not None]
            samples = []
            if plan.eval.generate is not None:
                samples = generate_eval(trained.model, trained.tokenizer, prepared.pipeline, plan.eval.generate, plan.eval.samples, seed=plan.eval.generate.seed)
        values = compute_metrics(samples, by_source, gates=plan.gates, eval_sources=sources)
        verdicts = judge(plan.gates, values)
    except _runtime_errors() as error:
        return _runtime_error(console, error)
    out = new_run_dir(Path(args.run_dir) / "evals")
    facts = {"run": str(args.run_dir), "step": trained.step, "spec": args.spec or "the run's own"}
    report, _ = write_report(out, verdicts=verdicts, values=values, samples=samples, facts=facts, data_stats=prepared.pipeline.stats, records=[])
    if verdicts:
        print_gates(verdicts, console)
    else:
        for key in sorted(values):
            console.print(f"{key:24} {values[key]:.4f}")
    console.print(f"report: {report}")
    return EXIT_OK if accepted(verdicts) else EXIT_REJECTED


def _generation_settings(args, trained):
    """The spec's `eval.generate` with the command line's overrides (ValueError: an impossible setting)."""
    from runtime.inference import decoding

    return decoding(trained.plan, args.max_new_tokens, args.temperature, args.top_p, args.top_k, args.seed)


def _read_rows(path: str) -> list[tuple[int, object]]:
    """(line number, JSON value) of each non-blank line; ValueError names the line that is not JSON."""
    import json

    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not JSON ({error.msg})") from None
            if not isinstance(rows[-1][1], (dict, str)):
                raise ValueError(f"{path}:{number}: a row is a JSON object of columns (or a string), "
                                 f"not {type(rows[-1][1]).__name__}")
    return rows


def cmd_generate(args: argparse.Namespace) -> int:
    """Completions of `--prompt` or of each `--file` row, rendered and decoded as evaluation does."""
    import json

    from runtime.data.prompts import PromptError, render_prompt
    from runtime.inference import answers, source_mode

    console = Console(stderr=True, highlight=False)
    if (args.prompt is None) == (args.file is None):
        console.print("[bold red]error[/]: give exactly one of --prompt TEXT or --file prompts.jsonl")
        return EXIT_USAGE
    try:
        inputs = [(None, args.prompt)] if args.prompt is not None else _read_rows(args.file)
        trained = _load(args, console)
        mode = source_mode(trained.plan, args.run_dir, args.source)
        settings = _generation_settings(args, trained)
        prompts = []
        for number, value in inputs:
            try:
                prompts.append(render_prompt(trained.tokenizer, mode, value))
            except PromptError as error:
                raise PromptError(f"{args.file}:{number}: {error}" if number is not None else str(error)) from None
        with console.status(f"generating {len(prompts)} completion{'s' * (len(prompts) != 1)}"):
            results = answers(trained, prompts, settings)
    except ValueError as error:  # a file that is not JSON rows, an impossible sampling setting
        _runtime_error(console, error)
        return EXIT_USAGE
    except OSError as error:
        return _runtime_error(console, error)
    except _runtime_errors() as error:
        return _runtime_error(console, error)
    for (_, value), (ids, finished) in zip(inputs, results):
        text = trained.tokenizer.decode(ids, skip_special_tokens=True)
        if args.json:
            print(json.dumps({"input": value, "completion": text, "tokens": len(ids), "finished": finished}))
        else:
            print(text)
    return EXIT_OK


def cmd_chat(args: argparse.Namespace) -> int:
    """Talk to a run: each answer streamed as it is decoded; chat templates keep the conversation."""
    from runtime.data.prompts import PromptError, check_text, render_prompt, stop_ids
    from runtime.inference import reply, source_mode

    console = Console(stderr=True, highlight=False)
    try:
        trained = _load(args, console)
        mode = source_mode(trained.plan, args.run_dir, args.source)
        check_text(mode)
        settings = _generation_settings(args, trained)
        stops = stop_ids(trained.tokenizer)
    except (PromptError, ValueError) as error:
        _runtime_error(console, error)
        return EXIT_USAGE
    except _runtime_errors() as error:
        return _runtime_error(console, error)
    conversational = mode.kind == "messages" or mode.chat
    out = Console(highlight=False)
    out.print(f"[dim]{trained.plan.name} at step {trained.step}; {'a conversation' if conversational else 'each line is a new prompt'}; Ctrl-D to quit[/]")
    history: list[dict] = []
    turn = 0
    while True:
        try:
            text = input("> ")
        except (EOFError, KeyboardInterrupt):
            out.print()
            return EXIT_OK
        if not text.strip():
            continue
        try:
            prompt = render_prompt(trained.tokenizer, mode, text, history)
        except PromptError as error:
            _runtime_error(console, error)
            continue
        produced: list[int] = []
        shown = ""
        try:
            for token in reply(trained, prompt, settings, turn, stops):
                produced.append(token)
                decoded = trained.tokenizer.decode(produced, skip_special_tokens=True)
                out.print(decoded[len(shown):], end="", soft_wrap=True, markup=False)
                shown = decoded
        except KeyboardInterrupt:
            pass
        out.print()
        turn += 1
        if conversational:
            history = prompt.conversation + [{"role": "assistant", "content": shown}]


def cmd_export(args: argparse.Namespace) -> int:
    from runtime.evaluate.final import export_model

    console = Console(stderr=True, highlight=False)
    try:
        trained = _load(args, console)
        if args.format == "peft" and trained.plan.model.adapter is None:
            console.print("[bold red]error[/]: this run trained every weight (no LoRA adapter); use --format hf")
            return EXIT_USAGE
        path = export_model(trained.prepared, trained.model, Path(args.out), args.format)
    except _runtime_errors() as error:
        return _runtime_error(console, error)
    console.print(f"[bold green]✓[/] exported step {trained.step} of {args.run_dir} to {path} ({args.format})")
    return EXIT_OK


# ---------------------------------------------------------------- bench


def cmd_bench(args: argparse.Namespace) -> int:
    """Steady-state throughput of the spec's train step on synthetic tokens of its shapes."""
    import json

    from runtime.bench import bench_plan, format_bench
    from runtime.prepare import default_cache, load_tokenizer, model_config

    console = Console(stderr=True, highlight=False)
    compiled = _compile(args.spec, console)
    if compiled is None:
        return EXIT_FAIL
    plan, _ = compiled
    try:
        with console.status("loading the tokenizer and the model config"):
            tokenizer = load_tokenizer(plan, default_cache())
            config, _ = model_config(plan, tokenizer)
        if plan.model.kind == "hf":
            console.print("[dim]note: the base weights are random here; a step costs the same with the real ones[/]")
        with console.status(f"compiling and timing {args.steps} steps"):
            result = bench_plan(plan, config, steps=args.steps)
    except _runtime_errors() as error:
        return _runtime_error(console, error)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        Console(highlight=False, soft_wrap=True).print(format_bench(result))
    return EXIT_OK


def register(commands) -> None:
    plan = commands.add_parser("plan", help="what a run will do: data, steps, parameters, mesh, memory, FLOPs")
    plan.add_argument("spec", metavar="SPEC")
    plan.add_argument("--json", action="store_true", help="print the report as one JSON object")
    plan.set_defaults(run=cmd_plan)

    preview = commands.add_parser("preview", help="rendered examples as the model sees them, with the loss mask")
    preview.add_argument("spec", metavar="SPEC")
    preview.add_argument("-n", type=int, default=3, help="how many examples (default 3)")
    preview.add_argument("--source", default=None, help="only this data source")
    preview.add_argument("--tokens", action="store_true", help="mark token boundaries")
    preview.add_argument("--json", action="store_true", help="one JSON object per example")
    preview.set_defaults(run=cmd_preview)

    run = commands.add_parser("run", help="train, evaluate, apply `accept`, export")
    run.add_argument("spec", metavar="SPEC")
    run.add_argument("--fresh", action="store_true", help="start a new run even if an unfinished one can be resumed")
    run.add_argument("--export", action="store_true", help="export even when a gate fails")
    run.set_defaults(run=cmd_run)

    evaluate = commands.add_parser("eval", help="re-evaluate a run's checkpoint (optionally with an edited spec's gates)")
    evaluate.add_argument("run_dir", metavar="RUN", help="a run directory: runs/<name>/<timestamp>")
    evaluate.add_argument("--spec", default=None, help="judge with this spec's `eval` and `accept` blocks")
    evaluate.add_argument("--step", type=int, default=None, help="a checkpoint step (default: the latest)")
    evaluate.set_defaults(run=cmd_eval)

    for name, handler, text in (("generate", cmd_generate, "completions from a trained run"), ("chat", cmd_chat, "talk to a trained run, streaming tokens")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("run_dir", metavar="RUN", help="a run directory: runs/<name>/<timestamp>")
        if name == "generate":
            sub.add_argument("--prompt", default=None, help="the input text (fills the template's one placeholder)")
            sub.add_argument("--file", default=None, help="a JSON-lines file of rows in the source's columns (a conversation's last assistant turn is dropped)")
            sub.add_argument("--json", action="store_true", help="one JSON object per completion")
        sub.add_argument("--source", default=None, help="use this source's template (default: the first)")
        sub.add_argument("--step", type=int, default=None, help="a checkpoint step (default: the latest)")
        sub.add_argument("--max-new-tokens", type=int, default=None, help="(default: the spec's eval.generate, else 128)")
        sub.add_argument("--temperature", type=float, default=None, help="0 is greedy (default: the spec's eval.generate)")
        sub.add_argument("--top-p", type=float, default=None, help="nucleus sampling, in (0, 1]; applies when temperature > 0 (default: the spec's)")
        sub.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest tokens, 0 = all; applies when temperature > 0 (default: the spec's)")
        sub.add_argument("--seed", type=int, default=None, help="the sampling seed (default: the spec's eval.generate seed)")
        sub.set_defaults(run=handler)

    export = commands.add_parser("export", help="write a checkpoint transformers / peft / vLLM load as is")
    export.add_argument("run_dir", metavar="RUN", help="a run directory: runs/<name>/<timestamp>")
    export.add_argument("--format", choices=("hf", "peft"), default="hf")
    export.add_argument("--step", type=int, default=None, help="a checkpoint step (default: the latest)")
    export.add_argument("out", metavar="OUT", help="the directory to write")
    export.set_defaults(run=cmd_export)

    bench = commands.add_parser("bench", help="steady-state training throughput of the spec's model and shapes")
    bench.add_argument("spec", metavar="SPEC")
    bench.add_argument("--steps", type=int, default=10, help="timed steps after the warm-up (default 10)")
    bench.add_argument("--json", action="store_true", help="one JSON object")
    bench.set_defaults(run=cmd_bench)
