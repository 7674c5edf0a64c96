"""A run directory and what goes in it: the resolved spec, the decided plan, the
manifest, metrics, checkpoints, the report and the export.

    runs/<name>/<timestamp>/
        spec.sft        the resolved spec (use applied, defaults written, absolute paths)
        plan.json       the plan with every number decided
        manifest.json   spec hash, the identity of every input (runtime.plan.run_inputs), data stats, versions, devices
        audit.json      what `sftc audit` finds in the data trained on (runtime.audit.audit_report.Audit.to_dict)
        metrics.jsonl   training and eval records (runtime.train.metrics_log)
        tb/             TensorBoard event files
        trackers.json   the MLflow, W&B or Trackio run this run logs to, continued on resume (runtime.train.trackers)
        wandb/          W&B's files of the run (`track = [wandb(...)]`; offline: what `wandb sync` uploads)
        tokenizer/      the tokenizer the run used (Hugging Face files)
        checkpoints/    Orbax checkpoints (train state + data position)
        status.json     where the run stands: trained (evaluation to do) | done | interrupted | nan | error
        loss.png, topics.png, report.md, report.json, export/

`sftc run` resumes the latest run directory when it is unfinished (interrupted, or
trained but not yet evaluated) and its inputs still match (`runtime.runs.resume`); when they
do not, it refuses and lists the differences. `--fresh` always starts a new directory.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from runtime.plan.run_plan import Plan, PlanVersionError

FINISHED = ("done",)  # "trained" means evaluation is still to do: `sftc run` finishes it


def new_run_dir(root: Path) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = root / stamp
    suffix = 1
    while path.exists():
        suffix += 1
        path = root / f"{stamp}-{suffix}"
    path.mkdir(parents=True)
    return path


def read_status(run_dir: Path) -> dict:
    path = run_dir / "status.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_status(run_dir: Path, status: str, **details: Any) -> None:
    record = {"status": status, "time": _dt.datetime.now().isoformat(timespec="seconds"), **details}
    (run_dir / "status.json").write_text(json.dumps(record, indent=2) + "\n")


def unfinished(root: Path) -> Path | None:
    """The newest run directory under `root` if it did not finish and has a checkpoint to
    resume from (a run that failed before its first checkpoint has nothing to continue).
    Whether its inputs still match is `runtime.runs.resume.differences`'s question."""
    if not root.is_dir():
        return None
    runs = sorted((p for p in root.iterdir() if (p / "plan.json").is_file()), key=lambda p: p.name)
    if not runs:
        return None
    latest = runs[-1]
    if read_status(latest).get("status") in FINISHED:
        return None
    checkpoints = latest / "checkpoints"
    if not checkpoints.is_dir() or not any(p.name.isdigit() for p in checkpoints.iterdir()):
        return None
    return latest


def package_versions() -> dict[str, str]:
    from runtime.preflight.input_fingerprints import versions

    return versions(
        (
            "sftc",
            "jax",
            "jaxlib",
            "flax",
            "optax",
            "orbax-checkpoint",
            "transformers",
            "datasets",
            "tokenizers",
            "sentencepiece",
            "numpy",
        )
    )


def devices_summary() -> dict[str, Any]:
    import jax

    devices = jax.devices()
    return {
        "platform": devices[0].platform,
        "kind": devices[0].device_kind,
        "count": len(devices),
        "processes": jax.process_count(),
    }


def write_manifest(run_dir: Path, plan: Plan, stats: dict, inputs: Any) -> None:
    """``inputs``: the run's `runtime.plan.run_inputs.Inputs`; ``data.fingerprints`` repeats its data parts
    by name (a separate eval file as ``faq/eval``) for a reader that wants only those."""
    prints = {**inputs.parts["data"], **{f"{k}/eval": v for k, v in inputs.parts["eval_data"].items()}}
    manifest = {
        "name": plan.name,
        "spec_path": plan.spec_path,
        "spec_hash": plan.spec_hash,
        "inputs": inputs.to_dict(),
        "data": {"fingerprints": prints, "stats": stats},
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "devices": devices_summary(),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "cwd": os.getcwd(),
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def write_audit(run_dir: Path, audit: Any) -> None:
    """The audit of the data the run trains on (an `Audit`): `sftc diff RUN RUN` compares findings."""
    (run_dir / "audit.json").write_text(json.dumps(audit.to_dict(), ensure_ascii=False, indent=1) + "\n")


def write_plan(run_dir: Path, plan: Plan) -> None:
    (run_dir / "plan.json").write_text(plan.to_json(indent=2) + "\n")


def read_plan(run_dir: Path) -> Plan:
    """The run's plan; a plan.json another sftc wrote is a PrepareError that says so."""
    try:
        return Plan.from_json((Path(run_dir) / "plan.json").read_text())
    except PlanVersionError as error:
        from runtime.preflight.prepare import PrepareError

        raise PrepareError(f"{run_dir}: {error}") from None
