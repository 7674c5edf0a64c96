"""The Trackio tracker: one Trackio run per sftc run in Trackio's local store (`TRACKIO_DIR`,
else `~/.cache/huggingface/trackio`; `trackio show` opens it), continued when the sftc run
resumes (Trackio's `resume = "allow"` on the run's name, which `RUN/trackers.json` keeps).

What it logs: the decided plan as the run's config, every train and eval record of
`metrics.jsonl` at its step under TensorBoard's names (`train/loss`, `eval/loss`,
`eval/SOURCE/loss`), then at the last step the final metrics, the baseline's, the gains, each gate
(`gate/...`, 1 passed, 0 failed) and the verdict as `sftc/accepted` (1 or 0). Trackio has no
summary nor saved files: the report stays in the run directory. Trackio's own lines on the
terminal go to sftc.log instead; a store that fails is reported once and the run goes on.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any

from runtime.plan.run_plan import Plan, TrackerPlan
from runtime.train import trackers
from runtime.train.trackers import Warn, reason

LOG = logging.getLogger("sftc.trackio")


@contextlib.contextmanager
def _quiet():
    """Trackio prints what it does: to sftc.log, not over the progress bar."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            yield
    finally:
        if out.getvalue().strip():
            LOG.info("%s", out.getvalue().strip())


def start(setting: TrackerPlan, plan: Plan, run_dir: Path, known: dict | None, warn: Warn) -> TrackioTracker | None:
    """Start (or continue, by the name `known` keeps) the Trackio run; None after one warning
    when Trackio fails."""
    project = setting.project or plan.name
    name = (known.get("run") if known else None) or Path(run_dir).name
    try:
        with _quiet():
            import trackio

            run = trackio.init(
                project=project,
                name=name,
                config=plan.to_dict(),
                resume="allow",
                auto_log_gpu=False,
                auto_log_cpu=False,
                capture_console=False,
                embed=False,
            )
    except Exception as error:  # noqa: BLE001 - a tracker never stops the run: say so once
        warn(
            f"trackio: cannot start a Trackio run ({reason(error)}); this run is not tracked there, its metrics "
            f"stay in {Path(run_dir) / 'metrics.jsonl'}"
        )
        return None
    return TrackioTracker(run, project, warn)


class TrackioTracker:
    """One Trackio run; Trackio batches what it is given and writes it from its own thread."""

    def __init__(self, run, project: str, warn: Warn):
        self.run, self.project, self.warn = run, project, warn
        self.lost = False

    def identity(self) -> dict[str, Any]:
        return {"project": self.project, "run": self.run.name}

    def _log(self, values: dict[str, float], step: int) -> None:
        if self.lost or not values:
            return
        try:
            with _quiet():
                self.run.log(values, step=step)
        except Exception as error:  # noqa: BLE001 - a lost tracker never stops the run: say so once
            self.lost = True
            self.warn(
                f"trackio: the Trackio run stopped taking records ({reason(error)}); the rest of this run is not "
                "tracked there, its metrics stay in the run directory"
            )

    def metrics(self, record: dict[str, Any]) -> None:
        """A train or eval record of `metrics.jsonl`, under TensorBoard's names, at its step."""
        values = trackers.record_values(record)
        if values is not None:
            self._log(values, int(record["step"]))

    def finish(self, outcome, steps: int, run_dir: Path) -> None:
        """At the last step: final metrics, the baseline's and the gains, each gate, the verdict."""
        metrics = trackers.outcome_values(outcome)
        metrics["sftc/accepted"] = 1.0 if outcome.accepted else 0.0
        self._log(metrics, steps)

    def close(self, status: str) -> None:
        """Flush and end the Trackio run (Trackio keeps no status)."""
        try:
            with _quiet():
                import trackio

                trackio.finish()  # the current run (this one): finished, and not again at exit
        except Exception as error:  # noqa: BLE001
            self.warn(f"trackio: the Trackio run did not end cleanly ({reason(error)})")
