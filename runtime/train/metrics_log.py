"""Where training metrics go: `metrics.jsonl` in the run directory (one JSON object
per line, appended across resumes), TensorBoard event files under `tb/` (when `track` lists
`tensorboard`), and every train and eval record to the run's other trackers
(`runtime.train.trackers`), from this one place.

Record kinds, told apart by `kind`:

    {"kind": "train", "step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s",
     "token_accuracy", "elapsed_s"}
    {"kind": "eval", "step", "split": "eval", "source": null | NAME,
     "loss", "perplexity", "token_accuracy", "tokens"}
    {"kind": "event", "step", "event": "start" | "resume" | "checkpoint" | "stop" | "nan" | "interrupt" | "done", ...}

`step` is the number of optimizer steps completed when the record was written.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.train.trackers import Trackers


class MetricsLog:
    def __init__(self, run_dir: str | Path, tensorboard: bool = True, trackers: Trackers | None = None):
        self.trackers = trackers
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        self._writer = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(str(Path(run_dir) / "tb"))

    def write(self, record: dict[str, Any]) -> None:
        record = {key: _plain(value) for key, value in record.items()}
        record.setdefault("time", round(time.time(), 3))
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self.trackers is not None:
            self.trackers.metrics(record)
        if self._writer is not None and record.get("kind") in ("train", "eval"):
            prefix = record["kind"] if record.get("source") is None else f"eval/{record['source']}"
            for key, value in record.items():
                if key not in ("kind", "step", "time", "source", "split") and isinstance(value, (int, float)):
                    self._writer.add_scalar(f"{prefix}/{key}", value, record["step"])

    def event(self, step: int, event: str, **details: Any) -> None:
        self.write({"kind": "event", "step": step, "event": event, **details})

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return round(value, 7) if value == value and abs(value) != float("inf") else str(value)
    return value


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
