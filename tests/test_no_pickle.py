"""The project loads no pickles: no pickle import, no allow_pickle=True, anywhere."""

import re

from conftest import ROOT

FORBIDDEN = re.compile(r"allow_pickle\s*=\s*True|^\s*import\s+(c?pickle|dill)\b|"
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


def test_every_np_load_disallows_pickles():
    calls = [(p, m) for p in python_sources()
             for m in re.finditer(r"np\.load\(([^)]*)\)", p.read_text())]
    unsafe = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p, m in calls
              if "allow_pickle=False" not in m.group(1)]
    assert unsafe == []
