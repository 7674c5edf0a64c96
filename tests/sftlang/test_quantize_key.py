"""`model { quantize = ... }`: a LoRA run's frozen base stored in int8 or nf4 (QLoRA).

The key lowers to `ModelPlan.quantize` (None for `none`), survives the plan's JSON, the
emitted spec, `sftc fmt` and `sftc diff`, and is refused without an adapter to train over it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.plan.run_plan import QUANTIZATIONS, Plan
from sftlang import schema
from sftlang.check import check_spec_file
from sftlang.diagnostics import render_plain
from sftlang.diff import diff_specs
from sftlang.emit import emit_spec
from sftlang.fmt import format_text
from sftlang.lower import lower
from sftlang.resolve import load_spec

SPEC = """\
sft "qlora"
model {
    base = hf("base")
    adapter = lora(rank = 8, targets = [q, v])
QUANTIZE}
data qa = jsonl("qa.jsonl") {
    split eval = 50% seed 1
}
train {
    steps = 10
    batch = 2
}
"""


def write(root: Path, quantize: str | None, spec: str = SPEC) -> Path:
    """A spec over a local hf checkpoint; `quantize` None leaves the key out."""
    (root / "base").mkdir(exist_ok=True)
    (root / "base" / "config.json").write_text("{}")
    (root / "qa.jsonl").write_text('{"prompt": "p1", "completion": "c1"}\n{"prompt": "p2", "completion": "c2"}\n')
    path = root / f"{quantize or 'absent'}.sft"
    path.write_text(spec.replace("QUANTIZE", f"    quantize = {quantize}\n" if quantize is not None else ""))
    return path


def errors(path: Path):
    _, problems = check_spec_file(path, devices=1, offline=True)
    return [d for d in problems if d.is_error]


def test_the_values_are_the_plans():
    assert schema.keys_of("model")["quantize"].type.choices == ("none",) + QUANTIZATIONS


@pytest.mark.parametrize("quantize, planned", [("nf4", "nf4"), ("int8", "int8"), ("none", None), (None, None)])
def test_quantize_lowers_to_the_plan_and_round_trips(tmp_path, quantize, planned):
    path = write(tmp_path, quantize)
    assert errors(path) == []
    spec, _ = load_spec(path)
    plan = lower(spec)
    assert plan.model.quantize == planned and plan.model.adapter.rank == 8
    assert Plan.from_json(plan.to_json()) == plan
    assert Plan.from_json(plan.to_json()).model.quantize == planned
    # the resolved spec a run directory keeps says it too, and lowers to the same model
    again = tmp_path / "again.sft"
    again.write_text(emit_spec(spec))
    assert f"quantize = {quantize or 'none'}" in " ".join(again.read_text().split())
    respec, problems = load_spec(again)
    assert problems == [] and lower(respec).model == plan.model


def test_an_absent_quantize_is_the_same_spec_as_none(tmp_path):
    absent, none = load_spec(write(tmp_path, None))[0], load_spec(write(tmp_path, "none"))[0]
    assert diff_specs(absent, none).same
    assert lower(absent).spec_hash == lower(none).spec_hash


def test_sftc_diff_names_the_change(tmp_path):
    old, new = load_spec(write(tmp_path, None))[0], load_spec(write(tmp_path, "nf4"))[0]
    [change] = diff_specs(old, new).changes
    assert (change.kind, change.path, change.old, change.new) == ("changed", "model.quantize", "none", "nf4")


def test_fmt_aligns_quantize_and_keeps_it():
    text = 'model {\nbase=hf("m")\nadapter=lora(rank=16)\nquantize=nf4\n}\n'
    formatted, problems = format_text(text)
    assert problems == []
    assert formatted == 'model {\n    base     = hf("m")\n    adapter  = lora(rank = 16)\n    quantize = nf4\n}\n'
    assert format_text(formatted)[0] == formatted


@pytest.mark.parametrize("quantize", QUANTIZATIONS)
def test_quantize_without_an_adapter_is_E072(tmp_path, quantize):
    path = write(tmp_path, quantize, SPEC.replace("    adapter = lora(rank = 8, targets = [q, v])\n", ""))
    [error] = errors(path)
    assert error.code == "E072" and error.message == f"`quantize = {quantize}` needs `adapter = lora(...)`"
    line = path.read_text().split("\n").index(f"    quantize = {quantize}") + 1
    assert Path(error.span.file).resolve() == path.resolve()  # diagnostics name it relative to the cwd when shorter
    assert (error.span.line, error.span.column) == (line, len("    quantize = ") + 1)
    rendered = render_plain(error).splitlines()
    assert f" --> {error.span.file}:{line}:{len('    quantize = ') + 1}" in rendered
    assert f"{line} |     quantize = {quantize}" in rendered
    assert f"  | {' ' * len('    quantize = ')}{'^' * len(quantize)}" in rendered
    assert "add `adapter = lora(rank = 16)`, or remove `quantize`" in error.help


def test_quantize_on_an_init_model_is_E072(tmp_path):
    spec = SPEC.replace(
        '    base = hf("base")\n    adapter = lora(rank = 8, targets = [q, v])\n',
        "    base = init llama(layers = 1, dim = 32, heads = 2, ffn = 64)\n"
        '    tokenizer = sentencepiece("tok.model")\n',
    )
    (tmp_path / "tok.model").write_text("x")
    [error] = errors(write(tmp_path, "int8", spec))
    assert error.code == "E072" and "an `init` model trains in full" in error.message
    assert error.help == "remove `quantize`"


def test_an_unknown_quantization_is_refused_with_a_suggestion(tmp_path):
    path = write(tmp_path, "nf8")
    [error] = errors(path)
    assert error.code == "E015" and "nf8" in error.message
    assert "nf4" in render_plain(error)
    assert error.span.column == len("    quantize = ") + 1
