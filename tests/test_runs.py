"""Run folders cannot be corrupted: one process at a time, refused commands write nothing, records stay
unique, and every user error is one sentence with exit 2, before torch is imported where it can be."""

import hashlib
import json
import os
import struct
import subprocess
import sys
import time
import zlib

import pytest

from conftest import run_cli, start_python
from vfl.runner import read_records


def folder_state(path):
    """Every file under ``path`` with its content hash."""
    return {str(p.relative_to(path)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def one_error_line(result, message):
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], result.stderr
    assert message in errors[0], errors[0]


def test_a_second_locate_on_the_same_folder_is_refused_and_the_first_completes(tiny_llava_dir, tmp_path):
    out = tmp_path / "run"
    args = ["locate", "--model", tiny_llava_dir, "--functions", "count,ocr", "--n", 30, "--size", 32, "--out", out]
    first = start_python("-m", "vfl.cli", *args, stderr=tmp_path / "first.stderr")
    results = out / "results.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (results.exists() and results.stat().st_size > 0) and first.is_alive():
        time.sleep(0.05)
    assert first.is_alive(), "the first run ended before the second could start"
    second = run_cli(*args)
    one_error_line(second, "is in use by another vfl process")
    first.join(600)
    assert first.exitcode == 0, (tmp_path / "first.stderr").read_text()[-2000:]
    records = read_records(results)
    keys = {(r["id"], r["intervention"]) for r in records}
    assert len(records) == len(keys) == 2 * 30 * (6 + 2)  # functions x probes x (layers + 2 controls)
    assert json.loads((out / "summary.json").read_text())["functions"]["count"]["controls"]["none"]["n"] == 30


def test_a_refused_run_writes_nothing(tiny_llava_dir, tmp_path):
    out = tmp_path / "run"
    assert run_cli("locate", "--model", tiny_llava_dir, "--functions", "count", "--n", 1, "--size", 32,
                   "--out", out).returncode == 0
    before = folder_state(out)
    other = run_cli("locate", "--model", tiny_llava_dir, "--functions", "count,ocr", "--n", 6, "--size", 48,
                    "--out", out)
    one_error_line(other, "holds a run with other settings (functions, n, size)")
    assert folder_state(out) == before


@pytest.mark.parametrize("option, message", [
    (["--window", "7"], "--window must be between 1 and the model's 6 layers, got 7"),
    (["--layers", "2,9"], "layer index 9 is out of range"),
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
    (["--sweep", "from", "--window", "2"], "--window applies to --sweep window only"),
    (["--alpha", "2"], "--alpha must be between 0 and 1"),
    (["--heads", "5"], "head 5 does not exist: this model has key/value heads 0..1"),
    (["--sweep", "heads"], "--sweep heads needs --layers"),
    (["--what", "hidden", "--heads", "0"], "--heads applies to key/value swaps"),
    (["--suite", "v2", "--size", "24"], "--size must be at least 32 pixels for suite v2, got 24"),
])
def test_options_are_checked_before_any_write_and_before_the_model_loads(tiny_llava_dir, tmp_path, option, message):
    """The model folder holds its config alone: loading its weights would fail, so reaching the option's own
    error proves the weights were never read; the run folder is never created."""
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    (config_only / "config.json").write_text((tiny_llava_dir / "config.json").read_text())
    out = tmp_path / "never"
    result = run_cli("locate", "--model", config_only, "--n", 1, "--size", 32, "--out", out, *option)
    one_error_line(result, message)
    assert not out.exists()


def test_duplicate_records_left_by_an_old_run_are_removed_on_resume(tiny_llava_dir, tmp_path):
    out = tmp_path / "run"
    args = ["locate", "--model", tiny_llava_dir, "--functions", "count", "--n", 2, "--size", 32, "--out", out]
    assert run_cli(*args).returncode == 0
    results = out / "results.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    results.write_text("".join(lines + lines[:5]))  # what two unlocked writers left before
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    records = read_records(results)
    assert len(records) == len({(r["id"], r["intervention"]) for r in records}) == len(lines)
    assert json.loads((out / "summary.json").read_text())["functions"]["count"]["controls"]["none"]["n"] == 2


def _png_header(width, height):
    """A PNG that declares ``width`` x ``height`` pixels (no pixel data): enough for PIL's size check."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


def _probe_file(tmp_path):
    from vfl.probes.generate import make_probe_set

    return make_probe_set(["count"], 2, 32, 0, tmp_path / "probes")


def test_bad_probe_files_fail_before_torch_is_imported(tmp_path):
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes('{"id": "caf\xe9"}\n'.encode("latin-1"))
    code = ("import sys; from vfl.cli import main; rc = main(['locate', '--probes', sys.argv[1], '--out', sys.argv[2]]);"
            "print('torch' in sys.modules); sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code, str(bad), str(tmp_path / "out")], capture_output=True,
                            text=True, timeout=120)
    one_error_line(result, "latin1.jsonl:1 is not UTF-8 text")
    assert result.stdout.strip() == "False"
    assert not (tmp_path / "out").exists()


def test_an_image_over_the_decompression_limit_is_one_sentence(tmp_path):
    path = _probe_file(tmp_path)
    record = json.loads(path.read_text().splitlines()[0])
    (path.parent / record["image_b"]).write_bytes(_png_header(20000, 20000))
    result = run_cli("locate", "--model", "tiny:llava", "--probes", path, "--out", tmp_path / "out")
    one_error_line(result, "has more pixels than PIL's safety limit")


def test_non_utf8_evaluation_files_are_one_sentence(tmp_path):
    data = tmp_path / "eval.jsonl"
    data.write_bytes(b'{"image": "x.png", "question": "\xff"}\n')
    one_error_line(run_cli("eval", "--model", "tiny:llava", "--data", data), "eval.jsonl:1 is not UTF-8 text")


LLAVA_DATA = {
    "a JSON object": ({"image": "x.png", "conversations": []}, "holds a JSON object; LLaVA data is an array"),
    "a list of non-objects": ([1, 2], "record 1 is a JSON number, not an object"),
    "string turns": ([{"conversations": ["hi", "there"]}], "turn 1 is a JSON string, not an object"),
    "a turn without value": ([{"conversations": [{"from": "human"}, {"from": "gpt", "value": "x"}]}],
                             "turn 1 needs a string value"),
    "a non-string image": ([{"image": 3, "conversations": [{"from": "human", "value": "q"},
                                                             {"from": "gpt", "value": "a"}]}],
                           "image must be a path string, not a JSON number"),
    "not UTF-8": (None, "is not UTF-8 text"),
}


@pytest.mark.parametrize("case", LLAVA_DATA)
def test_bad_llava_data_is_one_sentence(tmp_path, case):
    content, message = LLAVA_DATA[case]
    data = tmp_path / "train.json"
    if content is None:
        data.write_bytes(b'[{"conversations": "\xe9"}]')
    else:
        data.write_text(json.dumps(content))
    one_error_line(run_cli("lora", "--model", "tiny:llava", "--data", data, "--out", tmp_path / "out"), message)
    assert not (tmp_path / "out").exists()


def test_cuda_on_a_cpu_only_torch_and_a_bad_dtype_are_one_sentence(tmp_path):
    import torch

    from vfl.errors import VflError
    from vfl.models import load

    if not torch.cuda.is_available():
        result = run_cli("locate", "--model", "tiny:llava", "--n", 1, "--size", 32, "--device", "cuda",
                         "--out", tmp_path / "out")
        one_error_line(result, "--device cuda needs a CUDA GPU")
        assert not (tmp_path / "out").exists()
        result = run_cli("vision-layers", "--encoder", "tiny:llava", "--device", "cuda", "--out", tmp_path / "vl")
        one_error_line(result, "--device cuda needs a CUDA GPU")
    with pytest.raises(VflError, match="unknown --dtype 'float8'"):
        load("nano", dtype="float8")
    result = run_cli("nano", "eval", "--dtype", "float8")
    assert result.returncode == 2 and "invalid choice: 'float8'" in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("command", [("locate", "--model", "nobody/no-such-model", "--n", 1, "--size", 32),
                                     ("vision-layers", "--encoder", "nobody/no-such-model", "--n", 1)])
def test_an_unknown_hub_id_is_looked_up_in_the_local_cache_only(tmp_path, command):
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "empty-cache"), "HF_HUB_OFFLINE": "0",
           "HF_ENDPOINT": "http://127.0.0.1:9"}  # a closed local port: any network attempt would fail slowly
    result = run_cli(*command, "--out", tmp_path / "out", env=env)
    one_error_line(result, "not a hub id in the local cache (pass --download to fetch it)")


@pytest.mark.parametrize("spec", ["missing-model-dir/", "./missing", "runs/llava/missing"])
def test_a_model_path_that_does_not_exist_is_told_so_not_sent_to_the_hub(tmp_path, spec):
    result = run_cli("locate", "--model", tmp_path / spec if spec.startswith("missing") else spec, "--n", 1,
                     "--size", 32, "--out", tmp_path / "out")
    one_error_line(result, "there is no such directory")
    assert "--download" not in result.stderr and not (tmp_path / "out").exists()


def test_a_folder_swapped_in_whole_is_found_even_when_a_kill_falls_between_the_renames(tmp_path):
    import os

    from vfl.models import nano_weights
    from vfl.runner import fresh_folder, swap_in, swapped_in

    target = tmp_path / "run" / "weights"
    for step in (1, 2):
        fresh = fresh_folder(target)
        fresh.mkdir(parents=True)
        (fresh / "spec.json").write_text(f"{step}\n")
        swap_in(fresh, target)
        assert (target / "spec.json").read_text() == f"{step}\n" and not fresh.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["weights"]  # no .new or .old left behind
    os.rename(target, target.with_name("weights.old"))  # a kill after swap_in's first rename
    assert swapped_in(target) == target.with_name("weights.old")
    assert nano_weights(f"nano:{tmp_path / 'run'}") == target.with_name("weights.old")
