"""The one exception type that scripts turn into a one-line error message, and a helper."""


class UserError(Exception):
    """Bad input from the user (file, flag, layer): printed as one line, exit status 2."""


def first_line(exc):
    """The first line of an exception's message (its type name when empty), for one-line errors."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class Stopped(Exception):
    """A run stopped on request (a signal) after saving its state: printed as one line
    `error: ...`, exit status `exit_status` (128 + the signal number)."""

    def __init__(self, message, exit_status):
        super().__init__(message)
        self.exit_status = exit_status
