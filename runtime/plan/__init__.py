"""The Plan and the rules the compiler shares with the runtime: plain data, no JAX.

`sftlang` lowers a spec into a `run_plan.Plan`; the runtime executes it. This package is the
only part of `runtime` the compiler imports, so everything here imports the standard library
and light parsers only (tests/test_import_boundaries.py holds it to that).
"""
