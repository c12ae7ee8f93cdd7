"""The base of every error that is the user's to fix (bad flag, missing data, unloadable
file). Entry points print such an error as one line and exit with code 2; anything else is a
bug and keeps its traceback. This module imports nothing, so checking costs nothing."""


class UserError(Exception):
    """An error whose message names the problem and the fix, shown as one line."""


def first_line(error, limit=200):
    """An exception's first line (its type's name if it has no text), for one-line messages."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:limit]
