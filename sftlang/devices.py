"""How many accelerator devices this machine has, found without importing JAX.

`sftc check` must stay fast and GPU-free, so it counts devices the cheap way:
visible NVIDIA GPUs, TPU chips, or the host-platform device count XLA is told to
simulate; otherwise one CPU device. `--devices N` overrides it.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess


def detect_devices() -> int:
    flags = os.environ.get("XLA_FLAGS", "")
    forced = re.search(r"--xla_force_host_platform_device_count=(\d+)", flags)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() not in ("", "-1"):
        return len([d for d in visible.split(",") if d.strip()])
    if shutil.which("nvidia-smi"):
        try:
            done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=5)
            gpus = [line for line in done.stdout.splitlines() if line.startswith("GPU ")]
            if gpus:
                return len(gpus)
        except (OSError, subprocess.SubprocessError):
            pass
    tpus = glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")
    if tpus:
        return len(tpus)
    return int(forced.group(1)) if forced else 1
