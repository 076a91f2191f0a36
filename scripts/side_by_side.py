"""Two `segen train` runs started together on one machine, against one alone (docs/benchmarks.md, "Threads").

Interleaves: alone, pair (core sharing, the default), pair with `perf.threads=<cores>` (each run
takes every core, as before core sharing), repeated `--repeats` times. Prints each run's wall and
CPU time (from the child's rusage) and the pair/alone wall ratio. Run it on a quiet machine:
    python scripts/side_by_side.py [--repeats 1] [-- extra segen overrides]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time

from segen.threads import available_cores


def start(out: str, extra: list[str]) -> tuple[subprocess.Popen, float]:
    log = open(os.path.join(out, "train.out"), "w")  # noqa: SIM115 - closed with the process
    cmd = ["segen", "train", f"hydra.run.dir={out}", *extra]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), time.monotonic()


def finish(proc: subprocess.Popen, started: float) -> tuple[float, float]:
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"segen train exited {proc.returncode}; see {proc.args[2]}")
    return time.monotonic() - started, usage.ru_utime + usage.ru_stime


def runs(n: int, extra: list[str], root: str) -> list[tuple[float, float]]:
    started = [start(tempfile.mkdtemp(dir=root), extra) for _ in range(n)]
    return [finish(*s) for s in started]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("extra", nargs="*", help="overrides for every run (after --)")
    args = parser.parse_args()
    cores = available_cores()
    cases = {"alone": (1, []), "pair, shared cores (default)": (2, []), f"pair, perf.threads={cores} each": (2, [f"perf.threads={cores}"])}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    with tempfile.TemporaryDirectory() as root:
        for _ in range(args.repeats):
            for name, (n, knob) in cases.items():
                results[name] += runs(n, [*args.extra, *knob], root)
                print(f"{name}: " + ", ".join(f"{w:.1f} s wall / {c:.1f} s CPU" for w, c in results[name][-n:]), flush=True)
    alone = statistics.median(w for w, _ in results["alone"])
    print(f"\n{'case':<34} {'wall (median)':>14} {'CPU (median)':>13} {'wall / alone':>13}")
    for name, values in results.items():
        wall, cpu = statistics.median(w for w, _ in values), statistics.median(c for _, c in values)
        print(f"{name:<34} {wall:>12.1f} s {cpu:>11.1f} s {wall / alone:>13.2f}")
    print(f"(cores: {cores}; load average now {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
