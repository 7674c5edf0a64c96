"""Which lm-evaluation-harness tasks exist, read from files: `sftc check` knows a spec's benchmark
tasks and their metrics without importing lm_eval (seconds) or reaching the hub.

A spec's own tasks are YAML files in the `include` folder of `lm_eval(...)`; lm_eval's built-in
tasks are the YAML files it ships. Both are scanned as text. The scan of the built-in ones is a
good guess, not lm_eval's own index (a task made in Python is not seen), so an unknown built-in
name is a warning; the run resolves every name with lm_eval itself before its first step.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml  # type: ignore[import-untyped]

__all__ = ["LocalTask", "local_tasks", "installed_tasks"]


@dataclass(frozen=True)
class LocalTask:
    """A task (or group) a YAML file of the spec's `include` folder defines."""

    name: str
    file: Path
    metrics: tuple[str, ...]  # its `metric_list`; empty for a group or when it sets none


class _TaskLoader(yaml.SafeLoader):
    """lm_eval's YAML with its tags (`!function utils.process_docs`) read as plain values."""


_TaskLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def local_tasks(folder: Path) -> dict[str, LocalTask]:
    """Every task and group the YAML files under ``folder`` name, by name; unreadable files are
    skipped (lm_eval reports them itself when the run loads the tasks)."""
    found: dict[str, LocalTask] = {}
    for path in sorted(folder.rglob("*.yaml")) + sorted(folder.rglob("*.yml")):
        try:
            config = yaml.load(path.read_text(encoding="utf-8"), Loader=_TaskLoader)
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if not isinstance(config, dict):
            continue
        metrics = tuple(
            str(m["metric"]) for m in config.get("metric_list") or () if isinstance(m, dict) and "metric" in m
        )
        for key in ("task", "group"):
            name = config.get(key)
            if isinstance(name, str) and name not in found:
                found[name] = LocalTask(name, path, metrics if key == "task" else ())
    return found


_NAMED = re.compile(r"^(?:task|group|tag):[ \t]*([A-Za-z0-9_.\-]+)[ \t]*$", re.M)
_LISTED = re.compile(r"^(?:tag):[ \t]*\n((?:[ \t]+-[ \t]*[A-Za-z0-9_.\-]+[ \t]*\n)+)", re.M)


@lru_cache(maxsize=1)
def installed_tasks() -> frozenset[str] | None:
    """The task, group and tag names in the YAML files lm_eval ships; None when lm_eval is not
    installed. Read as text (about half a second), not through lm_eval's index."""
    found = importlib.util.find_spec("lm_eval")
    if found is None or found.origin is None:
        return None
    names: set[str] = set()
    for path in (Path(found.origin).parent / "tasks").rglob("*.yaml"):
        try:
            text = path.read_text(encoding="utf-8", errors="ignore")
        except OSError:
            continue
        names.update(_NAMED.findall(text))
        for block in _LISTED.findall(text):
            names.update(line.strip().lstrip("-").strip() for line in block.splitlines() if line.strip())
    return frozenset(names)
