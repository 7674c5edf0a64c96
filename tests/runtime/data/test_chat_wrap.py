"""`chat = on`: a prompt/completion row through the chat template is exactly the
conversation [system], user = prompt, assistant = completion; only the assistant
turn (with its end-of-turn token) is trained."""

import numpy as np
import pytest

from runtime.plan.data_plan import TemplateSpec
from tests.runtime.data.test_masks import pairs, tokenized
from tests.runtime.data_helpers import CHATML, LLAMA3, wordlevel_tokenizer

ROW = {"q": "what is the capital of france ?", "a": "paris"}


@pytest.mark.parametrize("chat_template", [CHATML, LLAMA3], ids=["chatml", "llama3"])
def test_chat_wrapped_pair_equals_the_conversation(tmp_path, chat_template):
    tok = wordlevel_tokenizer(chat_template=chat_template)
    wrapped = tokenized(
        tmp_path, [ROW], TemplateSpec(prompt="{q}", completion="{a}", chat=True, system="you are a bot"), tok, name="w"
    )
    conversation = [
        {
            "messages": [
                {"role": "system", "content": "you are a bot"},
                {"role": "user", "content": ROW["q"]},
                {"role": "assistant", "content": ROW["a"]},
            ]
        }
    ]
    reference = tokenized(
        tmp_path, conversation, TemplateSpec(messages="messages", train_on="last_assistant"), tok, name="m"
    )
    tokens, mask = wrapped.example(0)
    ref_tokens, ref_mask = reference.example(0)
    assert tokens.tolist() == ref_tokens.tolist() and mask.tolist() == ref_mask.tolist()
    trained = [t for t, m in pairs(tok, wrapped) if m]
    end = "<|im_end|>" if chat_template == CHATML else "<|eot_id|>"
    assert trained == ["paris", end]
    assert int(np.asarray(mask).sum()) == 2


def test_chat_needs_a_chat_template(tmp_path):
    from runtime.plan.data_errors import DataError

    with pytest.raises(DataError, match="chat template"):
        tokenized(tmp_path, [ROW], TemplateSpec(prompt="{q}", completion="{a}", chat=True), wordlevel_tokenizer())
