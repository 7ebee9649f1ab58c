"""`vfl probes from`: each benchmark's loader on a small fixture written in the real dataset's schema (its column
names and types, a few rows, generated images), in the two layouts users have on disk (a hub snapshot of parquet
files, `save_to_disk` output)."""

import json

import pytest
from PIL import Image, ImageDraw, ImageOps

from conftest import run_cli
from vfl.errors import VflError
from vfl.probes.benchmarks import mmvp_choices, probes_from

datasets = pytest.importorskip("datasets")


def picture(seed: int, size=(64, 48)) -> Image.Image:
    """A small image that differs with ``seed`` and is not its own mirror image."""
    image = Image.new("RGB", size, (20 * seed % 255, 90, 160))
    ImageDraw.Draw(image).rectangle([2, 2, 12 + seed, 20], fill=(250, 250, 20))
    return image


def write(rows: dict, features: dict, folder, layout: str = "parquet", split: str = "test", config=None):
    """``rows`` (column -> values) as a dataset in ``folder``: hub-style parquet files (data/<split>-00000-of-00001.parquet,
    under <config>/ where given) or `save_to_disk` output."""
    data = datasets.Dataset.from_dict(rows, features=datasets.Features(features))
    if layout == "disk":
        data.save_to_disk(str(folder))
    else:
        target = folder / (config or "data") / f"{split}-00000-of-00001.parquet"
        target.parent.mkdir(parents=True)
        data.to_parquet(str(target))
    return folder


Value, Sequence, Img = datasets.Value, datasets.List, datasets.Image


def cv_bench(folder, layout="parquet"):
    prompts = ["How many cars are in the image? Select from the following choices.\n(A) 2\n(B) 3\n(C) 1",
               "How many cars are in the image? Select from the following choices.\n(A) 3\n(B) 4",
               "Considering the relative positions of the cup and the plate, where is the cup located with respect "
               "to the plate? Select from the following choices.\n(A) left\n(B) right",
               "Considering the relative positions of the lamp and the bed, where is the lamp? Select from the "
               "following choices.\n(A) above\n(B) below",
               "How many dogs are in the image? Select from the following choices.\n(A) 1\n(B) 2"]
    rows = {"idx": [0, 1, 2, 3, 4], "type": ["2D"] * 5, "task": ["Count", "Count", "Relation", "Relation", "Count"],
            "image": [picture(k) for k in range(5)],
            "question": [p.split(" Select")[0] for p in prompts],
            "choices": [["2", "3", "1"], ["3", "4"], ["left", "right"], ["above", "below"], ["1", "2"]],
            "answer": ["(A)", "(A)", "(A)", "(B)", "(A)"], "prompt": prompts,
            "filename": [f"img/2D/{k}.png" for k in range(5)], "source": ["COCO"] * 5,
            "source_dataset": ["COCO 2017 Validation Set"] * 5, "source_filename": [f"{k}.jpg" for k in range(5)],
            "target_class": ["car", "car", None, None, "dog"], "target_size": [0, 0, 0, 0, 0],
            "bbox": [[], [], [], [], []]}
    features = {"idx": Value("int32"), "type": Value("string"), "task": Value("string"), "image": Img(),
                "question": Value("string"), "choices": Sequence(Value("string")), "answer": Value("string"),
                "prompt": Value("string"), "filename": Value("string"), "source": Value("string"),
                "source_dataset": Value("string"), "source_filename": Value("string"),
                "target_class": Value("string"), "target_size": Value("int64"),
                "bbox": Sequence(Sequence(Value("float64")))}
    return write(rows, features, folder, layout, "test", "2D")


def test_cv_bench_pairs_counts_across_images_and_mirrors_left_right(tmp_path):
    probes = probes_from("cv-bench", str(cv_bench(tmp_path / "cvb")), tmp_path / "out", seed=0)
    by_function = {p.function: p for p in probes}
    assert sorted(p.function for p in probes) == ["count", "ground"]
    count = by_function["count"]  # the images with 2 and 3 cars: B's 3 is among A's choices (or A's 3 in B's)
    assert count.scorer == "choice" and count.answer_a != count.answer_b
    assert {count.choices[ord(count.answer_a[1]) - 65], count.choices[ord(count.answer_b[1]) - 65]} == {"2", "3"}
    relation = by_function["ground"]
    assert (relation.answer_a, relation.answer_b, relation.choices) == ("(A)", "(B)", ["left", "right"])
    assert ImageOps.mirror(relation.image("a")).tobytes() == relation.image("b").tobytes()
    source = json.loads((tmp_path / "out" / "source.json").read_text())
    assert source["dataset_id"] == "nyu-visionx/CV-Bench" and source["rows_read"] == 5 and source["pairs"] == 2
    assert source["files"] == ["2D/test-00000-of-00001.parquet"] and len(source["fingerprint"]) == 16
    assert source["unpaired"] == {"Relation: the answer is not left or right (a mirror keeps it)": 1,
                                  "Count: no other image with the same question, another count and that count "
                                  "among the choices": 1}


def pope(folder, layout="parquet"):
    rows = {"id": ["0", "1", "2", "3", "4"], "question_id": ["1", "2", "3", "4", "5"],
            "question": ["Is there a dog in the image?", "Is there a dog in the image?", "Is there a cat in the image?",
                         "Is there a dog in the image?", "Is there a cat in the image?"],
            "answer": ["yes", "no", "yes", "yes", "maybe"], "image_source": [f"COCO_{k}" for k in range(5)],
            "image": [picture(k, (64 + 8 * (k % 2), 48)) for k in range(5)],
            "category": ["adversarial"] * 5}
    features = {"id": Value("string"), "question_id": Value("string"), "question": Value("string"),
                "answer": Value("string"), "image_source": Value("string"), "image": Img(),
                "category": Value("string")}
    return write(rows, features, folder, layout)


@pytest.mark.parametrize("layout", ["parquet", "disk"])
def test_pope_pairs_a_yes_image_with_a_no_image_of_the_same_question(tmp_path, layout):
    probes = probes_from("pope", str(pope(tmp_path / "pope", layout)), tmp_path / "out", seed=3)
    assert len(probes) == 1
    (probe,) = probes
    assert probe.question == "Is there a dog in the image?" and {probe.answer_a, probe.answer_b} == {"yes", "no"}
    assert probe.scorer == "yes-no" and probe.function == "recog"
    assert probe.image("a").size == probe.image("b").size  # B resized to A's size where they differed
    source = json.loads((tmp_path / "out" / "source.json").read_text())
    assert source["unpaired"] == {"the answer is not yes or no": 1,
                                  "no image with the same question and the other answer": 2}
    assert source["pairs"] == 1 and source["rows_read"] == 5
    if layout == "disk":
        assert source["fingerprint"] and "files" not in source


def test_the_same_seed_gives_the_same_files_and_another_seed_another_order(tmp_path):
    folder = pope(tmp_path / "pope", "disk")
    one, again = (probes_from("pope", str(folder), tmp_path / name, seed=1) for name in ("one", "again"))
    assert [p.to_json() for p in one] == [p.to_json() for p in again]
    assert (tmp_path / "one/images/pope-00000_a.png").read_bytes() == \
        (tmp_path / "again/images/pope-00000_a.png").read_bytes()


def refcoco(folder, layout="parquet"):
    rows = {"question_id": ["1", "2", "3"], "image": [picture(k, (80, 60)) for k in range(3)],
            "question": ["Please carefully observe the area circled in the image and come up with a caption for "
                         "the area."] * 3,
            "answer": [["man in red", "the man on the left"], ["left dog", "dog on left"], ["white car"]],
            "segmentation": [[1.0, 2.0, 3.0]] * 3, "bbox": [[10.0, 5.0, 20.0, 30.0], [0.0, 0.0, 5.0, 5.0],
                                                            [4.0, 4.0, 0.0, 8.0]],
            "iscrowd": [0, 0, 0], "file_name": ["a.jpg", "b.jpg", "c.jpg"]}
    features = {"question_id": Value("string"), "image": Img(), "question": Value("string"),
                "answer": Sequence(Value("string")), "segmentation": Sequence(Value("float32")),
                "bbox": Sequence(Value("float32")), "iscrowd": Value("int8"), "file_name": Value("string")}
    return write(rows, features, folder, layout, "val")


def test_refcoco_mirrors_the_image_and_the_box_and_skips_left_right_expressions(tmp_path):
    (probe,) = probes_from("refcoco", str(refcoco(tmp_path / "ref")), tmp_path / "out")
    assert probe.question == "Locate man in red in the image and give its bounding box."
    assert probe.box_a == [10, 5, 30, 35] and probe.box_b == [50, 5, 70, 35]  # x mirrored in an 80 px image
    assert probe.scorer == "box-iou" and probe.function == "ground"
    assert ImageOps.mirror(probe.image("a")).tobytes() == probe.image("b").tobytes()
    unpaired = json.loads((tmp_path / "out" / "source.json").read_text())["unpaired"]
    assert unpaired == {"every expression says left or right (a mirror would make it wrong)": 1,
                        "no box of positive size": 1}


def textvqa(folder, layout="parquet"):
    answers = [["coke"] * 7 + ["coca cola"] * 3, ["pepsi"] * 10, ["Coke"] * 10, ["sprite"] * 9 + [""]]
    rows = {"image_id": ["a", "b", "c", "d"], "question_id": [1, 2, 3, 4],
            "question": ["what brand is this?", "What brand is this?", "what brand is this?", "what time is it?"],
            "question_tokens": [["what", "brand"]] * 4, "image": [picture(k) for k in range(4)],
            "image_width": [64] * 4, "image_height": [48] * 4, "flickr_original_url": [""] * 4,
            "flickr_300k_url": [""] * 4, "answers": answers, "image_classes": [["Bottle"]] * 4,
            "set_name": ["val"] * 4, "ocr_tokens": [["coke"]] * 4}
    features = {"image_id": Value("string"), "question_id": Value("int64"), "question": Value("string"),
                "question_tokens": Sequence(Value("string")), "image": Img(), "image_width": Value("int64"),
                "image_height": Value("int64"), "flickr_original_url": Value("string"),
                "flickr_300k_url": Value("string"), "answers": Sequence(Value("string")),
                "image_classes": Sequence(Value("string")), "set_name": Value("string"),
                "ocr_tokens": Sequence(Value("string"))}
    return write(rows, features, folder, layout, "validation")


def test_textvqa_pairs_one_question_whose_answers_do_not_overlap(tmp_path):
    (probe,) = probes_from("textvqa", str(textvqa(tmp_path / "tv")), tmp_path / "out", seed=0)
    assert probe.scorer == "vqa-soft" and probe.function == "ocr"
    assert {probe.answer_a.lower(), probe.answer_b.lower()} == {"pepsi", "coke"}  # each side's most common answer
    assert len(probe.accepted_a) == len(probe.accepted_b) == 10
    unpaired = json.loads((tmp_path / "out" / "source.json").read_text())["unpaired"]
    assert unpaired == {"no image with the same question and answers that do not overlap": 2}  # "Coke" = "coke"


def ocrbench(folder, layout="parquet"):
    rows = {"dataset": ["IIIT5K", "IIIT5K", "SVT", "FUNSD", "IIIT5K"],
            "question": ["what is written in the image?"] * 3 + ["What is the date?", "what is written in the image?"],
            "question_type": ["Regular Text Recognition", "Regular Text Recognition", "Irregular Text Recognition",
                              "Key Information Extraction", "Regular Text Recognition"],
            "answer": [["STOP"], ["exit"], ["Stop"], ["12/03"], ["exit", "EXIT"]], "image": [picture(k) for k in range(5)]}
    features = {"dataset": Value("string"), "question": Value("string"), "question_type": Value("string"),
                "answer": Sequence(Value("string")), "image": Img()}
    return write(rows, features, folder, layout)


def test_ocrbench_pairs_text_recognition_items_with_different_answers(tmp_path):
    probes = probes_from("ocrbench", str(ocrbench(tmp_path / "ocr")), tmp_path / "out", seed=0)
    assert all(p.scorer == "contains" and p.question == "what is written in the image?" for p in probes)
    assert len(probes) == 2 and all({p.answer_a.lower(), p.answer_b.lower()} == {"stop", "exit"} for p in probes)
    unpaired = json.loads((tmp_path / "out" / "source.json").read_text())["unpaired"]
    assert unpaired == {"Key Information Extraction: not text recognition": 1}  # STOP-exit, Stop-exit


def mmvp(folder, layout="parquet"):
    rows = {"Index": [1, 2, 3, 4, 5], "Question": ["Is the door open?", "Is the door open?", "Which way?", "Which way?",
                                                   "Odd one"],
            "Options": ["(a) Open (b) Closed", "(a) Open (b) Closed", "(a) Left (b) Right", "(a) Left (b) Right", "(a) x"],
            "Correct Answer": ["(a)", "(b)", "(a)", "(a)", "(a)"], "image": [picture(k) for k in range(5)]}
    features = {"Index": Value("int64"), "Question": Value("string"), "Options": Value("string"),
                "Correct Answer": Value("string"), "image": Img()}
    return write(rows, features, folder, layout, "train")


def test_mmvp_keeps_its_own_consecutive_pairs_whose_answers_differ(tmp_path):
    (probe,) = probes_from("mmvp", str(mmvp(tmp_path / "mmvp")), tmp_path / "out", seed=5)
    assert probe.question.startswith("Is the door open?\n(a) Open (b) Closed\n")
    assert (probe.answer_a, probe.answer_b, probe.choices) == ("(a)", "(b)", ["Open", "Closed"])
    assert probe.image("a").tobytes() == picture(0).tobytes()  # never shuffled: rows 1 and 2
    unpaired = json.loads((tmp_path / "out" / "source.json").read_text())["unpaired"]
    assert unpaired == {"a consecutive pair has the same answer": 2, "the last row has no partner": 1}
    assert mmvp_choices("(a) Yes (b) No (c) Maybe") == ["Yes", "No", "Maybe"]


def test_a_config_named_in_the_file_names_chooses_its_files(tmp_path):
    folder = cv_bench(tmp_path / "cvb")
    (folder / "2D" / "test-00000-of-00001.parquet").rename(folder / "test_2d.parquet")
    (folder / "2D").rmdir()
    (folder / "test_3d.parquet").write_bytes((folder / "test_2d.parquet").read_bytes())  # the 3D half beside it
    probes_from("cv-bench", str(folder), tmp_path / "out")
    source = json.loads((tmp_path / "out" / "source.json").read_text())
    assert source["files"] == ["test_2d.parquet"] and source["rows_read"] == 5


def test_limit_stops_at_that_many_pairs(tmp_path):
    probes = probes_from("cv-bench", str(cv_bench(tmp_path / "cvb")), tmp_path / "out", limit=1)
    source = json.loads((tmp_path / "out" / "source.json").read_text())
    assert len(probes) == 1 and source["pairs"] == 1 and source["stopped_at_limit"] and source["rows_read"] < 5


@pytest.mark.parametrize("name, fixture", [("pope", textvqa), ("textvqa", pope), ("mmvp", ocrbench)])
def test_a_copy_of_another_benchmark_is_refused_naming_the_missing_columns(tmp_path, name, fixture):
    folder = fixture(tmp_path / "data")
    with pytest.raises(VflError, match=rf"is no {name} copy: it lacks the column\(s\) .* \(it has .*\)"):
        probes_from(name, str(folder), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_command_line_offers_every_loader():
    from vfl.cli import BENCHMARK_NAMES
    from vfl.probes.benchmarks import BENCHMARKS

    assert BENCHMARK_NAMES == tuple(BENCHMARKS)


def test_bad_sources_are_one_sentence(tmp_path):
    (tmp_path / "empty").mkdir()
    cases = [(["pope", tmp_path / "nowhere"], f"{tmp_path / 'nowhere'} does not exist; give a local copy of "
                                               "lmms-lab/POPE, or pass --download"),
             (["pope", tmp_path / "empty"], "holds no parquet or arrow files and no `save_to_disk` output"),
             (["pope", tmp_path / "empty", "--limit", "0"], "--limit must be at least 1, got 0"),
             (["squad", tmp_path], "invalid choice: 'squad'"),
             (["pope", pope(tmp_path / "pope"), "--out", tmp_path / "pope" / "data" / "test-00000-of-00001.parquet"],
              "cannot write into ")]
    for args, message in cases:
        if "--out" not in args:
            args = [*args, "--out", tmp_path / "out"]
        result = run_cli("probes", "from", *args)
        assert result.returncode == 2 and message in result.stderr.strip().splitlines()[-1], result.stderr[-800:]
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_probes_from_runs_end_to_end_and_locate_reads_its_output(tmp_path, tiny_llava_dir):
    folder = pope(tmp_path / "pope")
    made = run_cli("probes", "from", "pope", folder, "--out", tmp_path / "probes", "--seed", "0")
    assert made.returncode == 0, made.stderr[-1500:]
    assert "1 pair" in made.stdout and "3 rows left out" in made.stdout
    again = run_cli("probes", "from", "pope", folder, "--out", tmp_path / "probes")  # a second run on one --out
    assert again.returncode == 2 and again.stderr.strip().splitlines()[-1] == \
        f"vfl: error: {tmp_path / 'probes' / 'probes.jsonl'} exists; give another --out or remove it"
    run = run_cli("locate", "--model", tiny_llava_dir, "--probes", tmp_path / "probes" / "probes.jsonl",
                  "--out", tmp_path / "run", "--max-new-tokens", "3")
    assert run.returncode == 0, run.stderr[-1500:]
    records = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert {r["function"] for r in records} == {"recog"} and len(records) == 2 + 6  # controls + 6 windows
    drop = run_cli("drop", "--model", tiny_llava_dir, "--probes", tmp_path / "probes" / "probes.jsonl",
                   "--out", tmp_path / "drop", "--max-new-tokens", "3")
    assert drop.returncode == 0, drop.stderr[-1500:]
    summary = json.loads((tmp_path / "drop" / "drop_summary.json").read_text())
    point = summary["functions"]["recog"]["curve"][0]
    assert point["n"] == 2 and set(point["yes_no"]) == {"accuracy", "precision", "recall", "f1", "yes_ratio"}


def test_boxes_are_read_in_each_familys_convention(adapters):
    """Qwen2-VL writes 0-1000; Qwen2.5-VL pixels of the image its processor resized; LLaVA fractions."""
    from vfl.api import credit
    from vfl.probes.schema import Probe

    image = Image.new("RGB", (100, 70))
    probe = Probe("p", "ground", "Where?", "a.png", "b.png", "it", "it", [10, 7, 50, 35], [10, 7, 50, 35])
    qwen25 = adapters("qwen2_5_vl")
    width, height = qwen25.model_image_size(image.size)
    unit = qwen25.processor.image_processor.patch_size * qwen25.processor.image_processor.merge_size
    assert (width, height) != (100, 70) and width % unit == height % unit == 0  # resized to whole merged patches
    said = f"[{10 * width / 100}, {7 * height / 70}, {50 * width / 100}, {35 * height / 70}]"
    assert qwen25.box_format == "pixel" and credit(qwen25, probe, "a", said, image) == 1.0
    assert credit(qwen25, probe, "a", "[10, 7, 50, 35]", image) == 0.0  # the image's own pixels are not its
    qwen2 = adapters("qwen2_vl")
    assert qwen2.box_format == "thousand" and qwen2.model_image_size(image.size) is None
    assert credit(qwen2, probe, "a", "[100, 100, 500, 500]", image) == 1.0
    assert credit(adapters("llava"), probe, "a", "[0.1, 0.1, 0.5, 0.5]", image) == 1.0


def test_eval_records_take_the_benchmark_scorers_and_report_soft_and_pope_numbers(tmp_path):
    from vfl.evaluate import load_items, summarise, table

    picture(0).save(tmp_path / "a.png")
    rows = [{"image": "a.png", "question": "What brand?", "answer": "coke", "metric": "vqa-soft",
             "accepted": ["coke"] * 2 + ["pepsi"] * 8},
            {"image": "a.png", "question": "Door?", "answer": "(b)", "metric": "choice", "choices": ["Open", "Shut"]},
            {"image": "a.png", "question": "Dog?", "answer": "yes", "function": "recog"}]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = load_items(tmp_path / "eval.jsonl")
    assert [(i.function, i.metric) for i in items] == [("ocr", "vqa-soft"), ("recog", "choice"), ("recog", "yes-no")]
    assert items[0].accepted[-1] == "pepsi" and items[1].choices == ["Open", "Shut"]
    records = [{"function": "ocr", "scorer": "vqa-soft", "answer": "coke", "target": "coke", "credit": 2 / 3,
                "correct": True},
               {"function": "ocr", "scorer": "vqa-soft", "answer": "fanta", "target": "coke", "credit": 0.0,
                "correct": False},
               {"function": "recog", "scorer": "yes-no", "answer": "yes", "target": "yes", "credit": 1.0,
                "correct": True},
               {"function": "recog", "scorer": "yes-no", "answer": "yes", "target": "no", "credit": 0.0,
                "correct": False}]
    summary = summarise(records)
    assert summary["ocr"]["accuracy"] == pytest.approx(1 / 3) and summary["ocr"]["ci"] is None
    assert summary["recog"]["yes_no"]["yes_ratio"] == 1.0 and summary["recog"]["ci"] is not None
    assert "soft scores" in table(summary) and "yes ratio 1.000" in table(summary)
    (tmp_path / "bad.jsonl").write_text(json.dumps({**rows[0], "accepted": "coke"}) + "\n")
    with pytest.raises(VflError, match=r"bad.jsonl:1: accepted must be a non-empty list of strings"):
        load_items(tmp_path / "bad.jsonl")
