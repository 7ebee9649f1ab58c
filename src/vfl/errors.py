"""One exception type for everything a user can get wrong; the CLI prints its message and exits 2."""


class VflError(Exception):
    """A user-facing error: its message is one sentence that says what is wrong and what to do."""
