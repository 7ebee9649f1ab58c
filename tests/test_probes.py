import json
import random

import numpy as np
import pytest

from vfl.errors import VflError
from vfl.probes.generate import make_pair, make_probe_set
from vfl.probes.questions import HELD_OUT, asked_kind, question_pair
from vfl.probes.render import WORDS
from vfl.probes.schema import FUNCTIONS, load_probes, parse_function


def test_same_seed_same_files_other_seed_other_images(tmp_path):
    a = make_probe_set(list(FUNCTIONS), 3, 64, 7, tmp_path / "a")
    b = make_probe_set(list(FUNCTIONS), 3, 64, 7, tmp_path / "b")
    c = make_probe_set(list(FUNCTIONS), 3, 64, 8, tmp_path / "c")
    assert a.read_text() == b.read_text()
    for name in sorted(p.name for p in (tmp_path / "a" / "images").iterdir()):
        assert (tmp_path / "a" / "images" / name).read_bytes() == (tmp_path / "b" / "images" / name).read_bytes()
    assert a.read_text() != c.read_text()


@pytest.mark.parametrize("function", FUNCTIONS)
def test_pairs_differ_in_the_one_attribute(function):
    for index in range(10):
        question, image_a, image_b, answer_a, answer_b, box_a, box_b = make_pair(function, index, 96, 0)
        assert image_a.size == image_b.size == (96, 96)
        assert answer_a != answer_b
        assert list(image_a.getdata()) != list(image_b.getdata())
        if function == "ground":
            assert box_a != box_b
            # the object sits inside its box: the box's centre pixel is not background
            cx, cy = (box_b[0] + box_b[2]) // 2, (box_b[1] + box_b[3]) // 2
            assert image_b.getpixel((cx, cy)) != image_a.getpixel((cx, cy))
        if function == "ocr":
            assert answer_a in WORDS and answer_b in WORDS
        if function == "count":
            assert 1 <= int(answer_a) <= 6 and 1 <= int(answer_b) <= 6


def test_v1_recognition_pairs_are_v2s_so_both_sides_hold_as_many_objects():
    """A v1 pair's B once lacked the asked object, so a model that counted objects answered it (`make demo`'s
    recognition probes measured counting); now a kind sharing its colour or shape stands in its place."""
    for index in range(8):
        question, image_a, image_b, answer_a, answer_b, *_ = make_pair("recog", index, 96, 0)
        pair = question_pair("recog", random.Random(f"recog:0:{index}"), 96)
        assert (question, answer_a, answer_b) == (pair.question, "yes", "no")
        assert list(image_a.getdata()) == list(pair.image_a.getdata())
        assert list(image_b.getdata()) == list(pair.image_b.getdata())
        assert len(pair.scene_a) == len(pair.scene_b) and pair.scene_a[:-1] == pair.scene_b[:-1]
        assert pair.scene_a[-1].box == pair.scene_b[-1].box and pair.scene_a[-1] != pair.scene_b[-1]  # another kind


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_loader_errors_name_the_problem(tmp_path):
    good = make_probe_set(["count"], 2, 32, 0, tmp_path)
    records = [json.loads(line) for line in good.read_text().splitlines()]
    cases = {
        "missing.jsonl": (None, "does not exist"),
        "empty.jsonl": ([], "holds no probes"),
        "bad.jsonl": (["{not json"], "not valid JSON"),
        "field.jsonl": ([json.dumps({k: v for k, v in records[0].items() if k != "question"})], "question"),
        "function.jsonl": ([json.dumps({**records[0], "function": "smell"})], "unknown function 'smell'"),
        "box.jsonl": ([json.dumps({**records[0], "function": "ground"})], "needs box_a"),
        "image.jsonl": ([json.dumps({**records[0], "image_b": "images/nope.png"})], "nope.png does not exist"),
        "dup.jsonl": ([json.dumps(records[0])] * 2, "repeats the probe id"),
    }
    for name, (lines, message) in cases.items():
        path = tmp_path / name
        if lines is not None:
            _write(path, lines)
        with pytest.raises(VflError, match=message):
            load_probes(path)


def test_unreadable_image_is_a_clear_error(tmp_path):
    path = make_probe_set(["ocr"], 1, 32, 0, tmp_path)
    probe = load_probes(path)[0]
    probe.path("a").write_bytes(b"not a png")
    with pytest.raises(VflError, match="cannot be read"):
        probe.image("a")


def test_function_aliases():
    assert parse_function("Counting") == "count" and parse_function("OCR") == "ocr"
    with pytest.raises(VflError, match="choose from"):
        parse_function("colour")


# -- suite v2: question-dependent pairs ----------------------------------------------------------------
def changed_pixels(image_a, image_b) -> np.ndarray:
    """(y, x) of every pixel that differs between the two images."""
    return np.argwhere(np.any(np.asarray(image_a) != np.asarray(image_b), axis=-1))


def inside(points: np.ndarray, boxes) -> bool:
    return all(any(x0 <= x < x1 and y0 <= y < y1 for x0, y0, x1, y1 in boxes) for y, x in points)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_v2_pairs_change_only_what_the_question_asks_about(function):
    """Distractors and the unasked word stay put: every changed pixel lies on the asked-about object(s) (in a
    recognition pair, a distractor takes the asked kind's place in B)."""
    for index in range(12):
        pair = question_pair(function, random.Random(f"test:{index}"), 112, HELD_OUT)
        changed = changed_pixels(pair.image_a, pair.image_b)
        assert len(changed) and pair.answer_a != pair.answer_b
        if function == "ocr":
            # the asked word's line (top or bottom half) changes, the other word's never does
            rows = {int(y) < 56 for y, _ in changed}
            assert len(rows) == 1, pair.question
            assert {pair.answer_a, pair.answer_b} <= set(HELD_OUT)
            continue
        kind = asked_kind(pair.question)
        targets = [{t.box for t in scene if (t.shape, t.colour) == kind} for scene in (pair.scene_a, pair.scene_b)]
        others = [{t for t in scene if (t.shape, t.colour) != kind} for scene in (pair.scene_a, pair.scene_b)]
        if function == "recog":  # B: one more distractor, where A has the asked kind
            stand_in = others[1] - others[0]
            assert others[0] < others[1] and [t.box for t in stand_in] == list(targets[0])
        else:
            assert others[0] == others[1] and others[0], "the same distractors on both sides"
        assert inside(changed, targets[0] | targets[1])
        if function == "count":
            assert [len(t) for t in targets] == [int(pair.answer_a), int(pair.answer_b)]
        if function == "ground":
            assert [list(b) for t in targets for b in t] == [pair.box_a, pair.box_b]
        if function == "recog":
            assert [len(t) for t in targets] == [1, 0]
            # binding: the asked colour on another shape, the asked shape in another colour, on both sides
            assert any(t.colour == kind[1] for t in others[1]) and any(t.shape == kind[0] for t in others[1])


def test_v2_probe_files_are_their_own_set_and_bad_suites_are_refused(tmp_path):
    v2 = load_probes(make_probe_set(["ocr", "count"], 3, 96, 0, tmp_path / "v2", "v2"))
    v1 = load_probes(make_probe_set(["ocr", "count"], 3, 96, 0, tmp_path / "v1"))
    assert [p.id for p in v2] == [f"{f}-v2-0-{i:04d}" for f in ("ocr", "count") for i in range(3)]
    assert all(p.answer_a in HELD_OUT for p in v2 if p.function == "ocr")
    assert {p.question for p in v1}.isdisjoint(p.question for p in v2 if p.function == "ocr")
    again = make_probe_set(["ocr", "count"], 3, 96, 0, tmp_path / "again", "v2")
    assert again.read_text() == (tmp_path / "v2" / "probes.jsonl").read_text()
    with pytest.raises(VflError, match="--suite must be one of v1, v2"):
        make_probe_set(["ocr"], 1, 96, 0, tmp_path / "v3", "v3")
