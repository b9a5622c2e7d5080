"""`--help` of every command: wall time of the whole process, against importing TensorFlow.

Each command's script runs as a child process (`python <script>.py --help`, its output
discarded), `--repeats` times, and the table shows the median wall and CPU seconds (the
CPU time, user + system, is the figure that holds on a shared machine); the peer, in the
same run, is a child that only imports TensorFlow (`python -c "import tensorflow"`), what
every `--help` waited for before issue 26 (about 3 s on this machine). The parsers are
built without TensorFlow, so `--help` should take a small fraction of it.

Machine: AMD EPYC Zen 4, AVX-512 + AVX512-BF16 + AVX512-VNNI, no AMX, 2 cores.

Usage:
    python benchmarks/bench_help.py [--repeats 3] [--commands train,evaluate,...]
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ("train", "train_msc", "fine_tune", "evaluate", "inference", "export", "convert",
            "demo")


def seconds(argv, repeats):
    """(median wall seconds, median CPU seconds) of `argv` run `repeats` times (it must
    succeed). The CPU time (user + system of the child) holds on a loaded machine."""
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--commands", default=",".join(COMMANDS))
    args = parser.parse_args()
    peer = seconds([sys.executable, "-c", "import tensorflow"], args.repeats)
    print("machine: AMD EPYC Zen 4, AVX-512 + AVX512-BF16 + AVX512-VNNI, no AMX, 2 cores; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'command':<24}{'wall s':>8}{'CPU s':>8}{'CPU x import tensorflow':>25}")
    print(f"{'import tensorflow':<24}{peer[0]:>8.2f}{peer[1]:>8.2f}{1.0:>25.2f}")
    for command in args.commands.split(","):
        wall, cpu = seconds([sys.executable, f"{command}.py", "--help"], args.repeats)
        print(f"{command + '.py --help':<24}{wall:>8.2f}{cpu:>8.2f}{cpu / peer[1]:>25.2f}")


if __name__ == "__main__":
    main()
