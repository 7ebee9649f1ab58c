"""One exception type for everything a user can get wrong; the CLI prints its message and exits 2."""

import functools
import re


class VflError(Exception):
    """A user-facing error: its message is one sentence that says what is wrong and what to do."""


_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")


def in_python_terms(function):
    """``function`` whose `VflError`s name its arguments (``window=``) where the checks it shares with the
    command name the command's flags (``--window``): a notebook user passed no flag."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except VflError as err:
            raise VflError(_FLAG.sub(lambda m: m.group(1).replace("-", "_") + "=", str(err))) from None

    return wrapper
