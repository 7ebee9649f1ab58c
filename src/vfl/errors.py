"""One exception type for everything a user can get wrong; the CLI prints its message and exits 2."""

import functools
import os
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


def model_not_found(spec: str, download: bool, detail: str = "") -> VflError:
    """The one sentence for a model spec that names nothing loadable: a path (``/x``, ``./x``, ``a/b/c``) is
    told it does not exist, where the hub-cache advice (``--download``) would send its user the wrong way."""
    if os.path.isabs(spec) or spec.startswith((".", "~")) or spec.count("/") > 1:
        return VflError(f"cannot load model {spec!r}: there is no such directory")
    where = "a hub id" if download else "a hub id in the local cache (pass --download to fetch it)"
    return VflError(f"cannot load model {spec!r}: it is not {where}, nor a local directory"
                    + (f" ({detail})" if detail else ""))
