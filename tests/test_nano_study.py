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


def test_eval_batch_below_one_is_refused_before_any_variant_trains(tmp_path):
    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps({"representatives": {"shallow": 2, "deep": 12}}))
    result = run_cli("nano", "study", "--groups", groups, "--out", tmp_path / "study", "--eval-batch", 0)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "vfl: error: --eval-batch must be at least 1, got 0"
    assert not (tmp_path / "study").exists()


def test_a_study_recorded_before_eval_batch_existed_resumes_scored_one_item_at_a_time(tmp_path):
    """A long study begun before --eval-batch must resume, not be refused as another study: its settings hold
    no eval_batch, which is read as the one-at-a-time scoring it used; a batched rerun is another study."""
    from dataclasses import asdict, replace

    from vfl.errors import VflError
    from vfl.nano.config import TrainConfig
    from vfl.nano.study import StudyConfig, run_study

    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps({"representatives": {"shallow": 2, "deep": 12}}))
    out = tmp_path / "study"
    config = StudyConfig.following(TrainConfig(), steps=None, n_eval=1)  # a recipe's study: no feature cache
    old = {"groups": {"shallow": 2, "deep": 12}, **asdict(config)}
    del old["eval_batch"]
    out.mkdir()
    (out / "study-settings.json").write_text(json.dumps(old))
    scores = {f: {"n": 1, "accuracy": 1.0, "ci": [0.21, 1.0]} for f in ("recog", "count", "ground", "ocr")}
    for name, layers in variants(old["groups"]).items():  # every variant finished: nothing is trained
        (out / name).mkdir()
        (out / name / "eval.json").write_text(json.dumps({"layers": layers, "functions": scores}))
    study = run_study(groups, out, config)
    assert study["settings"]["eval_batch"] == 1 and list(study["variants"]) == ["shallow-2", "deep-12", "fusion-2-12"]
    with pytest.raises(VflError, match=r"other settings \(eval_batch\)"):
        run_study(groups, out, replace(config, eval_batch=16))


@pytest.mark.slow
def test_a_study_writes_its_table_and_skips_finished_variants_when_run_again(tmp_path):
    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps({"representatives": {"shallow": 2, "deep": 12}}))
    args = ["nano", "study", "--groups", groups, "--out", tmp_path / "study", "--steps", 2, "--per-function", 2,
            "--eval-batch", 3, "--n", 1]
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


@pytest.mark.slow  # three streamed variants trained and evaluated: 1-3 minutes on 2 cores
def test_a_recipe_trains_every_variant_as_its_run_was_trained_but_for_the_encoder_layers(tmp_path):
    """--recipe RUN: streamed data, word alignment of recognition alone and the LoRA come from the run's train.json;
    each variant changes only the layers feeding the projector (and --steps)."""
    from dataclasses import asdict

    from conftest import CPU_PRECISION
    from vfl.nano.config import NanoSpec, TrainConfig

    recipe = TrainConfig(steps=500, batch_size=2, data="stream", suite="v1", functions=["recog", "count"],
                         align_words=1.0, align_functions=["recog"], lm_start=0.5, precision=CPU_PRECISION,
                         spec=NanoSpec(lora_rank=2, lora_alpha=4))
    run = tmp_path / "run"
    run.mkdir()
    (run / "train.json").write_text(json.dumps({**asdict(recipe), "command": "vfl nano train ..."}))
    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps({"representatives": {"shallow": 3, "deep": 12}}))
    args = ["nano", "study", "--groups", groups, "--recipe", run, "--steps", 2, "--n", 1, "--out", tmp_path / "s"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    for name, layers in (("shallow-3", [3]), ("deep-12", [12]), ("fusion-3-12", [3, 12])):
        trained = json.loads((tmp_path / "s" / name / "train.json").read_text())
        assert trained["spec"] == {**asdict(recipe.spec), "vision_layers": layers}
        assert {k: trained[k] for k in ("steps", "data", "align_functions", "functions", "lm_start")} == {
            "steps": 2, "data": "stream", "align_functions": ["recog"], "functions": ["recog", "count"],
            "lm_start": 0.5}
        assert (tmp_path / "s" / name / "weights" / "lora.safetensors").is_file()
    assert not (tmp_path / "s" / "features.pt").exists()  # streamed: no shared feature cache
    refused = run_cli(*args, "--lora-rank", 4)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1] == (
        "vfl: error: --recipe sets the training data and model; drop --lora-rank")


def test_the_shipped_nanos_train_json_reads_as_its_recipe():
    from vfl.nano.config import config_from, recorded_config
    from vfl.nano.model import WEIGHTS
    from vfl.nano.study import StudyConfig

    recipe = recorded_config(WEIGHTS / "train.json")
    # nano v2's last stage began from the one before (--init, a folder of the machine that trained it); a study
    # variant starts from fresh weights, so the recipe it follows drops that and is valid on any machine.
    assert recipe.init is not None
    following = StudyConfig.following(recipe, None, 8)
    assert following.recipe["init"] is None
    config_from(following.recipe).check()
    assert recipe.steps == json.loads((WEIGHTS / "train.json").read_text())["steps"]
    assert recipe.spec.lora_rank == json.loads((WEIGHTS / "spec.json").read_text())["lora_rank"]


def test_with_lm_from_every_variant_reads_through_that_runs_language_model_and_trains_a_fresh_projector(tmp_path):
    """--lm-from RUN: the variants keep their recipe but take RUN's LoRA (its size, frozen), whatever the recipe's
    own rank; --lora-rank beside it is refused in one sentence."""
    from dataclasses import asdict

    from vfl.nano.config import NanoSpec, TrainConfig
    from vfl.nano.study import StudyConfig

    run = tmp_path / "run" / "weights"
    run.mkdir(parents=True)
    (run / "spec.json").write_text(json.dumps(asdict(NanoSpec(lora_rank=64, lora_alpha=128))))
    (run / "projector.safetensors").write_bytes(b"")
    default = StudyConfig(lm_from=str(tmp_path / "run")).variant([2])
    assert default.lm_from == str(tmp_path / "run") and default.spec == NanoSpec([2], lora_rank=64, lora_alpha=128)
    assert StudyConfig().variant([2]).lm_from is None and StudyConfig().variant([2]).spec.lora_rank == 0
    recipe = TrainConfig(data="stream", lr_projector=5e-4, full=True, spec=NanoSpec(lora_rank=0, lora_alpha=0))
    following = StudyConfig.following(recipe, 30, 8, str(tmp_path / "run")).variant([7, 11])
    assert (following.lm_from, following.full, following.data, following.lr_projector, following.steps) == (
        str(tmp_path / "run"), False, "stream", 5e-4, 30)
    assert following.spec == NanoSpec([7, 11], lora_rank=64, lora_alpha=128)
    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps({"representatives": {"shallow": 2}}))
    refused = run_cli("nano", "study", "--groups", groups, "--lm-from", tmp_path / "run", "--lora-rank", 4,
                      "--out", tmp_path / "s")
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1] == (
        "vfl: error: --lm-from takes the LoRA of the run it names; drop --lora-rank")
