"""VFL-LoRA layer choice and targeting on a tiny LLaVA: only the chosen layers carry LoRA and learn."""

import json

import pytest
import torch

from vfl.errors import VflError
from vfl.lora import add_vfl_lora, choose_layers, trainable_share, vfl_layers
from vfl.models import adapter_for
from vfl.models.tiny import FAMILIES, build_tiny
from vfl.probes.generate import make_pair


def test_layer_rules():
    assert choose_layers("all", 6) == list(range(6))
    assert choose_layers("3,1", 6) == [1, 3]
    assert choose_layers("vfl", 12, [4, 5, 6]) == [4, 5, 6]
    assert choose_layers("reversed", 12, [4, 5, 6]) == [3, 7, 8]  # mirrors 7, 6, 5 -> nearest free 7, 8, 3
    reversed_ = choose_layers("reversed", 12, [8, 9, 10])
    assert reversed_ == [1, 2, 3] and not set(reversed_) & {8, 9, 10}
    random_ = choose_layers("random", 12, [4, 5, 6], seed=1)
    assert len(random_) == 3 and not set(random_) & {4, 5, 6}
    assert random_ == choose_layers("random", 12, [4, 5, 6], seed=1)
    with pytest.raises(VflError, match="layer index 12 is out of range"):
        choose_layers("11,12", 12)
    with pytest.raises(VflError, match="needs the VFL"):
        choose_layers("reversed", 12)


def test_vfl_layers_from_a_summary(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"num_layers": 10, "functions": {"count": {"vfl": [4, 5]}}}))
    assert vfl_layers(path, "count") == [4, 5]
    assert vfl_layers(path, "count", margin=1) == [3, 4, 5, 6]
    with pytest.raises(VflError, match="no VFL for 'ocr'"):
        vfl_layers(path, "ocr")
    assert vfl_layers(tmp_path, "count") == [4, 5]  # the run folder that holds it
    path.write_text(json.dumps({"functions": {}}))
    with pytest.raises(VflError, match="is not a vfl locate summary"):
        vfl_layers(path, "count")


def test_only_the_chosen_layers_carry_lora_and_receive_gradients():
    adapter = adapter_for(*build_tiny("llava", num_layers=6))
    model = add_vfl_lora(adapter, [2, 4], rank=4, alpha=8, dropout=0.0)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert {n.split(".layers.")[1].split(".")[0] for n in names} == {"2", "4"}
    assert all("language_model" in n for n in names)  # never the vision tower or the projector
    # every linear layer of the chosen blocks: q, k, v, o, gate, up, down
    assert len({n.split(".lora_")[0] for n in names}) == 2 * 7
    question, image, *_ = make_pair("count", 0, 32, 0)
    prompt = adapter.build_prompt(image, question)
    # LoRA B starts at zero; nudge it so that gradients reach A too
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    out = model(input_ids=prompt.input_ids, **prompt.image_inputs, labels=prompt.input_ids)
    out.loss.backward()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        else:
            assert parameter.grad is None, name
    count, share = trainable_share(model)
    assert count == sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) and 0 < share < 1


def _lora_args(model, data, out, *extra):
    return ["lora", "--model", model, "--data", data, "--rank", 4, "--alpha", 8, "--steps", 12, "--batch-size", 2,
            "--save-every", 2, "--out", out, *extra]


@pytest.mark.parametrize("option, value, message", [
    ("--micro-batch", 0, "--micro-batch must be at least 1, got 0"),
    ("--lr", -1, "--lr must be positive, got -1.0"),
    ("--dropout", 1, "--dropout must be in [0, 1), got 1.0"),
])
def test_bad_training_numbers_end_in_one_sentence(tiny_llava_dir, tmp_path, option, value, message):
    from conftest import run_cli

    done = run_cli(*_lora_args(tiny_llava_dir, tmp_path / "absent.jsonl", tmp_path / "out", option, value))
    assert done.returncode == 2 and done.stderr.strip() == f"vfl: error: {message}"
    assert not (tmp_path / "out").exists()


def test_vfl_lora_trains_resumes_and_evaluates(tiny_llava_dir, tmp_path):
    import time

    from safetensors.torch import load_file

    from conftest import run_cli, start_python
    from vfl.probes.generate import make_probe_set

    data = make_probe_set(["count"], 4, 32, 0, tmp_path / "data")
    whole = run_cli(*_lora_args(tiny_llava_dir, data, tmp_path / "whole", "--layers", "1,3"))
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert "trainable parameters" in whole.stdout
    trained = load_file(tmp_path / "whole" / "adapter" / "adapter_model.safetensors")
    assert {k.split(".layers.")[1].split(".")[0] for k in trained} == {"1", "3"}
    out = tmp_path / "killed"
    process = start_python("-m", "vfl.cli", *_lora_args(tiny_llava_dir, data, out, "--layers", "1,3"))
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "progress.json").exists():
        time.sleep(0.05)
    process.kill()  # SIGKILL
    process.join()
    at_kill = json.loads((out / "progress.json").read_text())
    assert at_kill["step"] < 12, "the kill did not land mid-run"
    again = run_cli(*_lora_args(tiny_llava_dir, data, out, "--layers", "1,3"))
    assert again.returncode == 0, again.stderr[-2000:]
    resumed = load_file(out / "adapter" / "adapter_model.safetensors")
    assert all(torch.equal(resumed[k], trained[k]) for k in trained)
    # the training time counts the steps before the kill too
    assert json.loads((out / "trainable.json").read_text())["train_s"] > at_kill["train_s"] > 0
    evaluation = run_cli("eval", "--model", tiny_llava_dir, "--adapter", tmp_path / "whole" / "adapter",
                         "--data", _eval_file(tmp_path))
    assert evaluation.returncode == 0, evaluation.stderr[-2000:]


def _eval_file(tmp_path):
    from vfl.nano.suite_v1 import make_sample

    sample = make_sample("count", 0, 5, size=32)
    sample.image.save(tmp_path / "e.png")
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps({"image": "e.png", "question": sample.question, "answer": sample.answer,
                                "function": "count"}) + "\n")
    return path


def test_two_processes_train_data_parallel(tiny_llava_dir, tmp_path):
    import os
    import subprocess
    import sys

    from vfl.probes.generate import make_probe_set

    data = make_probe_set(["count"], 4, 32, 0, tmp_path / "data")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", "29531", "-m", "vfl.cli",
                             *map(str, _lora_args(tiny_llava_dir, data, tmp_path / "dp", "--layers", "2"))],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "dp" / "adapter" / "adapter_model.safetensors").exists()
    assert json.loads((tmp_path / "dp" / "progress.json").read_text())["step"] == 12


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_examples_give_each_examples_own_loss(adapters, family):
    """Right padding and concatenated images (a Qwen-VL's patches and grids, an image-splitting processor's crops)
    change nothing: batched losses equal one-by-one losses, text-only samples included (a batch of their own)."""
    from vfl.lora import answer_loss, collate, encode
    from vfl.nano.suite_v1 import make_sample

    adapter = adapters(family)
    examples = []
    for i, function in enumerate(("count", "ground", "ocr")):
        sample = make_sample(function, i, 0, size=32)
        examples.append(encode(adapter, sample.image, [(sample.question, sample.answer)]))
    examples.append(encode(adapter, None, [("What is 2 plus 2?", "4"), ("And 3 plus 3?", "6")]))
    with torch.no_grad():
        alone = [answer_loss(adapter.model(**inputs).logits, labels).item() for inputs, labels in examples]
        batches = collate(examples, pad_id=0)
        assert [len(labels) for _, labels in batches] == [3, 1]
        together = [v for inputs, labels in batches for v in answer_loss(adapter.model(**inputs).logits, labels).tolist()]
    assert together == pytest.approx(alone, abs=1e-9)
    text_labels = examples[-1][1][0]
    assert (text_labels != -100).sum() >= 2  # both answers are trained


def test_the_last_complete_checkpoint_is_found_after_a_kill_between_renames(tmp_path):
    from vfl.lora import last_checkpoint

    assert last_checkpoint(tmp_path) is None
    (tmp_path / "checkpoint.new").mkdir()  # a save killed before it finished: never used
    assert last_checkpoint(tmp_path) is None
    (tmp_path / "checkpoint.old").mkdir()
    (tmp_path / "checkpoint.old" / "progress.json").write_text('{"step": 4}')
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint.old"  # killed between the two renames
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "progress.json").write_text('{"step": 8}')
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint"


def test_a_step_holds_the_next_slots_of_the_seeded_epochs_laid_end_to_end():
    import random

    from vfl.training import epoch_order, step_samples

    first, second = epoch_order(3, 0, 10), epoch_order(3, 1, 10)
    assert sorted(first) == list(range(10)) and first != second and epoch_order(3, 0, 10) == first
    assert first == (lambda order: (random.Random(3000).shuffle(order), order)[1])(list(range(10)))  # as recorded runs drew
    assert step_samples(0, 4, 10, 3) == first[:4] and step_samples(1, 4, 10, 3) == first[4:8]
    assert step_samples(2, 4, 10, 3) == first[8:] + second[:2]  # a step straddles two epochs
    assert step_samples(7, 4, 10, 3) == epoch_order(3, 2, 10)[8:] + epoch_order(3, 3, 10)[:2]


def test_both_trainers_warm_up_from_the_first_step_then_fall_by_a_cosine_to_zero():
    """`vfl lora` and `vfl nano train` share one schedule; nano's language model joins it at --lm-start."""
    import math

    from vfl.nano.config import TrainConfig
    from vfl.nano.train import _schedules
    from vfl.training import warmup_cosine

    factor = warmup_cosine(0.1, 100)  # 10 steps up, 90 down
    assert [factor(s) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]  # the first step already moves
    assert factor(10) == 1.0 and math.isclose(factor(55), 0.5) and factor(99) < 1e-3
    assert warmup_cosine(0.0, 5)(0) == 1.0  # no warm-up asked: one step of it all the same
    projector, language = _schedules(TrainConfig(steps=100, warmup=0.1, lm_start=0.3))
    assert [projector(s) for s in range(100)] == [factor(s) for s in range(100)]
    assert all(language(s) == 0 for s in range(30)) and all(language(s) == factor(s) for s in range(30, 100))


def test_the_labels_end_at_the_end_of_turn_token(adapters):
    """Every answer is trained through its end-of-turn token and no further: the newline some templates write after
    it is never generated (on nano its loss was 7-18 nats, moving under VFL ablations as much as the answer's)."""
    from vfl.lora import encode

    for family, end in (("llava", "</s>"), ("qwen2_vl", "<|im_end|>"), ("idefics3", "<end_of_utterance>")):
        adapter = adapters(family)
        tokenizer = adapter.processor.tokenizer
        inputs, labels = encode(adapter, None, [("What is 2 plus 2?", "4"), ("And 3 plus 3?", "6")])
        labelled = tokenizer.decode(labels[0][labels[0] != -100].tolist())
        assert labelled.replace(" ", "") == f"4{end}6{end}", family
        if family != "llava":  # these templates end the turn with a newline, which stays unlabelled
            assert tokenizer.decode(inputs["input_ids"][0].tolist()).endswith(end + "\n")
