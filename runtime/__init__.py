"""sftc runtime: executes a compiled Plan (data, models, training, evaluation, export)."""
