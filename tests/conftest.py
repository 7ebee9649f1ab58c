import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vfl.models import adapter_for
from vfl.models.tiny import build_tiny
from vfl.nano.train import cpu_has_bf16

torch.set_num_threads(2)
# bf16 where this CPU has bf16 units (about 2x faster than fp32 there); elsewhere it is emulated, 20x slower
CPU_PRECISION = "bf16" if cpu_has_bf16() else "fp32"


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory) -> Path:
    """A tiny random LLaVA saved to disk, loaded by path like a real checkpoint."""
    path = tmp_path_factory.mktemp("models") / "tiny-llava"
    model, processor = build_tiny("llava", num_layers=6)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def adapters():
    """float64 tiny models of every family: float noise cannot flip a greedy token in the invariants."""
    cache = {}

    def get(family):
        if family not in cache:
            cache[family] = adapter_for(*build_tiny(family, dtype=torch.float64))
        return cache[family]

    return get


def run_cli(*args, cwd=None, env=None, module="vfl.cli"):
    """Run `python -m vfl.cli ARGS` in a fresh process; returns CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)
