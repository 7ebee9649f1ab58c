"""`vfl nano train` resumes after a kill and ends exactly where an uninterrupted run ends (slow)."""

import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from conftest import run_cli

pytestmark = pytest.mark.slow
ARGS = ["nano", "train", "--steps", 6, "--per-function", 4, "--batch-size", 4, "--save-every", 2]


def test_killed_training_resumes_to_the_same_weights(tmp_path):
    whole = run_cli(*ARGS, "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]
    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "vfl.cli", *map(str, ARGS), "--out", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and not (out / "checkpoint.pt").exists():
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "weights").exists(), "the run finished before the kill"
    again = run_cli(*ARGS, "--out", out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "nano train:  33%" in again.stderr or "nano train:  67%" in again.stderr  # resumed, not restarted
    for name in ("projector.safetensors", "lora.safetensors"):
        ours, reference = load_file(out / "weights" / name), load_file(tmp_path / "whole" / "weights" / name)
        assert ours.keys() == reference.keys()
        assert all((ours[k] == reference[k]).all() for k in ours)
