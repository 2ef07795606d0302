"""Run the changekit CLI in one process or under torchrun with ``nproc`` gloo ranks on CPU (for the tests)."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(args: list[str], nproc: int = 1, debug: bool = False) -> subprocess.CompletedProcess:
    """``python -m changekit ARGS`` (under ``torch.distributed.run --standalone`` when ``nproc`` > 1)."""
    cmd = ["-m", "changekit", *args, *(["--debug"] if debug else [])]
    if nproc > 1:
        cmd = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *cmd]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *cmd], capture_output=True, text=True, env=env, timeout=600)
