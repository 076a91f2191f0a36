"""How torch's OpenMP threads wait, set before torch loads (libgomp reads it once, at load).

torch's CPU kernels run on an OpenMP pool, one thread per core. Between parallel regions
libgomp's idle threads spin for up to 300,000 iterations before they sleep: on a machine whose
cores other jobs also want (two runs side by side, a test suite beside a training run), that
spinning burns the cores the other job needed. Sleeping at once (`OMP_WAIT_POLICY=PASSIVE`)
costs a run alone little and leaves an idle core to whoever needs it (docs/benchmarks.md,
"Threads"). A value the user set is kept. Imports nothing heavy: it must run before torch.
"""

from __future__ import annotations

import os

DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def configure_threads() -> None:
    """Set the OpenMP wait policy unless it is set already (the environment wins)."""
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
