"""The one exception type for expected failures.

Anything a user can cause (a bad path, a malformed annotation line, a store from another
backbone) raises :class:`AnomalyError` with a message that names the file and the problem.
The CLI prints that message on one line and exits with status 2; anything else is a bug and
keeps its traceback.
"""


class AnomalyError(Exception):
    """An expected, user-facing failure: the message is shown as-is, on one line."""
