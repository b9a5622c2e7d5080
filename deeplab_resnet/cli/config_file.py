"""`--config FILE.toml`: a command's flags read from a TOML file (train, train_msc, fine_tune,
evaluate).

The keys are the command's long flag names with `-` as `_` (`data_dir = "VOC"` is
`--data-dir VOC`); a switch takes `true` or `false`, a list of numbers is a comma list
(`input_size = [321, 321]` is `--input-size 321,321`). The file's flags come first and the
command line's after them, so a flag given on the command line wins. A key that is not a
flag of the command, a value of the wrong kind or a value its flag refuses is one line
naming the key and the file.

Example (configs/own_dataset.toml):

    data_dir = "my_data"
    data_list = "my_data/lists/folders_train.txt"
    num_classes = 3
    input_size = [321, 321]
    random_mirror = true
"""

import argparse
import os
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from deeplab_resnet.errors import DeepLabError

FLAG = "--config"


def add_config_arg(parser):
    """--config FILE.toml on `parser`."""
    parser.add_argument(FLAG, metavar="FILE.toml", default=None,
                        help="read flags from a TOML file: keys are the long flag names with "
                             "'-' as '_' (e.g. data_dir = \"VOC\", input_size = [321, 321], "
                             "random_mirror = true); flags on the command line win "
                             "(see configs/)")


def parse_args(parser, argv=None):
    """`parser.parse_args(argv)` with the flags of the `--config` file, if any, before argv's."""
    argv = sys.argv[1:] if argv is None else list(argv)
    finder = argparse.ArgumentParser(add_help=False)
    finder.add_argument(FLAG, default=None)
    path = finder.parse_known_args(argv)[0].config
    if path is None:
        return parser.parse_args(argv)
    return parser.parse_args(config_tokens(parser, path) + argv)


def read(path):
    """The table of a TOML file; a one-line DeepLabError when it cannot be read or parsed."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise DeepLabError(f"{FLAG} {path}: no such file") from None
    except OSError as exc:
        raise DeepLabError(f"{FLAG} {path}: cannot read ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DeepLabError(f"{path}: not valid TOML ({exc})") from None


def flag_keys(parser):
    """{config key: argparse action} of a parser's long flags (--help and --config excepted)."""
    keys = {}
    for action in parser._actions:
        for option in action.option_strings:
            if option.startswith("--") and option not in ("--help", FLAG):
                keys[option[2:].replace("-", "_")] = action
    return keys


def config_tokens(parser, path):
    """The command-line tokens of a config file's keys, each checked as its flag checks it."""
    keys = flag_keys(parser)
    tokens = []
    for key, value in read(path).items():
        action = keys.get(key)
        if action is None:
            raise DeepLabError(f"{path}: unknown key '{key}': not a flag of {parser.prog} "
                               "(keys are the long flag names with '-' as '_', e.g. data_dir)")
        tokens += _tokens(path, key, action, value)
    return tokens


def _tokens(path, key, action, value):
    """The tokens of one key: the flag alone for a true switch, else the flag and its value."""
    option = "--" + key.replace("_", "-")
    if action.nargs == 0:
        if not isinstance(value, bool):
            raise DeepLabError(f"{path}: key '{key}' is a switch: give true or false, "
                               f"got {value!r}")
        return [option] if value else []
    if isinstance(value, list) and all(_scalar(v) for v in value) and value:
        text = ",".join(str(v) for v in value)
    elif _scalar(value):
        text = str(value)
    else:
        raise DeepLabError(f"{path}: key '{key}' takes a number, a string or a list of them, "
                           f"got {value!r}")
    _check(path, key, action, text)
    return [option, text]


def _scalar(value):
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _check(path, key, action, text):
    """The value as the flag would read it: its type and choices."""
    try:
        parsed = action.type(text) if callable(action.type) else text
    except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
        raise DeepLabError(f"{path}: key '{key}': {exc}") from None
    if action.choices is not None and parsed not in action.choices:
        raise DeepLabError(f"{path}: key '{key}' must be one of "
                           f"{', '.join(map(str, action.choices))}, got {text!r}")


def shown(path):
    """A config file's path as the run record and reports keep it (absolute), or None."""
    return None if path is None else os.path.abspath(path)
