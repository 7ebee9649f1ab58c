"""VFL-select on tiny models: profiles are deterministic, the drops hit exactly the VFL's layers, the intact row is
the plain model's loss (on every family); selection rules; the command end to end (outputs, resume, bad input)."""

import json

import pytest
import torch

from conftest import run_cli
from vfl.interventions import _PLAN
from vfl.lora import answer_loss, encode, load_conversations, open_image
from vfl.nano.suite_v1 import make_sample
from vfl.errors import VflError
from vfl.models.tiny import FAMILIES
from vfl.select import ablations, answer_losses, check_choice, choose, measure, profiles

VFLS = {"count": [1, 2], "ground": [3]}


def write_pool(folder, n=4, text_only=True):
    """A LLaVA-format pool: n image samples (count, ground alternating) and a text-only one."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        sample = make_sample(("count", "ground")[i % 2], i, 3, size=32)
        sample.image.save(folder / "images" / f"{i}.png")
        records.append({"id": f"s{i}", "image": f"images/{i}.png", "conversations": [
            {"from": "human", "value": "<image>\n" + sample.question}, {"from": "gpt", "value": sample.answer}]})
    if text_only:
        records.append({"id": "text", "conversations": [{"from": "human", "value": "What is 2 plus 2?"},
                                                        {"from": "gpt", "value": "4"}]})
    path = folder / "pool.json"
    path.write_text(json.dumps(records))
    return path


@pytest.mark.parametrize("family", FAMILIES)
def test_the_intact_row_is_the_plain_loss_and_profiles_are_deterministic(adapters, tmp_path, family):
    adapter = adapters(family)
    samples = load_conversations(write_pool(tmp_path))
    for sample in samples:
        losses = answer_losses(adapter, sample, ablations(VFLS))
        inputs, labels = encode(adapter, open_image(sample), sample["turns"])
        with torch.no_grad():  # the whole conversation in one plain forward, no cache, no prefix split
            out = adapter.model(**inputs, labels=labels)
        assert losses[0] == pytest.approx(answer_loss(out.logits, labels).item(), abs=1e-9)
        assert losses[0] == pytest.approx(out.loss.item(), rel=1e-6)  # transformers' own loss sums in float32
        if sample["image"] is None:
            assert losses == [losses[0]] * 3
        else:
            assert losses[1] != losses[0] and losses[2] != losses[0]  # the drops act
    first = measure(adapter, samples, VFLS, tmp_path / "a", {"run": 1})
    second = measure(adapter, samples, VFLS, tmp_path / "b", {"run": 1})
    assert first == second and len(first) == len(samples)


def test_the_dropped_layers_are_exactly_each_functions_vfl(adapters, tmp_path):
    adapter = adapters("llava")
    sample = load_conversations(write_pool(tmp_path, n=1, text_only=False))[0]
    seen, outputs = {}, {}
    blocks = adapter.language_model.layers

    def read_plan(module, args, kwargs):
        plan = _PLAN.get()
        if plan is not None:
            seen[module.layer_idx] = plan.layers[:, module.layer_idx].tolist()

    def keep_output(index):
        def hook(module, args, output):
            outputs[index] = (output[0] if isinstance(output, tuple) else output).clone()
        return hook

    handles = [block.self_attn.register_forward_pre_hook(read_plan, with_kwargs=True) for block in blocks]
    handles += [block.register_forward_hook(keep_output(k)) for k, block in enumerate(blocks)]
    try:
        answer_losses(adapter, sample, ablations(VFLS))
    finally:
        for handle in handles:
            handle.remove()
    # rows: none, count (layers 1, 2), ground (layer 3)
    for layer in range(len(blocks)):
        assert seen[layer] == [False, layer in VFLS["count"], layer in VFLS["ground"]]
    # in effect: a row's suffix hidden states leave the intact row's at its first dropped layer, not before
    for row, first in ((1, 1), (2, 3)):
        for layer in range(len(blocks)):
            same = torch.allclose(outputs[layer][row], outputs[layer][0], atol=1e-12)
            assert same == (layer < first), (row, layer)


def _profile(i, scores, function):
    return {"id": f"p{i}", "scores": scores, "function": function}


def test_choose_balances_targets_and_never_takes_none():
    pool = ([_profile(i, {"count": 1.0 + i, "ground": 0.0}, "count") for i in range(6)]
            + [_profile(10 + i, {"count": 0.0, "ground": 0.5 + i}, "ground") for i in range(2)]
            + [_profile(20 + i, {"count": 9.0, "ground": 9.0}, "none") for i in range(2)])
    balanced = choose(pool, 0.5, ["count", "ground"])  # 5 of 10
    assert balanced["ids"] == ["p5", "p11", "p4", "p10", "p3"]
    assert balanced["per_function"] == {"count": 3, "ground": 2}
    top = choose(pool, 3, ["count", "ground"], "top")
    assert top["ids"] == ["p5", "p4", "p3"]
    short = choose(pool, 1.0, ["ground"])
    assert short["chosen"] == 2 and short["wanted"] == 10  # the rest is labelled count or none
    with pytest.raises(VflError, match="budget"):
        check_choice(0, "balanced", ["count"], VFLS)
    with pytest.raises(VflError, match="--target ocr has no VFL"):
        check_choice(0.2, "balanced", ["ocr"], VFLS)


def test_profiles_label_by_the_largest_rise_and_text_only_or_unhurt_as_none():
    records = [{"id": "a", "image": True, "loss": 1.0, "ablated": {"count": 3.0, "ground": 1.5}},
               {"id": "b", "image": True, "loss": 1.0, "ablated": {"count": 1.2, "ground": 1.9}},
               {"id": "t", "image": False, "loss": 2.0, "ablated": {"count": 2.0, "ground": 2.0}},
               {"id": "n", "image": True, "loss": 2.0, "ablated": {"count": 1.5, "ground": 1.9}}]
    labelled = {p["id"]: p for p in profiles(records)}
    assert labelled["a"]["function"] == "count" and labelled["a"]["confidence"] == pytest.approx(0.8)
    assert labelled["b"]["function"] == "ground" and labelled["b"]["scores"]["count"] == pytest.approx(0.2)
    assert labelled["t"]["function"] == "none" and labelled["n"]["function"] == "none"
    assert labelled["n"]["confidence"] is None
    strict = {p["id"]: p["function"] for p in profiles(records, min_score=0.95)}
    assert strict["a"] == "count" and strict["b"] == "none"  # b's largest rise, 0.9, does not clear 0.95


def test_select_command_writes_profiles_selection_and_plot_and_resumes(tiny_llava_dir, tmp_path):
    pool = write_pool(tmp_path / "pool", n=6)
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"num_layers": 6, "functions": {"count": {"vfl": [2, 3]}, "ground": {"vfl": [4]},
                                                                  "ocr": {"vfl": []}}}))
    out = tmp_path / "sel"
    args = ["select", "--model", tiny_llava_dir, "--vfl", summary, "--data", pool, "--budget", 0.5, "--out", out]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "profiles.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["s0", "s1", "s2", "s3", "s4", "s5", "text"]
    assert set(rows[0]["scores"]) == {"count", "ground"}
    assert next(r for r in rows if r["id"] == "text")["function"] == "none"
    selection = json.loads((out / "selection.json").read_text())
    assert selection["wanted"] == 4 and selection["chosen"] <= 4
    assert "text" not in selection["ids"] and (out / "profiles.png").stat().st_size > 0
    losses = (out / "losses.jsonl").read_text()
    again = run_cli(*args[:-4], "--budget", 2, "--strategy", "top", "--out", out)  # reuses the measured losses
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "losses.jsonl").read_text() == losses
    assert json.loads((out / "selection.json").read_text())["chosen"] <= 2
    bad = run_cli("select", "--model", tiny_llava_dir, "--vfl", summary, "--data", pool, "--target", "ocr",
                  "--out", tmp_path / "bad")
    assert bad.returncode == 2 and "--target ocr has no VFL" in bad.stderr and "Traceback" not in bad.stderr
    trained = run_cli("lora", "--model", tiny_llava_dir, "--data", pool, "--subset", out / "selection.json",
                      "--rank", 4, "--alpha", 8, "--steps", 2, "--batch-size", 2, "--out", tmp_path / "lora")
    assert trained.returncode == 0, trained.stderr[-2000:]


def test_a_folder_measured_with_the_old_answer_labels_is_not_resumed(adapters, tmp_path):
    """Losses measured when the template's newline after the end of turn was labelled too (run.json without
    "labels") would be mixed with new ones: the folder is refused, naming the setting."""
    adapter = adapters("llava")
    samples = load_conversations(write_pool(tmp_path, n=2))
    measure(adapter, samples, VFLS, tmp_path / "old", {"run": 1})
    run_json = tmp_path / "old" / "run.json"
    recorded = json.loads(run_json.read_text())
    assert recorded["labels"] == "through end of turn"
    run_json.write_text(json.dumps({k: v for k, v in recorded.items() if k != "labels"}))
    with pytest.raises(VflError, match=r"other settings \(labels\)"):
        measure(adapter, samples, VFLS, tmp_path / "old", {"run": 1})
