"""The project loads no pickles: no pickle module, and np.load always with allow_pickle=False."""

import re

from conftest import ROOT

FORBIDDEN = re.compile(r"allow_pickle\s*=\s*(?!False)\w|^\s*import\s+(c?pickle|dill)\b|"
                       r"^\s*from\s+(c?pickle|dill)\s+import", re.MULTILINE)


def python_sources():
    skip = {".git", ".venv", "build"}
    return [p for p in ROOT.rglob("*.py")
            if not skip.intersection(p.relative_to(ROOT).parts) and "egg-info" not in str(p)]


def test_sources_never_load_pickles():
    offenders = [f"{p.relative_to(ROOT)}: {m.group(0).strip()}"
                 for p in python_sources() for m in FORBIDDEN.finditer(p.read_text())
                 if p.name != "test_no_pickle.py"]
    assert offenders == []


def call_arguments(text, start):
    """The text between the parenthesis opening at `start` and its matching one."""
    depth = 0
    for index in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth == 0:
            return text[start + 1:index]
    return text[start + 1:]


def test_every_np_load_disallows_pickles():
    unsafe = []
    for path in python_sources():
        if path.name == "test_no_pickle.py":
            continue
        text = path.read_text()
        for match in re.finditer(r"\bnp\.load\(", text):
            arguments = call_arguments(text, match.end() - 1)
            if "allow_pickle=False" not in arguments:
                unsafe.append(f"{path.relative_to(ROOT)}: np.load({arguments})")
    assert unsafe == []
