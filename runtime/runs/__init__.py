"""A run directory and its lifecycle: what goes in it, whether it may be resumed, and a
finished run loaded for use."""
