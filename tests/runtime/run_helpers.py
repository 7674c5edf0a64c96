"""The tiny `sftc run` project the end-to-end tests share: a one-layer model learning
sums of number words, its spec, and readers of what a run leaves on disk."""

from __future__ import annotations

from pathlib import Path

from tests.fixtures import copy_fixtures, fixture_text
from tests.runtime.data_helpers import wordlevel_tokenizer

NUMBERS = "zero one two three four five six seven eight nine".split()

SPEC = fixture_text("tiny.sft")  # tests/fixtures/specs/tiny.sft: edited by replacing parts of it


def save_tiny_base(directory: Path, positions: int = 64, seed: int = 0) -> Path:
    """A random one-layer Llama with the word-level tokenizer, saved as a Hugging Face checkpoint:
    the pretrained base of the end-to-end tests that need one (a baseline, LoRA, benchmarks)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = wordlevel_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=positions,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(str(directory))
    return directory


def runs(project: Path) -> list[Path]:
    return sorted((project / "runs" / "tiny").iterdir())


def final_params(run_dir: Path):
    """(step, parameter leaves as numpy) of the run's latest checkpoint, on this process's
    first device, whatever mesh and number of processes wrote it."""
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    from runtime.checkpoints.orbax_checkpoints import Checkpoints

    checkpoints = Checkpoints(run_dir / "checkpoints", keep=5)
    step = checkpoints.latest_step()
    checkpoints.close()
    path = (run_dir / "checkpoints" / str(step) / "state").resolve()
    with ocp.StandardCheckpointer() as reader:
        metadata = reader.metadata(path)
        tree = getattr(metadata, "item_metadata", metadata)
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
        state = reader.restore(path, target)
    return step, [np.asarray(leaf) for leaf in jax.tree.leaves(state["params"])]


def write_project(directory: Path) -> Path:
    """The tokenizer, the data, `tiny.sft` and `sums.sft` (tests/fixtures/) in `directory`."""
    wordlevel_tokenizer().save_pretrained(str(directory / "tok"))
    copy_fixtures(directory, "sums.jsonl", "tiny.sft", "sums.sft")
    return directory


# A child Python that runs `sftc run tiny.sft` at about 3 steps a second (to be killed or interrupted).
SLOW_RUN = """
import sys, time
from runtime.data.pipeline import DataPipeline
original = DataPipeline.batch
def slow(self, step, rows=None):
    time.sleep(0.3)
    return original(self, step, rows)
DataPipeline.batch = slow
from sftlang.cli import main
sys.exit(main(["run", "tiny.sft"]))
"""


def interrupt_at(monkeypatch, step: int):
    """Runs in this process stop as on Ctrl-C when they reach ``step``; returns the undo."""
    from runtime.data.pipeline import DataPipeline

    original = DataPipeline.batch

    def interrupted(self, at, rows=None):
        if at == step:
            raise KeyboardInterrupt
        return original(self, at, rows)

    monkeypatch.setattr(DataPipeline, "batch", interrupted)
    return lambda: monkeypatch.setattr(DataPipeline, "batch", original)


def assert_secret_nowhere(secret: str, printed: str, run_dir: Path) -> None:
    """A credential is neither printed nor written into the run directory."""
    assert secret not in printed
    for path in run_dir.rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000:
            assert secret.encode() not in path.read_bytes(), path
