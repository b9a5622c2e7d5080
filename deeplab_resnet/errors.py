"""The one exception type that scripts turn into a one-line error message."""


class UserError(Exception):
    """Bad input from the user (file, flag, layer): printed as one line, exit status 2."""
