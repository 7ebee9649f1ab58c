"""`vfl locate` / `vfl drop` end to end on a tiny LLaVA loaded from disk: outputs, resume, bad input."""

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import run_cli, start_python
from vfl.probes.generate import make_probe_set
from vfl.runner import read_records


def records_by_key(path):
    return {(r["id"], r["intervention"]): r for r in read_records(path)}


def test_locate_writes_the_four_outputs_with_the_documented_schema(tiny_llava_dir, tmp_path):
    out = tmp_path / "run"
    result = run_cli("locate", "--model", tiny_llava_dir, "--n", 2, "--size", 32, "--out", out)
    assert result.returncode == 0, result.stderr
    assert {"results.jsonl", "summary.json", "curves.png", "report.md"} <= {p.name for p in out.iterdir()}
    records = read_records(out / "results.jsonl")
    assert len(records) == 4 * 2 * (6 + 2)  # functions x probes x (layers + 2 controls)
    assert len({(r["id"], r["intervention"]) for r in records}) == len(records)
    for record in records:
        assert {"id", "function", "intervention", "layer", "layers", "answer", "answer_a", "answer_b",
                "changed", "transferred"} <= set(record)
        if record["intervention"] == "none":
            assert record["answer"] == record["answer_a"] and not record["changed"]
        if record["intervention"] == "all":
            assert record["answer"] == record["answer_b"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == str(tiny_llava_dir) and summary["num_layers"] == 6
    assert set(summary["functions"]) == {"recog", "count", "ground", "ocr"}
    for function, data in summary["functions"].items():
        assert [row["layer"] for row in data["layers"]] == list(range(6))
        for row in data["layers"]:
            assert {"layer", "n", "change_rate", "transfer_rate", "ci"} <= set(row)
            assert row["n"] == 2 and row["ci"][0] <= row["transfer_rate"] <= row["ci"][1]
            mine = [r for r in records if r["function"] == function and r["layer"] == row["layer"]]
            assert row["change_rate"] == sum(r["changed"] for r in mine) / 2
        assert set(data["controls"]) == {"none", "all"} and data["controls"]["none"]["change_rate"] == 0
        assert "peak" in data and isinstance(data["vfl"], list)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| function |" in (out / "report.md").read_text() and "curves.png" in (out / "report.md").read_text()
    assert "| counting |" in result.stdout


def test_a_killed_run_resumes_without_losing_or_repeating_records(tiny_llava_dir, tmp_path):
    args = ["locate", "--model", tiny_llava_dir, "--functions", "count,ocr", "--n", 40, "--size", 32,
            "--max-new-tokens", 4]
    full = run_cli(*args, "--out", tmp_path / "full")
    assert full.returncode == 0, full.stderr
    out = tmp_path / "killed"
    process = start_python("-m", "vfl.cli", *args, "--out", out)
    results = out / "results.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (results.exists() and results.stat().st_size > 20000):
        time.sleep(0.05)
    process.kill()  # SIGKILL
    process.join()
    partial = len(read_records(results))
    assert 0 < partial < 2 * 40 * 8, "the kill did not land mid-run"
    with results.open("a") as handle:  # and a torn line, as a kill during a write leaves it
        handle.write('{"id": "count-0-0039", "interv')
    again = run_cli(*args, "--out", out)
    assert again.returncode == 0, again.stderr
    resumed, reference = read_records(results), read_records(tmp_path / "full" / "results.jsonl")
    assert len(resumed) == len(reference) == len({(r["id"], r["intervention"]) for r in resumed})
    assert records_by_key(results) == records_by_key(tmp_path / "full" / "results.jsonl")
    assert json.loads((out / "summary.json").read_text()) == json.loads((tmp_path / "full" / "summary.json").read_text())


def test_two_processes_shard_the_probes_and_merge(tiny_llava_dir, tmp_path):
    args = ["locate", "--model", tiny_llava_dir, "--functions", "count,recog", "--num-probes", 3, "--size", 32]
    # both with one thread per process: float sums may round differently under another thread count
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = run_cli(*args, "--out", tmp_path / "single", env=env)
    assert single.returncode == 0, single.stderr
    sharded = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                              "--master_port", "29517", "-m", "vfl.cli", *map(str, args), "--out",
                              str(tmp_path / "sharded")], capture_output=True, text=True, env=env, timeout=600)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert not list((tmp_path / "sharded").glob("results.rank*.jsonl"))
    assert records_by_key(tmp_path / "sharded" / "results.jsonl") == records_by_key(tmp_path / "single" / "results.jsonl")
    assert json.loads((tmp_path / "sharded" / "summary.json").read_text()) == \
        json.loads((tmp_path / "single" / "summary.json").read_text())


def test_drop_reports_accuracy_for_every_n(tiny_llava_dir, tmp_path):
    out = tmp_path / "drop"
    result = run_cli("drop", "--model", tiny_llava_dir, "--functions", "count", "--n", 2, "--size", 32, "--out", out)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "drop_summary.json").read_text())
    curve = summary["functions"]["count"]["curve"]
    assert [row["dropped"] for row in curve] == list(range(7))
    assert all(row["n"] == 4 for row in curve)  # both images of both probes
    assert (out / "drop.png").exists() and len(read_records(out / "drop.jsonl")) == 4 * 7


def _probe_file(tmp_path, mutate=None):
    path = make_probe_set(["count"], 2, 32, 0, tmp_path / "probes")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    if mutate:
        mutate(records, tmp_path / "probes")
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _resize_b(records, root):
    from PIL import Image

    Image.open(root / records[1]["image_b"]).resize((48, 48)).save(root / records[1]["image_b"])


BAD = {
    "unknown function": (["--functions", "count,smell"], None, "unknown function 'smell'"),
    "empty probes": (["--probes", "EMPTY"], None, "holds no probes"),
    "malformed probes": (["--probes", "BAD"], None, "is not valid JSON"),
    "missing image": (["--probes", "FILE"], lambda r, root: (root / r[0]["image_a"]).unlink(), "does not exist"),
    "unreadable image": (["--probes", "FILE"], lambda r, root: (root / r[0]["image_b"]).write_text("x"),
                         "cannot be read"),
    "sizes differ": (["--probes", "FILE"], _resize_b, "probe count-0-0001: images A (32, 32) and B (48, 48) differ"),
    "layer out of range": (["--layers", "2,9"], None, "layer index 9 is out of range"),
    "no such model": (["--model", "/nonexistent/model"], None, "cannot load model"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_sentence_and_exit_2(tiny_llava_dir, tmp_path, case):
    extra, mutate, message = BAD[case]
    extra = list(extra)
    if "--probes" in extra:
        where = extra.index("--probes") + 1
        if extra[where] == "EMPTY":
            (tmp_path / "empty.jsonl").write_text("")
            extra[where] = tmp_path / "empty.jsonl"
        elif extra[where] == "BAD":
            (tmp_path / "bad.jsonl").write_text('{"id": 1,\n')
            extra[where] = tmp_path / "bad.jsonl"
        else:
            extra[where] = _probe_file(tmp_path, mutate)
    model = [] if "--model" in extra else ["--model", tiny_llava_dir]
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier work")
    result = run_cli("locate", *model, "--n", 2, "--size", 32, "--out", out, *extra)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], result.stderr
    assert (out / "keep.txt").read_text() == "earlier work"


def test_resize_makes_different_sizes_usable(tiny_llava_dir, tmp_path):
    path = _probe_file(tmp_path, _resize_b)
    result = run_cli("locate", "--model", tiny_llava_dir, "--probes", path, "--resize", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr


def test_resuming_with_other_settings_is_refused(tiny_llava_dir, tmp_path):
    base = ["locate", "--model", tiny_llava_dir, "--functions", "count", "--n", 1, "--size", 32, "--out", tmp_path]
    assert run_cli(*base).returncode == 0
    result = run_cli(*base, "--window", 2)
    assert result.returncode == 2 and "other settings (window)" in result.stderr


def test_v2_probes_run_and_are_part_of_the_run_settings(tiny_llava_dir, tmp_path):
    base = ["locate", "--model", tiny_llava_dir, "--functions", "ocr,recog", "--n", 1, "--size", 32, "--out", tmp_path]
    result = run_cli(*base, "--suite", "v2")
    assert result.returncode == 0, result.stderr
    probes = [json.loads(line) for line in (tmp_path / "probes" / "probes.jsonl").read_text().splitlines()]
    assert [p["id"] for p in probes] == ["ocr-v2-0-0000", "recog-v2-0-0000"]
    assert json.loads((tmp_path / "run.json").read_text())["suite"] == "v2"
    refused = run_cli(*base)
    assert refused.returncode == 2 and "other settings (suite)" in refused.stderr


def test_unsupported_model_class_lists_the_supported_ones(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(num_hidden_layers=1, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                vocab_size=64, architectures=["LlamaForCausalLM"]).save_pretrained(tmp_path)
    result = run_cli("locate", "--model", tmp_path, "--n", 1, "--size", 32, "--out", tmp_path / "out")
    assert result.returncode == 2
    assert "LlavaForConditionalGeneration" in result.stderr and "Qwen2VLForConditionalGeneration" in result.stderr


def test_eval_scores_a_jsonl_set_and_rejects_bad_records(tiny_llava_dir, tmp_path):
    from vfl.nano.suite_v1 import make_sample

    records = []
    for i, function in enumerate(["count", "recog", "ground", "ocr"]):
        sample = make_sample(function, i, 0, size=32)
        sample.image.save(tmp_path / f"{i}.png")
        metric = {"count": "number", "recog": "yes-no", "ground": "box-iou", "ocr": "exact"}[function]
        records.append({"image": f"{i}.png", "question": sample.question, "answer": sample.answer, "metric": metric,
                        "box": sample.box})
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = run_cli("eval", "--model", tiny_llava_dir, "--data", data, "--out", tmp_path / "acc.json")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "acc.json").read_text())
    assert set(summary) == {"recog", "count", "ground", "ocr"} and all(row["n"] == 1 for row in summary.values())
    lines = (tmp_path / "acc.records.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all("answer" in json.loads(line) for line in lines)
    data.write_text(json.dumps({**records[0], "metric": "bleu"}) + "\n")
    bad = run_cli("eval", "--model", tiny_llava_dir, "--data", data)
    assert bad.returncode == 2 and "unknown metric 'bleu'" in bad.stderr
