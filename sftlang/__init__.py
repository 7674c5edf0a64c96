"""sftlang: the compiler front end of sftc (parse, resolve, check, lower, fmt, diff).

It never imports JAX: `sftc check` must run in CI in a second without a GPU.
"""

__version__ = "0.1.0"
