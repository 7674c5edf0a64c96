"""Tokenizers: SentencePiece training and wrapping, export + AutoTokenizer reload, pad tokens."""

from __future__ import annotations

import json
import random

import pytest
import sentencepiece as spm
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from runtime.checkpoints.tokenizer_files import (
    TokenizerError,
    ensure_pad_token,
    from_sentencepiece,
    load_tokenizer,
    train_sentencepiece,
)

SAMPLES = [
    "where is my order 48213?",
    "Hello  World\n\tnew line é ü 中文 🙂",
    '{"intent": "refund", "order_id": "90210"}',
    " leading space",
    "trailing  ",
    "12,345.67",
    "",
]


def _corpus(n=1500, seed=0):
    rng = random.Random(seed)
    words = (
        "the order refund shipping delayed package arrived broken please help my "
        "where is cancel address change invoice account password"
    ).split()
    return [
        " ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + f" order {rng.randint(10000, 99999)}."
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("sp")
    return train_sentencepiece(iter(_corpus()), 300, out), out


def test_training_is_deterministic(trained, tmp_path):
    _, out = trained
    again = train_sentencepiece(_corpus(), 300, tmp_path / "again")
    assert (tmp_path / "again" / "tokenizer.model").read_bytes() == (out / "tokenizer.model").read_bytes()
    assert json.loads((tmp_path / "again" / "tokenizer.json").read_text()) == json.loads(
        (out / "tokenizer.json").read_text()
    )
    assert len(again) == 300


def test_trained_tokenizer_encodes_like_sentencepiece(trained):
    tok, out = trained
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    assert tok.is_fast
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2, 3)
    for text in SAMPLES + _corpus(30, seed=1):
        ids = tok(text)["input_ids"]
        assert ids == [1] + sp.encode(text), text
        assert tok.decode(ids, skip_special_tokens=True) == text
    # split_digits: every digit is its own token
    pieces = tok.convert_ids_to_tokens(tok("order 48213", add_special_tokens=False)["input_ids"])
    assert pieces[-5:] == ["4", "8", "2", "1", "3"]
    # byte fallback: unseen characters become byte pieces, not <unk>
    assert tok.unk_token_id not in tok("中文 🙂")["input_ids"]


def test_export_with_model_reloads_identically(trained, tmp_path):
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from runtime.checkpoints.hf_checkpoint import load_pretrained, save_pretrained
    from runtime.models import ModelConfig, build, forward

    tok, _ = trained
    config = ModelConfig.llama(layers=1, dim=32, heads=2, ffn=64, vocab=len(tok))
    model = build(config, rngs=1)
    out = save_pretrained(model, config, tmp_path / "export", tokenizer=tok)
    reloaded = AutoTokenizer.from_pretrained(out)
    assert reloaded.is_fast
    for text in SAMPLES:
        assert reloaded(text)["input_ids"] == tok(text)["input_ids"]
    assert reloaded.chat_template == tok.chat_template
    messages = [{"role": "user", "content": "refund 123"}]
    assert reloaded.apply_chat_template(messages, add_generation_prompt=True) == tok.apply_chat_template(
        messages, add_generation_prompt=True
    )
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (1, 2, 3)
    # the runtime's own loaders read the export back
    assert load_tokenizer(out)("order 7")["input_ids"] == tok("order 7")["input_ids"]
    again, _ = load_pretrained(out)
    ids = np.array([tok("where is my order 48213?")["input_ids"]])
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(np.asarray(forward(again, ids)), ref, atol=1e-4, rtol=0)


def test_wrap_bpe_sentencepiece_model(tmp_path):
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus(800, seed=2)),
        model_prefix=str(tmp_path / "bpe"),
        vocab_size=300,
        model_type="bpe",
        byte_fallback=True,
        split_digits=True,
        num_threads=1,
        minloglevel=2,
    )
    tok = from_sentencepiece(tmp_path / "bpe.model")
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "bpe.model"))
    for text in SAMPLES[:4] + _corpus(20, seed=3):
        assert tok(text)["input_ids"] == [sp.bos_id()] + sp.encode(text), text
    # this model has no <pad>: the unknown token is reused, the vocabulary is not grown
    assert tok.pad_token == "<unk>" and len(tok) == 300


def _word_level(vocab, **specials):
    from tokenizers import Tokenizer, models, pre_tokenizers

    backend = Tokenizer(models.WordLevel(vocab, unk_token=specials.get("unk_token")))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, **specials)


def test_pad_token_choice_never_resizes():
    vocab = {"a": 0, "b": 1, "</s>": 2, "<unk>": 3, "<|finetune_right_pad_id|>": 4}
    tok = ensure_pad_token(_word_level(vocab, eos_token="</s>", unk_token="<unk>"))
    assert tok.pad_token == "<|finetune_right_pad_id|>" and len(tok) == 5
    vocab = {"a": 0, "b": 1, "</s>": 2, "<unk>": 3}
    assert ensure_pad_token(_word_level(vocab, eos_token="</s>", unk_token="<unk>")).pad_token == "<unk>"
    vocab = {"a": 0, "b": 1, "</s>": 2}
    tok = ensure_pad_token(_word_level(vocab, eos_token="</s>"))
    assert tok.pad_token == "</s>" and tok.pad_token_id == 2 and len(tok) == 3
    batch = tok(["a b a", "b"], padding=True)
    assert batch["input_ids"][1][1:] == [2, 2] and batch["attention_mask"][1] == [1, 0, 0]
    with pytest.raises(TokenizerError, match="no pad, unknown or end-of-sequence"):
        ensure_pad_token(_word_level({"a": 0}))


def test_loader_errors(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(TokenizerError, match="no tokenizer files"):
        load_tokenizer(tmp_path)
    with pytest.raises(TokenizerError, match="no such SentencePiece model file"):
        from_sentencepiece(tmp_path / "missing.model")
    (tmp_path / "junk.model").write_bytes(b"\x00garbage")
    with pytest.raises(TokenizerError, match="not a SentencePiece model"):
        from_sentencepiece(tmp_path / "junk.model")
    with pytest.raises(TokenizerError, match="vocab 5000 is too large"):
        train_sentencepiece(["tiny corpus"] * 5, 5000, tmp_path / "small")


def _twelve_words(rows=400, seed=0):
    rng = random.Random(seed)
    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()
    return [" ".join(rng.choice(words) for _ in range(12)) for _ in range(rows)]


def test_vocab_errors_give_the_valid_range(tmp_path):
    """400 short rows (22 distinct characters, the space included) allow 282 to 294 pieces:
    a vocabulary outside says which way to go and how far."""
    with pytest.raises(TokenizerError) as small:
        train_sentencepiece(_twelve_words(), 200, tmp_path / "small")
    assert str(small.value) == (
        "train sentencepiece(vocab = 200) on 400 texts: vocab 200 is too small: the vocabulary needs "
        "256 byte pieces + 4 special pieces + 22 distinct characters = 282; set vocab between 282 and 294"
    )
    with pytest.raises(TokenizerError) as large:
        train_sentencepiece(_twelve_words(), 4096, tmp_path / "large")
    assert str(large.value) == (
        "train sentencepiece(vocab = 4096) on 400 texts: vocab 4096 is too large: these texts yield at "
        "most 294 pieces; set vocab between 282 and 294 (at least 256 byte pieces + 4 special pieces + "
        "22 distinct characters = 282), or add text"
    )
    for edge in (282, 294):
        assert len(train_sentencepiece(_twelve_words(), edge, tmp_path / str(edge))) == edge


@pytest.mark.parametrize("coverage", [1.0, 0.9995, 0.99])
@pytest.mark.parametrize("byte_fallback", [True, False])
def test_character_count_matches_the_trainer(tmp_path, coverage, byte_fallback):
    """`sftc check` states the smallest vocabulary from `CharacterCount`: it must be the
    number the trainer itself requires (spaces, NUL, tabs, emoji, a too-long text)."""
    from runtime.plan.vocab_range import CharacterCount, smallest_vocab

    texts = _corpus(300) + SAMPLES + ["nul\0byte", "x" * 10 + "Q" * 20000, "▁ literal"] * 3
    count = CharacterCount()
    for text in texts:
        count.add(text)
    expected = smallest_vocab(count.required(coverage), byte_fallback)
    with pytest.raises(TokenizerError, match=f"= {expected}; "):
        train_sentencepiece(texts, expected - 1, tmp_path, character_coverage=coverage, byte_fallback=byte_fallback)
