"""The exception types that commands turn into one-line error messages, and a helper."""


class UserError(Exception):
    """Bad input from the user (file, setting, layer): printed as one line, exit status 2."""


class SettingError(UserError):
    """A bad value of a setting (a config field), named in the message.

    The library names settings by their config field (`snapshot_dir`); the
    command line shows them as its flags (`--snapshot-dir`). The message is a
    template holding `{field}` for each field named, e.g.
    `SettingError("{snapshot_dir} /out: folder is not writable", "snapshot_dir")`.

    Args:
        template: the message, with `{field}` where a field is named.
        *fields: the fields the message names.
    """

    def __init__(self, template, *fields):
        self.template = template
        self.fields = fields
        super().__init__(self.naming(lambda field: field))

    def naming(self, name_of):
        """The message with each field shown as `name_of(field)` (e.g. its flag)."""
        message = self.template
        for field in self.fields:
            message = message.replace("{" + field + "}", name_of(field))
        return message


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
