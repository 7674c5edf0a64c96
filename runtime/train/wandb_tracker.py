"""The Weights & Biases tracker: one W&B run per sftc run, continued (same run id) when the
sftc run resumes.

What it logs, as the MLflow tracker does: the decided plan as the run's config (nested as in
`plan.json`), every train and eval record of `metrics.jsonl` under TensorBoard's names
(`train/loss`, `eval/loss`, `eval/SOURCE/loss`) against the metric `step` (the training step,
so a resume that replays a few steps never meets W&B's rule that its own step only grows), then in
the summary the final metrics, the baseline's, the gains, each gate (`gate/...`, 1 passed, 0
failed, and `sftc/gate/...` with its value and threshold) and the verdict `sftc/verdict`; the
report's files are saved with the run.

W&B keeps its files under `RUN/wandb/` (`dir` is the run directory); `mode = offline` writes
only there, for `wandb sync` later. `wandb.log` never waits for the network (W&B's own service
process sends). When W&B cannot be reached at the start (no network, no API key), the run is
kept offline instead after one warning that says how to sync it; the run goes on. Credentials
come only from W&B's own environment (`WANDB_API_KEY`, `wandb login`'s netrc), which W&B reads
itself: sftc neither stores nor prints them.
"""

from __future__ import annotations

import os
import secrets
import string
from pathlib import Path
from typing import Any

from runtime.plan.run_plan import Plan, TrackerPlan
from runtime.train import trackers
from runtime.train.trackers import Warn, reason

# Reaching W&B at the start: a few seconds, not W&B's default minute and a half.
INIT_TIMEOUT_S = 10.0
# The files of a run directory saved with the W&B run, when present.
EXIT_CODES = {"FINISHED": 0, "KILLED": 130, "FAILED": 1}


def new_run_id() -> str:
    """A W&B run id (8 lowercase letters and digits, W&B's own shape), chosen here so that
    `trackers.json` can name the run before W&B has started it."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def _init(setting: TrackerPlan, plan: Plan, run_dir: Path, run_id: str, mode: str):
    import wandb

    settings = wandb.Settings(
        silent=True,  # sftc's terminal is its own: W&B's lines go to RUN/wandb/*/logs
        console="off",  # never wrap sys.stdout (the progress bar)
        init_timeout=INIT_TIMEOUT_S,
    )
    return wandb.init(
        project=setting.project or plan.name,
        entity=setting.entity,
        mode=mode,
        dir=str(run_dir),
        id=run_id,
        resume="allow",  # the run trackers.json names, else a new one with that id
        name=Path(run_dir).name,
        config=plan.to_dict(),
        tags=["sftc"],
        settings=settings,
        reinit="create_new",
    )


def start(setting: TrackerPlan, plan: Plan, run_dir: Path, known: dict | None, warn: Warn) -> WandbTracker | None:
    """Start (or continue, with the id `known` keeps) the W&B run; online, when W&B cannot be
    reached, the same run offline after one warning; None (after one warning) when even that fails."""
    os.environ.setdefault("WANDB_SILENT", "true")
    run_id = (known.get("run_id") if known else None) or new_run_id()
    mode = setting.mode or "online"
    run_dir = Path(run_dir)
    try:
        try:
            run = _init(setting, plan, run_dir, run_id, mode)
        except Exception as error:  # noqa: BLE001 - online W&B unreachable: keep the run offline
            if mode != "online":
                raise
            warn(
                f"wandb: cannot reach W&B ({reason(error)}); this run is kept offline in {run_dir / 'wandb'}: "
                f"`wandb sync {run_dir / 'wandb'}/offline-run-*-{run_id}` uploads it later"
            )
            mode = "offline"
            import wandb

            wandb.teardown()  # the failed start still holds the run id in W&B's service
            run = _init(setting, plan, run_dir, run_id, mode)
        run.define_metric("step")
        for prefix in ("train/*", "eval/*"):
            run.define_metric(prefix, step_metric="step")
    except Exception as error:  # noqa: BLE001 - a tracker never stops the run: say so once
        warn(
            f"wandb: cannot start a W&B run ({reason(error)}); this run is not tracked there, its metrics "
            f"stay in {run_dir / 'metrics.jsonl'}"
        )
        return None
    return WandbTracker(run, mode, warn)


class WandbTracker:
    """One W&B run. `wandb.log` hands records to W&B's service process, so training never waits."""

    def __init__(self, run, mode: str, warn: Warn):
        self.run, self.mode, self.warn = run, mode, warn
        self.lost = False

    def identity(self) -> dict[str, Any]:
        """What `trackers.json` keeps to continue this run: no credentials."""
        return {
            "run_id": self.run.id,
            "project": self.run.project,
            "entity": self.run.entity or None,
            "mode": self.mode,
            "dir": self.run.dir,
        }

    def _do(self, action, *args, **kwargs) -> None:
        if self.lost:
            return
        try:
            action(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - a lost tracker never stops the run: say so once
            self.lost = True
            self.warn(
                f"wandb: the W&B run stopped taking records ({reason(error)}); the rest of this run is not tracked "
                "there, its metrics stay in the run directory"
            )

    def metrics(self, record: dict[str, Any]) -> None:
        """A train or eval record of `metrics.jsonl`, under TensorBoard's names, at its step."""
        values: dict[str, Any] | None = trackers.record_values(record)
        if values is None:
            return
        values["step"] = int(record["step"])
        self._do(self.run.log, values)

    def finish(self, outcome, steps: int, run_dir: Path) -> None:
        """In the summary: final metrics, the baseline's and the gains, each gate, the verdict; the
        report's files saved with the run."""
        summary: dict[str, Any] = dict(trackers.outcome_values(outcome))
        summary["sftc/verdict"] = "accepted" if outcome.accepted else "rejected"
        summary["sftc/steps"] = steps
        summary |= {f"sftc/gate/{name}": text for name, text in trackers.gate_texts(outcome).items()}
        self._do(self.run.summary.update, summary)
        for name in trackers.REPORT_FILES:
            if (Path(run_dir) / name).exists():
                self._do(self.run.save, str(Path(run_dir) / name), base_path=str(run_dir), policy="now")

    def close(self, status: str) -> None:
        """End the W&B run: exit code 0 when judged, 130 when interrupted, else 1."""
        try:
            import wandb

            self.run.finish(exit_code=EXIT_CODES.get(status, 1))
            wandb.teardown()  # W&B's service process ends once everything is written to RUN/wandb/
        except Exception as error:  # noqa: BLE001
            self.warn(f"wandb: the W&B run did not end cleanly ({reason(error)})")
