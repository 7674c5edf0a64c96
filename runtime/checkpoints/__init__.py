"""Checkpoint formats: Hugging Face directories and GGUF files in and out, tokenizers, and the
run's own Orbax checkpoints of the train state."""
