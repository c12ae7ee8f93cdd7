"""The base of every error that is the user's to fix (bad flag, missing data, unloadable
file). Entry points print such an error as one line and exit with code 2; anything else is a
bug and keeps its traceback. This module imports nothing, so checking costs nothing."""


class UserError(Exception):
    """An error whose message names the problem and the fix, shown as one line."""
