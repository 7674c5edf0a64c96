"""`sftc plan` of unchanged inputs reads only metadata (`runtime.preflight.plan_cache`): the same report as a
full preparation, from a fresh process that never imports transformers, datasets or torch; any
changed data row, tokenizer file or config is prepared again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runtime.run_helpers import SPEC, write_project

ROOT = Path(__file__).resolve().parents[3]
# A fresh `sftc plan --json` that says which heavy libraries it imported, on stderr's last line.
PLAN = """
import json, sys
from sftlang.cli import main
code = main(["plan", "--json", "tiny.sft"])
print(json.dumps(sorted(m for m in ("transformers", "datasets", "torch") if m in sys.modules)), file=sys.stderr)
sys.exit(code)
"""


def plan(project: Path) -> tuple[dict, list[str]]:
    """`sftc plan --json` in a fresh process: (the report without its cache hits, the heavy imports)."""
    env = {**os.environ, "SFTC_CACHE": str(project / "cache"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", PLAN], capture_output=True, text=True, env=env, cwd=project)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for source in report["data"]["sources"].values():
        del source["cache_hit"]
    return report, json.loads(done.stderr.strip().splitlines()[-1])


@pytest.fixture()
def project(tmp_path):
    """The tiny project over a pretrained-style base: a transformers checkpoint with its tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    write_project(tmp_path)
    tokenizer_dir = tmp_path / "tok"
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "base")
    for f in tokenizer_dir.iterdir():
        (tmp_path / "base" / f.name).write_bytes(f.read_bytes())
    spec = SPEC.replace(
        'base = init llama(layers = 1, dim = 32, heads = 2, ffn = 64)\n    tokenizer = hf("tok")', 'base = hf("base")'
    )
    assert spec != SPEC
    (tmp_path / "tiny.sft").write_text(spec)
    return tmp_path


def test_a_second_plan_reads_only_metadata_and_reports_what_the_first_prepared(project):
    first, first_imports = plan(project)
    assert "transformers" in first_imports and "datasets" in first_imports  # the data was prepared
    second, second_imports = plan(project)
    assert second == first
    assert second_imports == []
    assert first["data"]["sources"]["sums"]["rows"] == 100


@pytest.fixture()
def planner(project, monkeypatch, capsys):
    """``planner() -> (report, prepared)``: `sftc plan --json` in this process, and whether it
    prepared the data (a missed record) rather than recalling it."""
    import runtime.preflight.prepare
    from sftlang.cli import main

    monkeypatch.chdir(project)
    monkeypatch.setenv("SFTC_CACHE", str(project / "cache"))
    calls = []
    original = runtime.preflight.prepare.prepare
    monkeypatch.setattr(runtime.preflight.prepare, "prepare", lambda *a, **k: calls.append(1) or original(*a, **k))

    def plan_here() -> tuple[dict, bool]:
        before = len(calls)
        assert main(["plan", "--json", "tiny.sft"]) == 0
        report = json.loads(capsys.readouterr().out)
        for source in report["data"]["sources"].values():
            del source["cache_hit"]
        return report, len(calls) > before

    return plan_here


def test_a_changed_row_tokenizer_file_or_config_is_prepared_again(project, planner):
    first, prepared = planner()
    assert prepared and planner() == (first, False)
    rows = (project / "sums.jsonl").read_text()
    (project / "sums.jsonl").write_text(rows + json.dumps({"a": "one", "b": "one", "c": "two"}) + "\n")
    report, prepared = planner()
    assert prepared and report["data"]["sources"]["sums"]["rows"] == 101

    settings = json.loads((project / "base" / "tokenizer_config.json").read_text())
    settings["model_max_length"] = 4096
    (project / "base" / "tokenizer_config.json").write_text(json.dumps(settings))
    assert planner()[1]

    config = json.loads((project / "base" / "config.json").read_text())
    config["rms_norm_eps"] = 1e-5 if config.get("rms_norm_eps") != 1e-5 else 1e-6
    (project / "base" / "config.json").write_text(json.dumps(config))
    report, prepared = planner()
    assert prepared and planner() == (report, False)  # and then recalled


def test_an_unreadable_record_is_prepared_again(project, planner):
    first, _ = planner()
    (record,) = (project / "cache" / "plans").iterdir()
    record.write_text("{not json")
    assert planner() == (first, True)
    assert json.loads(record.read_text())["stats"]["sources"]["sums"]["rows"] == 100  # written whole again
