"""Standard benchmarks on sftc's own model: lm-evaluation-harness tasks, scored like any metric.

    result = run_benchmarks(model, tokenizer, plan.eval.benchmarks, console=console)
    result.values()     # {"acc(sftc_general_mc)": 0.48, "acc_norm(sftc_general_mc)": 0.45, ...}

`run_benchmarks` hands lm_eval (`lm_eval.simple_evaluate`) the model as `SftcLM`
(`runtime.evaluate.lm_eval_model`: sftc's JAX model, no PyTorch, no export) and reads back a
`BenchmarkResult`, plain data that survives JSON (NaN and infinities as the strings "nan", "inf",
"-inf").

Which tasks: a plan's names are looked up in its ``include`` folder (lm_eval's ``include_path``:
the spec's own task YAML files) and in lm_eval's built-in tasks; a name that is neither raises
`UnknownTaskError` (naming the folder and the close names) before the model is called. Tasks
found in the folder alone are read without indexing lm_eval's ~15k built-in ones (about 10 s).
A built-in task whose dataset is on the Hugging Face hub needs the hub or the datasets cache:
offline (``HF_HUB_OFFLINE`` and the like) or when the hub does not answer, only the cache is
read, and a dataset missing from it raises `BenchmarkError` saying so.

Metric keys, one rule: lm_eval reports ``"metric,filter"``; a task's value of ``metric`` is the
one under the filter ``none`` when the task reports one, else under the task's first filter (the
first in lm_eval's report). ``alias`` is not a metric; ``metric_stderr`` of the same filter goes to
`BenchmarkResult.stderr` (when lm_eval computed one: "N/A" is left out). A group (several
subtasks) gives each subtask's scores and, when lm_eval aggregates one, the group's own.
`BenchmarkResult.values` names each value as a gate writes it: ``acc(arc_easy)``.

Settings fixed for every run, as `lm_eval.simple_evaluate` sets them: lm_eval's default seeds
(the process's global `random` and numpy states are restored afterwards; PyTorch is never seeded,
so never imported), the plan's ``num_fewshot`` (a task whose YAML says 0 keeps 0), no chat template,
and bootstrapped standard errors (metrics without a closed form: f1, bleu, median, ...) from
`BOOTSTRAP_ITERS` resamples in this process. A mean (acc, exact_match, ...) has lm_eval's
closed-form standard error.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.plan.hub_policy import hub_reachable, offline_requested
from runtime.plan.sftc_error import ExitCode, SftcError

__all__ = [
    "BOOTSTRAP_ITERS",
    "BenchmarkError",
    "BenchmarkResult",
    "LmEvalMissingError",
    "UnknownTaskError",
    "check_tasks",
    "evaluate_lm",
    "run_benchmarks",
    "task_names",
]

BOOTSTRAP_ITERS = 1000  # lm_eval's default is 100000, in a process pool: minutes for one f1 or bleu
INSTALL = "pip install 'sftc[lm_eval]'"


class BenchmarkError(SftcError):
    """A benchmark that cannot run: the message names the task and what to do."""


class UnknownTaskError(BenchmarkError, ValueError):
    """A task name neither the include folder nor lm_eval's built-in tasks define."""

    exit_code = ExitCode.USAGE


class LmEvalMissingError(BenchmarkError, ImportError):
    """lm-evaluation-harness is not installed."""


# ---------------------------------------------------------------------- the result
def _json_number(value: float) -> float | str:
    return value if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))


def _number(value: float | str) -> float:
    return float(value)  # float("nan"), float("inf"), float("-inf") read the strings back


def _plain(obj: Any) -> Any:
    """A logged sample as JSON-safe data: tuples as lists, numpy scalars as numbers, NaN as a string."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (bool, str, int)) or obj is None:
        return obj
    if isinstance(obj, float):
        return _json_number(obj)
    if hasattr(obj, "item"):  # numpy scalar
        return _plain(obj.item())
    return str(obj)


@dataclass
class BenchmarkResult:
    """lm_eval's scores of one model: task -> metric -> value, with lm_eval's metric names."""

    scores: dict[str, dict[str, float]]
    stderr: dict[str, dict[str, float]]  # where lm_eval gives one
    higher_is_better: dict[str, dict[str, bool]]
    documents: dict[str, int]  # task -> documents scored (after `limit`); a group: its subtasks' sum
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # with log_samples: per document

    def values(self) -> dict[str, float]:
        """Every score under its gate name, ``metric(task)``."""
        from runtime.evaluate.gates import metric_key

        return {
            metric_key(metric, task): v for task, by_metric in self.scores.items() for metric, v in by_metric.items()
        }

    def to_dict(self) -> dict[str, Any]:
        numbers = lambda d: {t: {m: _json_number(v) for m, v in ms.items()} for t, ms in d.items()}  # noqa: E731
        out: dict[str, Any] = {
            "scores": numbers(self.scores),
            "stderr": numbers(self.stderr),
            "higher_is_better": {t: dict(ms) for t, ms in self.higher_is_better.items()},
            "documents": dict(self.documents),
        }
        if self.samples:
            out["samples"] = _plain(self.samples)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BenchmarkResult:
        numbers = lambda d: {t: {m: _number(v) for m, v in ms.items()} for t, ms in d.items()}  # noqa: E731
        return cls(
            scores=numbers(d.get("scores", {})),
            stderr=numbers(d.get("stderr", {})),
            higher_is_better={
                t: {m: bool(v) for m, v in ms.items()} for t, ms in d.get("higher_is_better", {}).items()
            },
            documents={t: int(n) for t, n in d.get("documents", {}).items()},
            samples={t: list(s) for t, s in d.get("samples", {}).items()},
        )


# ---------------------------------------------------------------------- which tasks
def _lm_eval() -> Any:
    try:
        import lm_eval
    except ImportError as e:
        raise LmEvalMissingError(
            f"benchmarks need lm-evaluation-harness, which is not installed ({e})", help=INSTALL
        ) from None
    return lm_eval


_MANAGERS: dict[tuple, Any] = {}


def _task_manager(include: str | None, defaults: bool) -> Any:
    """lm_eval's TaskManager over ``include`` (and its built-in tasks when ``defaults``), built once
    per process for the same folder contents (indexing the built-in tasks takes ~10 s)."""
    from lm_eval.tasks import TaskManager

    folder = Path(include) if include else None
    stamp = tuple(sorted((str(p), p.stat().st_mtime_ns) for p in folder.rglob("*.y*ml"))) if folder else ()
    key = (str(folder) if folder else None, defaults, stamp)
    if key not in _MANAGERS:
        _MANAGERS[key] = TaskManager(include_path=str(folder) if folder else None, include_defaults=defaults)
    return _MANAGERS[key]


def task_names(include: str | None, *, builtin: bool = True) -> list[str]:
    """The task, group and tag names lm_eval knows: those in ``include`` (a folder of task YAML
    files, or None) and, with ``builtin``, lm_eval's own."""
    _lm_eval()
    with _quiet():
        return list(_task_manager(include, builtin).all_tasks)


def _where(include: str | None) -> str:
    return f"the include folder {include} or lm_eval's built-in tasks" if include else "lm_eval's built-in tasks"


def _manager_for(tasks: Sequence[str], include: str | None) -> Any:
    """The TaskManager that defines every task (the include folder's alone when it does), or
    `UnknownTaskError` for the first name none defines."""
    if include and not Path(include).is_dir():
        raise BenchmarkError(f"benchmarks: the include folder {include} does not exist")
    if include:
        local = _task_manager(include, False)
        if all(name in local.task_index for name in tasks):
            return local
    manager = _task_manager(include, True)
    for name in tasks:
        if name not in manager.task_index:
            close = difflib.get_close_matches(name, manager.all_tasks, n=5, cutoff=0.6)
            raise UnknownTaskError(
                f"benchmarks: no lm_eval task {name!r} in {_where(include)}"
                + (f"; close names: {', '.join(close)}" if close else ""),
                help="`lm_eval ls tasks` lists the built-in tasks; a task of your own is a YAML file in the "
                "include folder with `task: <name>`",
            )
    return manager


def _network_error(e: BaseException) -> bool:
    names = ("Offline", "LocalEntryNotFound", "Connect", "Timeout", "NameResolution", "MaxRetry")
    seen: BaseException | None = e
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, (ConnectionError, TimeoutError)) or any(n in type(seen).__name__ for n in names):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def _offline_datasets() -> Iterator[None]:
    """datasets and huggingface_hub read only their caches (no ~20 s of retries on a dead network)."""
    import datasets
    from huggingface_hub import constants

    saved = (datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE, constants.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE, constants.HF_HUB_OFFLINE = saved


def _load_tasks(manager: Any, tasks: Sequence[str], include: str | None) -> list[Any]:
    """Each task's lm_eval object (its documents read: a hub dataset downloaded or taken from the cache)."""
    builtin = [t for t in tasks if not include or t not in _task_manager(include, False).task_index]
    offline, why = offline_requested(), "offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)"
    if builtin and not offline and not hub_reachable():
        offline, why = True, "the Hugging Face hub is not reachable (no network?)"
    loaded = []
    for name in tasks:
        try:
            with _offline_datasets() if offline else contextlib.nullcontext():
                built = manager.load([name])
        except Exception as e:  # noqa: BLE001
            reason = f"{type(e).__name__}: {str(e)[:300]}"
            if offline or _network_error(e):
                requested = offline and offline_requested()
                raise BenchmarkError(
                    f"benchmarks: the lm_eval task {name!r} needs its dataset from the Hugging Face hub, "
                    f"which is not in the datasets cache, and {why if offline else 'the hub did not answer'} "
                    f"({reason})",
                    help=("unset HF_HUB_OFFLINE / HF_DATASETS_OFFLINE if this machine is online; " if requested else "")
                    + "run once where the hub is reachable (the dataset is cached for later runs)",
                ) from e
            raise BenchmarkError(f"benchmarks: cannot load the lm_eval task {name!r}: {reason}") from e
        loaded += [built["groups"][name]] if name in built["groups"] else list(built["tasks"].values())
    return loaded


# ---------------------------------------------------------------------- running
@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    from runtime.evaluate.lm_eval_model import library_output_to_log

    with library_output_to_log():
        yield


@contextlib.contextmanager
def _global_random_restored() -> Iterator[None]:
    state, np_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(state)
        np.random.set_state(np_state)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _first_filter(entry: Mapping[str, Any]) -> dict[str, tuple[str, Any]]:
    """metric -> (filter, value) by the one rule: the ``none`` filter, else the first reported."""
    chosen: dict[str, tuple[str, Any]] = {}
    for key, value in entry.items():
        if "," not in key:
            continue  # alias, samples, name
        metric, filt = key.split(",", 1)
        if metric.endswith("_stderr") or not _is_number(value):
            continue
        if metric not in chosen or (filt == "none" and chosen[metric][0] != "none"):
            chosen[metric] = (filt, value)
    return chosen


def _read_results(results: Mapping[str, Any]) -> BenchmarkResult:
    from lm_eval.api.registry import is_higher_better

    entries = {**results.get("results", {}), **results.get("groups", {})}
    declared = results.get("higher_is_better", {})
    counts = {t: int(n.get("effective", n.get("original", 0))) for t, n in results.get("n-samples", {}).items()}
    subtasks = results.get("group_subtasks", {})
    scores: dict[str, dict[str, float]] = {}
    stderr: dict[str, dict[str, float]] = {}
    higher: dict[str, dict[str, bool]] = {}
    documents: dict[str, int] = {}

    def leaves(name: str, depth: int = 0) -> list[str]:
        if name not in subtasks or depth > 16:
            return [name]
        return [leaf for child in subtasks[name] for leaf in leaves(child, depth + 1)]

    for task, entry in entries.items():
        chosen = _first_filter(entry)
        if not chosen:
            continue  # a group lm_eval does not aggregate
        scores[task] = {m: float(v) for m, (_, v) in chosen.items()}
        errors = {m: entry.get(f"{m}_stderr,{filt}") for m, (filt, _) in chosen.items()}
        stderr[task] = {
            m: float(e) for m, e in errors.items() if isinstance(e, (int, float)) and not isinstance(e, bool)
        }
        higher[task] = {}
        for metric in chosen:
            flag = declared.get(task, {}).get(metric)
            if flag is None:
                try:
                    flag = is_higher_better(metric)
                except Exception:  # noqa: BLE001 -- a task's own metric lm_eval has no registry entry for
                    flag = None
            if flag is not None:
                higher[task][metric] = bool(flag)
        documents[task] = counts[task] if task in counts else sum(counts.get(t, 0) for t in leaves(task))
    samples = {}
    for task, logged in (results.get("samples") or {}).items():
        samples[task] = [
            _plain(
                {
                    "doc_id": s.get("doc_id"),
                    "target": s.get("target"),
                    "arguments": s.get("arguments"),
                    "resps": s.get("resps"),
                    "filtered_resps": s.get("filtered_resps"),
                    "filter": s.get("filter"),
                    **{m: s[m] for m in s.get("metrics", []) if m in s},
                }
            )
            for s in logged
        ]
    return BenchmarkResult(scores, stderr, higher, documents, samples)


def _configure(tasks: Mapping[str, Any], num_fewshot: int | None) -> None:
    """What `lm_eval.simple_evaluate` sets on each task: ``num_fewshot`` (a task whose YAML says 0
    keeps 0; None: the task's own, else 0) and the few-shot sampler's seed."""
    from lm_eval.defaults import DEFAULT_OTHER_SEED

    for task in tasks.values():
        own = task.get_config("num_fewshot")
        if num_fewshot is not None and own != 0:
            task.set_config(key="num_fewshot", value=num_fewshot)
        elif own is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=DEFAULT_OTHER_SEED)


def evaluate_lm(lm: Any, plan: Any, *, log_samples: bool = False) -> BenchmarkResult:
    """The plan's tasks (`runtime.plan.run_plan.BenchmarkPlan`) run on any lm_eval model ``lm``:
    `SftcLM`, or lm_eval's own backends (the tests compare with `HFLM` this way). Task names are
    checked and their documents read before the model is asked anything."""
    _lm_eval()
    from lm_eval.defaults import DEFAULT_OTHER_SEED, DEFAULT_RANDOM_SEED
    from lm_eval.evaluator import evaluate

    tasks = list(plan.tasks)
    if not tasks:
        raise BenchmarkError("benchmarks: no tasks to run")
    with _quiet():
        manager = _manager_for(tasks, plan.include)
        loaded = _load_tasks(manager, tasks, plan.include)
        task_dict = manager.load(loaded)
        _configure(task_dict["tasks"], plan.num_fewshot)
        with _global_random_restored():
            random.seed(DEFAULT_RANDOM_SEED)
            np.random.seed(DEFAULT_OTHER_SEED)
            results = evaluate(
                lm=lm,
                task_dict=task_dict,
                limit=plan.limit,
                bootstrap_iters=BOOTSTRAP_ITERS,
                log_samples=log_samples,
            )
    return _read_results(results)


def check_tasks(plan: Any) -> None:
    """Refuse a `BenchmarkPlan` whose lm_eval is missing or whose task names lm_eval does not know
    (`UnknownTaskError`, with close names): `sftc run` asks before its first step, so a misspelt
    task costs seconds, not a training run."""
    _lm_eval()
    with _quiet():
        _manager_for(list(plan.tasks), plan.include)


def run_benchmarks(
    model: Any,
    tokenizer: Any,
    plan: Any,
    *,
    max_length: int | None = None,
    log_samples: bool = False,
    console: Any = None,
) -> BenchmarkResult:
    """Run ``plan`` (a `runtime.plan.run_plan.BenchmarkPlan`) on an sftc model and its tokenizer.

    ``max_length`` caps the model's input (default: its config's ``max_position_embeddings``);
    ``log_samples`` keeps each document's requests, answers and metrics in
    `BenchmarkResult.samples`; ``console`` (rich) shows a progress line per request kind.
    """
    from runtime.evaluate.lm_eval_model import SftcLM

    check_tasks(plan)  # a wrong name is refused before the model is touched
    lm = SftcLM(model, tokenizer, batch_size=plan.batch_size, max_length=max_length, console=console)
    return evaluate_lm(lm, plan, log_samples=log_samples)
