"""Lowering a spec to a Plan, and writing the resolved spec back out."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.plan.data_plan import EvalSplit, TemplateSpec
from runtime.plan.run_plan import Plan
from runtime.plan.settings import AdamW, Length, LlamaInit, SentencepieceTraining, Wsd
from sftlang.check import check_spec_file
from sftlang.emit import emit_spec
from sftlang.lower import lower
from sftlang.resolve import load_spec

SPEC = """\
sft "lowered"
model {
    base = init llama(layers = 2, dim = 64, heads = 4, kv_heads = 2, ffn = 128)
    tokenizer = train sentencepiece(vocab = 300) on qa
}
data qa = jsonl("data/qa.jsonl") {
    split eval = 10% seed 3
    overflow = truncate
}
data chats = jsonl("data/chats.jsonl") {
    split eval = jsonl("data/chats-eval.jsonl")
}
template answer for qa {
    prompt = "Q: {question}\\nA: "
    completion = "{answer}"
    chat = on
    system = "Answer in JSON."
}
template dialog for chats {
    messages = turns
    train_on = last_assistant
}
train {
    data = qa * 3 + chats * 1
    epochs = 2
    batch = 8
    micro = 4
    optimizer = adamw(lr = 1e-3, weight_decay = 0.1)
    schedule = wsd(warmup = 20 steps, decay = 20%, min_lr = 10%)
    clip = off
    checkpoint = every 50 steps keep 2
    log_every = 5 steps
}
eval {
    every = 0.5 epochs
    generate = sample(max_new_tokens = 24, temperature = 0.7, top_p = 0.9)
    samples = all
}
accept {
    loss <= 2
    json_valid >= 95%
    regex("^\\\\{", qa) >= 0.5
}
output {
    dir = "out/{name}"
    export = none
    shard_size = 200 MiB
}
"""


@pytest.fixture()
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    (data / "qa.jsonl").write_text('{"question": "q", "answer": "{}"}\n')
    chat = '{"turns": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
    (data / "chats.jsonl").write_text(chat)
    (data / "chats-eval.jsonl").write_text(chat)
    (tmp_path / "spec.sft").write_text(SPEC)
    return tmp_path


def test_spec_is_valid(project):
    _, problems = check_spec_file(project / "spec.sft", devices=1)
    assert problems == []


def test_every_setting_is_lowered(project):
    spec, _ = load_spec(project / "spec.sft")
    plan = lower(spec)
    data = plan.data
    qa, chats = data.sources
    assert qa.paths == (str(project / "data" / "qa.jsonl"),)
    assert qa.eval == EvalSplit(fraction=0.1, seed=3) and qa.overflow == "truncate" and qa.on_bad_row == "error"
    assert chats.eval.source.paths == (str(project / "data" / "chats-eval.jsonl"),)
    assert data.templates == {
        "qa": TemplateSpec(prompt="Q: {question}\nA: ", completion="{answer}", chat=True, system="Answer in JSON."),
        "chats": TemplateSpec(messages="turns", train_on="last_assistant"),
    }
    assert data.weights == {"qa": 3.0, "chats": 1.0}
    assert (data.epochs, data.steps, data.global_batch_size, data.seq_len, data.packing, data.seed) == (
        2,
        None,
        8,
        1024,
        False,
        42,
    )
    train = plan.train
    assert train.steps is None and train.micro == 4 and plan.accumulation == 2
    assert train.optimizer == AdamW(lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.1)
    assert train.schedule == Wsd(warmup=Length(steps=20), decay=Length(share=0.2), min_lr=train.schedule.min_lr)
    assert train.schedule.min_lr == pytest.approx(1e-4)  # 10% of lr
    assert train.clip is None and train.remat == "off" and train.mesh == {"data": "auto", "fsdp": 1, "tensor": 1}
    assert (train.checkpoint_every, train.keep, train.log_every) == (50, 2, 5)
    assert (plan.eval.every_epochs, plan.eval.samples) == (0.5, None)
    assert plan.eval.generate.greedy is False and plan.eval.generate.temperature == 0.7
    assert [(g.metric, g.op, g.threshold, g.source, g.pattern) for g in plan.gates] == [
        ("loss", "<=", 2.0, None, None),
        ("json_valid", ">=", 0.95, None, None),
        ("regex", ">=", 0.5, "qa", "^\\{"),
    ]
    model = plan.model
    assert model.kind == "init" and model.init == LlamaInit(layers=2, dim=64, heads=4, kv_heads=2, ffn=128)
    assert model.tokenizer.kind == "train" and model.tokenizer.training == SentencepieceTraining(vocab=300)
    assert model.tokenizer.source.name == "qa"
    assert plan.output.dir == str(project / "out" / "lowered") and plan.output.export == "none"
    assert plan.output.shard_size == 200 * 2**20


def test_plan_round_trips_through_json(project):
    spec, _ = load_spec(project / "spec.sft")
    plan = lower(spec)
    assert Plan.from_json(plan.to_json()) == plan


def test_emitted_spec_resolves_to_the_same_plan(project):
    spec, _ = load_spec(project / "spec.sft")
    text = emit_spec(spec)
    (project / "resolved.sft").write_text(text)
    again, problems = load_spec(project / "resolved.sft")
    assert problems == []
    assert emit_spec(again) == text
    first, second = lower(spec), lower(again)
    assert second.spec_hash == first.spec_hash
    assert second.data == first.data and second.train == first.train and second.gates == first.gates


def test_hash_ignores_layout_and_explicit_defaults(project):
    spec, _ = load_spec(project / "spec.sft")
    edited = SPEC.replace("    batch = 8\n", "    batch   =   8\n    seq_len = 1024\n    remat = off\n")
    (project / "edited.sft").write_text(edited)
    other, _ = load_spec(project / "edited.sft")
    assert lower(other).spec_hash == lower(spec).spec_hash
    (project / "changed.sft").write_text(SPEC.replace("micro = 4", "micro = 2"))
    changed, _ = load_spec(project / "changed.sft")
    assert lower(changed).spec_hash != lower(spec).spec_hash


def test_used_file_paths_are_rebased(project):
    (project / "base").mkdir()
    (project / "base" / "extra.jsonl").write_text('{"prompt": "p", "completion": "c"}\n')
    (project / "base" / "common.sft").write_text('data extra = jsonl("extra.jsonl")\n')
    (project / "child.sft").write_text(
        SPEC.replace('sft "lowered"\n', 'sft "lowered"\nuse "base/common.sft"\n').replace(
            "qa * 3 + chats * 1", "qa * 3 + chats * 1 + extra * 1"
        )
    )
    spec, _ = load_spec(project / "child.sft")
    text = emit_spec(spec)
    assert 'data extra = jsonl(path = "base/extra.jsonl")' in text
    assert Path(lower(spec).data.source("extra").paths[0]) == project / "base" / "extra.jsonl"
    absolute = emit_spec(spec, absolute_paths=True)
    assert f'jsonl(path = "{project / "base" / "extra.jsonl"}")' in absolute


SHAPES = """\
model {
    base = init llama(layers = 2, dim = 64, heads = 4, ffn = 128)
    tokenizer = sentencepiece("tok.model")
}
data chats = jsonl("chats.jsonl") {
    rename = (dialog = conversations, "sys prompt" = system_prompt)
    where = (lang = "en", tier = ["gold", "silver"], score = 5, "meta.ok" = on)
    system = "You are a helpful support agent."
    split eval = jsonl("chats-eval.jsonl")
}
data rows = jsonl("rows.jsonl")
data toks = jsonl("toks.jsonl")
template chat for chats {
    messages = conversations
    roles = (bot = assistant, customer = user)
    keys = (content = text, role = speaker)
    tools = functions
    train_on = last_assistant
}
template instr for rows {
    format = alpaca
    chat = on
    system = "Be brief."
}
template pre for toks {
    format = tokens
}
train {
    steps = 5
}
"""


@pytest.fixture()
def shapes_project(tmp_path, monkeypatch):
    import json

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tok.model").write_text("x")
    turns = [{"speaker": "customer", "text": "hi"}, {"speaker": "bot", "text": "hello"}]
    row = {
        "dialog": turns,
        "sys prompt": "s",
        "lang": "en",
        "tier": "gold",
        "score": 5,
        "meta": {"ok": True},
        "functions": [],
    }
    for name in ("chats.jsonl", "chats-eval.jsonl"):
        (tmp_path / name).write_text(json.dumps(row) + "\n")
    (tmp_path / "rows.jsonl").write_text(json.dumps({"instruction": "i", "input": "", "output": "o"}) + "\n")
    (tmp_path / "toks.jsonl").write_text(json.dumps({"input_ids": [1, 2], "labels": [-100, 2]}) + "\n")
    (tmp_path / "shapes.sft").write_text(SHAPES)
    return tmp_path / "shapes.sft"


def test_source_transforms_and_template_shapes_are_lowered(shapes_project):
    _, problems = check_spec_file(shapes_project, devices=1, offline=True)
    assert problems == []
    spec, _ = load_spec(shapes_project)
    plan = lower(spec)
    chats, rows, toks = plan.data.sources
    assert chats.rename == (("dialog", "conversations"), ("sys prompt", "system_prompt"))
    assert chats.where == (("lang", ("en",)), ("tier", ("gold", "silver")), ("score", (5,)), ("meta.ok", (True,)))
    assert chats.system == "You are a helpful support agent."
    inherited = chats.eval.source
    assert (inherited.rename, inherited.where, inherited.system) == (chats.rename, chats.where, chats.system)
    assert (rows.rename, rows.where, rows.system) == ((), (), None)
    assert plan.data.templates == {
        "chats": TemplateSpec(
            messages="conversations",
            train_on="last_assistant",
            roles=(("bot", "assistant"), ("customer", "user")),
            keys=(("role", "speaker"), ("content", "text")),  # in the record's order
            tools="functions",
        ),
        "rows": TemplateSpec(format="alpaca", chat=True, system="Be brief."),
        "toks": TemplateSpec(format="tokens"),
    }
    assert Plan.from_json(plan.to_json()) == plan


def test_new_keys_survive_the_emitted_spec(shapes_project):
    spec, _ = load_spec(shapes_project)
    text = emit_spec(spec)
    words = " ".join(text.split())
    assert 'rename = (dialog = conversations, "sys prompt" = system_prompt)' in words
    assert 'where = (lang = "en", tier = ["gold", "silver"], score = 5, "meta.ok" = on)' in words
    assert "keys = (role = speaker, content = text)" in words
    again = shapes_project.parent / "again.sft"
    again.write_text(text)
    respec, problems = load_spec(again)
    assert problems == []
    assert lower(respec).data == lower(spec).data


def test_a_tsv_an_arrow_file_and_a_tokenizer_revision_are_lowered(tmp_path, monkeypatch):
    import pyarrow as pa

    monkeypatch.chdir(tmp_path)
    (tmp_path / "qa.tsv").write_text("prompt\tcompletion\nhello, you\thi\n")
    (tmp_path / "qa.csv").write_text("prompt,completion\nhello you,hi\n")
    table = pa.table({"prompt": ["hello"], "completion": ["hi"]})
    with pa.OSFile(str(tmp_path / "qa.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    (tmp_path / "tok").mkdir()
    (tmp_path / "t.sft").write_text(
        "model {\n    base = init llama(layers = 1, dim = 32, heads = 2, ffn = 64)\n"
        '    tokenizer = hf("org/tokenizer", revision = "v1.2")\n}\n'
        'data tsv = csv("qa.tsv", delimiter = "\\t")\ndata arrow = arrow("qa.arrow")\n'
        'data comma = csv("qa.csv")\ntrain {\n    steps = 5\n}\n'
    )
    _, problems = check_spec_file(tmp_path / "t.sft", devices=1, offline=True)
    assert [p.code for p in problems if p.code.startswith("E")] == []
    spec, _ = load_spec(tmp_path / "t.sft")
    plan = lower(spec)
    tsv, arrow, comma = plan.data.sources
    assert (tsv.kind, tsv.delimiter) == ("csv", "\t")
    assert comma.delimiter is None  # the default comma is not written into the plan
    assert arrow.kind == "arrow" and arrow.paths == (str(tmp_path / "qa.arrow"),)
    assert (plan.model.tokenizer.kind, plan.model.tokenizer.path, plan.model.tokenizer.revision) == (
        "hf",
        "org/tokenizer",
        "v1.2",
    )
