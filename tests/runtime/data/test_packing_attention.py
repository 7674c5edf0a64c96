"""Packing never lets a token see another example, checked through the model itself:
every example's logits inside a packed batch equal those of the example run alone."""

import numpy as np

from runtime.models import ModelConfig, build, forward
from tests.runtime.data.test_packing import make, random_rows
from tests.runtime.data_helpers import wordlevel_tokenizer


def test_packed_rows_give_each_example_its_own_logits(tmp_path):
    tok = wordlevel_tokenizer()
    pipeline = make(tmp_path, tok, [("qa", random_rows(40, seed=3), {})], seq_len=48, global_batch_size=4)
    model = build(ModelConfig.llama(layers=2, dim=32, heads=4, kv_heads=2, ffn=64, vocab=len(tok)), 0)
    batch = pipeline.batch(0)
    packed = np.asarray(
        forward(model, batch["input_ids"], positions=batch["positions"], segment_ids=batch["segment_ids"])
    )
    length = batch["input_ids"].shape[1]
    checked = 0
    for row in range(batch["input_ids"].shape[0]):
        segments = batch["segment_ids"][row]
        assert segments.max() >= 2 or row > 0  # packing really put several examples in a row
        for segment in range(1, segments.max() + 1):
            where = np.nonzero(segments == segment)[0]
            ids = np.zeros((1, length), np.int32)
            ids[0, : len(where)] = batch["input_ids"][row, where]
            mask = (np.arange(length) < len(where)).astype(np.int32)[None]
            alone = np.asarray(forward(model, ids, segment_ids=mask))[0, : len(where)]  # alone, right-padded
            np.testing.assert_allclose(packed[row, where], alone, atol=1e-5)
            checked += 1
    assert checked > batch["input_ids"].shape[0]
