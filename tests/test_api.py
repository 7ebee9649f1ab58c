"""The Python API on loaded models, the notebook that shows it, and the CLI's conventions."""

import json
from pathlib import Path

import pytest
import torch

import vfl
from conftest import run_cli
from vfl.models.tiny import FAMILIES, build_tiny

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    return vfl.make_probes(["count", "ocr"], n=3, size=32, out=tmp_path_factory.mktemp("probes"))


def test_locate_on_a_loaded_model_returns_records_summary_vfl_and_plot(probes):
    model, processor = build_tiny("llava", num_layers=4)
    result = vfl.locate(model, processor, probes, window=2)
    frame = result.records
    assert len(frame) == 2 * 3 * (3 + 2)  # functions x probes x (windows + controls)
    assert {"id", "function", "intervention", "answer", "transferred", "logp_a", "logp_b", "score"} <= set(frame)
    none = frame[frame.intervention == "none"]
    assert (none.answer == none.answer_a).all() and (none.score.dropna() == 0).all()
    every = frame[frame.intervention == "all"]
    assert (every.answer == every.answer_b).all() and (every.score.dropna() == 1).all()
    assert set(result.vfl) == set(result.classes) == {"count", "ocr"}
    assert result.summary["window"] == 2 and result.out is None
    figure = result.plot()
    assert figure.axes and "| function |" in result.report()


def test_a_head_sweep_of_values_names_heads_and_says_what_was_swapped(probes):
    model, processor = build_tiny("llava", num_layers=4)
    result = vfl.locate(model, processor, probes, sweep="heads", layers=[1, 2], what="v")
    swept = result.records[~result.records.intervention.isin(["none", "all"])]
    assert sorted(set(swept.intervention)) == ["head 0", "head 1"]
    assert all(layers == [1, 2] for layers in swept.layers)
    rows = result.summary["functions"]["count"]["layers"]
    assert [r["label"] for r in rows] == ["head 0", "head 1"] and result.summary["swap"]["what"] == "v"
    assert "the values of image A's visual tokens swapped with image B's one key/value head at a time" in result.report()


def test_the_api_run_in_a_folder_is_the_clis_run(tiny_llava_dir, tmp_path):
    cli = run_cli("locate", "--model", tiny_llava_dir, "--functions", "count", "--n", 2, "--size", 32,
                  "--out", tmp_path / "cli")
    assert cli.returncode == 0, cli.stderr
    probes = vfl.load_probes(tmp_path / "cli" / "probes" / "probes.jsonl")
    adapter = vfl.load(str(tiny_llava_dir))
    result = vfl.locate(adapter, probes=probes, out=tmp_path / "api")
    assert {"results.jsonl", "summary.json", "curves.png", "report.md", "run.json"} <= \
        {p.name for p in (tmp_path / "api").iterdir()}
    assert result.summary == json.loads((tmp_path / "cli" / "summary.json").read_text())
    again = vfl.locate(adapter, probes=probes, out=tmp_path / "api")  # resumes: nothing left to do
    assert again.summary == result.summary
    with pytest.raises(vfl.VflError, match="other settings"):
        vfl.locate(adapter, probes=probes, out=tmp_path / "api", window=2)


def test_drop_on_a_loaded_model(probes):
    model, processor = build_tiny("qwen2_vl", num_layers=3)
    result = vfl.drop(model, processor, probes[:2])
    assert len(result.records) == 2 * 2 * 4  # probes x images x (N = 0..3)
    assert result.summary["functions"]["count"]["curve"][0]["n"] == 4
    assert result.plot().axes


def test_the_api_refuses_bad_arguments_in_one_sentence(probes):
    model, processor = build_tiny("llava")
    with pytest.raises(vfl.VflError, match="pass the model's processor too"):
        vfl.locate(model, probes=probes)
    with pytest.raises(vfl.VflError, match="probes must be"):
        vfl.locate(model, processor, [])
    # the checks the command shares name the function's arguments here, not the command's flags
    with pytest.raises(vfl.VflError, match="^batch_size= must be at least 1, got 0$"):
        vfl.locate(model, processor, probes, batch_size=0)
    with pytest.raises(vfl.VflError, match=r"^window= must be between 1 and the model's \d+ layers, got 99$"):
        vfl.locate(model, processor, probes, window=99)
    with pytest.raises(vfl.VflError, match="^n= must be at least 1, got 0$"):
        vfl.make_probes(["count"], n=0)


def test_the_example_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for o in cell.get("outputs", []))
    assert "classes:" in outputs and "count" in outputs
    assert any("image/png" in o.get("data", {}) for cell in notebook.cells for o in cell.get("outputs", []))


@pytest.mark.parametrize("family", FAMILIES)
def test_make_tiny_saves_a_model_that_loads_back_by_path(tmp_path, family):
    out = tmp_path / family
    made = run_cli("make-tiny", "--family", family, "--layers", 3, "--out", out)
    assert made.returncode == 0, made.stderr[-2000:]
    adapter = vfl.load(str(out))
    assert adapter.family == {"qwen2_5_vl": "qwen2_vl", "smolvlm": "idefics3", "llava_next": "llava",
                              "llava_onevision": "llava"}.get(family, family)
    assert adapter.num_layers == 3
    result = vfl.locate(adapter, probes=vfl.make_probes(["count"], n=1, size=32, out=tmp_path / "p"))
    assert len(result.records) == 3 + 2


def test_version_module_entry_and_defaults_in_help():
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"vfl {vfl.__version__}"
    assert run_cli("--help", module="vfl").returncode == 0
    for command in (["locate"], ["drop"], ["eval"], ["lora"], ["select"], ["vision-layers"], ["make-tiny"],
                    ["probes", "make"], ["nano", "train"], ["nano", "eval"], ["nano", "study"]):
        text = run_cli(*command, "--help").stdout
        assert "(default:" in text, command
    assert "(default: 0.05)" in run_cli("locate", "--help").stdout


@pytest.mark.parametrize("family", FAMILIES)
def test_a_merged_lora_model_saves_and_loads_back_by_path(tmp_path, family):
    """What `vfl lora --merge` writes (the LoRA merged in, model and processor saved) loads by path and
    answers as the model it was saved from."""
    from vfl.evaluate import answer
    from vfl.lora import add_vfl_lora
    from vfl.models import adapter_for
    from vfl.probes.generate import make_pair

    adapter = adapter_for(*build_tiny(family, num_layers=3))
    model = add_vfl_lora(adapter, [1], rank=2)
    with torch.no_grad():  # a non-zero LoRA, so the merge changes the weights
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    adapter.model = model.merge_and_unload()
    adapter.model.save_pretrained(tmp_path / "merged")
    adapter.processor.save_pretrained(tmp_path / "merged")
    loaded = vfl.load(str(tmp_path / "merged"))
    question, image, *_ = make_pair("count", 0, 32, 0)
    assert answer(loaded, image, question, 6) == answer(adapter, image, question, 6)


def test_interventions_given_as_data_run_as_the_sweeps_do(probes, tmp_path):
    """A list of interventions (objects or dicts, as pyvene and TransformerLens take theirs) replaces the sweep:
    each row equals the same swap made by a sweep, each is tested against the control, and the list is part
    of the run's settings."""
    model, processor = build_tiny("llava", num_layers=4)
    windows = vfl.locate(model, processor, probes, window=2, scores=False).records
    mine = [{"layers": [0, 1]}, vfl.Intervention("late values", (2, 3), what="v"), {"layers": [2], "heads": [1]}]
    result = vfl.locate(model, processor, probes, interventions=mine, scores=False, out=tmp_path / "run")
    frame = result.records
    assert set(frame.intervention) == {"none", "all", "custom 0", "late values", "custom 2"}
    ours = frame[frame.intervention == "custom 0"].set_index("id").answer
    theirs = windows[windows.intervention == "layer 0"].set_index("id").answer
    assert ours.sort_index().tolist() == theirs.sort_index().tolist()  # layers 0-1 = the window of 2 at k = 0
    summary = result.summary["functions"]["count"]
    assert result.summary["sweep"] == "custom"
    assert [r["label"] for r in summary["layers"]] == ["custom 0", "late values", "custom 2"]
    assert [r["layers"] for r in summary["layers"]] == [[0, 1], [2, 3], [2]]
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())["interventions"]
    assert recorded[1] == {"name": "late values", "layers": [2, 3], "what": "v", "heads": None, "tokens": None,
                           "keep_injected": False}
    for bad, message in [([{"layers": [9]}], "layer index 9 is out of range"),
                         ([{"layers": [1], "colour": "red"}], "intervention 0 must give layers and may give"),
                         ([{"layers": [1]}, {"name": "custom 0", "layers": [2]}], "distinct names"),
                         ([{"layers": [1], "heads": [7]}], "head 7 does not exist"),
                         ([{"layers": []}], "touches no layer"), (["layer 3"], "intervention 0 is a str")]:
        with pytest.raises(vfl.VflError, match=message):
            vfl.locate(model, processor, probes, interventions=bad)
    with pytest.raises(vfl.VflError, match="give interventions= or a sweep's options"):
        vfl.locate(model, processor, probes, interventions=mine, window=2)
