"""Malformed specs: each mistake is reported with the exact code, line and column.

Every case edits one line of the valid BASE spec below (an edit may add lines)
and names the text its diagnostic must point at, so the expected column is the
position of that text on the expected line.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from sftlang.check import check_spec_file
from sftlang.diagnostics import render_plain

BASE = """\
sft "t"
model {
    base = init llama(layers = 2, dim = 64, heads = 4, ffn = 128)
    tokenizer = train sentencepiece(vocab = 300) on tickets
}
data tickets = jsonl("tickets.jsonl") {
    split eval = 10% seed 1
}
template answer for tickets {
    prompt = "Q: {question}\\nA: "
    completion = "{answer}"
}
train {
    steps = 100
    batch = 8
}
eval {
    generate = greedy(max_new_tokens = 32)
}
accept {
    loss <= 2.0
    exact_match >= 0.5
}
"""


@dataclass(frozen=True)
class Case:
    code: str
    edits: dict[int, str]  # line number -> replacement text (may hold several lines, or none)
    line: int  # where the diagnostic must point
    at: str  # the text it must point at on that line
    devices: int = 1
    occurrence: int = 1  # which occurrence of `at` on the line

    def text(self) -> str:
        lines = BASE.split("\n")
        for number, replacement in sorted(self.edits.items(), reverse=True):
            lines[number - 1 : number] = replacement.split("\n") if replacement else []
        return "\n".join(lines)


CASES = {
    # ---- syntax
    "missing =": Case("E001", {14: "    steps 100"}, 14, "100"),
    "double =": Case("E001", {15: "    batch = = 8"}, 15, "=", occurrence=2),
    "double brace": Case("E001", {13: "train {{"}, 13, "{", occurrence=2),
    "unterminated string": Case("E002", {10: '    prompt = "Q: {question}'}, 10, '"Q'),
    "stray character": Case("E002", {15: "    batch = 8 $"}, 15, "$"),
    "unknown escape": Case("E003", {10: '    prompt = "Q: \\q {question}"'}, 10, "\\q"),
    "unclosed block": Case("E004", {23: ""}, 20, "{"),
    "unclosed call": Case("E004", {14: "    optimizer = adamw(lr = 1e-3"}, 14, "("),
    # ---- structure
    "unknown block": Case("E010", {17: "evals {"}, 17, "evals"),
    "unknown key": Case("E011", {15: "    bacth = 8"}, 15, "bacth"),
    "unknown data key": Case("E011", {7: "    overflw = drop"}, 7, "overflw"),
    "unknown template key": Case("E011", {11: '    completon = "{answer}"'}, 11, "completon"),
    "unknown argument": Case("E012", {14: "    optimizer = adamw(lrr = 1e-3)"}, 14, "lrr"),
    "unknown schedule argument": Case("E012", {14: "    schedule = cosine(warmpu = 3%)"}, 14, "warmpu"),
    "duplicate key": Case("E013", {15: "    steps = 8"}, 15, "steps"),
    "duplicate block": Case("E013", {17: "train {"}, 17, "train"),
    "duplicate data": Case("E013", {8: '}\ndata tickets = jsonl("tickets.jsonl")'}, 9, "tickets"),
    "duplicate argument": Case("E013", {14: "    optimizer = adamw(lr = 1e-3, lr = 1e-4)"}, 14, "lr", occurrence=2),
    "model without base": Case("E014", {3: "    dtype = float32"}, 2, "model"),
    "no model block": Case("E014", {2: "", 3: "", 4: "", 5: ""}, 1, "sft"),
    "init without ffn": Case("E014", {3: "    base = init llama(layers = 2, dim = 64, heads = 4)"}, 3, "llama"),
    "regex without pattern": Case("E014", {22: "    regex >= 0.5"}, 22, "regex"),
    "unknown optimizer": Case("E015", {14: "    optimizer = adamx(lr = 1e-3)"}, 14, "adamx"),
    "unknown enum value": Case("E015", {15: "    remat = ful"}, 15, "ful"),
    "unknown source kind": Case("E015", {6: 'data tickets = jsnl("tickets.jsonl") {'}, 6, "jsnl"),
    "unknown lora target": Case("E015", {4: "    adapter = lora(targets = [q, x])"}, 4, "x"),
    "unknown quantization": Case(
        "E015", {4: "    tokenizer = train sentencepiece(vocab = 300) on tickets\n    quantize = int4"}, 5, "int4"
    ),
    "header not first": Case("E016", {1: "", 16: '}\nsft "x"'}, 16, "sft"),
    "split without label": Case("E017", {7: "    split = 10%"}, 7, "split"),
    "split with wrong label": Case("E017", {7: "    split test = 10%"}, 7, "test"),
    "gate outside accept": Case("E017", {14: "    loss <= 2"}, 14, "loss"),
    "setting inside accept": Case("E017", {21: "    loss = 2.0"}, 21, "loss"),
    # ---- types, units, ranges
    "string for integer": Case("E020", {15: '    batch = "8"'}, 15, '"8"'),
    "fraction for integer": Case("E020", {15: "    batch = 8.5"}, 15, "8.5"),
    "positional optimizer arg": Case("E020", {14: "    optimizer = adamw(1e-3)"}, 14, "1e-3"),
    "number for boolean": Case("E020", {15: "    packing = 1"}, 15, "1"),
    "percent threshold on bleu": Case("E020", {22: "    bleu >= 20%"}, 22, "20%"),
    "unknown unit": Case("E021", {18: "    every = 100 stpes"}, 18, "stpes"),
    "zero batch": Case("E022", {15: "    batch = 0"}, 15, "0"),
    "split over 100%": Case("E022", {7: "    split eval = 150%"}, 7, "150%"),
    "b2 out of range": Case("E022", {14: "    optimizer = adamw(b2 = 1.5)"}, 14, "1.5"),
    "negative lr": Case("E022", {14: "    optimizer = adamw(lr = -1e-3)"}, 14, "-1e-3"),
    "bad regex": Case("E022", {22: '    regex("(") >= 0.5'}, 22, '"("'),
    # ---- references
    "unknown source in mixture": Case("E030", {15: "    data = tickts"}, 15, "tickts"),
    "template for unknown source": Case("E030", {9: "template answer for tickts {"}, 9, "tickts"),
    "tokenizer on unknown source": Case(
        "E030", {4: "    tokenizer = train sentencepiece(vocab = 300) on faq"}, 4, "faq"
    ),
    "unknown metric": Case("E032", {22: "    exact_mach >= 0.5"}, 22, "exact_mach"),
    "use file missing": Case("E033", {1: 'use "no-such-base.sft"'}, 1, '"no-such-base.sft"'),
    "data file missing": Case("E035", {6: 'data tickets = jsonl("missing.jsonl") {'}, 6, '"missing.jsonl"'),
    "glob matches nothing": Case("E035", {6: 'data tickets = jsonl("nothing-*.jsonl") {'}, 6, '"nothing-*.jsonl"'),
    "model dir missing": Case("E036", {3: '    base = hf("./models/nope")'}, 3, '"./models/nope"'),
    # ---- templates and columns
    "placeholder not a column": Case("E040", {10: '    prompt = "Q: {questoin}\\nA: "'}, 10, "{questoin}"),
    "nested placeholder not a column": Case("E040", {11: '    completion = "{meta.country}"'}, 11, "{meta.country}"),
    "messages column missing": Case("E040", {10: "    messages = msgs", 11: ""}, 10, "msgs"),
    "unclosed placeholder": Case("E041", {11: '    completion = "{answer"'}, 11, "{"),
    "empty placeholder": Case("E041", {11: '    completion = "{answer} {}"'}, 11, "{}"),
    "template without completion": Case("E042", {11: ""}, 9, "answer"),
    "system message without chat": Case(
        "E042", {11: '    completion = "{answer}"\n    system = "be brief"'}, 12, "system"
    ),
    "template mixing forms": Case("E042", {11: "    messages = question"}, 10, "prompt"),
    "two templates for a source": Case(
        "E043", {12: '}\ntemplate other for tickets {\n    prompt = "x"\n    completion = "y"\n}'}, 13, "tickets"
    ),
    "no template, no conventional columns": Case("E044", {9: "", 10: "", 11: "", 12: ""}, 6, "tickets"),
    # ---- row shapes and source transforms
    "format with prompt/completion": Case(
        "E042", {11: '    completion = "{answer}"\n    format = alpaca'}, 12, "format"
    ),
    "roles on prompt/completion": Case(
        "E042", {11: '    completion = "{answer}"\n    roles = (bot = assistant)'}, 12, "roles"
    ),
    "system on a messages template": Case(
        "E042", {10: "    messages = question", 11: '    system = "be brief"'}, 11, "system"
    ),
    "chat with pre-tokenized rows": Case("E042", {10: "    format = tokens", 11: "    chat = on"}, 11, "chat"),
    "template with only roles": Case("E042", {10: "    roles = (bot = assistant)", 11: ""}, 9, "answer"),
    "alpaca without its columns": Case("E040", {10: "    format = alpaca", 11: ""}, 10, "alpaca"),
    "tools not a column": Case("E040", {10: "    messages = question", 11: "    tools = functions"}, 11, "functions"),
    "rename of a missing column": Case(
        "E040", {7: "    split eval = 10% seed 1\n    rename = (questoin = q)"}, 8, "questoin"
    ),
    "where on a missing column": Case("E040", {7: '    split eval = 10% seed 1\n    where = (lnag = "en")'}, 8, "lnag"),
    "two columns renamed to one": Case(
        "E013", {7: "    split eval = 10% seed 1\n    rename = (question = q, answer = q)"}, 8, "q", occurrence=3
    ),
    "mapping entry without a name": Case(
        "E020", {7: "    split eval = 10% seed 1\n    rename = (question)"}, 8, "question"
    ),
    "where value not a literal": Case("E020", {7: "    split eval = 10% seed 1\n    where = (lang = en)"}, 8, "en)"),
    "empty where list": Case("E022", {7: "    split eval = 10% seed 1\n    where = (lang = [])"}, 8, "[]"),
    "empty rename": Case("E022", {7: "    split eval = 10% seed 1\n    rename = ()"}, 8, "()"),
    "empty source system message": Case("E022", {7: '    split eval = 10% seed 1\n    system = " "'}, 8, '" "'),
    "unknown role": Case("E015", {10: "    messages = question", 11: "    roles = (bot = asistant)"}, 11, "asistant"),
    "role named twice": Case(
        "E013",
        {10: "    messages = question", 11: "    roles = (bot = assistant, bot = user)"},
        11,
        "bot",
        occurrence=2,
    ),
    "unknown message key": Case(
        "E012", {10: "    messages = question", 11: "    keys = (speaker = from)"}, 11, "speaker"
    ),
    "unknown format": Case("E015", {10: "    format = sharegpt", 11: ""}, 10, "sharegpt"),
    "quoted argument name": Case("E020", {14: '    optimizer = adamw("lr" = 1e-3)'}, 14, '"lr"'),
    # ---- arithmetic
    "zero weight": Case("E051", {15: "    data = tickets * 0"}, 15, "0"),
    "mixed weights": Case("E051", {15: "    data = tickets * 0.5 + tickets"}, 15, "tickets", occurrence=2),
    "batch not multiple of micro": Case("E052", {16: "    micro = 3\n}"}, 16, "micro"),
    "batch over data parallel": Case("E053", {15: "    batch = 6"}, 15, "batch", devices=4),
    "warmup longer than training": Case("E054", {15: "    schedule = cosine(warmup = 200 steps)"}, 15, "200 steps"),
    "wsd over 100%": Case("E054", {15: "    schedule = wsd(warmup = 60%, decay = 50%)"}, 15, "50%"),
    "mesh product": Case("E055", {15: "    mesh = (data = 2, fsdp = 1, tensor = 1)"}, 15, "mesh"),
    "two auto axes": Case("E055", {15: "    mesh = (data = auto, fsdp = auto)"}, 15, "mesh"),
    "mesh does not divide devices": Case("E055", {15: "    mesh = (data = auto, tensor = 3)"}, 15, "mesh", devices=4),
    "epochs and steps": Case("E056", {15: "    epochs = 2"}, 14, "steps"),
    "min_lr above lr": Case(
        "E057", {15: "    optimizer = adamw(lr = 1e-5)\n    schedule = cosine(min_lr = 0.5)"}, 16, "0.5"
    ),
    # ---- model consistency
    "init model with base tokenizer": Case("E024", {4: "    tokenizer = base"}, 4, "tokenizer"),
    "heads not multiple of kv_heads": Case(
        "E024", {3: "    base = init llama(layers = 2, dim = 64, heads = 4, kv_heads = 3, ffn = 128)"}, 3, "3"
    ),
    "tokenizer vocab below the characters": Case(
        "E047", {4: "    tokenizer = train sentencepiece(vocab = 262) on tickets"}, 4, "262"
    ),
    "lora on init model": Case(
        "E024", {4: "    tokenizer = train sentencepiece(vocab = 300) on tickets\n    adapter = lora()"}, 5, "lora"
    ),
    "sequence longer than the model's positions": Case(
        "E024",
        {
            3: "    base = init llama(layers = 2, dim = 64, heads = 4, ffn = 128, max_seq_len = 512)",
            15: "    seq_len = 1024",
        },
        15,
        "seq_len",
    ),
    "vocab smaller than tokenizer": Case(
        "E024", {3: "    base = init llama(layers = 2, dim = 64, heads = 4, ffn = 128, vocab = 100)"}, 3, "100"
    ),
    # ---- acceptance
    "generation metric without generate": Case("E060", {18: "    samples = 10"}, 22, "exact_match"),
    "no eval rows": Case("E061", {7: ""}, 20, "loss"),
    "metric on source without eval rows": Case("E061", {7: "", 21: "    loss(tickets) <= 2.0"}, 20, "tickets"),
    "contradictory gates": Case("E062", {22: "    loss >= 3.0"}, 21, "loss"),
    "unreachable share": Case("E063", {22: "    exact_match >= 80"}, 22, "80"),
    "negative loss bound": Case("E063", {21: "    loss <= -1"}, 21, "-1"),
    "duplicate gate": Case("E064", {22: "    loss <= 1.0"}, 22, "loss"),
    "gain of a metric with no better side": Case("E065", {22: "    gain(mean_tokens) >= 1"}, 22, "mean_tokens"),
    "gain of a review metric": Case("E065", {22: "    gain(review_score) >= 1"}, 22, "review_score"),
    "gain out of reach": Case("E063", {22: "    gain(exact_match) >= 1.5"}, 22, "1.5"),
    "gain with two metrics": Case("E020", {22: "    gain(rouge_l, tickets) >= 0.1"}, 22, "gain"),
    "gain on a model trained from scratch": Case("E066", {22: "    gain(rouge_l) >= 0.1"}, 22, "gain"),
    "review wins on a model trained from scratch": Case("E066", {22: "    review_wins >= 60%"}, 22, "review_wins"),
    "baseline on a model trained from scratch": Case("E066", {18: "    baseline = base"}, 18, "base"),
    "peft export without adapter": Case("E070", {16: "}\noutput {\n    export = peft\n}"}, 18, "export"),
    "quantized base of an init model": Case(
        "E072", {4: "    tokenizer = train sentencepiece(vocab = 300) on tickets\n    quantize = nf4"}, 5, "nf4"
    ),
}


def _column(line: str, needle: str, occurrence: int) -> int:
    index = -1
    for _ in range(occurrence):
        index = line.index(needle, index + 1)
    return index + 1


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("specs")
    (root / "tickets.jsonl").write_text(
        '{"question": "where is my order?", "answer": "soon", "meta": {"lang": "en"}}\n'
        '{"question": "refund?", "answer": "yes", "meta": {"lang": "de"}}\n'
    )
    return root


def test_base_spec_is_valid(workdir):
    spec = workdir / "base.sft"
    spec.write_text(BASE)
    _, problems = check_spec_file(spec, devices=1, offline=True)
    assert problems == []


def test_there_are_enough_cases():
    assert len(CASES) >= 40
    assert len({c.code for c in CASES.values()}) >= 30


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_spec(workdir, name):
    case = CASES[name]
    text = case.text()
    spec = workdir / (name.replace(" ", "_").replace("/", "_") + ".sft")
    spec.write_text(text)
    _, problems = check_spec_file(spec, devices=case.devices, offline=True)
    errors = [d for d in problems if d.is_error]
    assert errors, f"no error for {name}:\n{text}"
    line_text = text.split("\n")[case.line - 1]
    expected = (case.code, case.line, _column(line_text, case.at, case.occurrence))
    found = {(d.code, d.span.line, d.span.column): d for d in errors if d.span is not None}
    rendered = "\n".join(render_plain(d) for d in errors)
    assert expected in found, rendered
    hit = found[expected]
    assert hit.span.file.endswith(spec.name)
    assert hit.message and "^" in render_plain(hit)
