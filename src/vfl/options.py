"""A config dataclass is its own command line: each field says, beside its default, its help and how the command
reads it (as PEFT's `LoraConfig` keeps each field's help beside its default), and `add_options` makes the flags
from the fields, so no flag is named or mapped by hand: ``lm_start`` is ``--lm-start``."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Callable


def option(default=dataclasses.MISSING, *, help: str, factory: Callable | None = None, read: Callable | None = None,
           choices: tuple | None = None, metavar: str | None = None, flag: bool = True):
    """A config field: its default (or ``factory``), its ``help``, how its command-line text is ``read`` (default:
    the field's own type), its ``choices`` and ``metavar``; ``flag`` False keeps it off the command line."""
    metadata = {"help": help, "read": read, "choices": choices, "metavar": metavar, "flag": flag}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def add_options(parser: argparse.ArgumentParser, config: type, skip: tuple[str, ...] = ()) -> None:
    """One flag per field of the dataclass ``config`` (``--field-name``), with its default and help; a bool field is
    a switch; nested dataclasses and fields in ``skip`` or made with ``flag=False`` are left out."""
    defaults = config()
    for spec in dataclasses.fields(config):
        meta = spec.metadata
        if spec.name in skip or not meta.get("flag", False):
            continue
        default = getattr(defaults, spec.name)
        name = "--" + spec.name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(name, action="store_true", help=meta["help"])
            continue
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        parser.add_argument(name, type=meta["read"] or type(default), default=shown if meta["read"] else default,
                            choices=meta["choices"], metavar=meta["metavar"], help=meta["help"])


def from_options(args: argparse.Namespace, config: type, **given):
    """The dataclass ``config`` built from the parsed flags that `add_options` made, and ``given`` values."""
    names = {spec.name for spec in dataclasses.fields(config)
             if spec.metadata.get("flag", False) and hasattr(args, spec.name)}
    return config(**{name: getattr(args, name) for name in names}, **given)


def int_list(text: str) -> list[int]:
    """"6,9,12" as [6, 9, 12] (an argparse type: a bad list is a usage error)."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer numbers, got {text!r}") from None


def function_weights(text: str) -> dict[str, float]:
    """"recog=4,count=1" as {"recog": 4.0, "count": 1.0} (an argparse type: a bad pair is a usage error)."""
    try:
        return {k.strip(): float(v) for k, v in (part.split("=") for part in text.split(",") if part.strip())}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected function=weight pairs such as recog=4,count=1, got {text!r}") from None
