"""sftc data pipeline: sources, templates, exact loss masks, packing, batches, preview.

numpy only: nothing here imports JAX.
"""
