"""The one exception type that scripts turn into a one-line error message, and a helper."""


class UserError(Exception):
    """Bad input from the user (file, flag, layer): printed as one line, exit status 2."""


def first_line(exc):
    """The first line of an exception's message (its type name when empty), for one-line errors."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
