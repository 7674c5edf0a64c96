"""Whether an unfinished run may be resumed by the inputs of this invocation.

Resuming continues the saved weights and optimizer state, so every input that shaped
them must be the one the run started with: the decided plan's model, data and training
settings, and the inputs `runtime.plan.run_inputs` names for resuming (the content of every training
data file, the tokenizer's files, the base checkpoint's files, dtype and quantization). Settings that do not touch
the weights (how often to log, evaluate or checkpoint, how many checkpoints to keep, how
many non-finite steps to tolerate, the eval block, the gates, the output) may change: they
take effect from the resumed step on.

`differences` lists what changed, one line each, in the `~ key: old -> new` form that
`sftc diff` uses; an empty list means the run may resume.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from runtime.plan.run_inputs import Inputs
from runtime.plan.run_plan import Plan

# Keys of the plan that do not change what a step computes.
FREE_TO_CHANGE = {
    "spec_hash",
    "spec_path",
    "version",
    "eval",
    "gates",
    "data_gates",
    "output",
    "train.checkpoint_every",
    "train.checkpoint_every_epochs",
    "train.keep",
    "train.log_every",
    "train.max_skipped_steps",
}


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping) and value:
        for key in value:
            yield from _flatten(value[key], f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)) and value and any(isinstance(v, Mapping) for v in value):
        for index, item in enumerate(value):
            yield from _flatten(item, f"{prefix}[{index}]")
    else:
        yield prefix, value


def _free(key: str) -> bool:
    return any(key == free or key.startswith(free + ".") or key.startswith(free + "[") for free in FREE_TO_CHANGE)


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def plan_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """`~ train.optimizer.lr: 0.01 -> 0.001` for every weight-shaping key that differs."""
    old, new = dict(_flatten(saved)), dict(_flatten(current))
    lines = []
    for key in sorted(set(old) | set(new)):
        if _free(key) or old.get(key) == new.get(key):
            continue
        if key not in old:
            lines.append(f"+ {key}: {_show(new[key])}")
        elif key not in new:
            lines.append(f"- {key}: {_show(old[key])}")
        else:
            lines.append(f"~ {key}: {_show(old[key])} -> {_show(new[key])}")
    return lines


def differences(run_dir: Path, plan: Plan, inputs: Inputs) -> list[str]:
    """What differs between the run in `run_dir` and the inputs this invocation prepared: the
    plan's weight-shaping settings, and the inputs `runtime.plan.run_inputs` names for resuming (the data,
    the tokenizer, the base checkpoint's weights, dtype and quantization)."""
    run_dir = Path(run_dir)
    saved_plan = json.loads((run_dir / "plan.json").read_text())
    if saved_plan.get("version") != plan.version:
        return [
            f"~ plan format: version {saved_plan.get('version')} -> {plan.version} (the run was made by another sftc)"
        ]
    lines = plan_differences(saved_plan, json.loads(plan.to_json()))  # as saved: lists, not tuples
    manifest_path = run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    saved = Inputs.from_dict(manifest.get("inputs"))
    if saved is None:
        return lines + [
            "~ inputs: the run was recorded by an older sftc, without the identity of its base weights "
            "and tokenizer, so they cannot be compared"
        ]
    said = {line.split(":", 1)[0] for line in lines}  # `~ model.dtype` is a setting of the plan too: once
    return lines + [line for line in inputs.changes(saved, "resume") if line.split(":", 1)[0] not in said]
