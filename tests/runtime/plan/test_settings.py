"""The typed plan settings and the language agree: every call's argument names and
defaults are the dataclass's, construction refuses bad values, and plan.json keeps
each variant."""

from __future__ import annotations

import dataclasses
import json

import pytest

from runtime.plan import settings as plan_types
from runtime.plan.run_plan import Plan, PlanVersionError
from runtime.plan.settings import AdamW, Cosine, Length, LlamaInit, SentencepieceTraining, Wsd
from sftlang import schema
from sftlang.lower import lower
from sftlang.resolve import load_spec

INIT = "init llama(layers = 2, dim = 64, heads = 4, ffn = 128)"


def lowered(
    tmp_path, train: str = "", base: str = INIT, tokenizer: str = "train sentencepiece(vocab = 300) on rows"
) -> Plan:
    spec = tmp_path / "t.sft"
    spec.write_text(
        f'sft "t"\nmodel {{\n    base = {base}\n    tokenizer = {tokenizer}\n}}\n'
        f'data rows = jsonl("rows.jsonl")\ntrain {{\n    steps = 10\n    {train}\n}}\n'
    )
    resolved, problems = load_spec(spec)
    assert problems == []
    return lower(resolved)


def init_names(settings: type) -> list[str]:
    return [f.name for f in dataclasses.fields(settings) if f.init]


def typed_calls():
    """(schema signatures, plan_types table) of every call the plan carries typed."""
    yield schema.OPTIMIZERS.variants, plan_types.OPTIMIZERS
    yield schema.SCHEDULES.variants, plan_types.SCHEDULES
    yield schema.BASE_MODEL.options[1].calls.variants, plan_types.ARCHITECTURES
    yield schema.TOKENIZER.options[2].calls.variants, plan_types.TOKENIZER_TRAINERS


@pytest.mark.parametrize("signatures, table", list(typed_calls()))
def test_every_call_has_its_class_with_the_same_argument_names(signatures, table):
    assert list(signatures) == list(table)
    for name, signature in signatures.items():
        assert signature.names == init_names(table[name]), name


@pytest.mark.parametrize("name", list(plan_types.OPTIMIZERS))
def test_an_optimizer_written_bare_lowers_to_the_class_defaults(tmp_path, name):
    assert lowered(tmp_path, f"optimizer = {name}()").train.optimizer == plan_types.OPTIMIZERS[name]()


@pytest.mark.parametrize("name", list(plan_types.SCHEDULES))
def test_a_schedule_written_bare_lowers_to_the_class_defaults(tmp_path, name):
    assert lowered(tmp_path, f"schedule = {name}()").train.schedule == plan_types.SCHEDULES[name]()


@pytest.mark.parametrize("name", list(plan_types.SCHEDULES))
def test_a_schedules_default_texts_read_back_as_its_class_defaults(tmp_path, name):
    """The spec writes a schedule's Lengths and min_lr in another shape than the plan holds
    them (`warmup = 3%`, `min_lr = 10%`): each default text the schema derives, written out,
    lowers to the class's own default."""
    arguments = ", ".join(f"{p.name} = {p.default}" for p in schema.SCHEDULES.variants[name].params)
    assert lowered(tmp_path, f"schedule = {name}({arguments})").train.schedule == plan_types.SCHEDULES[name]()


def test_a_fields_form_gives_its_spec_type_and_default_text():
    """Derived, not copied: a Length reads as `0`, `N steps` or a percentage and takes steps or
    a share; min_lr reads as a number and takes a share of lr or a rate."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Ramp(plan_types.Schedule):
        name: str = dataclasses.field(default="ramp", init=False)
        warmup: Length = plan_types.length_setting(Length(steps=20))
        decay: Length = plan_types.length_setting(Length(share=0.03), doc="the tail")
        min_lr: float = plan_types.min_lr_setting()

    warmup, decay, min_lr = schema.signature_of(Ramp).params
    assert (warmup.default, decay.default, decay.doc, min_lr.default) == ("20 steps", "3%", "the tail", "0")
    assert warmup.type == decay.type == schema.STEPS_OR_SHARE
    assert min_lr.type == schema.OneOf((schema.SHARE_OF_LR, schema.NON_NEGATIVE))
    assert Ramp().decided(100) == Ramp(warmup=Length(steps=20), decay=Length(steps=3))


def test_the_default_learning_rate_is_stated_once():
    """Every optimizer's lr and the language's default optimizer come from DEFAULT_LR."""
    assert {c().lr for c in plan_types.OPTIMIZERS.values()} == {plan_types.DEFAULT_LR}
    optimizer = schema.keys_of("train")["optimizer"]
    assert optimizer.default == "adamw(lr = 2e-5)"
    assert {v.param("lr").default for v in schema.OPTIMIZERS.variants.values()} == {"2e-5"}


def test_init_and_tokenizer_training_lower_to_the_class_defaults(tmp_path):
    model = lowered(tmp_path).model
    assert model.init == LlamaInit(layers=2, dim=64, heads=4, kv_heads=4, ffn=128)  # kv_heads defaults to heads
    assert model.tokenizer.training == SentencepieceTraining(vocab=300)


def test_defaults_read_as_the_user_writes_them():
    adamw = schema.OPTIMIZERS.variants["adamw"]
    assert [(p.name, p.default) for p in adamw.params] == [
        ("lr", "2e-5"),
        ("b1", "0.9"),
        ("b2", "0.999"),
        ("eps", "1e-8"),
        ("weight_decay", "0.0"),
    ]
    assert {name: [(p.name, p.default) for p in v.params] for name, v in schema.SCHEDULES.variants.items()} == {
        "constant": [("warmup", "0")],
        "linear": [("warmup", "0"), ("min_lr", "0")],
        "cosine": [("warmup", "0"), ("min_lr", "0")],
        "wsd": [("warmup", "0"), ("decay", "10%"), ("min_lr", "0")],
    }
    llama = schema.BASE_MODEL.options[1].calls.variants["llama"]
    assert [(p.name, p.default, p.required) for p in llama.params if p.default or p.required] == [
        ("layers", None, True),
        ("dim", None, True),
        ("heads", None, True),
        ("ffn", None, True),
        ("rope_theta", "10000.0", False),
        ("norm_eps", "1e-5", False),
        ("tie_embeddings", "off", False),
        ("max_seq_len", "4096", False),
    ]


def test_construction_refuses_what_the_language_refuses():
    with pytest.raises(ValueError, match=r"adamw\(b2 = 1.5\): b2 must be in \[0, 1\)"):
        AdamW(b2=1.5)
    with pytest.raises(ValueError, match=r"llama\(heads = 0\): heads must be in \[1, inf\]"):
        LlamaInit(layers=2, dim=64, heads=0, ffn=128)
    with pytest.raises(ValueError, match="model_type must be one of unigram, bpe"):
        SentencepieceTraining(vocab=300, model_type="wordpiece")
    with pytest.raises(ValueError, match="steps or a share"):
        Length(steps=3, share=0.1)
    with pytest.raises(ValueError, match=r"cosine\(warmup = 3\): warmup must be a Length \(steps or a share\)"):
        Cosine(warmup=3)
    with pytest.raises(ValueError, match=r"wsd\(min_lr = -0.1\): min_lr must be in \[0, inf\]"):
        Wsd(min_lr=-0.1)
    with pytest.raises(TypeError, match="ffn"):
        LlamaInit(layers=2, dim=64, heads=4)
    assert AdamW(weight_decay=0).weight_decay == 0.0 and isinstance(AdamW(weight_decay=0).weight_decay, float)


def test_a_plan_refuses_min_lr_above_lr(tmp_path):
    """`sftc check` reports it in the spec (E057); a plan built another way still cannot hold it."""
    train = lowered(tmp_path).train
    with pytest.raises(ValueError, match="min_lr 0.5 is above lr 2e-05"):
        dataclasses.replace(train, schedule=Cosine(min_lr=0.5))


def test_shares_are_decided_into_steps():
    decided = Wsd(warmup=Length(share=0.05), decay=Length(share=0.2), min_lr=1e-6).decided(200)
    assert decided == Wsd(warmup=Length(steps=10), decay=Length(steps=40), min_lr=1e-6)
    assert (decided.warmup_steps, decided.decay_steps, decided.is_decided) == (10, 40, True)
    assert plan_types.Constant().min_lr == 0.0 and plan_types.Constant().decay_steps is None


def test_every_variant_survives_plan_json(tmp_path):
    for name in plan_types.OPTIMIZERS:
        for schedule in ("constant()", "wsd(warmup = 10%, decay = 3 steps, min_lr = 10%)"):
            plan = lowered(tmp_path, f"optimizer = {name}(lr = 1e-3)\n    schedule = {schedule}")
            again = Plan.from_json(plan.to_json())
            assert again == plan and type(again.train.optimizer) is type(plan.train.optimizer)
    saved = json.loads(lowered(tmp_path).to_json())
    assert saved["train"]["optimizer"] == {
        "name": "adamw",
        "lr": 2e-5,
        "b1": 0.9,
        "b2": 0.999,
        "eps": 1e-8,
        "weight_decay": 0.0,
    }
    assert saved["train"]["schedule"] == {
        "name": "cosine",
        "warmup": {"steps": None, "share": 0.03},
        "min_lr": pytest.approx(2e-6),
    }


def test_a_plan_from_an_older_sftc_says_so(tmp_path):
    old = json.loads(lowered(tmp_path).to_json()) | {"version": 1}
    with pytest.raises(
        PlanVersionError, match=r"written by an older sftc \(plan version 1; this sftc reads version 2\)"
    ):
        Plan.from_dict(old)
