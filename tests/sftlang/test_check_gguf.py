"""`base = hf("model.gguf")` in the compiler: `sftc check` reads the GGUF header (never the
weights) and says what is wrong with file:line:col and a caret; `sftc plan` counts the
parameters the header describes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sftlang.check import check_spec_file
from sftlang.cli import main
from sftlang.diagnostics import render_plain

ROOT = Path(__file__).resolve().parents[2]
SMOLLM2_PARAMETERS = 134_515_008  # transformers' num_parameters() of the GGUF-loaded model (tied head once)

SPEC = """\
sft "gguf"

model {
    base    = hf("BASE")
    adapter = lora(rank = 8, alpha = 16, targets = [q, v])
}

data rows = jsonl("rows.jsonl") {
    split eval = 25% seed 1
}

template t for rows {
    prompt     = "{message}"
    completion = "{answer}"
    chat       = on
}

train {
    data    = rows
    steps   = 2
    batch   = 2
    seq_len = 128
}

output {
    export = hf
}
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SFTC_CACHE", str(tmp_path / "cache"))
    rows = (ROOT / "specs" / "data" / "support-train.jsonl").read_text().splitlines()[:8]
    (tmp_path / "rows.jsonl").write_text("\n".join(rows) + "\n")
    return tmp_path


def spec_with(project: Path, base: str) -> Path:
    path = project / "demo.sft"
    path.write_text(SPEC.replace("BASE", base))
    return path


def errors(spec: Path) -> list:
    _, problems = check_spec_file(spec, devices=1, offline=True)
    return [d for d in problems if d.is_error]


def write_gguf(path: Path, architecture: str) -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_gguf_base_checks_valid_from_its_header(project, smollm2_gguf):
    (project / "models").mkdir()
    (project / "models" / smollm2_gguf.name).symlink_to(smollm2_gguf)
    assert errors(spec_with(project, f"models/{smollm2_gguf.name}")) == []


def test_the_header_describes_the_model_transformers_builds(smollm2_gguf):
    """Parameters from the header alone: the tensor table, our config's count, and transformers'
    count of the same config agree (the tied output head counted once)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from runtime.models.config import ModelConfig
    from runtime.plan.gguf_header import hf_config, read_header
    from runtime.preflight.plan_report import parameter_count

    header = read_header(smollm2_gguf)
    assert header.architecture == "llama"
    assert header.parameter_count == SMOLLM2_PARAMETERS
    config = hf_config(header)
    assert parameter_count(ModelConfig.from_hf_config(config))["total"] == SMOLLM2_PARAMETERS
    with torch.device("meta"):
        reference = LlamaForCausalLM(LlamaConfig(**config))
    assert reference.num_parameters() == SMOLLM2_PARAMETERS
    assert (config["bos_token_id"], config["eos_token_id"], config["rms_norm_eps"]) == (1, 2, 1e-5)


def test_sftc_plan_reports_the_gguf_parameters(project, smollm2_gguf, capsys):
    spec = spec_with(project, str(smollm2_gguf))
    assert main(["plan", str(spec), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    model = report["model"]
    lora = 30 * 8 * ((576 + 576) + (576 + 192))  # rank 8 on q (576 -> 576) and v (576 -> 192), 30 layers
    assert (model["params"] - model["trainable"], model["trainable"]) == (SMOLLM2_PARAMETERS, lora)
    assert (model["layers"], model["dim"], model["heads"], model["kv_heads"], model["vocab"]) == (30, 576, 9, 3, 49152)
    assert model["source"] == str(smollm2_gguf)


def test_a_missing_gguf_file(project):
    found = errors(spec_with(project, "models/nope.gguf"))
    assert [(d.code, d.message) for d in found] == [("E036", "GGUF file `models/nope.gguf` not found")]
    rendered = render_plain(found[0])
    assert "demo.sft:4:18" in rendered and " " + "^" * 18 + "\n" in rendered  # the whole string literal


def test_a_directory_named_like_a_gguf_file(project):
    (project / "x.gguf").mkdir()
    found = errors(spec_with(project, "x.gguf"))
    assert [(d.code, d.message) for d in found] == [("E036", "GGUF file `x.gguf` is a directory, not a GGUF file")]


def test_a_file_that_is_not_gguf(project):
    (project / "fake.gguf").write_bytes(b"PK\x03\x04" + bytes(100))
    found = errors(spec_with(project, "fake.gguf"))
    assert [(d.code, d.message) for d in found] == [
        ("E037", "`fake.gguf`: not a GGUF file (it does not start with the bytes `GGUF`)")
    ]
    assert "Llama-architecture" in found[0].help


def test_a_truncated_gguf_file(project, smollm2_gguf):
    with open(smollm2_gguf, "rb") as f:
        (project / "cut.gguf").write_bytes(f.read(5000))
    found = errors(spec_with(project, "cut.gguf"))
    assert [(d.code, d.message) for d in found] == [("E037", "`cut.gguf`: the GGUF header is truncated")]


def test_an_unsupported_architecture(project):
    write_gguf(project / "gpt2.gguf", "gpt2")
    found = errors(spec_with(project, "gpt2.gguf"))
    assert [d.code for d in found] == ["E037"]
    assert found[0].message.startswith("`gpt2.gguf`: GGUF architecture 'gpt2' is not supported; sftc reads 'llama'")


def test_the_shipped_gguf_spec_checks_with_the_file_in_models(tmp_path, smollm2_gguf):
    """specs/support-smollm2.sft as a user has it after the one-line link its header shows."""
    (tmp_path / "specs").mkdir()
    shutil.copy(ROOT / "specs" / "support-smollm2.sft", tmp_path / "specs")
    (tmp_path / "specs" / "data").symlink_to(ROOT / "specs" / "data")
    (tmp_path / "specs" / "benchmarks").symlink_to(ROOT / "specs" / "benchmarks")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / smollm2_gguf.name).symlink_to(smollm2_gguf)
    assert errors(tmp_path / "specs" / "support-smollm2.sft") == []
