"""Tokenizers: everywhere in the runtime a tokenizer is a transformers fast tokenizer.

The language's tokenizer forms map to these loaders::

    tokenizer = base                          -> load_tokenizer(base_dir)
    tokenizer = hf("dir")                     -> load_tokenizer("dir")
    tokenizer = sentencepiece("tok.model")    -> from_sentencepiece("tok.model")
    train sentencepiece(vocab = 4096) on X    -> train_sentencepiece(texts, 4096, out_dir)

Every loader returns a ``PreTrainedTokenizerBase`` with ``is_fast`` true and a
pad token (`ensure_pad_token`), so ``tokenizer.save_pretrained(dir)`` next to an
exported model makes ``AutoTokenizer.from_pretrained(dir)`` give identical ids.

Pad tokens. A tokenizer without one gets one *without resizing the
vocabulary*: the first of (1) a dedicated padding token already in the
vocabulary (``<|finetune_right_pad_id|>``, ``<pad>``, ``<|pad|>``, ``[PAD]``,
``<|padding|>``), (2) the unknown token, (3) the EOS token. This is safe
because padding is always excluded through attention masks / segment ids and
loss masks, never by comparing ids with the pad id.

Trained SentencePiece tokenizers (`train_sentencepiece`) are unigram models
with byte fallback (no unknown characters), ``split_digits=True`` (each digit
its own token: copying numbers is learned much sooner), identity
normalisation and kept whitespace (``decode(encode(text)) == text``), special
pieces ``<unk>``=0, ``<s>``=1, ``</s>``=2, ``<pad>``=3, one training thread and
unshuffled input (deterministic: the same texts give byte-identical files).
They add ``<s>`` at the start of each encoded text, like Llama tokenizers.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable
from pathlib import Path

from runtime.plan.sftc_error import SftcError
from runtime.plan.vocab_range import CharacterCount, explain, smallest_vocab

__all__ = [
    "DEFAULT_CHAT_TEMPLATE",
    "TokenizerError",
    "ensure_pad_token",
    "from_sentencepiece",
    "load_tokenizer",
    "train_sentencepiece",
]

PAD_CANDIDATES = ("<|finetune_right_pad_id|>", "<pad>", "<|pad|>", "[PAD]", "<|padding|>")

# For tokenizers trained here (they have no chat template of their own).
DEFAULT_CHAT_TEMPLATE = (
    "{% if tools %}{{ '<|tools|>\n' }}{% for tool in tools %}{{ tool | tojson + '\n' }}{% endfor %}"
    "{{ eos_token + '\n' }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] }}"
    "{% for call in message['tool_calls'] or [] %}{{ '<|call|>' + call['function'] | tojson }}{% endfor %}"
    "{{ eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


# On a vocabulary error, a corpus of at most this many characters is trained once more
# with PROBE_VOCAB pieces: sentencepiece then names the largest vocabulary it allows
# (~30 ms on 400 short texts).
PROBE_CHARACTERS = 2_000_000
PROBE_VOCAB = 1_000_000


class TokenizerError(SftcError):
    """A tokenizer cannot be loaded, converted or trained; the message says what to do."""


def ensure_pad_token(tokenizer):
    """Give ``tokenizer`` a pad token without growing its vocabulary (see module docstring).

    Returns the same tokenizer object. Raises `TokenizerError` when no
    candidate exists.
    """
    if tokenizer.pad_token is not None:
        return tokenizer
    vocab = tokenizer.get_vocab()
    for candidate in PAD_CANDIDATES:
        if candidate in vocab:
            tokenizer.pad_token = candidate
            return tokenizer
    for existing in (tokenizer.unk_token, tokenizer.eos_token):
        if existing is not None:
            tokenizer.pad_token = existing
            return tokenizer
    raise TokenizerError(
        "the tokenizer has no pad, unknown or end-of-sequence token to pad with; "
        "add one to the tokenizer files (special_tokens_map / tokenizer_config.json)"
    )


def _number_after(text: str, marker: str) -> int | None:
    """The integer after ``marker`` in a sentencepiece error message, if it is there."""
    found = re.search(re.escape(marker) + r"\s*(\d+)", text)
    return int(found.group(1)) if found else None


def _check_fast(tokenizer, source: str):
    if not getattr(tokenizer, "is_fast", False):
        raise TokenizerError(
            f"{source}: only a slow (Python) tokenizer is available; provide "
            "tokenizer.json (a fast tokenizer), e.g. by saving it with "
            "transformers where the conversion works"
        )
    return tokenizer


def load_tokenizer(path: str | os.PathLike, *, revision: str | None = None):
    """The tokenizer stored in a Hugging Face directory (or hub id, when reachable).

    Used for ``tokenizer = base`` and ``tokenizer = hf("dir")``. Never runs
    remote code.
    """
    from transformers import AutoTokenizer

    from runtime.checkpoints.hf_checkpoint import CheckpointError, resolve_checkpoint

    try:
        directory = resolve_checkpoint(path, revision)
    except CheckpointError as e:
        raise TokenizerError(str(e)) from None
    names = {p.name for p in Path(directory).iterdir()}
    if not names & {"tokenizer.json", "tokenizer_config.json", "tokenizer.model"}:
        raise TokenizerError(
            f"{directory}: no tokenizer files (tokenizer.json / tokenizer_config.json). Set "
            '`tokenizer = hf("dir")` or `sentencepiece("file.model")` in the model block, or '
            "train one with `train sentencepiece(vocab = N) on <data>`."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=False)
    except Exception as e:
        raise TokenizerError(f"{directory}: cannot load the tokenizer: {e}") from None
    return ensure_pad_token(_check_fast(tokenizer, str(directory)))


def _load_proto(model_file: Path):
    from transformers.convert_slow_tokenizer import import_protobuf

    proto = import_protobuf().ModelProto()
    try:
        proto.ParseFromString(model_file.read_bytes())
    except Exception as e:
        raise TokenizerError(f"{model_file}: not a SentencePiece model ({e})") from None
    if not proto.pieces:
        raise TokenizerError(f"{model_file}: not a SentencePiece model (no pieces)")
    return proto


def from_sentencepiece(model_file: str | os.PathLike, *, add_bos: bool = True, chat_template: str | None = None):
    """Wrap a SentencePiece ``.model`` file as a transformers fast tokenizer.

    The result encodes text exactly as ``sentencepiece.SentencePieceProcessor``
    does (unigram or BPE, byte fallback included), then prepends the BOS
    token when ``add_bos`` and the model has one. Special tokens are the
    model's ``unk``/``bos``/``eos``/``pad`` pieces.
    """
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SpmConverter

    model_file = Path(model_file)
    if not model_file.is_file():
        raise TokenizerError(f"{model_file}: no such SentencePiece model file")
    proto = _load_proto(model_file)
    spec = proto.trainer_spec
    pieces = [(p.piece, p.score) for p in proto.pieces]
    if spec.model_type == 1:  # unigram
        vocab = pieces
    elif spec.model_type == 2:  # bpe
        vocab = {piece: i for i, (piece, _) in enumerate(pieces)}
    else:
        raise TokenizerError(
            f"{model_file}: SentencePiece model type {spec.model_type} is not supported (use unigram or bpe)"
        )
    backend = SpmConverter.build_tokenizer_from_spm_proto(proto=proto, vocab=vocab)
    if backend is None:
        raise TokenizerError(f"{model_file}: cannot convert this SentencePiece model")

    def piece(i: int) -> str | None:
        return proto.pieces[i].piece if 0 <= i < len(proto.pieces) else None

    specials = {
        "unk_token": piece(spec.unk_id),
        "bos_token": piece(spec.bos_id),
        "eos_token": piece(spec.eos_id),
        "pad_token": piece(spec.pad_id),
    }
    specials = {k: v for k, v in specials.items() if v is not None}
    # control pieces (type 3) are special tokens: never produced from text, skipped in decode
    from tokenizers import AddedToken

    backend.add_special_tokens(
        [AddedToken(p.piece, special=True, normalized=False) for p in proto.pieces if p.type == 3]
    )
    bos = specials.get("bos_token")
    if add_bos and bos is not None:
        bos_id = spec.bos_id
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **specials)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return ensure_pad_token(tokenizer)


def train_sentencepiece(
    texts: Iterable[str],
    vocab_size: int,
    out_dir: str | os.PathLike,
    *,
    model_type: str = "unigram",
    character_coverage: float = 0.9995,
    max_sentence_length: int = 16384,
    num_threads: int = 1,
    split_digits: bool = True,
    byte_fallback: bool = True,
    chat_template: str | None = DEFAULT_CHAT_TEMPLATE,
):
    """Train a SentencePiece model on ``texts`` and return it as a fast tokenizer.

    Writes ``out_dir/tokenizer.model`` (the SentencePiece model) and the
    transformers files (``tokenizer.json``, ``tokenizer_config.json``), so
    ``AutoTokenizer.from_pretrained(out_dir)`` loads it. Deterministic for the
    same ``texts`` (one thread, no shuffling, fixed seed). See the module
    docstring for the settings.
    """
    import sentencepiece as spm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = out / "tokenizer"
    count = 0
    characters = CharacterCount(max_sentence_length)
    kept: list[str] | None = []  # a small corpus is kept to find its largest vocabulary on failure
    kept_characters = 0

    def sentences():
        nonlocal count, kept, kept_characters
        for text in texts:
            if not isinstance(text, str):
                raise TokenizerError(f"train sentencepiece: item {count} is a {type(text).__name__}, expected text")
            if text:
                count += 1
                characters.add(text)
                kept_characters += len(text)
                if kept is not None:
                    kept.append(text)
                    if kept_characters > PROBE_CHARACTERS:
                        kept = None
                yield text

    def train(sentence_iterator, size, **where):
        spm.set_random_generator_seed(0)
        spm.SentencePieceTrainer.train(
            sentence_iterator=sentence_iterator,
            vocab_size=int(size),
            model_type=model_type,
            byte_fallback=bool(byte_fallback),
            split_digits=bool(split_digits),
            character_coverage=character_coverage,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True,
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=3,
            unk_piece="<unk>",
            bos_piece="<s>",
            eos_piece="</s>",
            pad_piece="<pad>",
            num_threads=num_threads,
            shuffle_input_sentence=False,
            input_sentence_size=0,
            max_sentence_length=max_sentence_length,
            train_extremely_large_corpus=False,
            minloglevel=2,
            **where,
        )

    def largest() -> int | None:
        """The most pieces the kept corpus yields (sentencepiece names it when asked for too many)."""
        if not kept:
            return None
        try:
            train(iter(kept), PROBE_VOCAB, model_writer=io.BytesIO())
        except Exception as e:
            return _number_after(str(e), "value <=")
        return None

    try:
        train(sentences(), vocab_size, model_prefix=str(prefix))
    except TokenizerError:
        raise
    except Exception as e:
        text = str(e)
        needed = characters.required(character_coverage)
        smallest = smallest_vocab(needed, bool(byte_fallback))
        where = f"train sentencepiece(vocab = {vocab_size}) on {count} texts"
        if "smaller than required_chars" in text:
            smallest = _number_after(text, " vs ") or smallest
            most = largest()
            fix = f"set vocab between {smallest} and {most}" if most else f"raise vocab to at least {smallest}"
            raise TokenizerError(
                f"{where}: vocab {vocab_size} is too small: the vocabulary needs "
                f"{explain(smallest - smallest_vocab(0, bool(byte_fallback)), bool(byte_fallback))}; "
                f"{fix}"
            ) from None
        if "too high" in text and (most := _number_after(text, "value <=")):
            raise TokenizerError(
                f"{where}: vocab {vocab_size} is too large: these texts yield at most {most} pieces; "
                f"set vocab between {smallest} and {most} (at least "
                f"{explain(needed, bool(byte_fallback))}), or add text"
            ) from None
        raise TokenizerError(f"{where} failed: {text.rstrip('.')}.") from None
    (out / "tokenizer.vocab").unlink(missing_ok=True)
    # the trainer records the output path; drop it so equal texts give equal bytes anywhere
    model_file = prefix.with_suffix(".model")
    proto = _load_proto(model_file)
    proto.trainer_spec.model_prefix = "tokenizer"
    model_file.write_bytes(proto.SerializeToString())
    tokenizer = from_sentencepiece(prefix.with_suffix(".model"), chat_template=chat_template)
    tokenizer.save_pretrained(out)
    return tokenizer
