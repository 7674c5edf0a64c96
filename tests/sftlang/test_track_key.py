"""`output { track = [...] }`: the trackers a run logs to, lowered to `OutputPlan.track`.

The default is today's `[tensorboard]`; `mlflow`'s experiment, `wandb`'s and `trackio`'s
project default to the spec's name (`wandb`'s mode to online) and MLflow's uri stays unset (the
runtime reads MLFLOW_TRACKING_URI); a plan.json from before the key still loads; unknown and
repeated trackers and credentials in a uri are refused.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from runtime.plan.run_plan import Plan, TrackerPlan
from sftlang.check import check_spec_file
from sftlang.diagnostics import render_plain
from sftlang.emit import emit_spec
from sftlang.lower import lower
from sftlang.resolve import load_spec

SPEC = """\
sft "support"
model {
    base = init llama(layers = 1, dim = 32, heads = 2, ffn = 64, vocab = 320)
    tokenizer = train sentencepiece(vocab = 320) on qa
}
data qa = jsonl("qa.jsonl")
train {
    steps = 4
    batch = 2
}
output {
TRACK}
"""


def write(root: Path, track: str | None) -> Path:
    rows = [{"prompt": f"question {i} about the order", "completion": f"answer {i}"} for i in range(20)]
    (root / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = root / "spec.sft"
    path.write_text(SPEC.replace("TRACK", f"    track = {track}\n" if track is not None else ""))
    return path


def compiled(root: Path, track: str | None) -> Plan:
    spec, problems = check_spec_file(write(root, track), devices=1, offline=True)
    assert spec is not None and problems == [], "\n".join(render_plain(p) for p in problems)
    return lower(spec)


def test_the_default_is_tensorboard_as_before(tmp_path):
    assert compiled(tmp_path, None).output.track == (TrackerPlan("tensorboard"),)


def test_mlflow_lowers_with_the_spec_name_as_its_experiment(tmp_path):
    plan = compiled(tmp_path, '[tensorboard, mlflow(uri = "http://127.0.0.1:5000")]')
    assert plan.output.track == (
        TrackerPlan("tensorboard"),
        TrackerPlan("mlflow", uri="http://127.0.0.1:5000", experiment="support"),
    )
    assert Plan.from_json(plan.to_json()) == plan
    assert compiled(tmp_path, '[mlflow(experiment = "team")]').output.track == (
        TrackerPlan("mlflow", experiment="team"),
    )
    assert compiled(tmp_path, "[mlflow]").output.track == (TrackerPlan("mlflow", experiment="support"),)


def test_wandb_and_trackio_lower_with_the_spec_name_as_their_project(tmp_path):
    plan = compiled(tmp_path, '[tensorboard, wandb(entity = "team", mode = offline), trackio]')
    assert plan.output.track == (
        TrackerPlan("tensorboard"),
        TrackerPlan("wandb", project="support", entity="team", mode="offline"),
        TrackerPlan("trackio", project="support"),
    )
    assert Plan.from_json(plan.to_json()) == plan
    assert compiled(tmp_path, '[wandb(project = "p"), trackio(project = "q")]').output.track == (
        TrackerPlan("wandb", project="p", mode="online"),
        TrackerPlan("trackio", project="q"),
    )


def test_the_emitted_spec_keeps_the_trackers(tmp_path):
    spec, _ = check_spec_file(write(tmp_path, '[mlflow(experiment = "team")]'), devices=1, offline=True)
    assert spec is not None
    assert re.search(r'track +\= \[mlflow\(experiment = "team"\)\]', emit_spec(spec))
    (tmp_path / "again.sft").write_text(emit_spec(spec))
    assert lower(load_spec(tmp_path / "again.sft")[0]).output.track == lower(spec).output.track


def test_a_plan_from_before_track_loads_with_tensorboard(tmp_path):
    d = compiled(tmp_path, None).to_dict()
    del d["output"]["track"]
    assert Plan.from_dict(d).output.track == (TrackerPlan("tensorboard"),)


@pytest.mark.parametrize(
    "track, expected",
    [
        ("[tensorbord]", "error[E015]: unknown value `tensorbord` for `track`"),
        ('[neptune(project = "x")]', "error[E015]: unknown tracker `neptune`"),
        ('[wandb(projet = "x")]', "error[E012]: unknown argument `projet` for tracker `wandb`"),
        ("[wandb(mode = offlin)]", "error[E015]"),
        ('[trackio(entity = "x")]', "error[E012]: unknown argument `entity` for tracker `trackio`"),
        ('[mlflow(urI = "x")]', "error[E012]: unknown argument `urI` for tracker `mlflow`"),
        ('[mlflow, mlflow(experiment = "x")]', "error[E013]: `mlflow` is listed twice"),
        ("[]", "error[E022]: `track` must not be empty"),
        (
            '[mlflow(uri = "https://me:secret@host:5000")]',
            "error[E074]: the `uri` of `mlflow` holds credentials, which the run directory would keep",
        ),
    ],
)
def test_bad_trackers_are_refused(tmp_path, track, expected):
    _, problems = check_spec_file(write(tmp_path, track), devices=1, offline=True)
    assert expected in "\n".join(render_plain(p) for p in problems)
