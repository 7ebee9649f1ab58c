"""The README's commands are the command's own: each `vfl ...` line in its code blocks and lists parses with
today's flags (the commands themselves run in other tests, on tiny models or nano, and in `make demo`)."""

import re
import shlex
from pathlib import Path

import pytest

from vfl.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[str]:
    text = README.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    inline = [c for c in re.findall(r"`(vfl [^`]+)`", text) if "--" in c]  # a name in prose is no command
    return [c for c in lines + inline if c.startswith("vfl ") and "..." not in c and c.split()[1] != "--version"]


def test_the_readme_shows_the_main_commands():
    commands = {c.split()[1] for c in readme_commands()}
    assert {"probes", "locate", "compare", "drop", "lora", "select", "vision-layers", "eval", "nano"} <= commands


@pytest.mark.parametrize("command", readme_commands())
def test_a_readme_command_parses_with_todays_flags(command):
    build_parser().parse_args(shlex.split(command)[1:])  # argparse exits on an unknown flag or a bad value
