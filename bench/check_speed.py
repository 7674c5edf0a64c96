"""How long `sftc check` takes per spec: 50 specs (the shipped ones plus variants of
them with different hyperparameters), checked in one process as CI would, and one
cold `sftc check` process for comparison.

    .venv/bin/python bench/check_speed.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    from sftlang.check import check_spec_file

    shipped = sorted((ROOT / "specs").glob("*.sft"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "specs"
        shutil.copytree(ROOT / "specs", work)
        specs = []
        for index in range(50):
            source = shipped[index % len(shipped)]
            text = source.read_text().replace("seed = 42", f"seed = {index}")
            path = work / f"variant-{index:02d}.sft"
            path.write_text(text)
            specs.append(path)
        timings = []
        for path in specs:
            started = time.perf_counter()
            _, problems = check_spec_file(path, devices=1, offline=True)
            timings.append(time.perf_counter() - started)
            assert not any(d.is_error for d in problems), (path, problems)
        cold_started = time.perf_counter()
        done = subprocess.run(
            [str(Path(sys.executable).parent / "sftc"), "check", "--offline", "--devices", "1", str(specs[0])],
            capture_output=True,
        )
        cold = time.perf_counter() - cold_started
        assert done.returncode == 0, done.stderr
    timings.sort()
    print(
        f"sftc check, {len(timings)} specs in one process: total {sum(timings):.3f}s, "
        f"median {timings[len(timings) // 2] * 1000:.1f} ms, max {timings[-1] * 1000:.1f} ms "
        f"(first includes building the parser)"
    )
    print(f"one cold `sftc check` process (interpreter start + imports + check): {cold:.2f}s")


if __name__ == "__main__":
    main()
