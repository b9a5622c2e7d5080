"""The command-line layer: shared flags, defined once, and the one entry point `run`
(`run_and_exit` for a command's own process).

One module per command (`train`, `evaluate`, `inference`, `export`, `convert`,
`demo`, ...); each has `main(argv)` and `entry()`, the console script that
`pip install` creates (see pyproject.toml), which the top-level scripts also
call. `run` loads TensorFlow (quietly, `tf_quiet`) before the command's `main`
for every command that uses the network, so their `--help` waits for
TensorFlow too; the command modules import the library only inside `main`, so
that importing them stays light and TensorFlow's start-up notices never reach
stderr (bad input gives exactly one line there). The library itself is the
Python API (`deeplab_resnet.Segmenter`, `convert`, `train`); this layer only
turns flags into its arguments, prints, and exits.
"""

import argparse
import contextlib
import difflib
import functools
import logging
import os
import re
import sys

from deeplab_resnet import defaults, settings
from deeplab_resnet.model.arch import VARIANTS
from deeplab_resnet.cli import tf_quiet
from deeplab_resnet.cli.reporting import reporting
from deeplab_resnet.errors import DeepLabError, SettingError, WriteError, shown
from deeplab_resnet.files import writable_dir

# Config fields whose flag is not `--` + the field name with dashes.
FLAG_NAMES = {"variant": "--model", "new_head": "--not-restore-last", "train_bn": "--is-training",
              "npz_path": "--data-output-path", "code_path": "--code-output-path",
              "config_file": "--config"}


# Settings that name a place: when one that was not given fails, the message says that the
# place is the flag's default (a user may not know that there is one).
PLACES = ("data_dir", "data_list", "snapshot_dir")
# {flag: default} of the `PLACES` flags that the last parse (`ArgumentParser`) of this
# command (`run` forgets them first) took as not typed, for `flag_message`.
_untyped_places = {}


class Stopped(Exception):
    """A run stopped on request (a signal) after saving its state: printed as one line
    `error: ...`, exit status `exit_status` (128 + the signal number)."""

    def __init__(self, message, exit_status):
        super().__init__(message)
        self.exit_status = exit_status


def flag_name(field):
    """The command-line flag of a config field (`snapshot_dir` -> `--snapshot-dir`)."""
    return FLAG_NAMES.get(field, "--" + field.replace("_", "-"))


def flag_message(exc):
    """A `SettingError`'s message with its settings shown as flags; one that starts with a
    place (`PLACES`) whose flag was not typed says that it is the default:
    '--data-dir /home/VOCdevkit: no such folder (the default, as --data-dir was not given;
    give --data-dir)'."""
    message = exc.naming(flag_name)
    field = exc.field
    default = _untyped_places.get(flag_name(field))
    if field in PLACES and exc.template.startswith("{" + field + "}") and default is not None \
            and message.startswith(f"{flag_name(field)} {default}"):
        message += f" (the default, as {flag_name(field)} was not given; give {flag_name(field)})"
    return message


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's error format: one line `error: ...`, exit status 2.

    (argparse's own prints the usage block first; `--help` still shows it.) Flags are
    never abbreviated (`--restore` is not `--restore-from`); an unknown flag is told the
    closest known one; a value that starts with a minus sign (`--input-size -5,64`) is read
    as the flag's value, so that its own check explains what is wrong with it.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        unknown = "unrecognized arguments: "
        if message.startswith(unknown):
            message += self._did_you_mean(message[len(unknown):].split())
        self.exit(2, f"error: {self.prog}: {shown(message, limit=400)} (see --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        args = self._negative_values_joined(sys.argv[1:] if args is None else list(args))
        typed = {arg.split("=", 1)[0] for arg in args if arg.startswith("--")}
        _untyped_places.clear()
        _untyped_places.update(
            (action.option_strings[0], action.default) for action in self._actions
            if action.dest in PLACES and action.option_strings and action.default is not None
            and not typed & set(action.option_strings))
        return super().parse_known_args(args, namespace)

    def _negative_values_joined(self, args):
        """`--flag -5,64` as `--flag=-5,64` for flags that take one value (argparse would read
        the value as a flag and say "expected one argument")."""
        joined, i = [], 0
        while i < len(args):
            action = self._option_string_actions.get(args[i])
            following = args[i + 1] if i + 1 < len(args) else ""
            if (action is not None and action.nargs is None and action.option_strings
                    and re.match(r"-[\d.]", following)):
                joined.append(f"{args[i]}={following}")
                i += 2
                continue
            joined.append(args[i])
            i += 1
        return joined

    def _did_you_mean(self, unknown):
        """' (did you mean --num-classes?)' for the first unknown flag close to a known one."""
        flags = [flag for flag in self._option_string_actions if flag.startswith("--")]
        for arg in unknown:
            if arg.startswith("--"):
                close = difflib.get_close_matches(arg.split("=", 1)[0], flags, n=1, cutoff=0.6)
                if close:
                    return f" (did you mean {close[0]}?)"
        return ""


def flag_type(parse, rule, syntax):
    """An argparse type: `parse` the text (a ValueError: "expected <syntax>"), then apply the
    library's `rule` (`deeplab_resnet.settings`): the one check of the value, at parse time."""
    def convert(text):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {syntax}, got '{text}'") from None
        if not rule.accept(value):
            raise argparse.ArgumentTypeError(f"expected {rule.wanted}, got '{text}'")
        return value

    return convert


def _comma_separated(cast):
    return lambda text: tuple(cast(v) for v in text.split(","))


def _names(text):
    return tuple(name.strip() for name in text.split(","))


input_size = flag_type(_comma_separated(int), settings.INPUT_SIZE, "'H,W' (e.g. 321,321)")
size_pair = flag_type(_comma_separated(int), settings.SIZE_PAIR, "'H,W' (e.g. 513,513)")
scales = flag_type(_comma_separated(float), settings.SCALES, "comma-separated numbers")
class_names = flag_type(_names, settings.CLASS_NAMES, "comma-separated names")
positive_int = flag_type(int, settings.POSITIVE_INT, "an integer")
non_negative_int = flag_type(int, settings.NON_NEGATIVE_INT, "an integer")
positive_float = flag_type(float, settings.POSITIVE_NUMBER, "a number")
non_negative_float = flag_type(float, settings.NON_NEGATIVE_NUMBER, "a number")
unit_interval = flag_type(float, settings.FRACTION, "a number")
label_value = flag_type(int, settings.LABEL_VALUE, "an integer")
fraction = flag_type(float, settings.OHEM_FRACTION, "a number")


def typed(value):
    """A flag's value as it is typed: (321, 321) -> '321,321', (1.0, 0.75) -> '1.0,0.75'."""
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)


WEIGHTS_HELP = ("checkpoint prefix or folder of checkpoints, .caffemodel, .npz (convert.py), "
                "the 2017 TF port's deeplab_resnet.ckpt / model.ckpt-N, or a .tflite / .onnx "
                "file written by export.py")


def add_model_args(parser):
    """--model, --num-classes (both default to what the checkpoint records), --prototxt and
    --classes."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", choices=sorted(VARIANTS), default=None,
                       help=f"network variant (default: the checkpoint's, else {defaults.VARIANT})")
    group.add_argument("--num-classes", type=positive_int, default=None,
                       help=f"number of classes (default: the checkpoint's, else "
                            f"{defaults.NUM_CLASSES})")
    group.add_argument("--prototxt", default=None,
                       help="deploy prototxt for a .caffemodel "
                            "(default: the project's own for --model)")
    add_classes_arg(group)
    return group


CLASSES_HELP = ("classes file: one 'R G B name' line per class, in class order ('#' "
                "comments); --num-classes follows from it")


def add_classes_arg(parser, help=CLASSES_HELP):
    """--classes FILE: the classes' names and colours."""
    parser.add_argument("--classes", metavar="FILE", default=None, help=help)


def add_data_args(parser, data_dir=None, data_list=None):
    group = parser.add_argument_group("data")
    group.add_argument("--data-dir", default=data_dir,
                       help="folder the paths of the list file are relative to (default: "
                            f"{data_dir or 'none: the paths are read as written'})")
    group.add_argument("--data-list", default=data_list,
                       help="list file: 'IMAGE_PATH LABEL_PATH' per line"
                            + (f" (default: {data_list})" if data_list else ""))
    group.add_argument("--ignore-label", type=label_value, default=defaults.IGNORE_LABEL,
                       help="label value that is not scored (default: %(default)s)")
    return group


def add_device_args(parser):
    """--tf32 and --memory-growth, for every command that runs the network."""
    group = parser.add_argument_group("devices")
    group.add_argument("--tf32", action="store_true",
                       help="let float32 convolutions and matrix products run as TF32 on GPUs "
                            "of compute capability >= 8.0 (faster, ~1e-3 relative error); "
                            "default: true float32, the numbers Caffe computes")
    group.add_argument("--memory-growth", action="store_true",
                       help="take GPU memory as needed instead of all of it, so that other "
                            "processes can share the GPU (evaluation beside training, several "
                            "workers); the same as TF_FORCE_GPU_ALLOW_GROWTH=true")
    return group


def use_devices(args):
    """Applies the flags of `add_device_args` and `DEEPLAB_LOGICAL_CPUS` (process-wide, before
    TensorFlow uses a device) and logs the devices in use, as a command's first line."""
    from deeplab_resnet.runtime import devices  # TensorFlow: cli.run has loaded it quietly
    devices.use_logical_cpus()
    devices.use_tf32(args.tf32)
    if args.memory_growth:
        devices.use_memory_growth()
    devices.log_devices()


def flag_errors(function):
    """Lets a command's errors name flags: a `SettingError` leaves as a `DeepLabError` whose
    message shows each setting as its flag (for callers of `main` other than `run`)."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except SettingError as exc:
            raise DeepLabError(flag_message(exc)) from None
    return wrapper


def check_writable_dir(path, flag):
    """Creates `path` if needed; a one-line error naming `flag` if it cannot be written."""
    try:
        return writable_dir(path, "dir")
    except SettingError as exc:
        raise DeepLabError(exc.naming(lambda field: flag)) from None


@contextlib.contextmanager
def new_folders_removed_on_failure(*paths):
    """Runs the block; when it fails, removes each of `paths` (None: no folder) that the
    block created and left empty.

    For output folders made before the work starts (e.g. --snapshot-dir): a
    failed run leaves no empty folder behind, while one holding files (a
    checkpoint saved before the failure) is kept.
    """
    new = [path for path in paths if path is not None and not os.path.lexists(path)]
    try:
        yield
    except BaseException:
        for path in new:
            if os.path.isdir(path) and not os.listdir(path):
                os.rmdir(path)
        raise


def exit_status(exc):
    """The process exit status of a `SystemExit`, as the interpreter sets it: 0 for
    `sys.exit()`, the number of `sys.exit(n)`, 1 for `sys.exit("message")`."""
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


def asks_for_help(argv):
    """Whether the arguments hold -h or --help (before a `--`): the command only prints."""
    for arg in argv:
        if arg == "--":
            return False
        if arg in ("-h", "--help"):
            return True
    return False


def run_and_exit(main):
    """A network command's process: `run(main)`, then leave at once with its exit status.

    The process leaves without the interpreter's shutdown: after an error stopped the
    work mid-batch, TensorFlow's threads (tf.data decoders that run Python) can deadlock
    it, and the command would print its error and never end. Everything is done by then:
    files are closed and renamed into place, the summary writer flushed; the standard
    streams and `logging` are flushed here. A bug keeps its traceback.
    """
    try:
        run(main)
        status = 0
    except SystemExit as exc:
        if not isinstance(exc.code, (int, type(None))):  # as the interpreter shows it
            print(exc.code, file=sys.stderr)
        status = exit_status(exc)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    logging.shutdown()
    os._exit(status)


def run(main, argv=None, tensorflow=True):
    """Runs `main(argv)`; bad input and environment failures become one line on stderr.

    With `tensorflow` (commands that use the network) TensorFlow is loaded
    first, quietly (`tf_quiet`), unless the arguments ask for `--help` (the parsers are
    built without TensorFlow); light tools pass False and start fast. The library's
    log records are shown while `main` runs (`reporting`).
    DeepLabError (bad input): `error: ...`, exit 2. Operating-system errors (disk
    full, permissions) and running out of host or device memory: `error: ...`,
    exit 1. A run stopped by a signal after saving (`Stopped`): `error: ...`,
    exit 128 + the signal number. Anything else is a bug and keeps its traceback.
    """
    _untyped_places.clear()
    try:
        if tensorflow and not asks_for_help(sys.argv[1:] if argv is None else argv):
            tf_quiet.import_tensorflow()
        with reporting(name_of=flag_name):
            status = main(argv)
    except SettingError as exc:
        print(f"error: {flag_message(exc)}", file=sys.stderr)
        sys.exit(2)
    except WriteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except DeepLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Stopped as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_status)
    except OSError as exc:  # disk full, permissions, ... met while reading or writing
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {shown(f'{where}{exc.strerror or exc}', limit=1000)}", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:
        tf = sys.modules.get("tensorflow")  # only when the script loaded it
        out_of_memory = isinstance(exc, MemoryError) or (
            tf is not None and isinstance(exc, tf.errors.ResourceExhaustedError))
        if not out_of_memory:
            raise
        print("error: out of memory (try a smaller --batch-size or --input-size)", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)
