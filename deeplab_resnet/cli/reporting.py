"""How the commands show the library's log records: the library logs, the command line prints.

The library logs through `logging.getLogger("deeplab_resnet")` and its children and never
prints. A command installs `reporting()` around its work: INFO records are its report on
stdout (what was loaded, what was written), and so are the records logged with
`extra={"progress": True}` (periodic progress, notices along the way); WARNING and above go to
stderr. Both are written through tqdm, so that they do not break a progress bar (on stdout).
Messages are shown as they are, with no level or logger prefix; a message that names settings
(`errors.NamingSettings`, as a `SettingError` does) is shown with the command's flags.
"""

import contextlib
import logging
import sys

from tqdm import tqdm

from deeplab_resnet.errors import NamingSettings

LIBRARY_LOGGER = "deeplab_resnet"


class _CommandHandler(logging.Handler):
    """Writes each record's message to stdout (report, progress) or stderr (warnings)."""

    def __init__(self, name_of):
        super().__init__()
        self.name_of = name_of

    def emit(self, record):
        try:
            if isinstance(record.msg, NamingSettings):
                message = record.msg.naming(self.name_of)
            else:
                message = self.format(record)
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            tqdm.write(message, file=stream)
            stream.flush()
        except Exception:  # noqa: BLE001 - logging must never raise into the work
            self.handleError(record)


@contextlib.contextmanager
def reporting(level=logging.INFO, name_of=str):
    """Shows the library's log records on the terminal while the block runs.

    Args:
        level: the least level shown.
        name_of: how messages show a setting (the command line: its flag).
    """
    logger = logging.getLogger(LIBRARY_LOGGER)
    handler = _CommandHandler(name_of)
    handler.setFormatter(logging.Formatter("%(message)s"))
    previous_level, previous_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # a root handler (e.g. absl's) would print it twice
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
        logger.propagate = previous_propagate
