"""`vfl nano study`: the variants it trains, and (slow) a whole study that writes its table and resumes."""

import json

import pytest

from conftest import run_cli
from vfl.nano.study import variants


def test_variants_are_each_groups_representative_the_last_layer_and_their_fusion():
    assert variants({"shallow": 2, "middle": 7, "deep": 11}) == {
        "shallow-2": [2], "middle-7": [7], "deep-11": [11], "last-12": [12], "fusion-2-7-11": [2, 7, 11]}
    # a representative that is the last layer is not trained twice
    assert variants({"shallow": 3, "deep": 12}) == {"shallow-3": [3], "deep-12": [12], "fusion-3-12": [3, 12]}


def test_a_file_that_is_not_a_groups_json_is_one_clear_error(tmp_path):
    bad = tmp_path / "groups.json"
    bad.write_text('{"groups": {}}')
    result = run_cli("nano", "study", "--groups", bad, "--out", tmp_path / "out")
    assert result.returncode != 0
    assert "not a groups.json written by `vfl vision-layers`" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_study_writes_its_table_and_skips_finished_variants_when_run_again(tmp_path):
    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps({"representatives": {"shallow": 2, "deep": 12}}))
    args = ["nano", "study", "--groups", groups, "--out", tmp_path / "study", "--steps", 2, "--per-function", 2,
            "--n", 1]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    study = json.loads((tmp_path / "study" / "study.json").read_text())
    assert list(study["variants"]) == ["shallow-2", "deep-12", "fusion-2-12"]
    for row in study["variants"].values():
        assert set(row["functions"]) == {"recog", "count", "ground", "ocr"}
        assert all(f["n"] == 1 for f in row["functions"].values())
    assert (tmp_path / "study" / "study.png").stat().st_size > 0
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "training variant" in first.stdout and "training variant" not in again.stdout  # nothing retrained
    assert json.loads((tmp_path / "study" / "study.json").read_text()) == study
    other = run_cli(*args[:-1], 2)  # --n 2: another study, refused before anything is trained or written
    assert other.returncode == 2 and other.stderr.strip().splitlines()[-1] == (
        f"vfl: error: {tmp_path / 'study'} holds a study with other settings (n_eval); "
        "use another --out, or delete the folder to start over")
    assert json.loads((tmp_path / "study" / "study.json").read_text()) == study
