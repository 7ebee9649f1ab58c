"""The nano v2 research probes (research/nano_v2/) run end to end at small sizes on CPU."""

import sys
from pathlib import Path

import pytest
import torch

from conftest import CPU_PRECISION, run_python

RESEARCH = Path(__file__).resolve().parents[1] / "research" / "nano_v2"
sys.path.insert(0, str(RESEARCH))


@pytest.mark.parametrize("where, first", [("encoder", "pixels"),
                                          pytest.param("language-model", "LM input (projector output)",
                                                       marks=pytest.mark.slow)])  # 15 s; the encoder arm covers the script
def test_the_encoder_probe_writes_a_row_per_layer(tmp_path, where, first):
    import json

    out = tmp_path / "probe.json"
    result = run_python(str(RESEARCH / "encoder_probe.py"), "--images", "12", "--steps", "3",
                        "--where", where, "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    table = json.loads(out.read_text())
    rows = table["rows"]
    assert rows[0]["layers"] == first and len(rows) == (15 if where == "encoder" else 7)
    assert table["recog_scenes"] == 4 and table["tokens"]["test"] > 0
    assert all(0 <= row[k] <= 1 for row in rows for k in ("colour", "shape", "kind", "recog"))


def test_loss_shares_weigh_each_functions_gradient_as_each_loss_does(tmp_path):
    import json

    from loss_shares import shares

    unit = torch.ones(3)
    found = {"recog": (0.1, 2, unit), "count": (0.1, 2, unit), "ground": (0.1, 12, unit), "ocr": (0.1, 4, unit)}
    assert shares(found, None) == {"recog": 0.1, "count": 0.1, "ground": 0.6, "ocr": 0.2}  # by answer tokens
    assert shares(found, {}) == {f: 0.25 for f in found}
    assert shares(found, {"ground": 2.0})["ground"] == 0.4
    out = tmp_path / "shares.json"
    result = run_python(str(RESEARCH / "loss_shares.py"), "--params", "projector", "--n", "1",
                        "--precision", CPU_PRECISION, "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    table = json.loads(out.read_text())
    assert table["answer_tokens"]["ground"] > 10 * table["answer_tokens"]["recog"]  # a box against a yes/no
    for label in ("token mean", "per-sample, equal", "per-sample, ground=2"):
        assert abs(sum(table[label].values()) - 1) < 0.01 and all(v > 0 for v in table[label].values())


def test_the_letter_probe_reads_each_encoder_layer(tmp_path):
    import json
    import random

    from encoder_probe import CELL, LETTERS, letter_image

    image, labels = letter_image(random.Random(3))
    assert sum(label < len(LETTERS) for label in labels) == 8 and len(labels) == (224 // CELL) ** 2
    out = tmp_path / "letters.json"
    result = run_python(str(RESEARCH / "encoder_probe.py"), "--task", "letters", "--images",
                        "4", "--steps", "3", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["layers"] for r in rows][:2] == ["pixels", "layer 0"] and len(rows) == 15
    assert all(0 <= r["letter"] <= 1 for r in rows)


@pytest.mark.slow  # a lab script's end-to-end run: 15-40 s, kept out of the default suite
def test_ocr_answers_scores_reading_and_trains_a_spelling_arm(tmp_path):
    import json

    from ocr_answers import edit_distance, reading_scores

    assert [edit_distance(*p) for p in [("bear", "bear"), ("bear", "beer"), ("", "cow"), ("fern", "fen")]] == [0, 1, 3, 1]
    records = [{"answer": "bear", "target": "bear"}, {"answer": "bead", "target": "bear"},
               {"answer": "pencil", "target": "cow"}, {"answer": "pencil", "target": "fern"}]
    scores = reading_scores(records)
    assert scores["exact"] == 0.25 and scores["first_letter"] == 0.5 and scores["distinct_answers"] == 3
    assert scores["char_similarity"] == round((1 + 0.75 + 1 / 6 + 1 / 6) / 4, 4)  # pencil: 5 edits from cow or fern
    out = tmp_path / "ocr"
    result = run_python(str(RESEARCH / "ocr_answers.py"), "--arms", "letters", "--steps", "1",
                        "--batch-size", "2", "--n", "2", "--workers", "0", "--lora-rank", "4", "--pseudo-words", "0.5",
                        "--precision", CPU_PRECISION, "--align-words", "1", "--align-letters",
                        "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    run = json.loads((out / "letters" / "train.json").read_text())
    assert run["functions"] == ["ocr"] and run["ocr_answers"] == "letters" and run["suite"] == "v2"
    assert run["pseudo_words"] == 0.5 and run["align_words"] == 1 and run["align_letters"] is True
    scores = json.loads((out / "results.json").read_text())["letters"]
    assert set(scores) >= {"train", "held_out", "pseudo"} and scores["held_out"]["n"] == 2
    # the true word's likelihood does not depend on how the answers are batched (left padding is masked out)
    from argparse import Namespace

    from ocr_answers import arm_config, word_nats
    from vfl.models import load

    config = arm_config("letters", Namespace(steps=1, batch_size=2, seed=0, save_every=20, lora_rank=4, lm_start=0.1,
                                             lr_lm=5e-4, workers=0, device="cpu", precision=CPU_PRECISION,
                                             pseudo_words=0.5, align_words=1.0, align_letters=True))
    one_at_a_time = word_nats(load(f"nano:{out / 'letters' / 'weights'}"), config, 2, "held_out", batch=1)
    assert scores["held_out"]["word_nats"] > 0 and abs(one_at_a_time - scores["held_out"]["word_nats"]) < 0.01
    bad = run_python(str(RESEARCH / "ocr_answers.py"), "--arms", "runes")
    assert bad.returncode == 2 and "--arms takes tokens, letters" in bad.stderr


def test_the_recognition_shortcut_benchmark_splits_the_scenes_a_count_answers():
    """No recognition scene is answered by its number of objects, in either suite: v1 once drew 1 object for
    "no" and 4 for "yes" (a model that counted was right on those and at chance elsewhere, as the table said
    of the shipped nano), and now draws its recognition as v2 does."""
    from recog_shortcut import by_object_count, recognition_scenes

    from vfl.nano.data import held_out_items
    from vfl.probes.questions import asked_kind

    for suite, decisive in (("v1", set()), ("v2", set())):
        items, scenes = held_out_items(["recog"], 200, 1, suite), recognition_scenes(suite, 200, 1)
        for item, scene in zip(items, scenes):  # the scenes are the items' own
            assert (asked_kind(item.question) in {(t.shape, t.colour) for t in scene}) == (item.answer == "yes")
        counting = {3: "no", 4: "yes", 5: "yes"}
        records = [{"target": item.answer, "correct": counting[len(scene)] == item.answer}
                   for item, scene in zip(items, scenes)]
        table = by_object_count(records, scenes)
        assert table["all"]["n"] == 200
        if decisive:
            assert table["count decides"]["accuracy"] == 1.0
            assert table["count decides"]["n"] == sum(len(s) in decisive for s in scenes)
        else:
            assert "count decides" not in table and table["count does not decide"]["n"] == 200


def test_captions_are_scored_as_drawn_and_as_answers_to_the_question():
    """A caption that names the scene as drawn answers every question; one that leaves out the asked kind answers
    "no" to all, right only on the "no" items."""
    from recog_shortcut import caption_scores, recognition_scenes

    from vfl.nano.data import held_out_items
    from vfl.nano.suite_v2 import describe_caption
    from vfl.probes.questions import asked_kind

    items, scenes = held_out_items(["recog"], 40, 1, "v2"), recognition_scenes("v2", 40, 1)
    right = caption_scores([describe_caption(scene) for scene in scenes], items, scenes)
    assert right["caption exact"]["accuracy"] == right["recognition from the caption"]["accuracy"] == 1.0
    blind = [describe_caption([t for t in scene if (t.shape, t.colour) != asked_kind(item.question)])
             for item, scene in zip(items, scenes)]
    wrong = caption_scores(blind, items, scenes)
    noes = sum(item.answer == "no" for item in items)
    assert wrong["recognition from the caption"]["accuracy"] == round(noes / 40, 3) and 0 < noes < 40
    assert wrong["caption exact"]["accuracy"] == round(noes / 40, 3)  # only the "no" scenes lack nothing


def test_which_lookups_answer_recognition_where_they_hold_the_asked_shape():
    from recog_shortcut import which_questions, which_scores

    from vfl.nano.data import held_out_items
    from vfl.nano.suite_v2 import make_question_sample
    from vfl.probes.questions import asked_kind

    items = held_out_items(["recog"], 40, 1, "v2")
    questions = which_questions(items)
    assert all(q.startswith(f"Which shapes are {asked_kind(i.question)[1]}?") for q, i in zip(questions, items))
    assert questions[0].endswith(make_question_sample("which", 0, 0).question.split("?")[1])  # the trained wording
    truth = [asked_kind(i.question)[0] + ", other" if i.answer == "yes" else "other" for i in items]
    assert which_scores(truth, items)["recognition from which shapes"]["accuracy"] == 1.0
    assert which_scores(["other"] * 40, items)["recognition from which shapes"]["accuracy"] == \
        round(sum(i.answer == "no" for i in items) / 40, 3)


def test_recog_lookup_puts_one_learnt_vector_per_object_or_the_caption_where_the_image_was():
    from transformers import AutoTokenizer

    from recog_lookup import BACKGROUND, KINDS, grid_cells, prompt_ids, samples
    from vfl.nano.parts import smollm2_dir
    from vfl.nano.suite_v2 import describe_caption, in_rows

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir())
    sample = samples(0, 1, "train", loose=False)[0]
    text_ids, text_kinds = prompt_ids(tokenizer, sample, "text")
    assert set(text_kinds) == {-1} and describe_caption(sample.scene) in tokenizer.decode(text_ids)
    ids, kinds = prompt_ids(tokenizer, sample, "kinds")
    assert [k for k in kinds if k >= 0] == [KINDS.index((t.shape, t.colour)) for t in in_rows(sample.scene)]
    assert tokenizer.decode([i for i, k in zip(ids, kinds) if k < 0]).endswith(sample.question + "<|im_end|>\n"
                                                                                 "<|im_start|>assistant\n")
    cells = grid_cells(sample.scene)
    assert len(cells) == 64 and {KINDS[k] for k in cells if k != BACKGROUND} == {(t.shape, t.colour)
                                                                                 for t in sample.scene}


@pytest.mark.slow  # a lab script's end-to-end run: 15-40 s, kept out of the default suite
def test_align_tokens_fits_a_projector_per_temperature_from_the_same_start(tmp_path):
    import json

    out = tmp_path / "fit.json"
    result = run_python(str(RESEARCH / "align_tokens.py"), "--fit", "2", "--train-images", "6", "--n", "4",
                        "--temperatures", "none,0.05", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    table = json.loads(out.read_text())
    assert [arm["temperature"] for arm in table["arms"]] == ["none", "0.05"] and table["train_images"] == 6
    plain, contrast = (arm["curve"][-1] for arm in table["arms"])
    assert plain["step"] == contrast["step"] == 2 and plain["tokens"] == contrast["tokens"] > 0
    assert contrast["loss"] > plain["loss"]  # the same batches, plus a cross-entropy over 28 kinds
    assert all(0 <= row[k] <= 1 for row in (plain, contrast) for k in ("nearest_is_kind", "nearest_has_colour"))
    neither = run_python(str(RESEARCH / "align_tokens.py"))
    assert neither.returncode == 2 and "pass --weights (score a run) or --fit STEPS" in neither.stderr
    letters = run_python(str(RESEARCH / "align_tokens.py"), "--fit", "2", "--train-images", "4", "--n", "2",
                         "--temperatures", "0.05", "--letters", "--out", str(out))
    assert letters.returncode == 0, letters.stderr[-2000:]
    coarse = json.loads(out.read_text())
    row = coarse["arms"][0]["curve"][-1]
    assert row["tokens"] > 0 and all(0 <= row[k] <= 1 for k in ("nearest_is_glyph", "nearest_has_letter"))
    fine = run_python(str(RESEARCH / "align_tokens.py"), "--fit", "2", "--train-images", "4", "--n", "2",
                      "--temperatures", "0.05", "--letters", "--shuffle", "1", "--out", str(out))
    assert fine.returncode == 0, fine.stderr[-2000:]
    fine = json.loads(out.read_text())
    assert (coarse["token_px"], fine["token_px"]) == (28, 14)
    assert fine["arms"][0]["curve"][-1]["tokens"] > 2 * row["tokens"]  # the same letters, in four times the tokens


def test_align_tokens_scores_letter_tokens_by_glyph_letter_and_ink():
    import torch
    from align_tokens import target_scores

    from vfl.nano.align import GLYPHS, KINDS, NO_KIND

    vectors = torch.randn(len(KINDS) + len(GLYPHS), 8, generator=torch.Generator().manual_seed(0))
    red_b, blue_b = (len(KINDS) + GLYPHS.index(("b", ink)) for ink in ("red", "blue"))
    tokens = torch.stack([vectors[red_b], 2 * vectors[blue_b], torch.zeros(8)]).unsqueeze(0)
    scores = target_scores(tokens, torch.tensor([[red_b, red_b, NO_KIND]]), vectors, letters=True)
    assert scores["tokens"] == 2 and scores["nearest_is_glyph"] == 0.5  # the second is blue b, read as red b
    assert scores["nearest_has_letter"] == 1.0 and scores["nearest_has_ink"] == 0.5
    assert scores["chance_glyph"] == round(1 / len(GLYPHS), 3)


def test_compare_evals_applies_the_ship_rule_per_function_on_the_same_items(tmp_path, capsys):
    """The candidate beats only where its Wilson interval lies wholly above the shipped one's; the paired counts
    see item by item; files with other items are refused in one sentence."""
    import json

    import compare_evals

    def records(rights: dict[str, int], n: int = 100) -> list[dict]:
        return [{"id": f"{f}-{i}", "function": f, "correct": i < rights[f]} for f in rights for i in range(n)]

    candidate = records({"recog": 90, "count": 55, "ground": 90, "ocr": 90})
    shipped = records({"recog": 50, "count": 50, "ground": 50, "ocr": 50})
    result = compare_evals.compare(candidate, shipped)
    assert {f: r["beats"] for f, r in result["functions"].items()} == {
        "recog": True, "count": False, "ground": True, "ocr": True}
    assert result["beats_all"] is False
    assert (result["functions"]["recog"]["gains"], result["functions"]["recog"]["losses"]) == (40, 0)
    assert compare_evals.compare(records({f: 90 for f in "recog count ground ocr".split()}), shipped)["beats_all"]
    for path, rows in (("a.jsonl", candidate), ("b.jsonl", shipped[:-1])):
        (tmp_path / path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert compare_evals.main([str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]) == 2
    assert "different items" in capsys.readouterr().err
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in shipped))
    assert compare_evals.main([str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]) == 0  # counting does not beat
    assert compare_evals.main([str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "--check"]) == 1
    assert compare_evals.main([str(tmp_path / "b.jsonl"), str(tmp_path / "b.jsonl"), "--check",
                               "--out", str(tmp_path / "same.json")]) == 1
    assert json.loads((tmp_path / "same.json").read_text())["functions"]["ocr"]["p_paired"] == 1.0


def test_the_blind_floor_is_what_the_answers_prior_gives_away(tmp_path):
    import json
    import math

    from blind_floor import blind_floor

    end = 9
    assert blind_floor([[1, end], [2, end]]) == pytest.approx(math.log(2) / 2)  # a coin, then a sure <|im_end|>
    # a shared first token costs nothing and is averaged in: (0 + ln 2 + 0) / 3
    assert blind_floor([[1, 3, end], [1, 4, end]]) == pytest.approx(math.log(2) / 3)
    assert blind_floor([[1, end]]) == 0
    out = tmp_path / "floor.json"
    result = run_python(str(RESEARCH / "blind_floor.py"), "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    floors = json.loads(out.read_text())["floors"]
    assert floors["recog"] == pytest.approx(math.log(2) / 2, abs=1e-4)  # "yes" and "no" are one token each
    assert math.log(60) / 3 < floors["ocr"] < math.log(60)  # 60 words, each one to three tokens before the end


def test_a_runs_curve_is_set_against_the_floor_block_by_block(tmp_path):
    import json

    from blind_floor import below_floor

    rows = below_floor([2.0, 2.2, None, 1.0, 1.2, 1.1], 1.9, 3)
    assert [r["from_step"] for r in rows] == [1, 4] and rows[0]["mean"] == 2.1 and rows[1]["mean"] == 1.1
    assert rows[0]["se_below"] == -2.0  # (1.9 - 2.1) / (0.1414 / sqrt 2)
    assert rows[1]["se_below"] == 13.86  # (1.9 - 1.1) / (0.1 / sqrt 3)
    assert below_floor([None, 1.5], 1.9, 2) == [{"from_step": 1, "mean": 1.5, "se_below": None}]
    (tmp_path / "function_losses.json").write_text(json.dumps({"ocr": [2.0, 2.2, 1.0, 1.2], "recog": [0.3, 0.3]}))
    result = run_python(str(RESEARCH / "blind_floor.py"), "--run", str(tmp_path), "--block", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    ocr = [line.split() for line in result.stdout.splitlines() if line.startswith("ocr") and "steps" in line]
    assert [row[2] for row in ocr] == ["1+", "3+"] and ocr[1][3] == "1.100"
    refused = run_python(str(RESEARCH / "blind_floor.py"), "--run", str(tmp_path / "nothing"))
    assert refused.returncode == 2 and "no function_losses.json there" in refused.stderr


@pytest.mark.slow  # a lab script's end-to-end run: 15-40 s, kept out of the default suite
def test_label_newline_labels_a_pool_both_ways(tmp_path):
    """research/paper_on_v2/label_newline.py: VFL-select labels from one set of forward passes, with and without
    the template's newline labelled, on a tiny version of bench/vfl_select.py's pool."""
    import json

    sys.path.insert(0, str(RESEARCH.parents[1] / "bench"))
    from vfl_select import build_pool

    build_pool(tmp_path / "pool", 12)
    summary = RESEARCH / "results" / "v2_locate" / "locate-n40-w3" / "summary.json"
    out = tmp_path / "labels.json"
    result = run_python(str(RESEARCH.parent / "paper_on_v2" / "label_newline.py"), "--pool", str(tmp_path / "pool"),
                        "--vfl", str(summary), "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    table = json.loads(out.read_text())
    assert set(table["vfl"]) == {"recog", "ground"} and table["n_clean"] > 0
    for key in ("now", "before"):
        assert 0 <= table[key]["accuracy"] <= 1
        assert sum(sum(row.values()) for row in table[key]["confusion"].values()) == 12
        assert table[key]["confusion"].get("text", {}).get("none", 0) == sum(table[key]["confusion"].get("text", {}).values())


def test_paper_on_v2_figures_draw_from_rows_and_refuse_a_folder_without_them(tmp_path):
    """research/paper_on_v2/figures.py: the VFL-LoRA trade-off and VFL-select's bars from rows of the benchmarks'
    shape; a folder holding neither is refused in one sentence."""
    import json

    from vfl.nano.sample import FUNCTIONS

    def lora_row(variant, seed, layers, in_domain, ood):
        return {"variant": variant, "seed": seed, "layers": layers, "share": 0.02 * (variant != "none"),
                "in_domain": {"accuracy": in_domain}, "ood": {f: {"accuracy": ood} for f in FUNCTIONS}}

    rows = [lora_row("none", 0, "-", 0.25, 0.75)] + [
        lora_row(variant, seed, layers, 0.3 + 0.01 * seed, 0.7 - 0.02 * seed)
        for seed in (0, 1) for variant, layers in (("vfl", "20,21,22,23"), ("all", ",".join(map(str, range(30)))),
                                                    ("random", "1,5,8,13"))]
    (tmp_path / "vfl_lora_v2_cpu_ground-among.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    select = [{"arm": arm, "seed": seed, "samples": 40, "mean": 0.6, "accuracy": {f: 0.6 for f in FUNCTIONS}}
              for arm in ("none", "full", "vfl") for seed in ((0,) if arm == "none" else (0, 1))]
    (tmp_path / "vfl_select_v2_cpu.jsonl").write_text("\n".join(json.dumps(r) for r in select) + "\n")
    script = str(RESEARCH.parent / "paper_on_v2" / "figures.py")
    result = run_python(script, "--results", str(tmp_path), "--out", str(tmp_path / "docs"))
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("vfl-lora-v2.png", "vfl-select-v2.png"):
        assert (tmp_path / "docs" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    refused = run_python(script, "--results", str(tmp_path / "docs"), "--out", str(tmp_path / "none"))
    assert refused.returncode != 0 and "no nano v2 VFL-LoRA or VFL-select rows" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_encoder_verdicts_judge_each_finding_on_paired_outcomes(tmp_path, monkeypatch, capsys):
    """research/paper_on_v2/encoder_verdicts.py on a made-up study: deep layers read OCR, shallow and middle
    ones count, grounding is a tie, the fusion beats some single layers; OCR nobody reads is not testable."""
    import json

    from vfl.nano.sample import FUNCTIONS

    right = {  # variant -> function -> how many of 40 items it answers (the first ones)
        "shallow-2": {"recog": 30, "count": 30, "ground": 30, "ocr": 2},
        "middle-7": {"recog": 30, "count": 32, "ground": 30, "ocr": 4},
        "deep-11": {"recog": 30, "count": 10, "ground": 30, "ocr": 30},
        "last-12": {"recog": 40, "count": 12, "ground": 30, "ocr": 34},
        "fusion-2-7-11": {"recog": 40, "count": 14, "ground": 30, "ocr": 34},
    }

    def study(folder, right):
        variants = {}
        for name, scores in right.items():
            (folder / name).mkdir(parents=True)
            records = [{"id": f"{f}-{i}", "function": f, "correct": i < scores[f], "answer": "x", "target": "y"}
                       for f in FUNCTIONS for i in range(40)]
            (folder / name / "eval.records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
            variants[name] = {"layers": [int(k) for k in name.split("-")[1:]]}
        (folder / "study.json").write_text(json.dumps({"variants": variants}))

    sys.path.insert(0, str(RESEARCH.parent / "paper_on_v2"))
    from encoder_verdicts import main

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["encoder_verdicts.py", *map(str, args)])
        main()
        return capsys.readouterr().out

    study(tmp_path / "study", right)
    outcomes, out = tmp_path / "outcomes.jsonl", tmp_path / "verdicts.json"
    printed = run(tmp_path / "study", "--outcomes", outcomes, "--out", out)
    assert len(outcomes.read_text().splitlines()) == 5 * 4 * 40
    findings = json.loads(out.read_text())["findings"]  # OCR, counting, grounding, the fusion
    assert [f["verdict"] for f in findings] == ["holds", "holds", "not decided", "holds in part"]
    ocr = findings[0]["comparisons"]  # "deep layers are needed for OCR": deep and last against shallow, middle
    assert [(c["better"], c["worse"]) for c in ocr] == [("deep-11", "shallow-2"), ("deep-11", "middle-7"),
                                                       ("last-12", "shallow-2"), ("last-12", "middle-7")]
    assert (ocr[0]["gains"], ocr[0]["losses"], ocr[0]["difference"]) == (28, 0, 0.7)
    assert ocr[0]["difference_ci"][0] > 0.5 and ocr[0]["difference_ci"][1] < 0.85
    assert all(c["outcome"] == "holds" and c["p_holm"] < 0.05 for c in ocr)
    fusion = findings[3]["comparisons"]  # every function's items pooled: 160 a pair
    assert {c["n"] for c in fusion} == {160} and {c["outcome"] for c in fusion} == {"holds", "not decided"}
    assert "| deep layers are needed for OCR |" in printed and "+0.70 (+0." in printed
    # the committed outcomes are judged again without the study folder, to the same verdicts
    run("--outcomes", outcomes, "--out", tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text()) == json.loads(out.read_text())
    # OCR read by no variant: not testable
    for scores in right.values():
        scores["ocr"] = 1
    study(tmp_path / "blind", right)
    run(tmp_path / "blind", "--outcomes", outcomes, "--out", out)
    assert json.loads(out.read_text())["findings"][0]["verdict"] == "not testable"
    with pytest.raises(SystemExit, match="is no finished `vfl nano study` folder"):
        run(tmp_path, "--outcomes", outcomes, "--out", out)


def test_regime_verdicts_call_a_moved_and_a_spread_function_by_paired_bootstrap(tmp_path, monkeypatch, capsys):
    """research/paper_on_v2/regime_verdicts.py on made-up regimes located on the same probes: LoRA moves
    grounding deeper and leaves recognition where it was; full fine-tuning spreads recognition."""
    import json

    from conftest import write_locate_run
    from vfl.nano.sample import FUNCTIONS

    write_locate_run(tmp_path / "regimes" / "projector" / "locate", {"recog": {2}, "ground": {4}}, seed=0)
    write_locate_run(tmp_path / "regimes" / "lora" / "locate", {"recog": {2}, "ground": {7}}, seed=1)
    write_locate_run(tmp_path / "regimes" / "full" / "locate", {"recog": {0, 2, 4, 6}, "ground": {4}}, seed=2)
    (tmp_path / "regimes" / "results.jsonl").write_text("".join(
        json.dumps({"recipe": r, "suite": "v1", **{f: 0.5 for f in FUNCTIONS}}) + "\n" for r in ("projector", "lora")))
    sys.path.insert(0, str(RESEARCH.parent / "paper_on_v2"))
    from regime_verdicts import main

    (tmp_path / "results").mkdir()
    monkeypatch.setattr(sys, "argv", ["regime_verdicts.py", str(tmp_path / "regimes"), "--results",
                                      str(tmp_path / "results"), "--figure", str(tmp_path / "regimes.png")])
    main()
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "results" / "regimes_v2_cpu_verdicts.json").read_text())
    assert list(result["regimes"]) == ["projector", "lora", "full"]
    lora, full = result["regimes"]["lora"], result["regimes"]["full"]
    assert (lora["ground"]["moved"], lora["recog"]["moved"], lora["recog"]["widened"]) == ("deeper", "same", "same")
    assert lora["ground"]["centre_change"][0] > 0.1 and lora["ground"]["vfl"] == [7, 8]
    centre, (low, high) = lora["ground"]["profile"]["centre"], lora["ground"]["profile"]["centre_ci"]
    assert low <= centre <= high  # each regime's own interval, beside the difference's
    assert full["recog"]["widened"] == "wider" and full["ground"]["moved"] == "same"
    assert "moved" not in result["regimes"]["projector"]["recog"] and result["accuracy"]["lora"]["v1"]["ocr"] == 0.5
    assert (tmp_path / "results" / "regimes_v2_cpu_locate_full.json").is_file()
    assert (tmp_path / "regimes.png").read_bytes()[:4] == b"\x89PNG" and "): deeper;" in printed
    # the same records judged again: the same verdicts (the bootstrap is seeded)
    main()
    assert json.loads((tmp_path / "results" / "regimes_v2_cpu_verdicts.json").read_text()) == result
    monkeypatch.setattr(sys, "argv", ["regime_verdicts.py", str(tmp_path / "regimes" / "lora")])
    with pytest.raises(SystemExit, match="it needs projector and another"):
        main()


def test_lora_verdicts_judge_each_claim_seed_by_seed(tmp_path, monkeypatch, capsys):
    """research/paper_on_v2/lora_verdicts.py on made-up rows: VFL-LoRA forgets less than full LoRA in every
    seed (holds), trails the reversed VFL in every seed (does not hold), is mixed against random layers (not
    decided), ahead of them by one item in every seed (not decided: the pooled interval holds 0); a skill with
    one seed waits; text is not testable when the untouched model barely answers."""
    import json

    from vfl.nano.sample import FUNCTIONS

    def row(variant, seed, in_domain, ood, share, text=0.1):
        return {"variant": variant, "seed": seed, "share": share, "in_domain": {"accuracy": in_domain, "n": 200},
                "ood": {f: {"accuracy": ood.get(f, ood["rest"]) if isinstance(ood, dict) else ood, "n": 50}
                        for f in FUNCTIONS}, "text": {"accuracy": text, "n": 20}}

    ground = [row("none", 0, 0.25, 0.76, 0.0)]
    for seed, (vfl, full, reversed_, random_) in enumerate([(0.30, 0.28, 0.35, 0.29), (0.31, 0.33, 0.37, 0.33),
                                                            (0.29, 0.27, 0.36, 0.30)]):
        ground += [row("vfl", seed, vfl, 0.70, 0.016), row("all", seed, full, 0.56, 0.109),
                   row("reversed", seed, reversed_, 0.66, 0.016),
                   row("random", seed, random_, {"recog": 0.68, "rest": 0.70}, 0.016)]
    recog = [row("none", 0, 0.78, 0.76, 0.0, text=0.5), row("vfl", 0, 0.74, 0.76, 0.02, text=0.5)]
    for skill, rows in (("ground-among", ground), ("recog-crowd", recog)):
        (tmp_path / f"vfl_lora_v2_cpu_{skill}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    sys.path.insert(0, str(RESEARCH.parent / "paper_on_v2"))
    from lora_verdicts import main

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["lora_verdicts.py", "--results", str(tmp_path),
                                          "--out", str(tmp_path / "verdicts.json"), *args])
        main()
        return capsys.readouterr().out

    printed = run()
    claims = json.loads((tmp_path / "verdicts.json").read_text())["claims"]
    verdict = {(c["skill"], c["claim"].removeprefix("VFL-LoRA ")): c["verdict"] for c in claims}
    assert verdict["ground-among", "trains fewer parameters than full LoRA"] == "holds"
    assert verdict["ground-among", "forgets less out of domain than full LoRA"] == "holds"
    assert verdict["ground-among", "beats full LoRA in-domain"] == "not decided"  # +0.02, -0.02, +0.02
    assert verdict["ground-among", "beats the reversed VFL in-domain"] == "does not hold"
    assert verdict["ground-among", "beats random layers of its size in-domain"] == "not decided"
    # random layers keep one item of 200 fewer than VFL-LoRA in every seed: the pooled interval holds 0
    assert verdict["ground-among", "forgets less than random layers of its size"] == "not decided"
    one_item = next(c for c in claims if c["skill"] == "ground-among" and c.get("measure") == "forgetting"
                    and c["baseline"] == "random")
    assert one_item["gaps"] == [0.005] * 3 and one_item["pooled_ci"][0] < 0 < one_item["pooled_ci"][1]
    assert verdict["ground-among", "keeps text skills better than full LoRA"] == "not testable"
    forgetting = next(c for c in claims if c["skill"] == "ground-among" and c.get("measure") == "forgetting"
                      and c["baseline"] == "all")
    assert forgetting["gaps"] == [0.14, 0.14, 0.14] and forgetting["vfl"] == [0.06, 0.0]
    assert forgetting["baseline_value"] == [0.2, 0.0]
    assert 0.08 < forgetting["pooled_ci"][0] < 0.14 < forgetting["pooled_ci"][1] < 0.21
    assert {v for (skill, _), v in verdict.items() if skill == "recog-crowd"} == {"waits for seeds"}
    assert "| VFL-LoRA beats the reversed VFL in-domain | ground-among | in-domain 0.300 ± 0.010 vs 0.360" in printed
    (tmp_path / "vfl_lora_v2_cpu_recog-crowd.jsonl").write_text(json.dumps(recog[1]) + "\n")
    with pytest.raises(SystemExit, match="lacks the untouched row"):
        run()
