"""`vfl nano train`'s settings: each field's default, help and command-line form together (`vfl.options`), the
checks that refuse settings which cannot train, and how a run's recorded train.json reads back."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from vfl.errors import VflError
from vfl.nano.sample import FUNCTIONS, HELD_OUT_SEED, TRAINING_FUNCTIONS
from vfl.options import function_weights, int_list, option
from vfl.probes.generate import SUITES, check_suite
from vfl.runner import read_settings

DATA = ("cached", "stream")
OCR_ANSWERS = ("tokens", "letters")  # how OCR answers are tokenized for training: the tokenizer's way, or spelled
PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 autocast on CUDA, the faster by calibration on a CPU
LEGACY = {"lr_lora": "lr_lm", "lora_start": "lm_start"}  # train.json keys before they were named as the flags are
IMAGE_SIZE = 224
PATCH_PX = 14  # DINOv2-S's patch


@dataclass
class NanoSpec:
    """What varies between `nano` variants: which encoder layer(s) feed the projector, and the LoRA."""

    vision_layers: list[int] = option(factory=lambda: [6, 9, 12], read=int_list,
                                      help="DINOv2 layers (1-12) concatenated into the projector")
    shuffle: int = option(2, choices=(1, 2), help="the encoder tokens' pixel shuffle: 2, 64 image tokens of 28 px; "
                                                  "1, 256 of 14 px (the language model reads four times the tokens)")
    lora_rank: int = option(16, help="0: train the projector only (or, with --full, the projector and the whole "
                                     "language model)")
    lora_alpha: int = option(32, help="the LoRA's scale; the command sets it to twice the rank", flag=False)

    @property
    def token_px(self) -> int:
        """The side, in pixels, of the image square one token shows: a patch, times the shuffle."""
        return PATCH_PX * self.shuffle

    @property
    def image_tokens(self) -> int:
        """Image tokens per 224 px image: 64 of 28 px with the 2x2 shuffle, 256 of 14 px without."""
        return (IMAGE_SIZE // self.token_px) ** 2

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


def training_functions(text: str) -> list[str]:
    """"recog,recog,count" as a list, each name checked; a name given twice is kept twice (two stream slots)."""
    from argparse import ArgumentTypeError

    from vfl.probes.schema import parse_functions

    try:
        return parse_functions(text, TRAINING_FUNCTIONS, unique=False)
    except VflError as err:  # read while the command line is parsed: a usage error
        raise ArgumentTypeError(str(err)) from None


@dataclass
class TrainConfig:
    per_function: int = option(1000, help="training images per function (--data cached)")
    steps: int = option(320, help="optimizer steps")
    batch_size: int = option(16, help="samples per step")
    lr_projector: float = option(1e-3, help="the projector's peak learning rate")
    lr_lm: float = option(1e-4, help="the language model's (LoRA or full) peak rate")
    warmup: float = option(0.03, help="share of the steps the rates warm up over, before the cosine decay")
    lm_start: float = option(0.4, help="share of the steps trained on the projector alone before the language "
                                       "model joins (so it cannot learn to answer from priors first)")
    seed: int = option(0, help="data and initialisation seed")
    save_every: int = option(20, help="checkpoint every this many steps")
    spec: NanoSpec = option(factory=NanoSpec, help="the model variant (its own flags)", flag=False)
    data: str = option("cached", choices=DATA,
                       help="cached: --per-function images, encoder features computed once; stream: fresh samples "
                            "every step, rendered by --workers DataLoader workers, encoder run on --device")
    workers: int = option(0, help="DataLoader workers for --data stream")
    full: bool = option(False, help="fine-tune the whole language model (with --lora-rank 0)")
    loss_weights: dict[str, float] | None = option(
        None, read=function_weights, help="per-function weights, e.g. recog=4,count=1 (none: the token mean over "
                                          "the batch)")
    device: str = option("cpu", help="cpu, cuda, ... (bf16 autocast on CUDA)")
    suite: str = option("v1", choices=SUITES, help="v1: the shipped nano's data (`make demo`'s probe styles); v2: "
                                                   "every answer depends on the question (distractors, binding, one "
                                                   "of two words, held-out words)")
    precision: str = option("auto", choices=PRECISIONS,
                            help="forward passes in bf16 autocast or fp32; auto: bf16 on CUDA, and on a CPU the "
                                 "faster of the two by a short timed calibration, kept in train.json")
    functions: list[str] = option(factory=lambda: list(FUNCTIONS), read=training_functions,
                                  help="comma-separated functions trained in turn (e.g. ocr alone); a function named "
                                       "twice takes two slots of each turn (--data stream); suite v2 adds describe "
                                       "(captions) and which (the shapes of one colour, the colours of one shape)")
    ocr_answers: str = option("tokens", choices=OCR_ANSWERS,
                              help="OCR answers as the tokenizer splits them, or spelled one letter token at a time "
                                   "(every held-out word is then made of output tokens trained on)")
    pseudo_words: float = option(0.0, metavar="SHARE",
                                 help="this share of the OCR samples shows random letter strings instead of "
                                      "training words, so reading cannot lean on a memorised word list")
    loose_recognition: float = option(0.0, metavar="SHARE",
                                      help="suite v2: this share of the recognition samples has distractors of any "
                                           "other kind instead of ones sharing the colour or shape")
    align_words: float = option(0.0, metavar="WEIGHT",
                                help="--data stream: also train every image token an object (suite v1: or the word) "
                                     "covers towards its words' embedding, with this weight, so questions find it as "
                                     "they find words (`vfl.nano.align`)")
    align_letters: bool = option(False, help="with --align-words: an OCR image's tokens are aligned too, each to "
                                             "its letter's token and ink, the tokens a spelled answer writes")
    align_functions: list[str] | None = option(
        None, read=training_functions, help="with --align-words: align only these functions' samples (e.g. recog); "
                                            "none: every sample whose image shows objects or words")
    init: str | None = option(None, read=str,
                              help="start from these trained weights (a `vfl nano train` run, its weights/, or "
                                   "src/vfl/nano/weights) instead of a fresh projector and LoRA: to keep training a "
                                   "finished run on a new schedule (their model must be this one), best at lower "
                                   "peak rates than its own, whose warm-up undoes what it learnt last")
    lm_from: str | None = option(None, read=str,
                                 help="read through this trained run's language model (its LoRA; a `vfl nano train` "
                                      "run, its weights/, or src/vfl/nano/weights), kept frozen, and train a fresh "
                                      "projector alone: e.g. one fed from other encoder layers, under a language "
                                      "model that already reads")

    def check(self) -> None:
        """Refuse settings that cannot train, before anything is built."""
        for name in ("steps", "batch_size", "save_every", "per_function"):
            if getattr(self, name) < 1:
                raise VflError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.lm_start < 1:
            raise VflError(f"--lm-start must be in [0, 1), got {self.lm_start}")
        check_suite(self.suite)
        if self.precision not in PRECISIONS:
            raise VflError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.data not in DATA:
            raise VflError(f"--data must be one of {', '.join(DATA)}, got {self.data!r}")
        if self.workers < 0:
            raise VflError(f"--workers must be 0 or more, got {self.workers}")
        if self.full and self.spec.lora_rank:
            raise VflError("--full trains the whole language model; pass --lora-rank 0 with it")
        if self.spec.lora_rank < 0:
            raise VflError(f"--lora-rank must be 0 or more, got {self.spec.lora_rank}")
        for name in ("lr_projector", "lr_lm"):
            if getattr(self, name) <= 0:
                raise VflError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not self.functions or set(self.functions) - set(TRAINING_FUNCTIONS):
            raise VflError(f"--functions takes names of {', '.join(TRAINING_FUNCTIONS)}, got {self.functions}")
        if len(set(self.functions)) < len(self.functions) and self.data != "stream":
            raise VflError("--functions names a function twice (two slots in each turn) only with --data stream; "
                           f"got {self.functions}")
        extra = [f for f in self.functions if f not in FUNCTIONS]
        if extra and self.suite != "v2":
            raise VflError(f"--functions {extra[0]} trains on suite v2's scenes; pass --suite v2 with it")
        if not 0 <= self.pseudo_words <= 1:
            raise VflError(f"--pseudo-words is a share of the OCR samples, in [0, 1]; got {self.pseudo_words}")
        if not 0 <= self.loose_recognition <= 1:
            raise VflError(f"--loose-recognition is a share of the recognition samples, in [0, 1]; "
                           f"got {self.loose_recognition}")
        if self.loose_recognition and self.suite != "v2":
            raise VflError("--loose-recognition draws suite v2's recognition samples; pass --suite v2 with it")
        if self.align_words < 0:
            raise VflError(f"--align-words is a loss weight, 0 or more; got {self.align_words}")
        if self.align_words and self.data != "stream":
            raise VflError("--align-words reads each sample's scene as it is drawn; pass --data stream with it")
        if self.align_letters and not self.align_words:
            raise VflError("--align-letters adds letters to the word alignment; pass --align-words WEIGHT with it")
        if self.align_functions is not None and not self.align_words:
            raise VflError("--align-functions chooses what --align-words aligns; pass --align-words WEIGHT with it")
        if self.align_functions is not None and set(self.align_functions) - set(self.functions):
            raise VflError(f"--align-functions names functions this run does not train: "
                           f"{sorted(set(self.align_functions) - set(self.functions))}")
        if self.ocr_answers not in OCR_ANSWERS:
            raise VflError(f"--ocr-answers must be one of {', '.join(OCR_ANSWERS)}, got {self.ocr_answers!r}")
        if self.init is not None and self.lm_from is not None:
            raise VflError("--init continues a whole run and --lm-from keeps only its language model; pass one")
        if self.init is not None:
            init_weights(self.init, self.spec)
        if self.lm_from is not None:
            if self.full:
                raise VflError("--lm-from keeps the language model frozen; drop --full")
            lm_weights(self.lm_from, self.spec)
        if self.seed == HELD_OUT_SEED:
            raise VflError(f"--seed {HELD_OUT_SEED} draws the held-out items `vfl nano eval` scores; train with another seed")
        unknown = set(self.loss_weights or {}) - set(TRAINING_FUNCTIONS)
        if unknown or any(w < 0 for w in (self.loss_weights or {}).values()):
            raise VflError(f"--loss-weights takes non-negative weights of {', '.join(TRAINING_FUNCTIONS)}, "
                           f"got {self.loss_weights}")


def weights_folder(path: str | Path, flag: str) -> tuple[Path, NanoSpec]:
    """The trained weights a flag names (a run folder or its weights/) and the model they were trained for."""
    folder = Path(path) / "weights" if (Path(path) / "weights" / "spec.json").is_file() else Path(path)
    if not (folder / "spec.json").is_file() or not (folder / "projector.safetensors").is_file():
        raise VflError(f"{flag} {path}: no trained nano weights there (spec.json and projector.safetensors)")
    return folder, NanoSpec(**json.loads((folder / "spec.json").read_text()))


def init_weights(path: str | Path, spec: NanoSpec) -> Path:
    """The weights folder ``--init`` names, refused unless trained for ``spec``."""
    folder, trained = weights_folder(path, "--init")
    if trained != spec:
        differ = sorted(k for k, v in asdict(trained).items() if asdict(spec)[k] != v)
        raise VflError(f"--init {path} holds another model: " + ", ".join(
            f"{k} {getattr(trained, k)} there, {getattr(spec, k)} here" for k in differ))
    if (folder / "language_model.safetensors").exists():
        raise VflError(f"--init {path} is a full fine-tune; --init continues a projector or LoRA run")
    return folder


def lm_weights(path: str | Path, spec: NanoSpec) -> Path:
    """The weights folder ``--lm-from`` names, refused unless it holds a LoRA of ``spec``'s size (the encoder
    layers and projector may differ: only the language model is taken)."""
    folder, trained = weights_folder(path, "--lm-from")
    if not (folder / "lora.safetensors").is_file():
        raise VflError(f"--lm-from {path} holds no trained LoRA (a projector-only run or a full fine-tune); "
                       "--lm-from takes a LoRA run's language model")
    if (trained.lora_rank, trained.lora_alpha) != (spec.lora_rank, spec.lora_alpha):
        raise VflError(f"--lm-from {path} holds a LoRA of rank {trained.lora_rank} (alpha {trained.lora_alpha}); "
                       f"pass --lora-rank {trained.lora_rank}")
    return folder


def saved_settings(path: Path) -> dict:
    """A run's train.json as today's settings (`current_settings`)."""
    return current_settings(read_settings(path))


def current_settings(recorded: dict) -> dict:
    """Training settings recorded by an earlier version as today's: keys renamed since read by their new names,
    settings added since at the defaults that reproduce the run."""
    return {**json.loads(json.dumps(asdict(TrainConfig()))), **{LEGACY.get(k, k): v for k, v in recorded.items()}}


def recorded_config(path: Path) -> TrainConfig:
    """The settings a run trained with (its train.json, e.g. the shipped nano's) as a TrainConfig, so that other
    variants can be trained the same way; what only says how it was carried out (its command line) is left."""
    return config_from(saved_settings(path))


def config_from(settings: dict) -> TrainConfig:
    """A TrainConfig from its settings as JSON holds them (``asdict``): the spec rebuilt, other keys left out."""
    known = {f.name for f in fields(TrainConfig)} - {"spec"}
    return TrainConfig(**{k: v for k, v in settings.items() if k in known}, spec=NanoSpec(**settings["spec"]))
