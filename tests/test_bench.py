"""The product benchmarks (bench/) run end to end at small sizes on CPU: the sweep (and its LLaVA-1.5-7B GPU
shape) and the nano recipe driver."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import CPU_PRECISION, run_python

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def test_the_benchmark_prints_its_timings_and_ratios_at_a_tiny_shape():
    result = run_python(str(ROOT / "bench" / "sweep.py"), "--shape", "tiny", "--repeats", "1",
                        "--probes", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"^ratios: sweep/plain=\d+\.\d\d naive/sweep=\d+\.\d\d$", result.stdout, re.M), result.stdout
    assert re.search(r"\(d\) 2-probe sweep: \d+\.\d\d probes/s", result.stdout)
    assert re.search(r"^scoring: two passes/together=\d+\.\d\d together/unscored sweep=\d+\.\d\d$", result.stdout, re.M)
    assert "peak memory:" in result.stdout and "8 variants" in result.stdout
    assert re.search(r"^model: .*, float32, cpu \(\d+ threads\)$", result.stdout, re.M), result.stdout  # device recorded


def test_the_llava_7b_shape_has_its_parameters_and_576_visual_tokens():
    from sweep import llava_7b

    from vfl.models import adapter_for
    from vfl.probes.generate import make_pair

    model, processor = llava_7b("meta", torch.bfloat16)  # shapes only, no memory
    parameters = sum(p.numel() for p in model.parameters())
    assert 7.0e9 < parameters < 7.1e9, parameters  # LLaVA-1.5-7B has 7.06e9
    assert model.config.text_config.num_hidden_layers == 32 and model.config.text_config.hidden_size == 4096
    question, image, *_ = make_pair("count", 0, 336, 0)
    inputs = processor(images=[image], text=["USER: <image>\n" + question + " ASSISTANT:"], return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 576
    assert adapter_for(model, processor).num_layers == 32


def test_the_recipe_benchmark_trains_scores_both_suites_and_resumes(tmp_path):
    """One projector-only step on CPU: a row per suite with every function, the device and the trained
    parameters, a locate run on v2 probes and a comparison; a rerun scores nothing again."""
    import json

    command = [ROOT / "bench" / "nano_recipes.py", "--recipes", "projector", "--steps", "1",
               "--batch-size", "2", "--workers", "0", "--device", "cpu", "--n", "1", "--locate", "1", "--window", "27", "--max-new-tokens", "4",
               "--loss-weights", "ground=2", "--ocr-answers", "letters", "--pseudo-words", "0.5",
               "--precision", CPU_PRECISION, "--out", tmp_path]
    first = run_python(*command)
    assert first.returncode == 0, first.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["recipe"], r["suite"]) for r in rows] == [("projector", "v2"), ("projector", "v1")]
    for row in rows:
        assert {"recog", "count", "ground", "ocr", "mean", "ci", "train_s"} <= set(row)
        assert row["device"].startswith("cpu") and row["steps"] == 1 and row["n"] == 1
        assert row["loss_weights"] == {"ground": 2.0} and row["ocr_answers"] == "letters" and row["pseudo_words"] == 0.5
        assert 2.5e6 < row["trained_parameters"] < 3.5e6  # the projector: 4608 (3 layers x 1536) -> 576 -> 576
        assert row["token_px"] == 28 and row["align_letters"] is False
    summary = json.loads((tmp_path / "projector" / "locate" / "summary.json").read_text())
    assert summary["window"] == 27 and set(summary["functions"]) == {"recog", "count", "ground", "ocr"}
    compared = json.loads((tmp_path / "compare" / "compare.json").read_text())["runs"]
    assert [r["name"] for r in compared] == ["Qwen2.5-VL-7B (paper, reported)", "projector"]
    again = run_python(*command)
    assert again.returncode == 0 and (tmp_path / "results.jsonl").read_text().count("\n") == 2
    assert "| projector | v1 |" in again.stdout
    # one recipe more (as research/paper_on_v2/regimes.sh's second stage): only the new one trains, scores and locates
    projector = (tmp_path / "projector" / "weights" / "projector.safetensors").read_bytes()
    located = (tmp_path / "projector" / "locate" / "summary.json").read_text()
    more = run_python(*[c if c != "projector" else "projector,lora" for c in command])
    assert more.returncode == 0, more.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["recipe"], r["suite"]) for r in rows[2:]] == [("lora", "v2"), ("lora", "v1")]
    assert (tmp_path / "projector" / "weights" / "projector.safetensors").read_bytes() == projector
    assert (tmp_path / "projector" / "locate" / "summary.json").read_text() == located
    compared = json.loads((tmp_path / "compare" / "compare.json").read_text())["runs"]
    assert [r["name"] for r in compared][1:] == ["projector", "lora"]


def test_the_letters14_recipe_is_lora_on_256_tokens_of_14_px_with_letters_aligned():
    from argparse import Namespace

    from nano_recipes import recipe_config

    args = Namespace(steps=1, batch_size=2, seed=0, save_every=1, workers=0, device="cpu", precision="fp32",
                     loss_weights=None, ocr_answers="letters", pseudo_words=0.5, functions="recog,count,ground,ocr",
                     loose_recognition=0.0, align_words=1.0, vision_layers=[6, 9, 12], suite="v2",
                     align_functions=None)
    lora, letters = recipe_config("lora", args), recipe_config("lora-letters14", args)
    assert (lora.spec.shuffle, lora.align_letters) == (2, False)
    assert (letters.spec.shuffle, letters.align_letters, letters.spec.lora_rank) == (1, True, 64)
    letters.check()


def test_the_regimes_can_train_on_nano_v2s_data():
    """Issue 15's regime study trains projector-only, LoRA and full fine-tuning on the data nano v2 was trained on:
    suite v1, recognition twice, only recognition's objects aligned to their words."""
    from argparse import Namespace

    from nano_recipes import recipe_config

    args = Namespace(steps=1, batch_size=2, seed=0, save_every=1, workers=0, device="cpu", precision="fp32",
                     loss_weights=None, ocr_answers="tokens", pseudo_words=0.0,
                     functions="recog,recog,count,ground,ocr",
                     loose_recognition=0.0, align_words=1.0, vision_layers=[6, 9, 12], suite="v1",
                     align_functions=["recog"])
    for name in ("projector", "lora", "full"):
        config = recipe_config(name, args)
        config.check()
        assert (config.suite, config.align_functions) == ("v1", ["recog"])
        assert config.functions == ["recog", "recog", "count", "ground", "ocr"]
    assert recipe_config("full", args).full and not recipe_config("projector", args).spec.lora_rank


def test_the_budget_is_the_slowest_recipes_median_step_and_is_kept(tmp_path, monkeypatch):
    import json

    import nano_recipes
    from vfl.errors import VflError
    from vfl.nano.config import TrainConfig

    paces = {"projector": [9.0, 0.5, 0.4, 0.6], "lora": [9.0, 1.0, 1.2, 0.9]}  # first steps: worker start-up

    def fake_train(run, config):
        assert config.steps == 4 and config.save_every == 4
        run.mkdir(parents=True)
        (run / "timing.json").write_text(json.dumps({"step_seconds": paces[run.name]}))

    monkeypatch.setattr(nano_recipes, "train", fake_train)
    configs = {name: TrainConfig(steps=1100) for name in paces}
    assert nano_recipes.calibrated_steps(configs, tmp_path, 100, 4, concurrent=False) == 100  # 100 s / 1.0 s
    saved = json.loads((tmp_path / "calibration.json").read_text())
    assert saved["seconds_per_step"] == {"projector": 0.5, "lora": 1.0} and saved["steps"] == 100
    monkeypatch.setattr(nano_recipes, "train", None)  # a rerun reads the record and trains nothing
    assert nano_recipes.calibrated_steps(configs, tmp_path, 100, 4, concurrent=False) == 100
    with pytest.raises(VflError, match="was calibrated with other settings"):
        nano_recipes.calibrated_steps(configs, tmp_path, 50, 4, concurrent=False)
    monkeypatch.setattr(nano_recipes, "train", fake_train)
    with pytest.raises(VflError, match=r"--budget 0.5 s is less than one step \(1.00 s\)"):
        nano_recipes.calibrated_steps(configs, tmp_path / "short", 0.5, 4, concurrent=False)


@pytest.mark.slow
def test_a_budget_calibrates_the_steps_of_recipes_trained_side_by_side(tmp_path):
    """Two recipes in two processes: a few steps each calibrate the pace, the runs then train the steps the
    budget allows, and a rerun keeps them (a different budget is refused). About 2 minutes on 2 cores."""
    import json

    command = [sys.executable, str(ROOT / "bench" / "nano_recipes.py"), "--recipes", "projector,lora", "--concurrent",
               "--budget", "12", "--calibrate", "2", "--batch-size", "2", "--workers", "0", "--device", "cpu",
               "--n", "1", "--locate", "0", "--out", str(tmp_path)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    calibration = json.loads((tmp_path / "calibration.json").read_text())
    assert calibration["recipes"] == ["lora", "projector"] and calibration["concurrent"]
    pace = calibration["seconds_per_step"]
    assert calibration["steps"] == int(12 / max(pace.values())) >= 1
    for name in ("projector", "lora"):
        assert len(json.loads((tmp_path / "calibration" / name / "timing.json").read_text())["step_seconds"]) == 2
        assert json.loads((tmp_path / name / "timing.json").read_text())["steps"] == calibration["steps"]
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["steps"] == calibration["steps"] and r["concurrent"] for r in rows)
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "calibrated:" not in again.stdout
    assert (tmp_path / "results.jsonl").read_text().count("\n") == 4
    other = subprocess.run([*command[:command.index("--budget") + 1], "30", *command[command.index("--budget") + 2:]],
                           capture_output=True, text=True, timeout=600)
    assert other.returncode == 1 and other.stderr.strip().splitlines()[-1].startswith(
        f"nano_recipes.py: error: {tmp_path} was calibrated with other settings")
    both = subprocess.run([*command, "--steps", "3"], capture_output=True, text=True, timeout=600)
    assert both.returncode == 2 and "pass --steps or --budget, not both" in both.stderr


def test_scripts_outside_the_package_use_only_its_public_or_shared_names():
    """bench/, research/ and tools/ import no `_private` name of vfl and nothing from vfl.cli, the command layer:
    a refactor of the package's insides must not break them unseen."""
    import ast

    offending = []
    for path in sorted(p for folder in ("bench", "research", "tools") for p in (ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vfl"):
                names = [a.name for a in node.names]
                if node.module == "vfl.cli" or any(n.startswith("_") for n in names):
                    offending.append(f"{path.relative_to(ROOT)}: from {node.module} import {', '.join(names)}")
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if isinstance(node.value, ast.Name) and node.value.id in ("vfl", "train", "align", "suite", "data"):
                    offending.append(f"{path.relative_to(ROOT)}: {node.value.id}.{node.attr}")
    assert len(list((ROOT / "research").rglob("*.py"))) >= 6
    assert not offending, offending


def test_the_vfl_lora_skills_teach_what_nano_lacks_and_the_h100_table_reads_as_before(tmp_path):
    """Counting 7-10 objects and reading 35 words nano never trained on (suite v1), grounding among distractors
    (suite v2); the saved H100 rows (written before skills existed) summarise to docs/results.md's line."""
    import json

    from vfl.probes.render import WORDS
    from vfl_lora import NEW_WORDS, SKILLS, summary, write_training_set

    assert len(NEW_WORDS) == 35 and not set(NEW_WORDS) & set(WORDS)
    for name, expected in (("count-7-10", {str(n) for n in range(7, 11)}), ("ocr-new-words", set(NEW_WORDS))):
        records = json.loads(write_training_set(tmp_path / name, 24, 100, SKILLS[name]).read_text())
        answers = [r["conversations"][1]["value"] for r in records]
        assert set(answers) <= expected and len(set(answers)) > 3
        assert all((tmp_path / name / r["image"]).is_file() for r in records)
    # Grounding among distractors (suite v2): the asked object's box, in a scene of two to four objects.
    records = json.loads(write_training_set(tmp_path / "ground", 8, 100, SKILLS["ground-among"]).read_text())
    assert all(r["conversations"][0]["value"].startswith("<image>\nWhere is the ") for r in records)
    assert all(r["conversations"][1]["value"].startswith("[") for r in records)
    assert len({r["conversations"][1]["value"] for r in records}) == 8
    # Recognition in crowded scenes: 4 more distractors than nano trained on (3-5 objects), the rest unchanged.
    from vfl.nano.suite_v2 import make_question_sample

    sizes = [len(make_question_sample("recog", i, 100, **SKILLS["recog-crowd"].options).scene) for i in range(40)]
    assert set(sizes) == {7, 8, 9}
    assert {len(make_question_sample("recog", i, 100).scene) for i in range(40)} == {3, 4, 5}
    rows = [json.loads(line) for line in (ROOT / "bench" / "results" / "vfl_lora_h100_seeds012.jsonl").open()]
    text = summary(rows, SKILLS["count-7-10"])
    assert "| vfl | 3 | 3,907,584 (2.39%) | 0.518 ± 0.003 |" in text and "in-domain count 7-10" in text
    assert "per seed: -0.115, -0.055, -0.070" in text


def test_vfl_lora_refuses_to_mix_recipes_in_one_results_folder(tmp_path, monkeypatch, capsys):
    """A row trained with another --lr, --steps or answer labels would be averaged as a seed of this recipe; the
    run stops first."""
    import json

    import vfl_lora

    row = {"skill": "recog-crowd", "variant": "vfl", "seed": 0, "steps": 120, "lr": 1e-3}  # labels: the old ones
    (tmp_path / "results.jsonl").write_text(json.dumps(row) + "\n")
    monkeypatch.setattr("sys.argv", ["vfl_lora.py", "--vfl", str(tmp_path / "summary.json"), "--skill", "recog-crowd",
                                     "--steps", "120", "--lr", "1e-3", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as stop:
        vfl_lora.main()
    assert "trained with --steps 120 --lr 0.001, labels past end of turn" in str(stop.value)
    row.update(labels=vfl_lora.lora.LABELS, lr=2e-4)
    (tmp_path / "results.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(SystemExit) as stop:
        vfl_lora.main()
    assert "trained with --steps 120 --lr 0.0002, labels through end of turn" in str(stop.value)
