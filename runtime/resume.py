"""Whether an unfinished run may be resumed by the inputs of this invocation.

Resuming continues the saved weights and optimizer state, so every input that shaped
them must be the one the run started with: the decided plan's model, data and training
settings, the content of every data file, and the tokenizer. Settings that do not touch
the weights (how often to log, evaluate or checkpoint, how many checkpoints to keep, how
many non-finite steps to tolerate, the eval block, the gates, the output) may change: they
take effect from the resumed step on.

`differences` lists what changed, one line each, in the `~ key: old -> new` form that
`sftc diff` uses; an empty list means the run may resume.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Mapping

from .plan import Plan

# Keys of the plan that do not change what a step computes.
FREE_TO_CHANGE = {
    "spec_hash", "spec_path", "version", "eval", "gates", "output",
    "train.checkpoint_every", "train.checkpoint_every_epochs", "train.keep", "train.log_every",
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


def differences(run_dir: Path, plan: Plan, fingerprints: Mapping[str, str], tokenizer_print: str) -> list[str]:
    """What differs between the run in `run_dir` and the inputs this invocation prepared."""
    run_dir = Path(run_dir)
    lines = []
    saved_plan = json.loads((run_dir / "plan.json").read_text())
    if saved_plan.get("version") != plan.version:
        return [f"~ plan format: version {saved_plan.get('version')} -> {plan.version} (the run was made by another sftc)"]
    lines += plan_differences(saved_plan, json.loads(plan.to_json()))  # as saved: lists, not tuples
    manifest_path = run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    saved_prints = manifest.get("data", {}).get("fingerprints", {})
    for name in sorted(set(saved_prints) | set(fingerprints)):
        old, new = saved_prints.get(name), fingerprints.get(name)
        if old != new:
            lines.append(f"~ data {name}: content changed (fingerprint {str(old)[:12]} -> {str(new)[:12]})")
    saved_tokenizer = manifest.get("tokenizer")
    if saved_tokenizer is None and (run_dir / "tokenizer").is_dir():
        from .data.tokenize import tokenizer_fingerprint
        from .tokenizer import load_tokenizer

        saved_tokenizer = tokenizer_fingerprint(load_tokenizer(run_dir / "tokenizer"))
    if saved_tokenizer is not None and saved_tokenizer != tokenizer_print:
        lines.append(f"~ tokenizer: changed (fingerprint {saved_tokenizer[:12]} -> {tokenizer_print[:12]}): "
                     "the saved weights were trained on the old vocabulary")
    return lines
