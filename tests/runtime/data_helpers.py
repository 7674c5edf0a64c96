"""Hub-free tokenizers and chat templates for the data-pipeline tests."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

# ---------------------------------------------------------------- chat templates (real styles)

CHATML = (  # Qwen / ChatML
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

LLAMA3 = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

MISTRAL = (  # Mistral-7B-Instruct v0.1 style [INST]
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}"
    "{% endfor %}"
)

ZEPHYR = (
    "{% for message in messages %}\n"
    "{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n"
    "{% endfor %}"
)

# A reasoning-style template that drops <think> blocks of earlier assistant turns: not prefix-stable.
THINK_DROPPING = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' and not loop.last %}"
    "{{ '<|im_start|>assistant\n' + message['content'].split('</think>')[-1] | trim + '<|im_end|>\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIALS = [
    "<pad>",
    "<s>",
    "</s>",
    "<unk>",
    "<|im_start|>",
    "<|im_end|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|user|>",
    "<|assistant|>",
    "<|system|>",
    "[INST]",
    "[/INST]",
]

WORDS = """the a an is are of to and in what how why which who hello hi thanks thank you please
question answer q a ok yes no capital france paris germany berlin italy rome two plus three four five
one six seven eight nine ten zero user assistant system help me with tell joke about cats dogs sure
here it why did chicken cross road other side good bye name my your i am bot tickets order where
be think so fine great weather today sunny rainy cold hot 0 1 2 3 4 5 6 7 8 9 : ? ! . , # ### { } [ ]
json intent refund status""".split()


def wordlevel_tokenizer(chat_template: str | None = None, extra_words: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """Word-level tokenizer: every word and every punctuation run is one token; whitespace is dropped.

    Ids are deterministic: specials first (in SPECIALS order), then words in order.
    The post-processor prepends ``<s>`` (BOS) like Llama-family tokenizers do.
    """
    vocab: dict[str, int] = {}
    for w in SPECIALS + WORDS + list(extra_words):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(SPECIALS)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tok.decoder = decoders.WordPiece(prefix="##")  # joins with spaces
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast


def ids(tok: PreTrainedTokenizerFast, *pieces: str) -> list[int]:
    """Token ids of whitespace-separated words/specials (for hand-computed expectations)."""
    out = []
    for piece in pieces:
        for w in piece.split():
            out.append(tok.convert_tokens_to_ids(w))
    return out


_BPE_CORPUS = [
    "Question: what is the capital of France? Answer: Paris.",
    "Question: what is two plus three? Answer: five.",
    "Tell me a joke about cats. Why did the cat sit on the computer? To keep an eye on the mouse.",
    "Hello! How are you today? I am fine, thank you. The weather is sunny and warm.",
    '{"intent": "refund", "order": "12345"} {"intent": "status", "order": "67890"}',
] * 20


def bpe_tokenizer(
    chat_template: str | None = None, vocab_size: int = 400, extra_specials: Iterable[str] = ()
) -> PreTrainedTokenizerFast:
    """A small byte-level BPE tokenizer trained in-process (GPT-2 / Llama 3 style, no BOS post-processor)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS + list(extra_specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_BPE_CORPUS, trainer=trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast


def write_jsonl(path: str, rows: list[dict]) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


# ---------------------------------------------------------------- chat templates with tools (each family's style)

TOOL_SPECIALS = [
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<|python_tag|>",
    "[TOOL_CALLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
]

CHATML_TOOLS = (  # Qwen 2.5 style: tools in the system turn, calls in <tool_call>, results as a user turn
    "{%- if tools %}{{ '<|im_start|>system\n' }}{% if messages[0]['role'] == 'system' %}"
    "{{ messages[0]['content'] + '\n\n' }}{% endif %}{{ '# Tools\n' }}"
    "{% for tool in tools %}{{ tool | tojson }}{{ '\n' }}{% endfor %}{{ '<|im_end|>\n' }}"
    "{%- elif messages[0]['role'] == 'system' %}{{ '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}"
    "{%- elif message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' + message['content'] }}"
    "{%- for call in message['tool_calls'] or [] %}"
    "{{ '<tool_call>' }}{{ {'name': call['function']['name'], 'arguments': call['function']['arguments']} | tojson }}"
    "{{ '</tool_call>' }}{%- endfor %}{{ '<|im_end|>\n' }}"
    "{%- elif message['role'] == 'tool' %}"
    "{{ '<|im_start|>user\n<tool_response>' + message['content'] + '</tool_response><|im_end|>\n' }}"
    "{%- else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

LLAMA3_TOOLS = (  # Llama 3.1 style: tools in the system turn, a call as JSON closed by <|eot_id|>, results as ipython
    "{{ bos_token }}"
    "{%- if tools %}{{ '<|start_header_id|>system<|end_header_id|>\n\nYou may call these functions:\n' }}"
    "{% for tool in tools %}{{ tool | tojson }}{{ '\n' }}{% endfor %}{{ '<|eot_id|>' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' and message['tool_calls'] %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{%- for call in message['tool_calls'] %}"
    "{{ {'name': call['function']['name'], 'parameters': call['function']['arguments']} | tojson }}"
    "{%- endfor %}{{ '<|eot_id|>' }}"
    "{%- elif message['role'] == 'tool' %}"
    "{{ '<|start_header_id|>ipython<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{%- else %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

MISTRAL_TOOLS = (  # Mistral v3 style: [AVAILABLE_TOOLS] before the first user turn, [TOOL_CALLS], [TOOL_RESULTS]
    "{{ bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if tools and loop.first %}{{ '[AVAILABLE_TOOLS] ' }}{{ tools | tojson }}{{ '[/AVAILABLE_TOOLS]' }}{%- endif %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{%- elif message['role'] == 'assistant' and message['tool_calls'] %}"
    "{{ '[TOOL_CALLS] ' }}{{ message['tool_calls'] | map(attribute='function') | list | tojson }}{{ eos_token }}"
    "{%- elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{%- elif message['role'] == 'tool' %}"
    "{{ '[TOOL_RESULTS] ' }}{{ {'content': message['content']} | tojson }}{{ '[/TOOL_RESULTS]' }}"
    "{%- else %}{{ raise_exception('Only user, assistant and tool roles are supported!') }}{%- endif %}"
    "{%- endfor %}"
)
