"""The library's typed errors: each message is one complete line, as raised; and the text
helpers of every message and progress line (`shown`, `counted`, `progress_line`).

    DeepLabError            anything the caller did or gave that cannot be used
    ├── BadFileError        a file that is missing, unreadable or holds the wrong thing (`.path`)
    ├── SettingError        a bad value of a setting, a config field (`.field`, `.fields`)
    └── WriteError          an output could not be written (disk full, permissions; `.path`);
                            also an `OSError`

The command line prints `error: <message>` and exits 2 (1 for `WriteError`),
showing settings as its flags (`SettingError.naming`; log messages that name
settings are `NamingSettings`).
"""

import re


class DeepLabError(Exception):
    """Base of the library's errors; its message is one line that names what is wrong
    (unprintable characters escaped, at most `MESSAGE_LENGTH` characters: `shown`).

    Args:
        message: the complete message.
        path: the file concerned, when there is one (else None).
    """

    def __init__(self, message, path=None):
        super().__init__(shown(message, limit=MESSAGE_LENGTH))
        self.path = None if path is None else str(path)


class BadFileError(DeepLabError):
    """A file given to the library is missing, unreadable or holds the wrong thing.

    Attributes:
        path: the file (a checkpoint prefix for checkpoints).
    """


class SettingError(DeepLabError):
    """A bad value of a setting (a config field), named in the message.

    The library names settings by their config field (`snapshot_dir`); the
    command line shows them as its flags (`--snapshot-dir`). The message is a
    template holding `{field}` for each field named, e.g.
    `SettingError("{snapshot_dir} /out: folder is not writable", "snapshot_dir")`;
    as raised, each `{field}` reads as the field's name.

    Args:
        template: the message, with `{field}` where a field is named.
        *fields: the fields the message names.
        path: the file concerned, when there is one.

    Attributes:
        fields: the fields named; `field` is the first (None when none is).
    """

    def __init__(self, template, *fields, path=None):
        self.template = template
        self.fields = fields
        super().__init__(self.naming(lambda field: field), path=path)

    @property
    def field(self):
        return self.fields[0] if self.fields else None

    def naming(self, name_of):
        """The message with each field shown as `name_of(field)` (e.g. its flag)."""
        return name_fields(self.template, self.fields, name_of)


def name_fields(template, fields, name_of=str):
    """`template` with each `{field}` of `fields` shown as `name_of(field)` (default: the field).

    For every message that names settings: `SettingError` and `NamingSettings`.
    """
    for field in fields:
        template = template.replace("{" + field + "}", name_of(field))
    return shown(template, limit=MESSAGE_LENGTH)


class NamingSettings:
    """A log message that names settings, as a `SettingError` does: logged as the record's
    message object (`log.info(NamingSettings("... {num_steps} ...", "num_steps"))`), it reads
    with the fields' names; a handler shows it another way with `naming` (the commands: their
    flags).

    Args:
        template: the message, with `{field}` where a field is named.
        *fields: the fields the message names.
    """

    def __init__(self, template, *fields):
        self.template = template
        self.fields = fields

    def naming(self, name_of):
        """The message with each field shown as `name_of(field)`."""
        return name_fields(self.template, self.fields, name_of)

    def __str__(self):
        return self.naming(str)


class WriteError(DeepLabError, OSError):
    """An output file could not be written; nothing partial is left behind.

    Args:
        path: the file that was being written.
        reason: why (e.g. "No space left on device").
    """

    def __init__(self, path, reason):
        DeepLabError.__init__(self, f"{path}: {reason}", path=path)
        self.filename = str(path)
        self.strerror = reason

    __str__ = DeepLabError.__str__  # "<path>: <reason>", not OSError's "[Errno None] ..."


SHOWN_LENGTH = 160  # characters of a name or a file's contents that a message shows
MESSAGE_LENGTH = 1000  # characters of a whole message (its names and contents cut before)


def shown(value, limit=SHOWN_LENGTH):
    """`value` as a message shows it: control characters, NUL and other unprintable
    characters escaped (`\\x00`, `\\n`), and cut to `limit` characters.

    For every name or content from outside (paths, a file's text, a value read from a
    file) that a message echoes: a message stays one readable line.
    """
    text = str(value)
    escaped = "".join(char if char.isprintable() else char.encode("unicode_escape", "replace")
                      .decode("ascii") for char in text)
    if len(escaped) <= limit:
        return escaped
    return f"{escaped[:limit]}... ({len(text)} characters)"


def counted(number, noun, plural=None):
    """'1 image', '2 images' (`plural`: for nouns that do not take an s)."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def duration(seconds):
    """A duration to show: '42 s', '3.5 min' or '2.1 h'."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def progress_line(name, noun, done, total, details=(), images_per_second=None,
                  seconds_left=None):
    """A progress line, in the one format of every command and of the training's log:
    'train.py: update 4/10, loss 0.1250, learning rate 0.001, 0.16 images/s, ETA 2.5 min'.

    Args:
        name: the script ("train.py", "evaluate.py").
        noun: what is counted ("update", "image").
        done, total: how many are done, of how many.
        details: further "name value" parts.
        images_per_second, seconds_left: the rate and the time left (None: not shown).
    """
    parts = [f"{name}: {noun} {done}/{total}", *details]
    if images_per_second is not None:
        parts.append(f"{images_per_second:.2f} images/s")
    if seconds_left is not None:
        parts.append(f"ETA {duration(seconds_left)}")
    return ", ".join(parts)


def first_line(exc):
    """The first line of an exception's message (its type name when empty), for one-line errors."""
    lines = str(exc).strip().splitlines()
    return shown(lines[0], limit=400) if lines else type(exc).__name__


def tensorflow_reason(exc):
    """`first_line(exc)` without the wrappers TensorFlow adds around an op's failure: the
    leading `{{function_node __wrapped__RestoreV2...}}` and the trailing ` [Op:RestoreV2]`."""
    line = first_line(exc)
    if line.startswith("{{function_node") and "}}" in line:
        line = line.partition("}}")[2].strip()
    return re.sub(r"\s*\[Op:\w+\]$", "", line) or first_line(exc)
