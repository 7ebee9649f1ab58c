"""Opening a user's image: every way it can fail (missing, not an image, truncated, larger than PIL's
decompression-bomb limit) is one `VflError` that names the file and who asked for it."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

from PIL import Image

from vfl.errors import VflError


def read_image(path: Path, owner: str, read: Callable = lambda image: image.convert("RGB")):
    """``read(image)`` of the image at ``path`` (default: the RGB pixels); ``owner`` starts the error,
    e.g. "probe count-0-0001"."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return read(image)
    except FileNotFoundError:
        raise VflError(f"{owner}: image {path} does not exist") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise VflError(f"{owner}: image {path} has more pixels than PIL's safety limit "
                       f"({Image.MAX_IMAGE_PIXELS:,}); resize it first") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise VflError(f"{owner}: image {path} cannot be read ({err})") from None

