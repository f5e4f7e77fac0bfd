"""The one exception type for expected failures.

Anything a user can cause (a bad path, a malformed annotation line, a store from another
backbone) raises :class:`AnomalyError` with a message that names the file and the problem.
The CLI prints that message on one line and exits with status 2; anything else is a bug and
keeps its traceback.
"""


class AnomalyError(Exception):
    """An expected, user-facing failure: the message is shown as-is, on one line."""


def shorten(value: object, limit: int = 120) -> str:
    """``str(value)`` cut to ``limit`` characters: what an error may echo of stored text."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, capped: what an error may quote of another."""
    return shorten(" ".join(str(exc).split()) or type(exc).__name__, limit)
