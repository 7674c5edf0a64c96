"""Cross-check against a peer: TRL's SFT data preparation trains exactly the same tokens."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.data.pipeline import build_pipeline
from runtime.plan.data_plan import DataPlan, SourceSpec, TemplateSpec
from tests.runtime.data_helpers import bpe_tokenizer, wordlevel_tokenizer, write_jsonl

trl = pytest.importorskip("trl")
torch = pytest.importorskip("torch")

ROWS = [
    {"prompt": "Question: what is the capital of France?\nAnswer:", "completion": " Paris."},
    {"prompt": "Question: what is two plus three?\nAnswer: ", "completion": "five."},  # merges across the boundary
    {
        "prompt": "Tell me a joke about cats.",
        "completion": " Why did the cat sit on the computer? To keep an eye on the mouse.",
    },
    {"prompt": "", "completion": "Hello! How are you today?"},
    {"prompt": "Hello!", "completion": '{"intent": "refund", "order": "12345"}'},
]
WORD_ROWS = [
    {"prompt": "question : what is two plus three ? answer :", "completion": "five"},
    {"prompt": "hello", "completion": "hi thank you"},
    {"prompt": "tell me a joke about cats", "completion": "why did the chicken cross the road ?"},
]


def trl_prepared(tok, rows, tmp_path):
    import datasets
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        )
    )
    args = SFTConfig(
        output_dir=str(tmp_path / "trl"),
        report_to="none",
        use_cpu=True,
        bf16=False,
        max_length=None,
        packing=False,
        completion_only_loss=True,
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(model=model, args=args, processing_class=tok, train_dataset=datasets.Dataset.from_list(rows))
    return trainer.train_dataset


@pytest.mark.parametrize("kind", ["bpe", "wordlevel"])
def test_trained_tokens_equal_trl_sft(tmp_path, kind):
    tok = bpe_tokenizer() if kind == "bpe" else wordlevel_tokenizer()
    rows = ROWS if kind == "bpe" else WORD_ROWS
    ref = trl_prepared(tok, rows, tmp_path)
    path = write_jsonl(str(tmp_path / "pc.jsonl"), rows)
    plan = DataPlan(
        sources=(SourceSpec(name="pc", kind="jsonl", paths=(path,)),), seq_len=256, packing=False, global_batch_size=1
    )
    p = build_pipeline(plan, tok, cache_dir=str(tmp_path / "c"))
    ours = p.examples()
    assert len(ours) == len(rows) == len(ref)
    for ex, r in zip(ours, ref):
        labels = np.asarray(r["labels"])
        assert ex.tokens.tolist() == list(r["input_ids"])
        # Position 0 is never a target (transformers shifts labels inside the loss; we mark it 0 on
        # purpose), so the trained *targets* are positions 1.. on both sides.
        assert ex.trained[1:].tolist() == (labels[1:] != -100).astype(int).tolist()
        assert ex.trained[0] == 0
    if kind == "bpe":
        assert p.stats.sources["pc"].boundary_merges == 1


def test_template_columns_equal_trl_on_conventional_columns(tmp_path):
    """A prompt/completion *template* over other columns trains what TRL trains on the rendered columns."""
    tok = bpe_tokenizer()
    raw = [
        {"question": "what is the capital of France?", "answer": "Paris."},
        {"question": "what is two plus three?", "answer": "five."},
    ]
    rendered = [{"prompt": f"Question: {r['question']}\nAnswer:", "completion": f" {r['answer']}"} for r in raw]
    ref = trl_prepared(tok, rendered, tmp_path)
    path = write_jsonl(str(tmp_path / "raw.jsonl"), raw)
    plan = DataPlan(
        sources=(SourceSpec(name="t", kind="jsonl", paths=(path,)),),
        templates={"t": TemplateSpec(prompt="Question: {question}\nAnswer:", completion=" {answer}")},
        seq_len=256,
        packing=False,
        global_batch_size=1,
    )
    for ex, r in zip(build_pipeline(plan, tok, cache_dir=str(tmp_path / "c")).examples(), ref):
        assert ex.tokens.tolist() == list(r["input_ids"])
        assert ex.trained[1:].tolist() == (np.asarray(r["labels"])[1:] != -100).astype(int).tolist()
