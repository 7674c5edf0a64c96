"""The one identity of a run's inputs (`runtime.plan.run_inputs`): which consumer depends on which input.

The table below is the contract: each input is changed in turn, and exactly the consumers
marked must see it (a key that changes, lines that say what changed). A consumer that misses an
input gives a silent wrong answer (a resumed run over other base weights, a cached baseline of
another quantization or other eval rows); one that sees an input it does not depend on costs a
needless recomputation or refusal.
"""

from __future__ import annotations

import dataclasses
import json
import os
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

SHAPES_TOKENIZER = Path(__file__).resolve().parents[3] / "specs" / "data" / "shapes-tokenizer"

SPEC = """\
sft "inputs"
model {
    base      = hf("base")
    tokenizer = hf("tok")
    adapter   = lora(rank = 4)
}
data qa = jsonl("train.jsonl") { split eval = jsonl("eval.jsonl") }
data more = jsonl("more.jsonl") { split eval = 25% seed 1 }
template t for qa, more {
    prompt     = "{q}"
    completion = " {a}"
}
train {
    steps     = 2
    batch     = 2
    seq_len   = 64
    optimizer = adamw(lr = 1e-3)
}
"""

CONSUMERS = ("resume", "plan_cache", "baseline", "run_diff", "review")
# input changed -> the consumers that must see it
TABLE = {
    "a training data file": {"resume", "plan_cache", "baseline", "run_diff", "review:more"},
    "a separate eval file": {"plan_cache", "baseline", "run_diff", "review:qa"},
    "a tokenizer file": {"resume", "plan_cache", "baseline", "run_diff"},
    "the base weights": {"resume", "baseline", "run_diff"},
    "the base config": {"resume", "plan_cache", "baseline", "run_diff"},
    "dtype": {"resume", "plan_cache", "baseline", "run_diff"},
    "quantize": {"resume", "plan_cache", "baseline", "run_diff"},
    "sftc's code": {"plan_cache", "baseline", "run_diff"},
    "a data library": {"plan_cache", "baseline", "run_diff"},
    "a numeric library": {"baseline", "run_diff"},
}


def _weights(path: Path, seed: int) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    save_file({"model.embed_tokens.weight": rng.standard_normal((8, 4)).astype(np.float32)}, str(path))


@pytest.fixture()
def project(tmp_path, monkeypatch):
    from transformers import LlamaConfig

    (tmp_path / "base").mkdir()
    LlamaConfig(
        vocab_size=128,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    ).save_pretrained(tmp_path / "base")
    _weights(tmp_path / "base" / "model.safetensors", 0)
    (tmp_path / "tok").mkdir()
    for f in SHAPES_TOKENIZER.iterdir():
        (tmp_path / "tok" / f.name).write_bytes(f.read_bytes())
    rows = lambda n, w: "".join(json.dumps({"q": f"{w} {i}", "a": str(i)}) + "\n" for i in range(n))  # noqa: E731
    (tmp_path / "train.jsonl").write_text(rows(6, "q"))
    (tmp_path / "eval.jsonl").write_text(rows(2, "e"))
    (tmp_path / "more.jsonl").write_text(rows(8, "m"))
    (tmp_path / "inputs.sft").write_text(SPEC)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SFTC_CACHE", str(tmp_path / "cache"))
    return tmp_path


def _plan():
    from sftlang.check import check_spec_file
    from sftlang.lower import lower

    spec, problems = check_spec_file("inputs.sft")
    assert spec is not None and not [p for p in problems if p.is_error], problems
    return lower(spec)


def _change(what: str, root: Path, plan, monkeypatch):
    """Change one input; returns the plan to gather with."""
    from runtime.preflight import input_fingerprints as inputs

    if what == "a training data file":
        with open(root / "more.jsonl", "a") as f:
            f.write(json.dumps({"q": "m new", "a": "9"}) + "\n")
    elif what == "a separate eval file":
        with open(root / "eval.jsonl", "a") as f:
            f.write(json.dumps({"q": "e new", "a": "9"}) + "\n")
    elif what == "a tokenizer file":
        config = json.loads((root / "tok" / "tokenizer_config.json").read_text())
        (root / "tok" / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 77}))
    elif what == "the base weights":  # other values of the same shapes, as a re-download or a re-save gives
        _weights(root / "base" / "model.safetensors", 1)
    elif what == "the base config":
        config = json.loads((root / "base" / "config.json").read_text())
        (root / "base" / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-5}))
    elif what == "dtype":
        return dataclasses.replace(plan, model=dataclasses.replace(plan.model, dtype="bfloat16"))
    elif what == "quantize":
        return dataclasses.replace(plan, model=dataclasses.replace(plan.model, quantize="nf4"))
    elif what == "sftc's code":
        monkeypatch.setattr(inputs, "code_identity", lambda: "0.1.0+another-checkout")
    else:
        library = "transformers" if what == "a data library" else "jax"
        real = metadata.version
        monkeypatch.setattr(inputs.metadata, "version", lambda n: "99.0" if n == library else real(n))
    return plan


def _seen(old, new) -> set[str]:
    from runtime.plan.run_inputs import eval_fingerprints

    seen = {c for c in CONSUMERS[:4] if new.changes(old, c)}
    for c in CONSUMERS[1:4]:
        assert (c in seen) == (old.key(c) != new.key(c)), c  # a key changes exactly when a change is named
    old_review, new_review = eval_fingerprints(old.parts), eval_fingerprints(new.parts)
    seen |= {f"review:{s}" for s in old_review if old_review[s] != new_review[s]}
    return seen


@pytest.mark.parametrize("what", list(TABLE))
def test_each_consumer_sees_exactly_the_inputs_it_depends_on(project, what, monkeypatch):
    from runtime.preflight.input_fingerprints import gather

    plan = _plan()
    before = gather(plan)
    assert gather(plan) == before  # nothing changed: the same identity, read again
    after = gather(_change(what, project, plan, monkeypatch))
    assert _seen(before, after) == TABLE[what]


def test_changes_are_named_in_one_wording(project, monkeypatch):
    from runtime.preflight.input_fingerprints import gather

    plan = _plan()
    before = gather(plan)
    _weights(project / "base" / "model.safetensors", 1)
    with open(project / "eval.jsonl", "a") as f:
        f.write(json.dumps({"q": "e new", "a": "9"}) + "\n")
    after = gather(dataclasses.replace(plan, model=dataclasses.replace(plan.model, quantize="nf4")))
    lines = after.changes(before, "run_diff")
    assert any(line.startswith("~ base: the base checkpoint's files changed") for line in lines)
    assert any(line.startswith("~ eval data qa: content changed") for line in lines)
    assert "~ model.quantize: none -> nf4" in lines
    assert after.changes(before, "resume") == [line for line in lines if not line.startswith("~ eval data")]


def test_a_large_base_is_read_once_per_change(project, monkeypatch):
    """The content digest of a large file is remembered by path, size, mtime and inode under
    $SFTC_CACHE: a second command (a fresh memo) does not read it; a rewritten file is read."""
    from runtime.platform import file_hashes

    big = project / "base" / "big.safetensors"
    big.write_bytes(os.urandom(3 << 20))
    first = file_hashes.file_sha256(big)
    reads = []
    real = file_hashes._hash
    monkeypatch.setattr(file_hashes, "_hash", lambda p: reads.append(p) or real(p))
    monkeypatch.setattr(file_hashes, "_MEMO", {})
    assert file_hashes.file_sha256(big) == first and reads == []
    big.write_bytes(os.urandom(3 << 20))
    assert file_hashes.file_sha256(big) != first and reads == [big.resolve()]


def test_resume_refuses_a_base_whose_weights_changed(project):
    """A LoRA run whose base directory got other weights of the same shapes would resume its
    adapters over another base: `sftc run` must refuse and say so."""
    from runtime.preflight.input_fingerprints import gather
    from runtime.runs.resume import differences
    from runtime.runs.run_directory import write_manifest, write_plan

    plan = _plan()
    run_dir = project / "runs" / "inputs" / "t0"
    run_dir.mkdir(parents=True)
    write_plan(run_dir, plan)
    write_manifest(run_dir, plan, {}, gather(plan))
    assert differences(run_dir, plan, gather(plan)) == []
    _weights(project / "base" / "model.safetensors", 1)
    changed = differences(run_dir, plan, gather(plan))
    assert len(changed) == 1 and changed[0].startswith("~ base: the base checkpoint's files changed")


def test_the_baseline_cache_key_follows_quantize_and_the_eval_file(project):
    from runtime.evaluate.baseline import baseline_key
    from runtime.preflight.input_fingerprints import gather

    plan = _plan()
    key = baseline_key(plan, gather(plan))
    nf4 = dataclasses.replace(plan, model=dataclasses.replace(plan.model, quantize="nf4"))
    assert baseline_key(nf4, gather(nf4)) != key
    trained_longer = dataclasses.replace(plan, train=dataclasses.replace(plan.train, steps=50))
    assert baseline_key(trained_longer, gather(trained_longer)) == key  # training settings do not count
    with open(project / "eval.jsonl", "a") as f:
        f.write(json.dumps({"q": "e new", "a": "9"}) + "\n")
    assert baseline_key(plan, gather(plan)) != key


def test_resume_names_a_changed_setting_once(project):
    """dtype and quantize are settings of the plan and parts of the inputs: said once."""
    from runtime.preflight.input_fingerprints import gather
    from runtime.runs.resume import differences
    from runtime.runs.run_directory import write_manifest, write_plan

    plan = _plan()
    run_dir = project / "runs" / "inputs" / "t0"
    run_dir.mkdir(parents=True)
    write_plan(run_dir, plan)
    write_manifest(run_dir, plan, {}, gather(plan))
    nf4 = dataclasses.replace(plan, model=dataclasses.replace(plan.model, quantize="nf4"))
    changed = differences(run_dir, nf4, gather(nf4))
    assert len(changed) == 1 and changed[0].startswith("~ model.quantize:"), changed


def test_the_plan_caches_inputs_never_read_the_base_weights(project, monkeypatch):
    """`sftc plan` of unchanged inputs reads only metadata: its part of the identity hashes no weight file."""
    from runtime.plan.run_inputs import CONSUMERS
    from runtime.platform import file_hashes
    from runtime.preflight.input_fingerprints import gather

    read = []
    real = file_hashes._hash
    monkeypatch.setattr(file_hashes, "_hash", lambda p: read.append(p.name) or real(p))
    monkeypatch.setattr(file_hashes, "_MEMO", {})
    inputs = gather(_plan(), load=False, consumer="plan_cache")
    assert set(inputs.parts) == set(CONSUMERS["plan_cache"]) and inputs.key("plan_cache") is not None
    assert read and "model.safetensors" not in read
