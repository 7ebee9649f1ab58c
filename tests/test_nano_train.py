"""`vfl nano train` resumes after a kill and ends exactly where an uninterrupted run ends; its streamed data
is the same for a sample index whoever renders it; bad recipes end in one sentence."""

import json
import time

import pytest
from safetensors.torch import load_file

from conftest import CPU_PRECISION, run_cli, start_python

ARGS = ["nano", "train", "--steps", 6, "--per-function", 4, "--batch-size", 4, "--save-every", 2]
STREAM = ["nano", "train", "--data", "stream", "--workers", 2, "--device", "cpu", "--steps", 4, "--batch-size", 2,
          "--save-every", 1, "--lora-rank", 4, "--loss-weights", "recog=3,ocr=2", "--suite", "v2",
          "--precision", CPU_PRECISION]


def killed_at_first_checkpoint(args, out) -> int:
    """Start `vfl ARGS --out OUT`, SIGKILL it once its first checkpoint is written; the steps it had trained."""
    process = start_python("-m", "vfl.cli", *args, "--out", out)
    deadline = time.time() + 600
    while time.time() < deadline and not (out / "checkpoint.pt").exists():
        time.sleep(0.2)
    process.kill()
    process.join()
    return len(json.loads((out / "losses.json").read_text()))


@pytest.mark.parametrize("args", [pytest.param(ARGS, marks=pytest.mark.slow, id="cached"),
                                  pytest.param(STREAM, id="stream-workers-cpu")])
def test_killed_training_resumes_to_the_same_weights(tmp_path, args):
    whole = run_cli(*args, "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]
    out = tmp_path / "killed"
    done = killed_at_first_checkpoint(args, out)
    assert done < args[args.index("--steps") + 1], "the run finished before the kill"
    if "stream" in args:  # an unfinished run's latest weights are evaluated where they lie, and said to be so
        scored = run_cli("nano", "eval", "--weights", out, "--suite", "v2", "--n", 1, "--out", tmp_path / "eval.json")
        assert scored.returncode == 0, scored.stderr[-2000:]
        assert f"{out} is still training: these are its weights at step {done} of 4" in scored.stderr
        assert set(json.loads((tmp_path / "eval.json").read_text())) == {"recog", "count", "ground", "ocr"}
        unfinished = run_cli("nano", "ship", out)
        assert unfinished.returncode == 2 and unfinished.stderr.strip().splitlines()[-1] == \
            f"vfl: error: {out} is still training (step {done} of 4); ship a finished run"
    again = run_cli(*args, "--out", out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "nano train:   0%" not in again.stderr  # resumed, not restarted
    for name in ("projector.safetensors", "lora.safetensors"):
        ours, reference = load_file(out / "weights" / name), load_file(tmp_path / "whole" / "weights" / name)
        assert ours.keys() == reference.keys()
        differing = [k for k in ours if not (ours[k] == reference[k]).all()]
        assert not differing, (name, differing[:3], again.stderr[-1500:])
    steps = args[args.index("--steps") + 1]
    assert len(json.loads((out / "losses.json").read_text())) == steps and (out / "losses.png").is_file()
    curves = json.loads((out / "function_losses.json").read_text())
    assert set(curves) == {"recog", "count", "ground", "ocr"} and all(len(c) == steps for c in curves.values())
    assert curves == json.loads((tmp_path / "whole" / "function_losses.json").read_text())  # resumed, same curves
    timing = json.loads((out / "timing.json").read_text())  # every step's time, across the kill
    assert timing["steps"] == steps and len(timing["step_seconds"]) == steps
    assert all(t > 0 for t in timing["step_seconds"]) and timing["seconds"] == round(sum(timing["step_seconds"]), 1)
    if "stream" in args:  # a finished run ships (here into a folder of the test's, not the package)
        from vfl.nano.train import ship

        ship(out / "weights", tmp_path / "shipped")
        shipped = {p.name for p in (tmp_path / "shipped").iterdir()}
        assert {"projector.safetensors", "lora.safetensors", "spec.json", "train.json", "timing.json"} <= shipped


def test_ship_refuses_what_is_no_finished_run(tmp_path):
    result = run_cli("nano", "ship", tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == \
        f"vfl: error: {tmp_path} is no `vfl nano train` run folder (it lacks train.json or losses.json)"


@pytest.mark.parametrize("suite", ["v1", "v2"])
def test_streamed_samples_depend_on_seed_and_index_alone(suite):
    import torch

    from vfl.nano.align import GLYPHS, KINDS
    from vfl.nano.config import NanoSpec
    from vfl.nano.model import build_processor
    from vfl.probes.render import WORDS
    from vfl.nano.parts import smollm2_dir
    from vfl.nano.config import TrainConfig
    from vfl.nano.batches import stream_batches, StreamSamples
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir())
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    processor = build_processor(tokenizer)
    samples = StreamSamples(processor, seed=0, image_tokens=64, suite=suite)
    pixels, ids, labels, function, kinds = samples[5]
    again = StreamSamples(processor, seed=0, image_tokens=64, suite=suite)[5]
    assert torch.equal(pixels, again[0]) and ids == again[1] and labels == again[2] and function == 1  # 5 % 4: count
    assert torch.equal(kinds, again[4]) and kinds.shape == (64,)
    assert not torch.equal(pixels, StreamSamples(processor, seed=1, image_tokens=64, suite=suite)[5][0])
    config = TrainConfig(data="stream", steps=3, batch_size=2, spec=NanoSpec(lora_rank=0), suite=suite)
    by_workers = list(stream_batches(processor, TrainConfig(**{**config.__dict__, "workers": 2}), 64, 0, 0))
    in_process = list(stream_batches(processor, config, 64, 0, 0))
    resumed = list(stream_batches(processor, config, 64, 1, 0))  # from step 1, as after a kill
    assert len(by_workers) == len(in_process) == 3 and len(resumed) == 2
    for one, other in zip(by_workers, in_process):
        assert all(torch.equal(a, b) for a, b in zip(one[:4], other[:4])) and one[4] == other[4]
        assert torch.equal(one[5], other[5]) and one[5].shape == (2, 64)
    assert all(torch.equal(a, b) for a, b in zip(resumed[0][:4], in_process[1][:4]))
    ocr_only = StreamSamples(processor, seed=0, image_tokens=64, suite=suite, functions=["ocr"])
    for k in range(3):  # OCR sample k of the mixed stream is sample k of an OCR-only one
        mixed, alone = samples[4 * k + 3], ocr_only[k]
        assert torch.equal(mixed[0], alone[0]) and mixed[1:4] == alone[1:4] and alone[3] == 3
        # v2's OCR tokens have a target only with letters; v1's show one word of WORDS, their target (after the kinds)
        word = len(KINDS) + WORDS.index(alone_sample(k).answer) if suite == "v1" else None
        assert set(alone[4].tolist()) == ({-1, word} if word else {-1})
        lettered = StreamSamples(processor, seed=0, image_tokens=64, suite=suite, functions=["ocr"], letters=True)[k]
        assert torch.equal(lettered[0], alone[0]) and lettered[1:4] == alone[1:4]  # the same sample
        letters = lettered[4][lettered[4] != -1]
        assert (letters >= len(KINDS)).all() and (len(letters) > 0)
        if suite == "v1":  # v1 keeps no letters: its word's row comes after the glyphs'
            assert set(letters.tolist()) == {word + len(GLYPHS)}


def alone_sample(k):
    from vfl.nano.suite_v1 import make_sample

    return make_sample("ocr", k, 0)


def test_align_functions_leaves_the_other_functions_samples_without_targets():
    import torch

    from vfl.nano.model import build_processor
    from vfl.nano.parts import smollm2_dir
    from vfl.nano.batches import StreamSamples
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir())
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    processor = build_processor(tokenizer)
    every, recog_only = (StreamSamples(processor, seed=0, image_tokens=64, suite="v1", aligned=aligned)
                         for aligned in (None, ["recog"]))
    for index in range(8):  # two turns of recog, count, ground, ocr
        one, other = every[index], recog_only[index]
        assert torch.equal(one[0], other[0]) and one[1:4] == other[1:4]  # the same sample
        assert (one[4] != -1).any()  # v1 scenes all show objects or a word
        assert torch.equal(one[4], other[4]) if index % 4 == 0 else (other[4] == -1).all()


def test_a_function_named_twice_takes_two_slots_of_each_turn_with_its_own_samples():
    from vfl.nano.batches import stream_slot

    once = ["recog", "count", "ground", "ocr"]
    assert [stream_slot(once, i) for i in range(9)] == [(once[i % 4], i // 4) for i in range(9)]
    twice = ["recog", "recog", "count", "ground", "ocr"]
    drawn = [stream_slot(twice, i) for i in range(15)]
    assert [f for f, _ in drawn[:5]] == twice
    assert [k for f, k in drawn if f == "recog"] == list(range(6))  # each recognition sample once, in order
    assert [k for f, k in drawn if f == "ocr"] == [0, 1, 2]
    result = run_cli("nano", "train", "--functions", "recog,recog,count", "--out", "unused-folder")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == "vfl: error: --functions names a " \
        "function twice (two slots in each turn) only with --data stream; got ['recog', 'recog', 'count']"


def test_without_the_shuffle_a_sample_has_256_image_tokens_of_14_px_each_with_its_target():
    import torch
    from transformers import AutoTokenizer

    from vfl.nano.model import build_processor
    from vfl.nano.parts import smollm2_dir
    from vfl.nano.batches import StreamSamples

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir())
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image = tokenizer.convert_tokens_to_ids("<image>")
    coarse, fine = (StreamSamples(build_processor(tokenizer, shuffle), seed=0, image_tokens=tokens, suite="v2",
                                  functions=["ocr"], letters=True)[0] for shuffle, tokens in ((2, 64), (1, 256)))
    answer = [[t for t in sample[2] if t != -100] for sample in (coarse, fine)]
    assert torch.equal(coarse[0], fine[0]) and answer[0] == answer[1]  # the same image and answer
    assert (coarse[1].count(image), fine[1].count(image)) == (64, 256) and fine[4].shape == (256,)
    # a letter box covers at least half of more 14 px cells than 28 px ones
    assert (fine[4] != -1).sum() > 2 * (coarse[4] != -1).sum() > 0


def test_shuffle_1_trains_and_records_a_nano_of_14_px_tokens(tmp_path):
    trained = run_cli("nano", "train", "--shuffle", 1, "--steps", 1, "--per-function", 1, "--batch-size", 2,
                      "--lora-rank", 0, "--precision", CPU_PRECISION, "--out", tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert json.loads((tmp_path / "weights" / "spec.json").read_text())["shuffle"] == 1
    assert json.loads((tmp_path / "train.json").read_text())["spec"]["shuffle"] == 1


def test_spelled_ocr_answers_are_single_letter_tokens_that_decode_to_the_word():
    from transformers import AutoTokenizer

    from vfl.errors import VflError
    from vfl.nano.model import build_processor
    from vfl.nano.parts import smollm2_dir
    from vfl.nano.batches import spelled, StreamSamples, token_ids
    from vfl.probes.questions import VOCABULARY

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir())
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    processor = build_processor(tokenizer)
    ids, labels = token_ids(processor, "What word is written in red?", "bear", 64, spell=True)
    answer = [i for i in labels if i != -100]
    assert tokenizer.convert_ids_to_tokens(answer) == ["b", "e", "a", "r", "<|im_end|>"]
    assert ids[-5:] == answer and token_ids(processor, "What word is written in red?", "bear", 64)[1][-2:] == \
        tokenizer("bear<|im_end|>", add_special_tokens=False).input_ids  # the tokenizer's way: one token
    for text in ("café", "two words"):
        with pytest.raises(VflError, match="only plain letters can be spelled"):
            spelled(tokenizer, text)
    letters = StreamSamples(processor, seed=0, image_tokens=64, suite="v2", ocr_answers="letters")
    tokens = StreamSamples(processor, seed=0, image_tokens=64, suite="v2")
    word = [i for i in letters[3][2] if i != -100][:-1]  # sample 3: OCR
    assert all(len(t) == 1 for t in tokenizer.convert_ids_to_tokens(word))
    assert tokenizer.decode(word) == tokenizer.decode([i for i in tokens[3][2] if i != -100][:-1])
    assert letters[0][2] == tokens[0][2]  # recognition's answers are not spelled
    pseudo = StreamSamples(processor, seed=0, image_tokens=64, suite="v2", ocr_answers="letters", pseudo_words=1.0)
    spelt = tokenizer.decode([i for i in pseudo[3][2] if i != -100][:-1])
    assert spelt not in VOCABULARY and spelt.isalpha() and pseudo[0][2] == letters[0][2]  # only OCR changes


@pytest.mark.parametrize("option, message", [
    (["--full"], "--full trains the whole language model; pass --lora-rank 0 with it"),
    (["--loss-weights", "smell=2"], "--loss-weights takes non-negative weights"),
    (["--data", "stream", "--workers", "-1"], "--workers must be 0 or more"),
    (["--device", "cuda:7"], "--device cuda:7"),
    (["--lm-start", "1.5"], "--lm-start must be in [0, 1)"),
    (["--seed", "1"], "--seed 1 draws the held-out items `vfl nano eval` scores; train with another seed"),
    (["--functions", "ocr,smell"], "unknown function 'smell'; choose from recog, count, ground, ocr, describe, which"),
    (["--functions", "recog,describe"], "--functions describe trains on suite v2's scenes; pass --suite v2 with it"),
    (["--suite", "v2", "--pseudo-words", "2"], "--pseudo-words is a share of the OCR samples, in [0, 1]"),
    (["--loose-recognition", "0.5"], "--loose-recognition draws suite v2's recognition samples; pass --suite v2"),
    (["--suite", "v2", "--loose-recognition", "-1"], "--loose-recognition is a share of the recognition samples"),
    (["--align-words", "1"], "--align-words reads each sample's scene as it is drawn; pass --data stream with it"),
    (["--data", "stream", "--align-words", "-1"], "--align-words is a loss weight, 0 or more"),
    (["--data", "stream", "--align-letters"], "--align-letters adds letters to the word alignment; pass --align-words"),
    (["--data", "stream", "--align-functions", "recog"], "--align-functions chooses what --align-words aligns"),
    (["--data", "stream", "--functions", "recog,count", "--align-words", "1", "--align-functions", "ocr"],
     "--align-functions names functions this run does not train: ['ocr']"),
])
def test_bad_recipes_are_one_sentence(tmp_path, option, message):
    result = run_cli("nano", "train", "--out", tmp_path / "run", *option)
    assert result.returncode == 2 and message in result.stderr.strip().splitlines()[-1], result.stderr[-1000:]
    assert not (tmp_path / "run").exists()


def test_bad_eval_inputs_are_one_sentence(tmp_path):
    for command in (["nano", "eval", "--weights", tmp_path], ["locate", "--model", f"nano:{tmp_path}", "--out",
                                                               tmp_path / "run"]):
        result = run_cli(*command)
        assert result.returncode == 2, result.stderr[-1000:]
        assert result.stderr.strip().splitlines()[-1] == f"vfl: error: {tmp_path} holds no trained nano weights " \
            "(spec.json); give a `vfl nano train` run folder"
    assert not (tmp_path / "run").exists()
    words = run_cli("nano", "eval", "--words", "train")
    assert words.returncode == 2 and words.stderr.strip().splitlines()[-1] == "vfl: error: --words picks suite " \
        "v2's OCR vocabulary; pass --suite v2 with it"
    batch = run_cli("nano", "eval", "--batch-size", 0)
    assert batch.returncode == 2 and batch.stderr.strip().splitlines()[-1] == "vfl: error: --batch-size must be at " \
        "least 1, got 0"


def test_answer_loss_runs_under_bf16_autocast_and_trains_the_projector():
    """Autocast makes the projector's output bf16 while the text embeddings stay fp32: the scatter of image
    embeddings must still work (it is the CUDA path too), and give the fp32 loss to bf16 precision."""
    import torch

    from vfl.models.tiny import build_tiny
    from vfl.nano.loss import answer_loss

    model, processor = build_tiny("llava")
    torch.manual_seed(0)
    image = model.config.image_token_id
    ids = torch.tensor([[1] + [image] * 16 + [5, 6, 7, 8]] * 2)
    labels = torch.full_like(ids, -100)
    labels[:, -2:] = ids[:, -2:]
    attention = torch.ones_like(ids)
    features = torch.randn(2, 16, model.config.vision_config.hidden_size)
    exact, _ = answer_loss(model, ids, labels, attention, features)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = answer_loss(model, ids, labels, attention, features)
    loss.backward()
    assert torch.isfinite(loss) and abs(loss.item() - exact.item()) < 0.05 * exact.item()
    grads = [p.grad for p in model.model.multi_modal_projector.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_eager_attention_gives_the_training_loss_and_gradients_of_sdpa():
    """CPU training runs eager attention (SDPA's CPU backward is slow): on right-padded rows it must compute
    the same loss and projector gradients as SDPA."""
    import torch

    from vfl.models.tiny import build_tiny
    from vfl.nano.loss import answer_loss

    model, _ = build_tiny("llava")
    image = model.config.image_token_id
    ids = torch.tensor([[1] + [image] * 16 + [5, 6, 7, 8], [1] + [image] * 16 + [5, 6, 0, 0]])
    attention = (torch.arange(ids.shape[1]) < torch.tensor([[21], [19]])).long()
    labels = torch.where(attention.bool(), ids, -100)
    labels[:, :18] = -100
    torch.manual_seed(0)
    features = torch.randn(2, 16, model.config.vision_config.hidden_size)
    results = []
    for implementation in ("sdpa", "eager"):
        model.model.language_model.set_attn_implementation(implementation)
        model.zero_grad()
        loss, per_sample = answer_loss(model, ids, labels, attention, features)
        loss.backward()
        results.append((loss.item(), per_sample, [p.grad.clone() for p in model.model.multi_modal_projector.parameters()]))
    (loss_s, rows_s, grads_s), (loss_e, rows_e, grads_e) = results
    assert loss_e == pytest.approx(loss_s, rel=1e-5) and torch.allclose(rows_e, rows_s, rtol=1e-5)
    for e, s in zip(grads_e, grads_s):  # float32 sums in another order: agreement to 1e-5 of each gradient's scale
        assert s.abs().max() > 0 and (e - s).abs().max() <= 1e-5 * s.abs().max()


def test_runs_written_before_a_setting_existed_still_resume(tmp_path):
    from dataclasses import asdict

    from vfl.errors import VflError
    from vfl.nano.config import TrainConfig, saved_settings

    old = asdict(TrainConfig())
    del old["precision"]  # a train.json written before --precision
    (tmp_path / "train.json").write_text(json.dumps(old))
    assert saved_settings(tmp_path / "train.json") == json.loads(json.dumps(asdict(TrainConfig())))
    assert saved_settings(tmp_path / "train.json") != json.loads(json.dumps(asdict(TrainConfig(precision="bf16"))))
    with pytest.raises(VflError, match="--precision must be one of auto, fp32, bf16, got 'fp16'"):
        TrainConfig(precision="fp16").check()


def test_a_resume_may_change_how_a_run_is_carried_out_but_not_what_it_trains(tmp_path):
    from dataclasses import asdict, replace

    from vfl.errors import VflError
    from vfl.nano.config import TrainConfig
    from vfl.nano.train import check_resumable

    config = TrainConfig(data="stream", workers=2, save_every=5)
    (tmp_path / "train.json").write_text(json.dumps(asdict(config)))
    check_resumable(tmp_path, replace(config, workers=0, save_every=50))  # the same samples, saved less often
    with pytest.raises(VflError, match=r"holds a training run with other settings \(batch_size, seed\); use another"):
        check_resumable(tmp_path, replace(config, batch_size=32, seed=2, workers=0))
    (tmp_path / "train.json").write_text("{")  # damaged
    with pytest.raises(VflError, match="train.json cannot be read; delete the folder to start over"):
        check_resumable(tmp_path, config)


def test_answer_loss_adds_the_weighted_word_alignment_of_the_projected_tokens():
    import torch

    from vfl.models.tiny import build_tiny
    from vfl.nano.align import NO_KIND, alignment_loss
    from vfl.nano.loss import answer_loss

    model, _ = build_tiny("llava")
    image = model.config.image_token_id
    ids = torch.tensor([[1] + [image] * 16 + [5, 6, 7, 8]] * 2)
    labels = torch.full_like(ids, -100)
    labels[:, -2:] = ids[:, -2:]
    torch.manual_seed(0)
    features = torch.randn(2, 16, model.config.vision_config.hidden_size)
    vectors = torch.randn(28, model.config.text_config.hidden_size)
    kinds = torch.full((2, 16), NO_KIND)
    kinds[0, 3], kinds[1, 7] = 4, 20
    plain, rows = answer_loss(model, ids, labels, torch.ones_like(ids), features)
    aligned, aligned_rows = answer_loss(model, ids, labels, torch.ones_like(ids), features,
                                        alignment=(0.5, kinds, vectors))
    tokens = model.model.multi_modal_projector(features)
    assert aligned.item() == pytest.approx(plain.item() + 0.5 * alignment_loss(tokens, kinds, vectors).item(), rel=1e-5)
    assert torch.equal(rows, aligned_rows)  # the per-function curves stay answer losses


def test_a_streamed_run_with_word_alignment_adds_it_to_the_loss_and_keeps_the_answer_curves(tmp_path):
    out = tmp_path / "aligned"
    result = run_cli("nano", "train", "--data", "stream", "--suite", "v2", "--functions", "recog", "--steps", 1,
                     "--batch-size", 2, "--lora-rank", 0, "--precision", CPU_PRECISION, "--align-words", 1,
                     "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((out / "train.json").read_text())["align_words"] == 1
    total = json.loads((out / "losses.json").read_text())[0]
    answer = json.loads((out / "function_losses.json").read_text())["recog"][0]
    assert total > answer + 1  # an untrained projector's tokens are far from the words (about 10 at the first step)


def test_with_no_precision_given_a_cpu_run_takes_the_faster_by_a_timed_calibration_and_keeps_it(tmp_path):
    """`--precision auto` on a CPU times one pass of a small batch in fp32 and in bf16 autocast and takes the
    faster (CPU flags do not tell: bf16 was 1.5x slower than fp32 on a Xeon with AVX-512 BF16); train.json keeps
    the choice, so a resumed run trains on in the precision it began with, without timing again."""
    import torch

    from vfl.nano.config import TrainConfig
    from vfl.nano.precision import chosen_precision

    def loss_of(slower: str):
        def loss(batch, context):
            with context():
                bf16 = torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
            time.sleep(0.05 if ("bf16" if bf16 else "fp32") == slower else 0.0)
            return (batch * weight).sum()
        return loss

    weight = torch.ones(3, requires_grad=True)
    for slower, faster in (("bf16", "fp32"), ("fp32", "bf16")):
        run = tmp_path / slower
        run.mkdir()
        (run / "train.json").write_text(json.dumps({"steps": 3}))
        assert chosen_precision(run, TrainConfig(), torch.device("cpu"), lambda: torch.ones(3), loss_of(slower)) == faster
        recorded = json.loads((run / "train.json").read_text())
        assert recorded["steps"] == 3 and recorded["calibration"]["precision"] == faster
        seconds = recorded["calibration"]["seconds"]
        assert seconds[slower] >= 0.05 > seconds[faster]
        # resumed: read back, not timed again (the timing would now choose the other)
        assert chosen_precision(run, TrainConfig(), torch.device("cpu"), lambda: torch.ones(3),
                                loss_of(faster)) == faster
        assert chosen_precision(run, TrainConfig(precision="fp32"), torch.device("cpu"), None, None) == "fp32"
    assert weight.grad is not None  # the timing ran real backward passes


@pytest.mark.slow
def test_a_cpu_run_without_precision_records_its_calibration_and_resumes_with_it(tmp_path):
    args = ["nano", "train", "--data", "stream", "--steps", 2, "--batch-size", 2, "--save-every", 1, "--lora-rank", 4,
            "--out", tmp_path / "run"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    recorded = json.loads((tmp_path / "run" / "train.json").read_text())
    assert recorded["precision"] == "auto" and recorded["command"].startswith("vfl nano train --data stream")
    calibration = recorded["calibration"]
    assert calibration["precision"] == min(calibration["seconds"], key=calibration["seconds"].get)
    again = run_cli(*args)
    assert again.returncode == 0 and "precision:" not in again.stderr
    assert json.loads((tmp_path / "run" / "train.json").read_text())["calibration"] == calibration


def test_train_json_written_before_the_fields_were_named_as_their_flags_still_resumes(tmp_path):
    from dataclasses import asdict

    from vfl.nano.config import TrainConfig, saved_settings
    from vfl.nano.train import check_resumable

    config = TrainConfig(lm_start=0.1, lr_lm=5e-4)
    old = {("lora_start" if k == "lm_start" else "lr_lora" if k == "lr_lm" else k): v for k, v in asdict(config).items()}
    (tmp_path / "train.json").write_text(json.dumps(old))
    assert saved_settings(tmp_path / "train.json")["lm_start"] == 0.1
    check_resumable(tmp_path, config)  # the same run: no refusal


def test_nano_train_flags_are_the_config_fields_with_their_help_and_defaults():
    """No flag is named or mapped by hand: every field of TrainConfig and NanoSpec that has a flag is --its-name,
    with its default, and the flags build the config the command trains."""
    import dataclasses

    from vfl.cli import build_parser
    from vfl.nano.config import NanoSpec, TrainConfig
    from vfl.options import from_options

    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["nano"]._subparsers._group_actions[0].choices["train"]
    flags = {a.dest: a for a in train._actions}
    for config in (TrainConfig, NanoSpec):
        for field in dataclasses.fields(config):
            if field.metadata["flag"]:
                assert f"--{field.name.replace('_', '-')}" in flags[field.name].option_strings
                assert flags[field.name].help == field.metadata["help"]
    assert {"spec", "lora_alpha"}.isdisjoint(flags)
    args = parser.parse_args(["nano", "train", "--out", "x", "--lm-start", "0.1", "--lr-lm", "5e-4", "--functions",
                              "recog,recog,ocr", "--vision-layers", "5,7", "--loss-weights", "recog=2"])
    spec = from_options(args, NanoSpec, lora_alpha=2 * args.lora_rank)
    config = from_options(args, TrainConfig, spec=spec)
    assert config == TrainConfig(lm_start=0.1, lr_lm=5e-4, functions=["recog", "recog", "ocr"],
                                 loss_weights={"recog": 2.0}, spec=NanoSpec(vision_layers=[5, 7], lora_alpha=32))
    assert from_options(parser.parse_args(["nano", "train", "--out", "x"]), TrainConfig, spec=NanoSpec()) == \
        TrainConfig()  # the command's defaults are the config's


STREAM_V1 = ["nano", "train", "--data", "stream", "--batch-size", 2, "--suite", "v1", "--precision", CPU_PRECISION]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A finished 2-step streamed LoRA (rank 4) run, shared by the tests that start from one."""
    folder = tmp_path_factory.mktemp("lora") / "first"
    made = run_cli(*STREAM_V1, "--steps", 2, "--lora-rank", 4, "--out", folder)
    assert made.returncode == 0, made.stderr[-2000:]
    return folder


def test_a_run_can_start_from_a_finished_runs_weights(tmp_path, capsys, lora_run):
    """--init: the projector and LoRA start as the named run's (so a step at a vanishing rate leaves them bit for
    bit), train.json records their digest and the earlier run's settings (shipping says both commands), and
    weights of another model are refused in one sentence."""
    from vfl.nano.train import ship

    frozen = [*STREAM_V1, "--steps", 1, "--lm-start", 0, "--lr-projector", 1e-30, "--lr-lm", 1e-30]
    again = run_cli(*frozen, "--lora-rank", 4, "--init", lora_run, "--out", tmp_path / "second")
    assert again.returncode == 0, again.stderr[-2000:]
    for name in ("projector.safetensors", "lora.safetensors"):
        before = load_file(lora_run / "weights" / name)
        after = load_file(tmp_path / "second" / "weights" / name)
        assert before.keys() == after.keys() and all((before[k] == after[k]).all() for k in before)
    recorded = json.loads((tmp_path / "second" / "train.json").read_text())
    assert recorded["init"] == str(lora_run) and len(recorded["init_sha256"]) == 16
    first = json.loads((lora_run / "train.json").read_text())
    assert recorded["init_run"] == {**first, "steps_trained": 2}  # the stage before, command and all
    ship(tmp_path / "second" / "weights", tmp_path / "shipped")
    said = capsys.readouterr().out.splitlines()
    assert said[1:] == ["  " + first["command"], "  " + recorded["command"]]  # how to train it again, stage by stage
    assert "--out " + str(lora_run) in said[1] and "--init " + str(lora_run) in said[2]
    fresh = run_cli(*frozen, "--lora-rank", 4, "--out", tmp_path / "fresh")  # without --init: starts elsewhere
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert not (load_file(tmp_path / "fresh" / "weights" / "projector.safetensors")["linear_1.weight"]
                == load_file(tmp_path / "second" / "weights" / "projector.safetensors")["linear_1.weight"]).all()
    other = run_cli(*frozen, "--lora-rank", 8, "--init", lora_run, "--out", tmp_path / "x")
    assert other.returncode == 2 and other.stderr.strip().splitlines()[-1] == (
        f"vfl: error: --init {lora_run} holds another model: lora_alpha 8 there, 16 here, "
        "lora_rank 4 there, 8 here")
    missing = run_cli(*frozen, "--lora-rank", 4, "--init", tmp_path / "nowhere", "--out", tmp_path / "y")
    assert missing.returncode == 2 and "no trained nano weights there" in missing.stderr


def test_the_commands_of_a_staged_run_come_first_to_last_and_say_where_a_stage_was_cut():
    from vfl.nano.train import retrain_commands

    first = {"command": "vfl nano train --out a", "steps": 100, "steps_trained": 60}
    second = {"command": "vfl nano train --out b --init a", "steps": 50, "steps_trained": 50, "init_run": first}
    third = {"command": "vfl nano train --out c --init b", "steps": 10, "init_run": second}
    assert retrain_commands(third) == [
        "vfl nano train --out a  # the next stage began from its weights at step 60 of 100",
        "vfl nano train --out b --init a", "vfl nano train --out c --init b"]
    assert retrain_commands({"steps": 320}) == []  # the shipped v1 nano's train.json predates recorded commands


def test_a_run_can_read_through_a_trained_runs_frozen_language_model(tmp_path, lora_run):
    """--lm-from: the LoRA is the named run's and stays so, bit for bit, while a fresh projector fed from other
    encoder layers trains; train.json records the LoRA's digest; weights without a LoRA of this size, and --init
    with it, are refused in one sentence."""
    from vfl.errors import VflError
    from vfl.nano.config import NanoSpec, TrainConfig

    reader = run_cli(*STREAM_V1, "--lora-rank", 4, "--steps", 2, "--vision-layers", 7, "--lm-from", lora_run,
                     "--out", tmp_path / "reader")
    assert reader.returncode == 0, reader.stderr[-2000:]
    first = {name: load_file(lora_run / "weights" / name)
             for name in ("projector.safetensors", "lora.safetensors")}
    lora = load_file(tmp_path / "reader" / "weights" / "lora.safetensors")
    assert lora.keys() == first["lora.safetensors"].keys()
    assert all((lora[k] == first["lora.safetensors"][k]).all() for k in lora)  # read through, never trained
    projector = load_file(tmp_path / "reader" / "weights" / "projector.safetensors")["linear_1.weight"]
    assert projector.shape[1] * 3 == first["projector.safetensors"]["linear_1.weight"].shape[1]  # one layer, not 3
    recorded = json.loads((tmp_path / "reader" / "train.json").read_text())
    assert recorded["lm_from"] == str(lora_run) and len(recorded["lm_from_sha256"]) == 16
    (tmp_path / "projector").mkdir()  # a projector-only run's weights
    (tmp_path / "projector" / "projector.safetensors").write_bytes(b"")
    (tmp_path / "projector" / "spec.json").write_text(json.dumps({"vision_layers": [7], "lora_rank": 0}))
    rank4 = NanoSpec(vision_layers=[7], lora_rank=4, lora_alpha=8)
    for config, message in (
            (TrainConfig(spec=rank4, lm_from=str(tmp_path / "projector")),
             f"--lm-from {tmp_path / 'projector'} holds no trained LoRA"),
            (TrainConfig(spec=NanoSpec(lora_rank=8, lora_alpha=16), lm_from=str(lora_run)),
             f"--lm-from {lora_run} holds a LoRA of rank 4 (alpha 8); pass --lora-rank 4"),
            (TrainConfig(spec=rank4, lm_from=str(lora_run), init=str(lora_run)),
             "--init continues a whole run and --lm-from keeps only its language model; pass one"),
            (TrainConfig(spec=rank4, lm_from=str(tmp_path / "nowhere")),
             f"--lm-from {tmp_path / 'nowhere'}: no trained nano weights there")):
        with pytest.raises(VflError) as refused:
            config.check()
        assert str(refused.value).startswith(message)


@pytest.mark.slow  # three short runs, one killed: 1-2 minutes on 2 cores
def test_a_killed_run_reading_through_a_frozen_language_model_resumes_to_the_same_weights(tmp_path, lora_run):
    """--lm-from's LoRA is not in the checkpoint (it never changes): a resume reads it from the run again."""
    reader = [*STREAM_V1, "--lora-rank", 4, "--steps", 3, "--save-every", 1, "--vision-layers", 7, "--lm-from",
              lora_run]
    whole = run_cli(*reader, "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]
    out = tmp_path / "killed"
    assert killed_at_first_checkpoint(reader, out) < 3, "the run finished before the kill"
    again = run_cli(*reader, "--out", out)
    assert again.returncode == 0, again.stderr[-2000:]
    for name in ("projector.safetensors", "lora.safetensors"):
        ours, reference = load_file(out / "weights" / name), load_file(tmp_path / "whole" / "weights" / name)
        assert ours.keys() == reference.keys() and all((ours[k] == reference[k]).all() for k in ours), name
