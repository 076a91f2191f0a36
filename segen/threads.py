"""How many OpenMP threads a run uses, and how they wait.

torch's CPU kernels run on an OpenMP pool, one thread per core, and every parallel region ends
at a barrier that waits for all of them. Two runs side by side on a 2-core machine are then four
threads on two cores: each barrier waits for a thread the scheduler has parked, and both runs
crawl (a default `segen train` took 161 s each beside another, 29 s alone; docs/benchmarks.md,
"Threads"). So:

- `configure_threads` sets `OMP_WAIT_POLICY=PASSIVE` before torch loads (libgomp reads it
  once): idle threads sleep at once instead of spinning up to 300,000 iterations on a core
  another job needs. Imports nothing heavy: it must run before torch.
- `CoreShare` splits this machine's cores between the segen runs training on it: each run holds
  an advisory lock on a file of its own in a per-user directory, counts the files still locked
  (a crashed run's lock goes with its process), and uses `cores // runs` threads, re-counted as
  runs start and end. A thread count the user set (`OMP_NUM_THREADS`, `perf.threads`) is kept.
"""

from __future__ import annotations

import atexit
import fcntl
import itertools
import os
import tempfile
from pathlib import Path

DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}
# Where runs register; one directory per user (runs of other users are not counted).
SHARE_DIR_ENV = "SEGEN_CORE_SHARE_DIR"
_claims = itertools.count()


def configure_threads() -> None:
    """Set the OpenMP wait policy unless it is set already (the environment wins)."""
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)


def available_cores() -> int:
    """Cores this process may run on (its affinity mask: a cgroup or `taskset` counts)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def share_dir() -> Path:
    return Path(os.environ.get(SHARE_DIR_ENV) or Path(tempfile.gettempdir()) / f"segen-{os.getuid()}" / "runs")


class CoreShare:
    """This run's claim on a share of the cores; `threads()` is its share now.

    The claim is a file `<pid>-<n>.lock` under `share_dir()` held with `flock`: the lock lives as
    long as the open file, so a run that dies (even by SIGKILL) stops counting, and its file is
    removed by the next run that counts. Nothing here touches torch; the caller sets the count.
    """

    def __init__(self, directory: Path | None = None, cores: int | None = None):
        self.directory = Path(directory) if directory is not None else share_dir()
        self.cores = cores or available_cores()
        self._file = None
        self._path: Path | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # Locked under a name nobody counts, then renamed: a run counting meanwhile never
            # finds this file unlocked and takes it for a dead run's.
            staging = self.directory / f"{os.getpid()}-{next(_claims)}.new"
            self._file = open(staging, "w")  # noqa: SIM115 - held open: the lock is the claim
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._path = staging.with_suffix(".lock")
            staging.rename(self._path)
            atexit.register(self.close)
        except OSError:  # no writable temp dir, no flock: run as if alone
            self.close()

    def runs(self) -> int:
        """Live segen runs on this machine, this one included."""
        if self._file is None:
            return 1
        live = 1
        own = self._path.name if self._path is not None else ""
        try:
            names = [p for p in self.directory.iterdir() if p.suffix == ".lock" and p.name != own]
        except OSError:
            return 1
        for path in names:
            try:
                with open(path) as other:
                    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    # Locked by nobody: its run ended without removing it.
                    path.unlink(missing_ok=True)
            except BlockingIOError:
                live += 1
            except OSError:
                continue
        return live

    def threads(self) -> int:
        """This run's share: the cores divided among the live runs, at least one."""
        return max(1, self.cores // self.runs())

    def close(self) -> None:
        if self._file is not None:
            path = self._path or Path(self._file.name)
            self._file.close()
            self._file = None
            path.unlink(missing_ok=True)
