"""`vfl` command line: probes, locate, drop, make-tiny. User errors end in one sentence and exit 2."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from vfl.errors import VflError


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer numbers, got {text!r}") from None


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="hub id or local directory of a supported MLLM, or tiny:<family> (random, for tests)")
    parser.add_argument("--dtype", default="auto", help="auto (float32 on CPU), float32, bfloat16, float16, float64")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps ...")
    parser.add_argument("--device-map", default=None, help="passed to from_pretrained, e.g. auto (multi-GPU)")


def _probe_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--functions", default="recog,count,ground,ocr", help="comma-separated: recog,count,ground,ocr")
    parser.add_argument("--probes", type=Path, help="a probe JSONL of your own (default: generate built-in pairs)")
    parser.add_argument("--n", "--num-probes", dest="n", type=int, default=20,
                        help="built-in pairs per function (spell it --num-probes under torchrun/accelerate launch, "
                             "whose own parsers take --n for theirs)")
    parser.add_argument("--size", type=int, default=224, help="built-in image size in pixels")
    parser.add_argument("--seed", type=int, default=0, help="built-in probe seed")
    parser.add_argument("--out", type=Path, required=True, help="run folder (rerun the same command to resume)")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=None, help="interventions decoded together (default: all)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vfl", description="Find, explain and exploit Vision Function Layers.")
    commands = parser.add_subparsers(dest="command", required=True)

    probes = commands.add_parser("probes", help="counterfactual probe pairs").add_subparsers(dest="action", required=True)
    make = probes.add_parser("make", help="write built-in pairs as DIR/probes.jsonl + DIR/images/")
    make.add_argument("--function", required=True, help="one function or a comma-separated list")
    make.add_argument("--n", type=int, default=20)
    make.add_argument("--size", type=int, default=224)
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--out", type=Path, required=True)

    locate = commands.add_parser("locate", help="Visual Token Swapping per decoder layer: find the VFLs")
    _model_options(locate)
    _probe_options(locate)
    locate.add_argument("--window", type=int, default=1, help="swap windows of this many consecutive layers")
    locate.add_argument("--layers", type=_int_list, default=None, help="sweep only windows starting at these layers")
    locate.add_argument("--resize", action="store_true", help="resize image B to A's size when they differ")

    drop = commands.add_parser("drop", help="accuracy with visual KV dropped from the last N layers, N = 0..L")
    _model_options(drop)
    _probe_options(drop)

    tiny = commands.add_parser("make-tiny", help="save a tiny random model of a family (for tests and demos)")
    tiny.add_argument("--family", default="llava")
    tiny.add_argument("--layers", type=int, default=8)
    tiny.add_argument("--out", type=Path, required=True)
    return parser


def _probes(args):
    from vfl.probes.generate import make_probe_set
    from vfl.probes.schema import load_probes, parse_functions

    functions = parse_functions(args.functions)
    if args.probes is not None:
        return load_probes(args.probes, functions), {"probes": str(args.probes.resolve())}
    path = make_probe_set(functions, args.n, args.size, args.seed, args.out / "probes")
    return load_probes(path), {"functions": functions, "n": args.n, "size": args.size, "seed": args.seed}


def _device(args) -> str:
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is not None and args.device == "cuda":
        return f"cuda:{local_rank}"
    return args.device


def _settings(args, probe_settings: dict, **extra) -> dict:
    return {"model": args.model, "dtype": args.dtype, "max_new_tokens": args.max_new_tokens, **probe_settings, **extra}


def _print_table(path: Path) -> None:
    print(path.read_text())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "probes":
            from vfl.probes.generate import make_probe_set
            from vfl.probes.schema import parse_functions

            path = make_probe_set(parse_functions(args.function), args.n, args.size, args.seed, args.out)
            print(f"wrote {path}")
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
            from vfl import locate as jobs
            from vfl.models import load

            if args.max_new_tokens < 1:
                raise VflError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
            probes, probe_settings = _probes(args)
            jobs.check_probe_images(probes, resize=args.command == "drop" or args.resize)  # fail before loading
            adapter = load(args.model, args.dtype, _device(args), args.device_map)
            if args.command == "locate":
                settings = _settings(args, probe_settings, window=args.window, layers=args.layers, resize=args.resize)
                summary = jobs.locate(adapter, probes, args.out, settings, args.window, args.layers,
                                      args.max_new_tokens, args.batch_size, args.resize)
                if summary is not None:
                    _print_table(args.out / "report.md")
                    print(f"results: {args.out / 'results.jsonl'}\nplot: {args.out / 'curves.png'}")
            else:
                summary = jobs.drop(adapter, probes, args.out, _settings(args, probe_settings), args.max_new_tokens,
                                    args.batch_size)
                if summary is not None:
                    print(json.dumps({f: [round(r["accuracy"], 3) for r in d["curve"]]
                                      for f, d in summary["functions"].items()}))
                    print(f"results: {args.out / 'drop.jsonl'}\nplot: {args.out / 'drop.png'}")
    except VflError as err:
        print(f"vfl: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vfl: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
