"""The GGUF export (`sftc export --format gguf`): a tiny random Llama written as f16 and q8_0 and
read back by sftc's GGUF import and by transformers' GGUF loader (logits within what the
quantization implies), its tokenizer, chat template and stop ids, the Ollama Modelfile, and a
LoRA model's export holding the merged weights."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.checkpoints.gguf_export import GgufExportError, write_gguf
from runtime.checkpoints.hf_checkpoint import load_pretrained, resolve_checkpoint
from runtime.checkpoints.ollama_modelfile import chat_style, modelfile_text
from runtime.checkpoints.tokenizer_files import load_tokenizer
from runtime.data.prompts import stop_ids
from runtime.evaluate.export_check import GGUF_LOGITS
from runtime.models import ModelConfig, build
from tests.runtime.data_helpers import CHATML, LLAMA3, MISTRAL, ZEPHYR, bpe_tokenizer, wordlevel_tokenizer

TEXTS = ["<|im_start|>user\nwhat is two plus three?<|im_end|>\n<|im_start|>assistant\n", "Hello! The weather is 12345"]


@pytest.fixture(scope="module")
def tokenizer():
    return bpe_tokenizer(CHATML)


@pytest.fixture(scope="module")
def model(tokenizer):
    config = ModelConfig.llama(layers=2, dim=64, heads=4, kv_heads=2, ffn=96, vocab=len(tokenizer) + 3)
    return build(config, 0), config  # 3 embeddings beyond the tokenizer: [PADn] tokens


@pytest.fixture(scope="module")
def files(model, tokenizer, tmp_path_factory):
    directory = tmp_path_factory.mktemp("gguf")
    net, config = model
    return {
        quant: write_gguf(net, config, tokenizer, directory / f"m-{quant}.gguf", quant=quant, stops=stop_ids(tokenizer))
        for quant in ("f16", "q8_0")
    }


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SFTC_CACHE", str(tmp_path / "cache"))


def _ids(tokenizer) -> np.ndarray:
    return np.array([tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"]])


def _share(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(ours).max())


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_sftc_reads_the_export_back_within_the_quantization_tolerance(quant, model, tokenizer, files):
    net, config = model
    back, back_config = load_pretrained(files[quant])
    assert back_config.replace(attention_impl=config.attention_impl, max_position_embeddings=0) == config.replace(
        max_position_embeddings=0, bos_token_id=1, eos_token_id=2, pad_token_id=0
    )
    ids = _ids(tokenizer)
    share = _share(np.asarray(net(ids)), np.asarray(back(ids)))
    print(f"{quant}: max |Δ logit| {share:.3%} of the largest")
    assert share < GGUF_LOGITS[quant] / 5  # a fifth of the export check's tolerance
    assert share > 0  # rounded, not copied in float32


def test_tokenizer_template_and_stop_ids_round_trip(tokenizer, files):
    read = load_tokenizer(resolve_checkpoint(files["f16"]))
    for text in TEXTS:
        assert read(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert read.chat_template == tokenizer.chat_template
    assert stop_ids(read) == stop_ids(tokenizer) == [2, 5]  # </s>, <|im_end|>
    from runtime.plan.gguf_header import read_header

    metadata = read_header(files["f16"]).metadata
    assert metadata["tokenizer.ggml.model"] == "gpt2" and metadata["tokenizer.ggml.pre"] == "gpt-2"
    assert (metadata["tokenizer.ggml.eos_token_id"], metadata["tokenizer.ggml.eot_token_id"]) == (2, 5)
    assert metadata["general.file_type"] == 1  # MOSTLY_F16
    assert read_header(files["q8_0"]).tensors["blk.0.attn_q.weight"].type_name == "Q8_0"
    assert read_header(files["q8_0"]).tensors["blk.0.attn_norm.weight"].type_name == "F32"


def test_the_modelfile_carries_the_template_and_every_stop_token():
    text = modelfile_text("model-f16.gguf", bpe_tokenizer(CHATML), [2, 5])
    assert text.splitlines()[1] == "FROM ./model-f16.gguf"
    assert (
        'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
        '<|im_start|>assistant\n"""' in text
    )
    assert text.endswith('PARAMETER stop "</s>"\nPARAMETER stop "<|im_end|>"\n')
    assert [chat_style(bpe_tokenizer(t))[0].name for t in (LLAMA3, MISTRAL)] == ["Llama 3", "Mistral"]
    # their `{{ bos_token }}`, which this tokenizer does not add (so neither does llama.cpp), opens the Go template
    assert chat_style(bpe_tokenizer(LLAMA3))[2] == "<s>" and 'TEMPLATE """<s>{{- range' in modelfile_text(
        "m.gguf", bpe_tokenizer(LLAMA3), [2]
    )
    # a template none of the styles renders: no guessed TEMPLATE, the Jinja text as a note
    zephyr = modelfile_text("m.gguf", bpe_tokenizer(ZEPHYR), [2])
    assert "TEMPLATE" not in zephyr.replace("no TEMPLATE", "").replace("Write a TEMPLATE", "")
    assert "NOTE: the run's chat template is not ChatML" in zephyr and "#   {% for message in messages %}" in zephyr


def test_a_default_system_message_becomes_system():
    template = CHATML.replace(
        "{% for message in messages %}",
        "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are SmolLM.<|im_end|>\n' }}{% endif %}"
        "{% for message in messages %}",
    )
    assert chat_style(bpe_tokenizer(template)) == (chat_style(bpe_tokenizer(CHATML))[0], "You are SmolLM.", "")
    assert 'SYSTEM """You are SmolLM."""' in modelfile_text("m.gguf", bpe_tokenizer(template), [2])


def test_what_gguf_cannot_hold_is_refused_by_name(model, tmp_path):
    net, config = model
    with pytest.raises(GgufExportError, match="WordLevel"):
        write_gguf(net, config, wordlevel_tokenizer(), tmp_path / "w.gguf")
    with pytest.raises(GgufExportError, match="biases"):
        write_gguf(net, config.replace(qkv_bias=True), bpe_tokenizer(), tmp_path / "b.gguf")


def test_a_lora_models_export_holds_the_merged_weights(model, tokenizer, tmp_path):
    import jax

    from runtime.models.lora import add_lora, lora_layers, merge_lora
    from runtime.plan.run_plan import LoraPlan

    net, config = model
    tuned = build(config, 0)
    add_lora(tuned, LoraPlan(4, 8.0, 0.0, ("q", "v")))
    for _, layer in lora_layers(tuned):  # B starts at zero: give the adapters a visible delta
        layer.lora_b.set_value(0.1 * jax.random.normal(jax.random.key(1), layer.lora_b.get_value().shape))
    merged = merge_lora(tuned)
    path = write_gguf(merged, config, tokenizer, tmp_path / "lora.gguf", quant="f16")
    back, _ = load_pretrained(path)
    ids = _ids(tokenizer)
    assert _share(np.asarray(merged(ids)), np.asarray(back(ids))) < 1e-3
    assert _share(np.asarray(net(ids)), np.asarray(back(ids))) > 1e-2  # the adapters changed what was written


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_transformers_gguf_loader_gives_the_same_logits_and_tokens(quant, model, tokenizer, files):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    net, _ = model
    path = files[quant]
    reference = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    ref_tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    for text in TEXTS:
        assert ref_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]
    ids = _ids(tokenizer)
    with torch.no_grad():
        theirs = reference.eval()(torch.tensor(ids)).logits.float().numpy()
    share = _share(np.asarray(net(ids)), theirs)
    print(f"{quant}: transformers' GGUF loader, max |Δ logit| {share:.3%} of the largest")
    assert share < GGUF_LOGITS[quant] / 5


def test_a_bos_the_tokenizer_does_not_add_is_the_templates_own_text(smollm2_gguf):
    """SmolLM2's BOS is `<|im_start|>` and its tokenizer never adds it: the ChatML turns begin
    with it. The real model's Modelfile is ChatML with its default system message."""
    smollm2 = load_tokenizer(resolve_checkpoint(smollm2_gguf))
    assert smollm2.bos_token == "<|im_start|>" and smollm2("")["input_ids"] == []
    style, system, lead = chat_style(smollm2)
    assert (style.name, system, lead) == (
        "ChatML",
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
        "",
    )
    text = modelfile_text("model-f16.gguf", smollm2, stop_ids(smollm2))
    assert 'TEMPLATE """{{- range .Messages }}<|im_start|>' in text and text.endswith('PARAMETER stop "<|im_end|>"\n')


def test_the_system_message_the_run_trained_with_is_the_modelfiles(smollm2_gguf):
    """A spec's `system` (the template's, else the source's) replaces the template's default
    `SYSTEM` when every source has the same; sources that differ keep the default."""
    from types import SimpleNamespace

    from runtime.evaluate.final import trained_system
    from runtime.plan.data_plan import DataPlan, SourceSpec, TemplateSpec

    def plan(*systems: tuple[str | None, str | None]):
        sources = tuple(
            SourceSpec(f"s{i}", "jsonl", (f"s{i}.jsonl",), system=own) for i, (_, own) in enumerate(systems)
        )
        templates = {f"s{i}": TemplateSpec("{q}", "{a}", chat=True, system=t) for i, (t, _) in enumerate(systems)}
        return SimpleNamespace(data=DataPlan(sources, templates, seq_len=64, global_batch_size=1, epochs=1))

    assert trained_system(plan(("Extract JSON.", None), (None, "Extract JSON."))) == "Extract JSON."
    assert trained_system(plan(("Extract JSON.", None), (None, None))) is None
    assert trained_system(plan((None, None))) is None
    smollm2 = load_tokenizer(resolve_checkpoint(smollm2_gguf))
    text = modelfile_text("m.gguf", smollm2, stop_ids(smollm2), "Extract JSON.")
    assert 'SYSTEM """Extract JSON."""' in text and "named SmolLM" not in text


def _served_gguf_spec() -> str:
    """test_export_check's served spec (`use "tiny-model.sft"`), exporting GGUF."""
    from tests.runtime.evaluate.test_export_check import SPEC

    spec = SPEC.replace("export = hf", "export = gguf")
    assert spec != SPEC, "test_export_check's SPEC changed: update the replacement"
    return spec


@pytest.mark.slow  # a whole run and its export
def test_a_gguf_export_that_differs_from_the_run_rejects_it(tmp_path, monkeypatch, capsys):
    """The writer is handed other weights than the run's (a bad conversion): the check reads the
    file back, finds the logits apart and rejects the run; the report says so."""
    import json

    import jax
    from flax import nnx

    import runtime.checkpoints.gguf_export as gguf_export
    from sftlang.cli import main
    from tests.fixtures import copy_fixtures

    monkeypatch.chdir(tmp_path)
    bpe_tokenizer(CHATML).save_pretrained(str(tmp_path / "tok"))
    rows = [{"q": f"what is {a} plus {b}?", "a": str(a + b)} for a in range(6) for b in range(4)]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    copy_fixtures(tmp_path, "tiny-model.sft")
    (tmp_path / "served.sft").write_text(_served_gguf_spec())
    write = gguf_export.write_gguf

    def other_weights(model, *args, **kwargs):
        graphdef, state = nnx.split(model)
        leaves, tree = jax.tree.flatten(state)
        leaves[0] = leaves[0] * 1.5  # the first parameter (the embedding) off by half
        return write(nnx.merge(graphdef, jax.tree.unflatten(tree, leaves)), *args, **kwargs)

    monkeypatch.setattr(gguf_export, "write_gguf", other_weights)
    assert main(["run", "served.sft"]) == 3
    assert "export check failed" in capsys.readouterr().err
    (run_dir,) = sorted((tmp_path / "runs" / "served").iterdir())
    report = json.loads((run_dir / "report.json").read_text())
    check = report["export_check"]
    assert report["accepted"] is False and check["passed"] is False
    assert check["logits"]["max_abs_diff"] > check["logits"]["tolerance"]
    assert "export check failed" in (run_dir / "report.md").read_text()
