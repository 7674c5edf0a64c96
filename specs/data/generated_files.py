"""What the dataset generators share: JSON-lines bytes, and writing (or `--check`ing)
the files they generate, so a stale file in the repository is caught in CI."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path


def render(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=True) + "\n" for r in rows).encode("ascii")


def write_or_check(files: dict[Path, bytes], check: bool, generator: str) -> int:
    stale = [path for path, data in files.items() if not path.is_file() or path.read_bytes() != data]
    if check:
        for path in stale:
            print(f"{path.name}: differs from what {generator} generates; rerun it without --check", file=sys.stderr)
        if not stale:
            print("up to date: " + ", ".join(p.name for p in files))
        return 1 if stale else 0
    for path, data in files.items():
        path.write_bytes(data)
        rows = data.count(b"\n")
        print(f"wrote {path.name}: {rows} rows, {len(data):,} bytes")
    return 0


def main(
    build: Callable[[], dict[Path, bytes]], description: str, generator: str, argv: list[str] | None = None
) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help="regenerate in memory; exit 1 if the files on disk differ")
    args = parser.parse_args(argv)
    return write_or_check(build(), args.check, generator)
