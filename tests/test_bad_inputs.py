"""The bad-input matrix: every case ends in exit 2 and one sentence, and leaves its output folder (or file) as it
was, hashes compared; after a refusal the corrected command runs in the same place. Also: a rerun on changed
probes, images or model under the same --out is refused in one sentence."""

import json
import shutil
import struct
import zlib
from pathlib import Path

import pytest

from conftest import run_cli
from test_runs import folder_state, one_error_line
from vfl.probes.generate import make_probe_set


def _png_header_only(path: Path) -> None:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 32, 32, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_llava_dir):
    """A probe file (count and ground, 1 each, 32 px), an evaluation file and model folders broken in ways a
    user's can be."""
    base = tmp_path_factory.mktemp("world")
    probes = make_probe_set(["count", "ground"], 1, 32, 0, base / "probes")
    first = json.loads(probes.read_text().splitlines()[0])
    (base / "eval.jsonl").write_text(json.dumps({"image": str(probes.parent / first["image_a"]), "question":
                                                 first["question"], "answer": first["answer_a"], "function": "count"})
                                     + "\n")
    models = base / "models"
    for name, change in {
        "no-tokenizer": lambda d: [p.unlink() for p in d.iterdir() if "token" in p.name or p.name == "vocab.json"],
        "layers-eight": lambda d: _edit_config(d, lambda c: c["text_config"].update(num_hidden_layers="eight")),
        "corrupt-weights": lambda d: (d / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{bad"),
        "no-weights": lambda d: (d / "model.safetensors").unlink(),
    }.items():
        shutil.copytree(tiny_llava_dir, models / name)
        change(models / name)
    return {"base": base, "probes": probes, "model": tiny_llava_dir, "models": models}


def _edit_config(folder: Path, change) -> None:
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


def _probe_variant(world, tmp_path, change) -> Path:
    """A copy of the world's probe folder whose records (and images) ``change(records, folder)`` alters."""
    folder = tmp_path / "probes"
    shutil.copytree(world["probes"].parent, folder)
    path = folder / "probes.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    change(records, folder)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def _field(key, value, index=0):
    return lambda records, folder: records[index].update({key: value})


def _image(action, which="image_a"):
    return lambda records, folder: action(folder / records[0][which])


def _without(key):
    return lambda records, folder: records[0].pop(key)


LOCATE = ["locate", "--n", 1, "--size", 32]
# (command, extra arguments; "PROBES" becomes the probe file changed by `change`), change, the sentence's part
CASES = {
    # locate: options
    "window 0": (LOCATE + ["--window", 0], None, "--window must be between 1 and the model's 6 layers, got 0"),
    "window past the layers": (LOCATE + ["--window", 99], None, "--window must be between 1 and the model's 6"),
    "window not a number": (LOCATE + ["--window", "two"], None, "argument --window: invalid int value: 'two'"),
    "layer out of range": (LOCATE + ["--layers", "2,9"], None, "layer index 9 is out of range"),
    "negative layer": (LOCATE + ["--layers", "-1"], None, "layer index -1 is out of range"),
    "unknown sweep": (LOCATE + ["--sweep", "sideways"], None, "argument --sweep: invalid choice: 'sideways'"),
    "unknown what": (LOCATE + ["--what", "q"], None, "argument --what: invalid choice: 'q'"),
    "heads with hidden": (LOCATE + ["--what", "hidden", "--heads", 0], None, "--heads applies to key/value swaps"),
    "head out of range": (LOCATE + ["--heads", 9], None, "head 9 does not exist: this model has key/value heads 0..1"),
    "tokens past the image": (LOCATE + ["--tokens", "0-99999"], None, "--tokens 99999 does not exist"),
    "keep-injected without hidden": (LOCATE + ["--keep-injected"], None, "--keep-injected applies to --what hidden"),
    "alpha above 1": (LOCATE + ["--alpha", 2], None, "--alpha must be between 0 and 1, got 2"),
    "min-effect negative": (LOCATE + ["--min-effect", -1], None, "--min-effect must be between 0 and 1"),
    "min-accuracy above 1": (LOCATE + ["--min-accuracy", 5], None, "--min-accuracy must be between 0 and 1"),
    "batch size 0": (LOCATE + ["--batch-size", 0], None, "--batch-size must be at least 1, got 0"),
    "max new tokens 0": (LOCATE + ["--max-new-tokens", 0], None, "--max-new-tokens must be at least 1"),
    "n 0": (["locate", "--n", 0], None, "--n must be at least 1, got 0"),
    "size too small": (["locate", "--size", 8], None, "--size must be at least 24 pixels, got 8"),
    "unknown suite": (LOCATE + ["--suite", "v9"], None, "argument --suite: invalid choice: 'v9'"),
    "unknown function": (LOCATE + ["--functions", "smell"], None, "unknown function 'smell'"),
    "no function": (LOCATE + ["--functions", ","], None, "no function given; choose from recog, count, ground, ocr"),
    "no such device": (LOCATE + ["--device", "cuda:7"], None, "--device cuda:7 needs a CUDA GPU"),
    "unknown dtype": (LOCATE + ["--dtype", "float8"], None, "argument --dtype: invalid choice: 'float8'"),
    "window with a from sweep": (LOCATE + ["--sweep", "from", "--window", 2], None, "--window applies to --sweep"),
    # locate: models
    "no such model": (LOCATE + ["--model", "/nonexistent/model"], None, "cannot load model '/nonexistent/model'"),
    "unknown tiny family": (LOCATE + ["--model", "tiny:nofamily"], None, "unknown tiny family 'nofamily'"),
    "model without tokenizer": (LOCATE + ["--model", "MODELS/no-tokenizer"], None, "cannot build the processor of"),
    "layers written in words": (LOCATE + ["--model", "MODELS/layers-eight"], None,
                                "its config.json is not valid (Validation error for field 'num_hidden_layers'"),
    "corrupt weights": (LOCATE + ["--model", "MODELS/corrupt-weights"], None,
                        "model.safetensors is not a readable safetensors file"),
    "no weights": (LOCATE + ["--model", "MODELS/no-weights"], None, "cannot load model"),
    # locate: probe files
    "probe file missing": (["locate", "--probes", "MISSING"], None, "probe file MISSING does not exist"),
    "probe file is a folder": (["locate", "--probes", "FOLDER"], None, "is a folder; give the file itself"),
    "empty probe file": (["locate", "--probes", "PROBES"], lambda r, f: r.clear(), "holds no probes"),
    "not JSON": (["locate", "--probes", "PROBES"], lambda r, f: r.__setitem__(0, '{"id": 1,'), "is not valid JSON"),
    "a JSON array line": (["locate", "--probes", "PROBES"], lambda r, f: r.__setitem__(0, "[1, 2]"),
                          ":1 is not a JSON object"),
    "missing field": (["locate", "--probes", "PROBES"], _without("question"), ":1 lacks the field(s) question"),
    "unknown field": (["locate", "--probes", "PROBES"], _field("colour", "red"), ":1 has unknown field(s) colour"),
    "question a number": (["locate", "--probes", "PROBES"], _field("question", 5),
                          ":1: question must be a non-empty string, got 5"),
    "question null": (["locate", "--probes", "PROBES"], _field("question", None), "question must be a non-empty"),
    "question a list": (["locate", "--probes", "PROBES"], _field("question", ["a"]), "question must be a non-empty"),
    "question empty": (["locate", "--probes", "PROBES"], _field("question", " "), "question must be a non-empty"),
    "answer an object": (["locate", "--probes", "PROBES"], _field("answer_a", {"n": 3}),
                         ':1: answer_a must be a string or a number, got {"n": 3}'),
    "answer true": (["locate", "--probes", "PROBES"], _field("answer_b", True), "answer_b must be a string or a"),
    "image a number": (["locate", "--probes", "PROBES"], _field("image_a", 7),
                       ":1: image_a must be a non-empty string, got 7"),
    "unknown function in file": (["locate", "--probes", "PROBES"], _field("function", "smell"),
                                 "unknown function 'smell'"),
    "repeated id": (["locate", "--probes", "PROBES"], _field("id", "count-0-0000", 1),
                    ":2 repeats the probe id count-0-0000"),
    "grounding without box": (["locate", "--probes", "PROBES"], lambda r, f: r[1].update(box_b=None),
                              ":2: probe ground-0-0000 is scored by box and needs box_b"),
    "unknown scorer": (["locate", "--probes", "PROBES"], _field("scorer", "bleu", 1),
                       ':2: scorer must be one of number, yes-no, box-iou, exact, choice, vqa-soft, contains, got "bleu"'),
    "choices not a list": (["locate", "--probes", "PROBES"], _field("choices", "A or B", 1),
                           ':2: choices must be a non-empty list of strings or null, got "A or B"'),
    "box of three": (["locate", "--probes", "PROBES"], _field("box_a", [1, 2, 3], 1), ":2: box_a must be [x0, y0"),
    "image missing": (["locate", "--probes", "PROBES"], _image(Path.unlink), "count-0-0000_a.png does not exist"),
    "image a folder": (["locate", "--probes", "PROBES"], _image(lambda p: (p.unlink(), p.mkdir())),
                       "count-0-0000_a.png is a folder, not an image"),
    "truncated PNG": (["locate", "--probes", "PROBES"], _image(_truncated), "count-0-0000_a.png cannot be read"),
    "PNG header alone": (["locate", "--probes", "PROBES"], _image(_png_header_only),
                         "count-0-0000_a.png cannot be read"),
    "not an image": (["locate", "--probes", "PROBES"], _image(lambda p: p.write_text("hello")), "cannot be read"),
    "sizes differ": (["locate", "--probes", "PROBES"], _image(lambda p: _resized(p, 48), "image_b"),
                     "probe count-0-0000: images A (32, 32) and B (48, 48) differ in size"),
    # drop
    "drop batch size 0": (["drop", "--n", 1, "--size", 32, "--batch-size", 0], None, "--batch-size must be at"),
    "drop max new tokens 0": (["drop", "--n", 1, "--size", 32, "--max-new-tokens", 0], None, "--max-new-tokens"),
    "drop bad probes": (["drop", "--probes", "PROBES"], _field("question", 5), "question must be a non-empty"),
    "drop no such model": (["drop", "--n", 1, "--model", "/nonexistent/model"], None, "cannot load model"),
    "drop truncated PNG": (["drop", "--probes", "PROBES"], _image(_truncated, "image_b"), "cannot be read"),
    # probes
    "probes n 0": (["probes", "make", "--function", "count", "--n", 0], None, "--n must be at least 1, got 0"),
    "probes size 4": (["probes", "make", "--function", "count", "--size", 4], None,
                      "--size must be at least 24 pixels, got 4"),
    "probes unknown function": (["probes", "make", "--function", "smell"], None, "unknown function 'smell'"),
    "probes unknown suite": (["probes", "make", "--function", "count", "--suite", "v9"], None,
                             "argument --suite: invalid choice"),
    # eval (OUT is a file there)
    "eval data missing": (["eval", "--data", "MISSING"], None, "evaluation file MISSING does not exist"),
    "eval data a folder": (["eval", "--data", "FOLDER"], None, "is a folder; give the file itself"),
    "eval question a number": (["eval", "--data", "EVAL"], lambda r: r.update(question=5),
                               ":1: question must be a non-empty string, got 5"),
    "eval image a list": (["eval", "--data", "EVAL"], lambda r: r.update(image=["x.png"]),
                          ':1: image must be a non-empty string, got ["x.png"]'),
    "eval unknown metric": (["eval", "--data", "EVAL"], lambda r: r.update(metric="vibes"), "unknown metric 'vibes'"),
    "eval batch size 0": (["eval", "--data", "EVAL", "--batch-size", 0], None, "--batch-size must be at least 1"),
    "eval adapter missing": (["eval", "--data", "EVAL", "--adapter", "MISSING"], None, "MISSING"),
    # nano eval (OUT is a file there)
    "nano eval weights folder empty": (["nano", "eval", "--weights", "FOLDER"], None, "holds no trained nano weights"),
    "nano eval n 0": (["nano", "eval", "--n", 0], None, "--n must be at least 1, got 0"),
    "nano eval batch size 0": (["nano", "eval", "--batch-size", 0], None, "--batch-size must be at least 1, got 0"),
    "nano eval words without v2": (["nano", "eval", "--words", "train"], None, "--words picks suite v2's OCR"),
    "nano eval no such device": (["nano", "eval", "--device", "cuda:7"], None, "--device cuda:7 needs a CUDA GPU"),
    # lora
    "lora data missing": (["lora", "--data", "MISSING"], None, "training data MISSING does not exist"),
    "lora data a folder": (["lora", "--data", "FOLDER"], None, "is a folder; give the file itself"),
    "lora probe image a number": (["lora", "--data", "PROBES"], _field("image_a", 7), "image_a must be a non-empty"),
    "lora probe question a number": (["lora", "--data", "PROBES"], _field("question", 5), "question must be a"),
    "lora vfl without function": (["lora", "--data", "PROBES", "--vfl", "FOLDER"], None, "--vfl needs --function"),
    "lora unknown layer rule": (["lora", "--data", "PROBES", "--layers", "middle"], None,
                                "--layers takes all, vfl, reversed, random or layer numbers, not 'middle'"),
    "lora negative rate": (["lora", "--data", "PROBES", "--lr", -1], None, "--lr must be positive, got -1.0"),
}
FILE_OUT = ("eval", "nano")  # commands whose --out is a file


def _repaint(path: Path) -> None:
    """One pixel of the image changed: the same size, other content."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    image.putpixel((0, 0), (1, 2, 3))
    image.save(path)


def _resized(path: Path, side: int) -> None:
    from PIL import Image

    Image.open(path).resize((side, side)).save(path)


def _arguments(case: str, world, tmp_path) -> list:
    """The case's command line, its placeholders made real (a fresh folder, a changed copy of a file)."""
    extra, change, _ = CASES[case]
    out = tmp_path / ("out.json" if extra[0] in FILE_OUT else "out")
    arguments = []
    for value in extra:
        if value == "PROBES":
            value = _probe_variant(world, tmp_path, change or (lambda r, f: None))
        elif value == "EVAL":
            record = json.loads((world["base"] / "eval.jsonl").read_text())
            (change or (lambda r: None))(record)
            value = tmp_path / "eval.jsonl"
            value.write_text(json.dumps(record) + "\n")
        elif value == "MISSING":
            value = tmp_path / "missing.jsonl"
        elif value == "FOLDER":
            value = tmp_path / "a-folder"
            value.mkdir(exist_ok=True)
        elif isinstance(value, str) and value.startswith("MODELS/"):
            value = world["models"] / value.split("/", 1)[1]
        arguments.append(value)
    if extra[0] in ("locate", "drop", "lora", "eval") and "--model" not in extra:
        arguments += ["--model", world["model"]]
    return arguments + ["--out", out]


@pytest.mark.parametrize("case", CASES)
def test_a_bad_input_is_exit_2_one_sentence_and_leaves_its_output_as_it_was(world, tmp_path, case):
    arguments = _arguments(case, world, tmp_path)
    out = Path(arguments[-1])
    if out.suffix == ".json":  # an earlier result where this command would write
        out.write_text('{"earlier": 1}\n')
    else:
        out.mkdir()
        (out / "keep.txt").write_text("earlier work")
    before = folder_state(out) if out.is_dir() else out.read_bytes()
    message = CASES[case][2].replace("MISSING", str(tmp_path / "missing.jsonl"))
    result = run_cli(*arguments)
    one_error_line(result, message)
    assert (folder_state(out) if out.is_dir() else out.read_bytes()) == before, "the refused command wrote"


def test_the_matrix_covers_at_least_60_cases_across_the_six_commands():
    commands = {" ".join(map(str, extra[:2])) if extra[0] in ("nano", "probes") else extra[0]
                for extra, _, _ in CASES.values()}
    assert len(CASES) >= 60 and commands == {"locate", "drop", "probes make", "eval", "nano eval", "lora"}


@pytest.mark.parametrize("case, fix", [
    ("truncated PNG", lambda r, f: None),
    ("question a number", lambda r, f: None),
    ("tokens past the image", ["--tokens", "0-3"]),
    ("model without tokenizer", None),
])
def test_after_a_refusal_the_corrected_command_runs_in_the_same_place(world, tmp_path, case, fix):
    """Nothing a refused command left behind (a lock, a run.json) blocks the corrected one."""
    arguments = _arguments(case, world, tmp_path)
    assert run_cli(*arguments).returncode == 2
    if callable(fix):  # the probes made right again
        shutil.rmtree(tmp_path / "probes")
        arguments[arguments.index("--probes") + 1] = _probe_variant(world, tmp_path, fix)
    elif fix is None:  # the model whole
        arguments[arguments.index("--model") + 1] = world["model"]
    else:
        arguments[arguments.index(fix[0]) + 1] = fix[1]
    corrected = run_cli(*arguments)
    assert corrected.returncode == 0, corrected.stderr[-2000:]
    assert (Path(arguments[-1]) / "summary.json").is_file()


def test_a_rerun_on_changed_probes_images_or_model_is_refused(world, tmp_path):
    """The same command after the probe file, one of its images or the model changed in place, or with the same
    relative --model from another folder: refused in one sentence, the run folder as it was."""
    probes = _probe_variant(world, tmp_path, lambda r, f: None)
    model = tmp_path / "m"
    shutil.copytree(world["model"], model)
    out = tmp_path / "run"
    command = ["locate", "--model", "m", "--probes", probes, "--functions", "count", "--out", out]
    assert run_cli(*command, cwd=tmp_path).returncode == 0
    state = folder_state(out)
    record = json.loads(probes.read_text().splitlines()[0])
    for change, what in [
        (lambda: probes.write_text(probes.read_text().replace("How many", "How  many")), "the probes or their images"),
        (lambda: _repaint(probes.parent / record["image_a"]), "the probes or their images"),
        (lambda: _edit_config(model, lambda c: c["text_config"].update(rms_norm_eps=1e-5)), "the model"),
    ]:
        saved = {p: p.read_bytes() for p in [probes, probes.parent / record["image_a"], model / "config.json"]}
        change()
        refused = run_cli(*command, cwd=tmp_path)
        one_error_line(refused, f"holds a run on other inputs ({what} changed since)")
        assert folder_state(out) == state
        for path, content in saved.items():
            path.write_bytes(content)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(world["model"], elsewhere / "m")
    _edit_config(elsewhere / "m", lambda c: c["text_config"].update(rms_norm_eps=1e-5))
    one_error_line(run_cli(*command, cwd=elsewhere), "holds a run on other inputs (the model changed since)")
    assert run_cli(*command, cwd=tmp_path).returncode == 0  # the same inputs again: resumed (nothing left to do)
    assert {k: v for k, v in folder_state(out).items() if k in ("results.jsonl", "run.json")} == \
        {k: v for k, v in state.items() if k in ("results.jsonl", "run.json")}
