"""The long fuzzing campaign for release checks: thousands of the cases of tests/test_fuzz.py.

    python tests/fuzz_campaign.py --cases 5000 --seed 1

Runs the cases in a child process, so a case that aborts the process (a signal, e.g.
SIGABRT from TensorFlow) is reported by number and the campaign goes on with the next.
Prints every failing case (kind, file, mutation, what went wrong) and a summary; exits 1
when any case failed. Rerun one case with `--cases 1 --first N`; turn each failure into a
named regression test.
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]


def worker(corpus, seed, first, last, scratch):
    """Runs cases first..last-1, printing `start N` before each and `fail N ...` after bad ones."""
    import fuzzing
    if not (corpus / "reference").exists():
        fuzzing.build_corpus(corpus)
    for index in range(first, last):
        print(f"start {index}", flush=True)
        folder = scratch / str(index)
        fuzzing.remove(folder)
        case, problems, err = fuzzing.run_case(corpus, seed, index, folder)
        if problems:
            shown = err.strip().replace("\n", " | ")[:300]
            print(f"fail {index} {case.what}: {problems}: {shown}", flush=True)
        fuzzing.remove(folder)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--first", type=int, default=0, help="number of the first case")
    parser.add_argument("--worker", nargs=2, metavar=("CORPUS", "SCRATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    last = args.first + args.cases
    if args.worker:
        worker(pathlib.Path(args.worker[0]), args.seed, args.first, last,
               pathlib.Path(args.worker[1]))
        return 0
    failures, first = [], args.first
    with tempfile.TemporaryDirectory(prefix="deeplab-fuzz-") as tmp:
        corpus, scratch = pathlib.Path(tmp, "corpus"), pathlib.Path(tmp, "cases")
        corpus.mkdir()
        while first < last:
            child = subprocess.run(
                [sys.executable, __file__, "--worker", str(corpus), str(scratch), "--seed",
                 str(args.seed), "--first", str(first), "--cases", str(last - first)],
                stdout=subprocess.PIPE, text=True)
            started = first - 1
            for line in child.stdout.splitlines():
                word, _, rest = line.partition(" ")
                if word == "start":
                    started = int(rest)
                elif word == "fail":
                    failures.append(rest)
                    print("FAIL", rest, flush=True)
            if child.returncode == 0:
                break
            failures.append(f"{started} ended the process (status {child.returncode})")
            print("FAIL", failures[-1], flush=True)
            first = started + 1
    print(f"{args.cases} cases (seed {args.seed}, first {args.first}): {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
