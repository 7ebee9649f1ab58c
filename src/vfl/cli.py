"""`vfl` command line: a thin layer over the Python API (`vfl.api`) and the applications. User errors end in
one sentence and exit 2. Imports are deferred so that bad input fails before torch is even imported."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
from pathlib import Path

from vfl.errors import VflError
from vfl.options import add_options, from_options, int_list


class HELP(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in --help, except where there is none to show (a required option, a flag)."""

    def _get_help_string(self, action):
        if action.required or action.default in (None, False, argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16", "float64")
# vfl.models.tiny.FAMILIES, spelled out so that --help needs no torch (a test keeps the two equal)
TINY_FAMILIES = ("llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "idefics3", "smolvlm",
                 "internvl", "gemma3")


def _command(commands, name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand whose --help shows every option's default."""
    return commands.add_parser(name, help=help, description=help, formatter_class=HELP)


def _index_list(text: str) -> list[int]:
    """Comma-separated indices and inclusive ranges: "0-3,8" is [0, 1, 2, 3, 8]."""
    values = []
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            start, _, end = part.partition("-")
            values += list(range(int(start), int(end) + 1)) if end else [int(start)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected indices and ranges such as 0-15,32, got {text!r}") from None
    return sorted(set(values))


DOWNLOAD_HELP = "fetch a hub id missing from the local cache (otherwise local files only)"
DTYPE_HELP = "auto: float32 on CPU, the checkpoint's dtype elsewhere"
DEVICE_HELP = "cpu, cuda, cuda:1, mps ..."


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="nano",
                        help="nano (vfl's offline reference model; nano:DIR with a `vfl nano train` run's "
                             "weights), a hub id or local directory of a supported MLLM, or tiny:<family> "
                             "(random, for tests)")
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help=DTYPE_HELP)
    parser.add_argument("--device", default="cpu", help=DEVICE_HELP)
    parser.add_argument("--device-map", default=None, help="passed to from_pretrained, e.g. auto (multi-GPU)")
    parser.add_argument("--download", action="store_true", help=DOWNLOAD_HELP)


EVAL_BATCH_HELP = ("items answered together by the model's generate over left-padded batches (1: the swap engine's "
                   "own path, one item at a time; on a GPU use 32-64)")


BENCHMARK_NAMES = ("cv-bench", "pope", "refcoco", "textvqa", "ocrbench", "mmvp")  # vfl.probes.benchmarks, tested equal
SUITE_HELP = ("built-in pairs: v1 (only the asked-about objects) or v2 (distractors, binding, one of two words "
              "in held-out vocabulary; each pair still differs in the asked attribute only)")


def _probe_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--functions", default="recog,count,ground,ocr", help="comma-separated: recog,count,ground,ocr")
    parser.add_argument("--probes", type=Path, help="a probe JSONL of your own (None: generate built-in pairs)")
    parser.add_argument("--n", "--num-probes", dest="n", type=int, default=20,
                        help="built-in pairs per function (spell it --num-probes under torchrun/accelerate launch, "
                             "whose own parsers take --n for theirs)")
    parser.add_argument("--size", type=int, default=224, help="built-in image size in pixels")
    parser.add_argument("--seed", type=int, default=0, help="built-in probe seed")
    parser.add_argument("--suite", default="v1", choices=("v1", "v2"), help=SUITE_HELP)
    parser.add_argument("--out", type=Path, required=True, help="run folder (rerun the same command to resume)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="answer length limit")
    parser.add_argument("--batch-size", type=int, default=None, help="interventions decoded together (None: all)")


def build_parser() -> argparse.ArgumentParser:
    from vfl import __version__

    parser = argparse.ArgumentParser(prog="vfl", description="Find, explain and exploit Vision Function Layers.",
                                     formatter_class=HELP)
    parser.add_argument("--version", action="version", version=f"vfl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _probes_command(commands)
    _locate_command(commands)
    _drop_command(commands)
    _nano_command(commands)
    _eval_command(commands)
    _lora_command(commands)
    _select_command(commands)
    _vision_layers_command(commands)
    _compare_command(commands)
    _make_tiny_command(commands)
    return parser


def _probes_command(commands) -> None:
    """`vfl probes` and its actions."""
    probes = _command(commands, "probes", "counterfactual probe pairs").add_subparsers(dest="action", required=True)
    make = _command(probes, "make", "write built-in pairs as DIR/probes.jsonl + DIR/images/")
    make.add_argument("--function", required=True, help="one function or a comma-separated list")
    make.add_argument("--n", type=int, default=20, help="pairs per function")
    make.add_argument("--size", type=int, default=224, help="image size in pixels")
    make.add_argument("--seed", type=int, default=0, help="same seed, same files")
    make.add_argument("--suite", default="v1", choices=("v1", "v2"), help=SUITE_HELP)
    make.add_argument("--out", type=Path, required=True, help="folder for probes.jsonl and images/")
    source = _command(probes, "from", "pairs from a benchmark you have on disk: DIR/probes.jsonl + images/ + "
                                      "source.json (dataset, fingerprint, licence, rows left out and why)")
    source.add_argument("name", choices=BENCHMARK_NAMES, help="the benchmark (docs/real-benchmarks.md)")
    source.add_argument("path", nargs="?", help="its local copy: a folder of parquet/arrow files (a hub snapshot) or "
                                                "`save_to_disk` output; with --download, a hub id (default: its own)")
    source.add_argument("--out", type=Path, required=True, help="folder for probes.jsonl, images/ and source.json")
    source.add_argument("--limit", type=int, default=None, help="stop after this many pairs (default: every one)")
    source.add_argument("--seed", type=int, default=0, help="the rows' order before pairing (MMVP keeps its own)")
    source.add_argument("--split", default=None, help="the split to read (default: the one the paper's numbers use)")
    source.add_argument("--config", default=None, help="the dataset's configuration (CV-Bench: 2D, the default)")
    source.add_argument("--download", action="store_true", help="read PATH (or the benchmark's id) from the "
                                                                "Hugging Face hub, streaming")


def _locate_command(commands) -> None:
    """`vfl locate`."""
    locate = _command(commands, "locate", "Visual Token Swapping per decoder layer: find the VFLs")
    _model_options(locate)
    _probe_options(locate)
    locate.add_argument("--window", type=int, default=1, help="swap windows of this many consecutive layers")
    locate.add_argument("--sweep", default="window", choices=("window", "from", "upto", "heads"),
                        help="window: layers k..k+window-1; from: k..L-1; upto: 0..k (cumulative sweeps show where "
                             "a distributed function's reading starts and ends); heads: key/value head k alone at "
                             "--layers (e.g. a VFL)")
    locate.add_argument("--layers", type=int_list, default=None,
                        help="sweep only these k (None: every k); with --sweep heads, the layers whose heads to sweep")
    locate.add_argument("--what", default="kv", choices=("kv", "k", "v", "hidden"),
                        help="what B gives: keys and values, keys only, values only, or the visual positions' "
                             "residual stream entering each swapped layer (recomputed onward)")
    locate.add_argument("--keep-injected", action="store_true",
                        help="with --what hidden on Qwen3-VL: keep A's DeepStack features (default: B's from the "
                             "first patched layer on)")
    locate.add_argument("--heads", type=int_list, default=None, help="swap only these key/value heads (None: all)")
    locate.add_argument("--tokens", type=_index_list, default=None,
                        help="swap only these visual positions, as offsets into the image's tokens, e.g. 0-15,32 "
                             "(None: all)")
    locate.add_argument("--resize", action="store_true", help="resize image B to A's size when they differ")
    locate.add_argument("--no-scores", dest="scores", action="store_false",
                        help="skip the teacher-forced log-probabilities and the normalised transfer score")
    locate.add_argument("--alpha", type=float, default=0.05, help="significance level of the VFL test (after Holm)")
    locate.add_argument("--min-effect", type=float, default=0.1,
                        help="least transfer-rate gain over the no-swap control for a window to count")
    locate.add_argument("--min-accuracy", type=float, default=0.5,
                        help="below this accuracy on image A a function is classed 'model fails'")


def _drop_command(commands) -> None:
    """`vfl drop`."""
    drop = _command(commands, "drop", "accuracy with visual KV dropped from the last N layers, N = 0..L")
    _model_options(drop)
    _probe_options(drop)


def _nano_command(commands) -> None:
    """`vfl nano` and its actions."""
    from vfl.nano.config import NanoSpec, TrainConfig
    from vfl.nano.sample import HELD_OUT_SEED
    from vfl.nano.suite_v2 import SPLITS

    nano = _command(commands, "nano", "the offline reference model").add_subparsers(dest="action", required=True)
    train = _command(nano, "train", "train nano's projector and LoRA (resumes from --out)")
    train.add_argument("--out", type=Path, required=True, help="run folder (rerun to resume)")
    add_options(train, NanoSpec)
    add_options(train, TrainConfig)
    train.add_argument("--ship", action="store_true", help="copy the trained weights into the vfl package")
    nano_ship = _command(nano, "ship", "make a finished `vfl nano train` run nano's default weights (e.g. a run "
                                       "trained on a GPU and copied back)")
    nano_ship.add_argument("run", type=Path, help="the run folder (weights/, train.json, losses.json)")
    nano_eval = _command(nano, "eval", "nano's held-out accuracy per function")
    nano_eval.add_argument("--n", type=int, default=200, help="held-out samples per function")
    nano_eval.add_argument("--seed", type=int, default=HELD_OUT_SEED,
                           help="held-out seed (training refuses it; it uses 0 unless told)")
    nano_eval.add_argument("--out", type=Path, help="write the accuracies as JSON here")
    nano_eval.add_argument("--suite", default="v1", choices=("v1", "v2"),
                           help="held-out items of this suite (v2: OCR of words never trained on)")
    nano_eval.add_argument("--words", default="held_out", choices=SPLITS,
                           help="OCR's words: in v2 held out (never trained on: does it read?) or the training "
                                "words in new images (does it recognise the word images it saw?); in either suite "
                                "pseudo-words (random letters: does it read letter by letter?); v1's default is "
                                "its own vocabulary in new images")
    nano_eval.add_argument("--weights", default=None, type=Path,
                           help="a `vfl nano train` run folder to evaluate (None: the shipped weights)")
    nano_eval.add_argument("--batch-size", type=int, default=1, help=EVAL_BATCH_HELP)
    nano_eval.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help="auto: float32")
    nano_eval.add_argument("--device", default="cpu", help="cpu, cuda, mps ...")
    study = _command(nano, "study", "train and evaluate nano variants fed from each encoder layer group, "
                                    "the last layer and their fusion (resumes from --out)")
    study.add_argument("--groups", type=Path, required=True, help="groups.json from vfl vision-layers")
    study.add_argument("--out", type=Path, required=True, help="study folder (rerun to resume)")
    study.add_argument("--recipe", type=Path, default=None,
                       help="train every variant as this run was trained (its train.json, or a run folder; e.g. the "
                            "shipped nano's src/vfl/nano/weights), but for the encoder layers (and --steps if given)")
    study.add_argument("--steps", type=int, default=None,
                       help="optimizer steps per variant (default 80, or the recipe's)")
    study.add_argument("--per-function", type=int, default=None, help="training images per function (default 320)")
    study.add_argument("--n", type=int, default=40, help="held-out samples per function")
    study.add_argument("--lora-rank", type=int, default=None, help="0 (the default): train the projector only")
    study.add_argument("--seed", type=int, default=None, help="data and initialisation seed (default 0)")
    study.add_argument("--lm-from", default=None, metavar="RUN",
                       help="every variant reads through this trained run's language model (its LoRA; e.g. "
                            "src/vfl/nano/weights), frozen, and trains only a fresh projector: the variants differ "
                            "in the encoder layers alone")
    study.add_argument("--eval-batch", type=int, default=1, help=EVAL_BATCH_HELP)


def _eval_command(commands) -> None:
    """`vfl eval`."""
    evaluate = _command(commands, "eval", "accuracy on a JSONL evaluation set")
    _model_options(evaluate)
    evaluate.add_argument("--data", type=Path, required=True, help="JSONL: image, question, answer, function|metric")
    evaluate.add_argument("--out", type=Path, help="write the summary as JSON here (records beside it)")
    evaluate.add_argument("--max-new-tokens", type=int, default=32, help="answer length limit")
    evaluate.add_argument("--batch-size", type=int, default=1, help=EVAL_BATCH_HELP)
    evaluate.add_argument("--adapter", type=Path, help="a LoRA adapter folder (from vfl lora) to merge in first")


def _lora_command(commands) -> None:
    """`vfl lora`."""
    lora = _command(commands, "lora", "LoRA on chosen decoder layers only (VFL-LoRA and its baselines)")
    _model_options(lora)
    lora.add_argument("--data", type=Path, required=True, help="LLaVA conversation JSON/JSONL, or a vfl probe file")
    lora.add_argument("--image-folder", type=Path, help="where the data's image paths start (None: its folder)")
    lora.add_argument("--layers", default=None, help="all, vfl, reversed, random, or layer numbers (None: vfl "
                                                     "with --vfl, else all)")
    lora.add_argument("--vfl", type=Path, help="a vfl locate run folder or its summary.json")
    lora.add_argument("--function", help="whose VFL to use: recog, count, ground, ocr")
    lora.add_argument("--margin", type=int, default=0, help="widen the VFL by this many layers on each side")
    lora.add_argument("--rank", type=int, default=64, help="LoRA rank")
    lora.add_argument("--alpha", type=int, default=64, help="LoRA alpha")
    lora.add_argument("--dropout", type=float, default=0.05, help="LoRA dropout")
    lora.add_argument("--lr", type=float, default=2e-4, help="peak learning rate (cosine, 3%% warmup)")
    lora.add_argument("--steps", type=int, default=100, help="optimizer steps")
    lora.add_argument("--batch-size", type=int, default=8, help="samples per optimizer step and process")
    lora.add_argument("--micro-batch", type=int, default=4, help="samples per forward pass (memory only)")
    lora.add_argument("--subset", type=Path, help="a selection.json from vfl select: train on its ids only")
    lora.add_argument("--seed", type=int, default=0, help="data order, initialisation and random layers")
    lora.add_argument("--save-every", type=int, default=25, help="checkpoint every this many steps")
    lora.add_argument("--merge", action="store_true", help="also save the model with the LoRA merged in")
    lora.add_argument("--out", type=Path, required=True, help="run folder (rerun to resume)")


def _select_command(commands) -> None:
    """`vfl select`."""
    select = _command(commands, "select", "label a training pool by function through VFL ablation and "
                                          "choose a budget (VFL-select; resumes from --out)")
    _model_options(select)
    select.add_argument("--vfl", type=Path, required=True,
                        help="a vfl locate run folder or its summary.json: the functions' VFLs")
    select.add_argument("--data", type=Path, required=True, help="the pool: LLaVA conversation JSON/JSONL")
    select.add_argument("--image-folder", type=Path, help="where the data's image paths start (None: its folder)")
    select.add_argument("--budget", type=float, default=0.2, help="share of the pool (or a number of samples > 1)")
    select.add_argument("--target", default=None, help="functions to select for (None: every one with a VFL)")
    select.add_argument("--strategy", default="balanced", choices=("balanced", "top"),
                        help="balanced: targets in turn, best score first; top: best scores whatever the function")
    select.add_argument("--min-score", type=float, default=0.0,
                        help="a sample whose loss rises by no more than this (nats) under every ablation is "
                             "labelled none and never chosen")
    select.add_argument("--margin", type=int, default=0, help="widen every VFL by this many layers on each side")
    select.add_argument("--out", type=Path, required=True, help="run folder (rerun to resume or re-choose)")


def _vision_layers_command(commands) -> None:
    """`vfl vision-layers`."""
    layers = _command(commands, "vision-layers", "layer-by-layer similarity of a vision encoder, grouped")
    layers.add_argument("--encoder", default="nano", help="nano, a vision model (CLIP, SigLIP, DINOv2) or a "
                                                         "supported MLLM (its vision tower), by hub id or local "
                                                         "directory; tiny:<family> (random, for tests)")
    source = layers.add_mutually_exclusive_group()
    source.add_argument("--images", type=Path, help="a folder of images (png, jpg)")
    source.add_argument("--probes", action="store_true", help="built-in probe images (the default)")
    layers.add_argument("--n", type=int, default=8, help="built-in pairs per function")
    layers.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help=DTYPE_HELP)
    layers.add_argument("--device", default="cpu", help=DEVICE_HELP)
    layers.add_argument("--download", action="store_true", help=DOWNLOAD_HELP)
    layers.add_argument("--out", type=Path, required=True, help="folder for similarity.json, groups.json, heatmap.png")


def _compare_command(commands) -> None:
    """`vfl compare`."""
    compare = _command(commands, "compare", "VFL bands of several locate runs on a normalised depth axis, and their "
                                            "order of functions against the paper's")
    compare.add_argument("runs", type=Path, nargs="+", help="locate run folders or summary.json files")
    compare.add_argument("--names", default=None, help="comma-separated labels, one per run (None: model and window)")
    compare.add_argument("--out", type=Path, required=True, help="folder for compare.json, compare.md, compare.png")
    compare.add_argument("--paper", action="store_true",
                         help="add the paper's reported Qwen2.5-VL-7B positions as a reference row (approximate: "
                              "recognition over layers 0-10, counting 12, grounding 18, OCR 22 of 28)")


def _make_tiny_command(commands) -> None:
    """`vfl make-tiny`."""
    tiny = _command(commands, "make-tiny", "save a tiny random model of a family (for tests and demos)")
    tiny.add_argument("--family", default="llava", choices=TINY_FAMILIES, help="the model family")
    tiny.add_argument("--layers", type=int, default=8, help="decoder layers")
    tiny.add_argument("--out", type=Path, required=True, help="folder to save the model and processor in")


def _device(args) -> str:
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is not None and args.device == "cuda":
        return f"cuda:{local_rank}"
    return args.device


def _load(args):
    from vfl.models import load

    return load(args.model, args.dtype, _device(args), args.device_map, args.download)


def _check_model(args) -> tuple[int, int]:
    """The device, dtype and model id checked; the decoder's layers and key/value heads read from the config."""
    from vfl.models import check_device, decoder_shape, torch_dtype

    check_device(_device(args))
    torch_dtype(args.dtype, args.device, args.device_map)
    return decoder_shape(args.model, args.download)


def _locate_or_drop(args) -> None:
    """Check everything (options, probes and their images, the model's config, weights and processor) before
    the first write, then claim the run folder, put the built-in probes into it and run the analysis through
    the Python API. The settings name the inputs' content (`vfl.fingerprint`), so a rerun on changed probes
    or another model is refused."""
    import tempfile

    from vfl.fingerprint import model_identity, probes_identity
    from vfl.probes.generate import check_probe_options, make_probe_set
    from vfl.probes.schema import check_probe_images, load_probes, parse_functions

    functions = parse_functions(args.functions)
    resize = args.command == "drop" or args.resize
    if args.probes is not None:  # a bad probe file fails before torch is imported
        probes = load_probes(args.probes, functions)
        check_probe_images(probes, resize)
    else:
        check_probe_options(args.n, args.size, args.suite)
    from vfl import api, decision, runner

    if args.command == "locate":
        decision.check_test(args.alpha, args.min_effect, args.min_accuracy)
        layers, heads = _check_model(args)
        api.plan_locate(layers, args.window, args.sweep, args.layers, args.batch_size, args.max_new_tokens,
                        args.what, args.heads, args.tokens, heads, args.keep_injected)
    else:
        api.check_run_options(args.batch_size, args.max_new_tokens)
        _check_model(args)
    scratch = Path(tempfile.mkdtemp(prefix="vfl-probes-"))
    try:
        if args.probes is not None:
            probe_settings = {"probes": str(args.probes.resolve()), **probes_identity(args.probes, probes)}
        else:
            generated = make_probe_set(functions, args.n, args.size, args.seed, scratch, args.suite)
            probes = load_probes(generated)
            probe_settings = {"functions": functions, "n": args.n, "size": args.size, "seed": args.seed,
                              **({"suite": args.suite} if args.suite != "v1" else {}),  # older v1 runs resume
                              **probes_identity(generated, probes)}
        settings = {"model": args.model, **model_identity(args.model, args.download), "dtype": args.dtype,
                    "max_new_tokens": args.max_new_tokens, **probe_settings}
        if args.command == "locate":
            settings.update(window=args.window, sweep=args.sweep, layers=args.layers, what=args.what,
                            heads=args.heads, tokens=args.tokens, keep_injected=args.keep_injected,
                            resize=args.resize, scores=args.scores)
        runner.check_settings(args.out, settings)  # before the model loads: a refused rerun costs nothing
        adapter = _load(args)
        if args.command == "locate" and args.tokens:
            api.check_visual_tokens(adapter, probes, args.tokens, resize)
        _run_locate_or_drop(args, settings, probes, adapter, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run_locate_or_drop(args, settings: dict, probes, adapter, scratch: Path) -> None:
    """The checked run: the run folder claimed, the built-in probes copied into it, the analysis run."""
    from vfl import api, runner
    from vfl.probes.schema import load_probes

    with runner.claim(args.out, settings) as out:
        if args.probes is None:
            if runner.rank_and_world()[0] == 0 and not (out / "probes" / "probes.jsonl").is_file():
                shutil.copytree(scratch, out / "probes", dirs_exist_ok=True)  # the same files a resume holds
            runner.barrier()
            probes = load_probes(out / "probes" / "probes.jsonl")
        common = dict(out=out, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, settings=settings)
        if args.command == "locate":
            result = api.locate(adapter, probes=probes, window=args.window, sweep=args.sweep, layers=args.layers,
                                what=args.what, heads=args.heads, tokens=args.tokens,
                                keep_injected=args.keep_injected, resize=args.resize, scores=args.scores,
                                alpha=args.alpha, min_effect=args.min_effect, min_accuracy=args.min_accuracy, **common)
            if result is not None:
                print(result.report().split("![")[0].rstrip())
                print(f"results: {out / 'results.jsonl'}\nreport: {out / 'report.md'}\nplot: {out / 'curves.png'}")
        else:
            result = api.drop(adapter, probes=probes, **common)
            if result is not None:
                print(json.dumps({f: [round(r["accuracy"], 3) for r in d["curve"]]
                                  for f, d in result.summary["functions"].items()}))
                print(f"results: {out / 'drop.jsonl'}\nplot: {out / 'drop.png'}")


def _nano(args) -> None:
    if args.action == "train":
        from vfl.nano.config import NanoSpec
        from vfl.nano.model import WEIGHTS
        from vfl.nano.config import TrainConfig
        from vfl.nano.train import ship, train

        spec = from_options(args, NanoSpec, lora_alpha=2 * args.lora_rank)
        config = from_options(args, TrainConfig, spec=spec)
        weights = train(args.out, config, command=shlex.join(["vfl", *sys.argv[1:]]))
        if args.ship:
            ship(weights, WEIGHTS)
    elif args.action == "ship":
        from vfl.nano.model import WEIGHTS
        from vfl.nano.train import ship

        ship(args.run / "weights", WEIGHTS)  # refuses a folder that is no finished run
    elif args.action == "eval":
        from vfl.evaluate import check_batch_size, evaluate
        from vfl.models import check_device, load, nano_weights
        from vfl.nano.data import held_out_items
        from vfl.nano.sample import FUNCTIONS
        from vfl.nano.train import progress

        if args.n < 1:
            raise VflError(f"--n must be at least 1, got {args.n}")
        check_batch_size(args.batch_size)
        check_device(args.device)
        spec = "nano" if args.weights is None else f"nano:{args.weights}"
        trained = progress(nano_weights(spec))  # a folder without weights is refused before the items are drawn
        if trained and trained[0] < trained[1]:
            print(f"{args.weights} is still training: these are its weights at step {trained[0]} of {trained[1]}",
                  file=sys.stderr)
        if args.words == "train" and args.suite != "v2":
            raise VflError("--words picks suite v2's OCR vocabulary; pass --suite v2 with it")
        split = args.words if args.suite == "v2" or args.words == "pseudo" else "train"  # v1: its one vocabulary
        items = held_out_items(FUNCTIONS, args.n, args.seed, args.suite, split=split)
        summary, records = evaluate(load(spec, args.dtype, args.device), items, 32, args.batch_size)
        _report_eval((summary, records), args.out, flat=True)
    elif args.action == "study":
        from vfl.nano.study import run_study, study_table

        for name in ("steps", "per_function", "n", "eval_batch"):  # before any variant trains
            if getattr(args, name) is not None and getattr(args, name) < 1:
                raise VflError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
        config = _study_config(args)
        print(study_table(run_study(args.groups, args.out, config)))
        print(f"table: {args.out / 'study.md'}\nplot: {args.out / 'study.png'}")


def _study_config(args):
    """`vfl nano study`'s settings: the default small recipe, or a run's own (--recipe)."""
    from vfl.nano.config import recorded_config
    from vfl.nano.study import StudyConfig

    if args.lm_from is not None and args.lora_rank is not None:
        raise VflError("--lm-from takes the LoRA of the run it names; drop --lora-rank")
    if args.recipe is None:
        return StudyConfig(steps=args.steps or 80, per_function=args.per_function or 320, n_eval=args.n,
                           lora_rank=args.lora_rank or 0, seed=args.seed or 0, lm_from=args.lm_from,
                           eval_batch=args.eval_batch)
    given = [f"--{n.replace('_', '-')}" for n in ("per_function", "lora_rank", "seed") if getattr(args, n) is not None]
    if given:
        raise VflError(f"--recipe sets the training data and model; drop {', '.join(given)}")
    path = args.recipe / "train.json" if args.recipe.is_dir() else args.recipe
    if not path.is_file():
        raise VflError(f"--recipe {args.recipe}: no train.json there (give a `vfl nano train` run or its train.json)")
    return StudyConfig.following(recorded_config(path), args.steps, args.n, args.lm_from, args.eval_batch)


def _lora(args) -> None:
    from vfl import lora
    from vfl.probes.schema import parse_function

    run = lora.LoraRun(rank=args.rank, alpha=args.alpha, dropout=args.dropout, lr=args.lr, steps=args.steps,
                       batch_size=args.batch_size, micro_batch=args.micro_batch, seed=args.seed,
                       save_every=args.save_every)
    samples = lora.load_conversations(args.data, args.image_folder)
    if args.subset is not None:
        samples = lora.subset(samples, args.subset)
    vfl = None
    if args.vfl is not None:
        if not args.function:
            raise VflError("--vfl needs --function: whose VFL to train")
        vfl = lora.vfl_layers(args.vfl, parse_function(args.function), args.margin)
    settings = {**_inputs(args, samples), "rule": args.layers, "vfl": vfl,
                "subset": [s["id"] for s in samples] if args.subset else None}
    adapter = _load(args)
    layers = lora.choose_layers(args.layers or ("vfl" if vfl else "all"), adapter.num_layers, vfl, args.seed)
    adapter_dir = lora.train(adapter, samples, layers, run, args.out, settings)
    if adapter_dir is not None:
        print(f"adapter: {adapter_dir}")
        if args.merge:
            merged = lora.with_adapter(_load(args), adapter_dir)
            merged.model.save_pretrained(args.out / "merged")
            merged.processor.save_pretrained(args.out / "merged")
            print(f"merged model: {args.out / 'merged'}")


def _inputs(args, samples: list[dict]) -> dict:
    """A training or selection run's model and data, by place and content (`vfl.fingerprint`): a rerun on an
    edited data file, changed images or another model is refused rather than resumed."""
    from vfl.fingerprint import digest, model_identity

    images = [s["image"] for s in samples if s["image"] is not None]
    return {"model": args.model, **model_identity(args.model, args.download), "data": str(args.data.resolve()),
            "data_sha256": digest([args.data, *images])}


def _select(args) -> None:
    from vfl.lora import load_conversations
    from vfl.probes.schema import parse_functions
    from vfl.decision import load_vfls
    from vfl.select import check_choice, select

    vfls = load_vfls(args.vfl, args.margin)
    if not vfls:
        raise VflError(f"{args.vfl} names no VFL for any function; nothing to ablate")
    targets = parse_functions(args.target) if args.target else None
    check_choice(args.budget, args.strategy, targets, vfls)
    samples = load_conversations(args.data, args.image_folder)
    settings = {**_inputs(args, samples), "vfl": vfls}
    adapter = _load(args)
    selection = select(adapter, samples, vfls, args.out, settings, args.budget, targets, args.strategy, args.min_score)
    if selection is not None:
        print(f"chose {selection['chosen']} of {selection['pool']} samples (wanted {selection['wanted']}): "
              + ", ".join(f"{f} {n}" for f, n in selection["per_function"].items()))
        print(f"profiles: {args.out / 'profiles.jsonl'}\nselection: {args.out / 'selection.json'}\n"
              f"plot: {args.out / 'profiles.png'}")


def _vision_layers(args) -> None:
    from vfl.images import read_image
    from vfl.vision_layers import analyse

    if args.images is not None:
        if not args.images.is_dir():
            raise VflError(f"{args.images} is not a folder of images")
        paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
        if not paths:
            raise VflError(f"{args.images} holds no png/jpg/webp images")
        images = [read_image(path, "--images") for path in paths]
    else:
        from vfl.probes.generate import make_pair
        from vfl.probes.schema import FUNCTIONS

        images = [img for f in FUNCTIONS for i in range(args.n) for img in make_pair(f, i, 224, 0)[1:3]]
    record = analyse(args.encoder, images, args.out, args.download, args.dtype, args.device)
    for name, members in record["groups"].items():
        print(f"{name:8s} layers {members[0]}-{members[-1]} (representative {record['representatives'][name]})")
    print(f"wrote {args.out / 'heatmap.png'}, {args.out / 'groups.json'}, {args.out / 'similarity.json'}")


def _report_eval(result, out: Path | None, flat: bool = False) -> None:
    from vfl.evaluate import table

    summary, records = result
    print(table(summary))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        body = {f: round(row["accuracy"], 4) for f, row in summary.items()} if flat else summary
        out.write_text(json.dumps(body, indent=2) + "\n")
        with out.with_suffix(".records.jsonl").open("w") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in records)
        print(f"wrote {out}")


def _probes_from(args) -> None:
    from vfl.probes.benchmarks import probes_from

    probes = probes_from(args.name, args.path, args.out, limit=args.limit, seed=args.seed, split=args.split,
                         config=args.config, download=args.download)
    source = json.loads((args.out / "source.json").read_text())
    left = sum(source["unpaired"].values())
    print(f"wrote {len(probes)} pair{'s' * (len(probes) != 1)} from {source['rows_read']} rows of {args.name} "
          f"into {args.out / 'probes.jsonl'}; {left} rows left out"
          + "".join(f"\n  {n}: {why}" for why, n in source["unpaired"].items()))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "probes" and args.action == "from":
            _probes_from(args)
        elif args.command == "probes":
            from vfl.probes.generate import make_probe_set
            from vfl.probes.schema import parse_functions

            path = make_probe_set(parse_functions(args.function), args.n, args.size, args.seed, args.out,
                                  args.suite)
            print(f"wrote {path}")
        elif args.command == "nano":
            _nano(args)
        elif args.command == "eval":
            from vfl.evaluate import check_batch_size, evaluate, load_items

            check_batch_size(args.batch_size)
            items = load_items(args.data)
            if args.adapter is not None and not (args.adapter / "adapter_config.json").is_file():
                raise VflError(f"{args.adapter} holds no LoRA adapter (adapter_config.json)")  # before the model
            adapter = _load(args)
            if args.adapter is not None:
                from vfl.lora import with_adapter

                adapter = with_adapter(adapter, args.adapter)
            _report_eval(evaluate(adapter, items, args.max_new_tokens, args.batch_size), args.out)
        elif args.command == "lora":
            _lora(args)
        elif args.command == "select":
            _select(args)
        elif args.command == "vision-layers":
            _vision_layers(args)
        elif args.command == "compare":
            from vfl.compare import compare, profile_table, table, write

            result = compare(args.runs, args.names.split(",") if args.names else None, paper=args.paper)
            write(result, args.out)
            print(table(result))
            print(profile_table(result))
            print(f"table: {args.out / 'compare.md'}\nplot: {args.out / 'compare.png'}")
        elif args.command == "make-tiny":
            from vfl.models.tiny import build_tiny

            try:
                model, processor = build_tiny(args.family, num_layers=args.layers)
            except ValueError as err:
                raise VflError(str(err)) from None
            model.save_pretrained(args.out)
            processor.save_pretrained(args.out)
            print(f"wrote a tiny random {args.family} model to {args.out}")
        elif args.command in ("locate", "drop"):
            _locate_or_drop(args)
    except VflError as err:
        print(f"vfl: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vfl: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
