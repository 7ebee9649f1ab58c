import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from vfl.models import adapter_for
from vfl.models.tiny import build_tiny
from vfl.nano.precision import cpu_has_bf16

# Under pytest-xdist (`make test` runs a worker a core) each worker and the processes it starts use one thread:
# two workers' OpenMP pools on two cores, each spinning while it waits, slowed a test up to 7x.
XDIST_WORKER = bool(os.environ.get("PYTEST_XDIST_WORKER"))
if XDIST_WORKER:
    os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1 if XDIST_WORKER else 2)
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


# Python processes are forked from a server that has imported torch, transformers and vfl once: a fresh
# interpreter spends 8-9 s on those imports on a 2-core machine, most of the suite's time. Each call is still
# its own process, with its own output, environment, working folder and exit status.
_FORKSERVER = multiprocessing.get_context("forkserver")
_FORKSERVER.set_forkserver_preload(["torch", "transformers", "peft", "matplotlib.pyplot", "vfl.cli", "vfl.models",
                                    "vfl.runner", "vfl.nano.model"])


def _python_main(argv, environ, cwd, stdout, stderr):
    """In the forked process: what `python ARGV` runs (`-m MODULE ...` or `SCRIPT ...`), into the two files."""
    os.environ.clear()
    os.environ.update(environ)
    if cwd is not None:
        os.chdir(cwd)
    for path, fd in ((stdout, 1), (stderr, 2)):
        with open(path, "wb") as handle:
            os.dup2(handle.fileno(), fd)
    if argv[0] == "-m":
        sys.argv = argv[1:]
        sys.modules.pop(argv[1], None)  # preloaded, but `python -m` runs it as __main__ without importing it
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = argv
        sys.path.insert(0, str(Path(argv[0]).parent))
        runpy.run_path(argv[0], run_name="__main__")


def start_python(*args, stdout=os.devnull, stderr=os.devnull, cwd=None) -> multiprocessing.Process:
    """`python ARGS` started in a forked process writing into the two files: `.kill()` it, `.join()` it."""
    process = _FORKSERVER.Process(target=_python_main, args=([str(a) for a in args], dict(os.environ), cwd,
                                                             stdout, stderr))
    process.start()
    return process


def run_python(*args, cwd=None, env=None, timeout=600):
    """`python ARGS` in a fresh process, as `subprocess.run(..., capture_output=True, text=True)` returns it.

    A process of its own environment (``env``: huggingface_hub reads it at import) starts a new interpreter;
    the rest are forked from the preloaded server."""
    argv = ["python", *map(str, args)]
    if env is not None:
        return subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, cwd=cwd, env=env,
                              timeout=timeout)
    with tempfile.TemporaryDirectory() as folder:
        stdout, stderr = Path(folder, "stdout"), Path(folder, "stderr")
        process = start_python(*args, stdout=stdout, stderr=stderr, cwd=cwd)
        process.join(timeout)
        if process.exitcode is None:
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired(argv, timeout)
        return subprocess.CompletedProcess(argv, process.exitcode, stdout.read_text(), stderr.read_text())


def run_cli(*args, cwd=None, env=None, module="vfl.cli"):
    """Run `python -m vfl.cli ARGS` in a fresh process; returns CompletedProcess (text)."""
    return run_python("-m", module, *args, cwd=cwd, env=env)


def write_locate_run(folder: Path, peaks: dict[str, set[int]], probes: int = 30, num_layers: int = 10,
                     seed: int = 0) -> list[dict]:
    """A made-up `vfl locate` run folder (windows of 2, results.jsonl and summary.json): each function's swaps
    score 1 at its ``peaks`` windows and 0 elsewhere, plus seeded noise; the records."""
    import json
    import random

    from vfl.decision import locate_summary

    rng, records = random.Random(seed), []
    for function, where in peaks.items():
        for probe in range(probes):
            for k in range(num_layers - 1):
                score = float(k in where) + rng.gauss(0, 0.2)
                records.append({"id": f"{function}-{probe}", "function": function, "intervention": f"{k}-{k + 1}",
                                "layer": k, "layers": [k, k + 1], "score": score, "changed": score > 0.5,
                                "transferred": score > 0.5, "correct_a": True})
            for name in ("none", "all"):
                records.append({"id": f"{function}-{probe}", "function": function, "intervention": name,
                                "layer": None, "layers": [], "score": float(name == "all"), "changed": name == "all",
                                "transferred": name == "all", "correct_a": True})
    folder.mkdir(parents=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "summary.json").write_text(json.dumps(locate_summary(records, "made-up", num_layers, 2)))
    return records
