"""Shared fixtures: tiny datasets written in the real on-disk formats, read by the real loaders.

MNIST: gzipped idx files in `<root>/MNIST/raw/` as served by the MNIST mirrors.
CIFAR-10: python pickles (`data_batch_1..5`, `test_batch`, `batches.meta`) in
`<root>/cifar-10-batches-py/`, as unpacked from `cifar-10-python.tar.gz`.
Images carry a simple class-dependent pattern so that a few training steps can learn them.
"""

from __future__ import annotations

import gzip
import os
import pickle
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# Under pytest-xdist (`make test` runs one worker per core), each worker's CLI runs get one
# OpenMP thread: two workers on two cores, rather than four threads contending for them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# Every test's dataset caches go to a folder of this session, never the user's ~/.cache/segen
# (set before the CLI fork server copies the environment, so its runs use it too).
os.environ["SEGEN_CACHE_DIR"] = _TEST_CACHE = __import__("tempfile").mkdtemp(prefix="segen-test-cache-")
__import__("atexit").register(__import__("shutil").rmtree, _TEST_CACHE, True)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def patterned_images(labels: np.ndarray, size: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 images `(N, size, size, channels)`: a bright bar whose row depends on the label."""
    images = rng.integers(0, 60, size=(len(labels), size, size, channels), dtype=np.uint8)
    for i, label in enumerate(labels):
        row = 2 + int(label) * (size - 4) // 10
        images[i, row : row + 2, :, :] = 255
    return images


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an idx file (gzip) as on the MNIST site: magic 0x0803 images / 0x0801 labels."""
    magic = {3: 2051, 1: 2049}[array.ndim]
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def make_mnist(root: Path, n_train: int = 300, n_test: int = 100, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = patterned_images(labels, 28, 1, rng)[..., 0]
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels)
        out[prefix] = (images, labels)
    return out


def make_cifar10(root: Path, per_batch: int = 60, n_test: int = 100, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    out = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else per_batch
        labels = rng.integers(0, 10, size=n)
        images = patterned_images(labels, 32, 3, rng)
        # CIFAR stores each image as 1024 R, then 1024 G, then 1024 B bytes (row-major).
        data = images.transpose(0, 3, 1, 2).reshape(n, 3072)
        entry = {"batch_label": f"{name} of 5", "labels": labels.tolist(), "data": data, "filenames": [f"{i}.png" for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
        out[name] = (images, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR10_CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072}, f, protocol=2)
    return out


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mnist_data")
    make_mnist(root)
    return root


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar_data")
    make_cifar10(root)
    return root


HELPERS = Path(__file__).parent / "helpers"

# A cgan trained for two steps on shapes: enough for `segen eval` and `segen sample` to read.
TINY_GAN = ("debug=smoke", "trainer.limit_train_batches=2", "model.generator.width=8", "model.discriminator.width=8")


def built_once(tmp_path_factory, name: str, build) -> Path:
    """A folder that `build(folder)` fills once per test session, shared by every test that
    only reads it. Under pytest-xdist the first worker to ask builds it (under a file lock) and
    the others reuse it, so a tiny model is trained once per session, not once per worker."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    import shutil

    from filelock import FileLock

    folder = tmp_path_factory.getbasetemp().parent / name  # the workers' common parent
    with FileLock(f"{folder}.lock"):
        if not (folder / ".built").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder


def trained(*overrides: str, run: str = "run"):
    """A `built_once` builder: `segen train` with `overrides` into `<folder>/<run>`."""
    def build(folder: Path) -> None:
        result = run_segen("train", *overrides, f"hydra.run.dir={folder}/{run}", cwd=folder)
        assert result.returncode == 0, result.stderr[-3000:]

    return build


@pytest.fixture(scope="session")
def tiny_cgan_ckpt(tmp_path_factory) -> Path:
    """One tiny cgan checkpoint shared by test_eval_gan and test_sample; tests only read it."""
    root = built_once(tmp_path_factory, "tiny_cgan", trained("model=cgan", "data=shapes", *TINY_GAN))
    return root / "run" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def smoke_cnn_run(tmp_path_factory) -> Path:
    """`segen train debug=smoke trainer=cpu` (the default cnn on shapes), trained once per session:
    the run folder every test that only reads a plain classifier run or checkpoint shares."""
    return built_once(tmp_path_factory, "smoke_cnn", trained("debug=smoke", "trainer=cpu")) / "run"


@pytest.fixture(scope="session")
def straight_tiny_cnn(tmp_path_factory) -> Path:
    """test_resilience's TINY cnn run, uninterrupted: what the runs killed and resumed in
    test_resilience and test_last_checkpoint are compared with. Tests only read it."""
    from test_resilience import TINY

    return built_once(tmp_path_factory, "straight_tiny_cnn", trained(*TINY, run="straight")) / "straight"


def run_segen(*args: str, cwd: Path | None = None, timeout: int = 300, inject: bool = False) -> subprocess.CompletedProcess:
    """Run the real CLI in a separate process (as a user would), with no network and a quiet terminal.
    `inject=True` puts tests/helpers on the path for fault-injection callbacks. The process is
    forked from tests/segen_server.py, which has torch, Lightning and Hydra imported already,
    unless the environment would change what gets imported (then: a plain subprocess)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120", "SEGEN_DATA_DIR": os.environ.get("SEGEN_DATA_DIR", "/nonexistent-segen-data")}
    if inject:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HELPERS), env.get("PYTHONPATH")]))
    server = _fork_server(env, inject)
    RUNS["forked" if server is not None else "subprocess"] += 1
    if server is not None:
        return server.run(list(args), cwd=cwd, env=env, timeout=timeout, extra_path=[str(HELPERS)] if inject else [])
    return subprocess.run(
        [sys.executable, "-m", "segen.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
        preexec_fn=_interactive_signals,
    )


class _ForkServer:
    """Client of tests/segen_server.py: one server per test session, started on first use."""

    # Variables that may be read while torch/Lightning/Hydra import (torch._inductor.config reads
    # TORCHINDUCTOR_* then, for one): a run that sets any of them differently from the server
    # needs a process of its own. TORCH_HOME is read when weights are looked up. (Lightning reads
    # PL_* when it runs; seed_everything in this process sets PL_GLOBAL_SEED.)
    IMPORT_TIME = ("PYTHON", "TORCH", "PYTORCH", "OMP_", "MKL_", "KMP_", "LD_", "CUDA", "NCCL", "HYDRA")
    RUN_TIME = ("TORCH_HOME",)

    def __init__(self, env: dict[str, str]):
        import atexit
        import json
        import tempfile

        self.env = env
        self.folder = Path(tempfile.mkdtemp(prefix="segen-fork-"))
        self.path = str(self.folder / "sock")
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "segen_server.py"), self.path], cwd=self.folder, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
        )
        atexit.register(self.close)
        word, _, environ = self.process.stdout.readline().partition(" ")
        if word != "ready":
            raise RuntimeError(f"the segen fork server did not start (exit code {self.process.wait()})")
        self.imported_env = json.loads(environ)  # after its imports, which set a few variables themselves

    def matches(self, env: dict[str, str], inject: bool) -> bool:
        def value(name):
            text = env.get(name)
            if inject and name == "PYTHONPATH":  # HELPERS was prepended: the server adds it to sys.path
                text = os.pathsep.join(text.split(os.pathsep)[1:]) or None
            return text

        # Equal to what the server started with, or to what its imports set (as this process's
        # own imports of torch did): a fresh process would import under the same settings.
        names = {n for n in (*env, *self.env) if n.startswith(self.IMPORT_TIME) and n not in self.RUN_TIME}
        same = all(value(n) in (self.env.get(n), self.imported_env.get(n)) for n in names)
        return same and self.process.poll() is None

    def run(self, args: list[str], cwd, env, timeout, extra_path) -> subprocess.CompletedProcess:
        import json
        import socket
        import tempfile

        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, open(os.devnull, "rb") as null:
            request = {"args": args, "cwd": str(Path(cwd or os.getcwd()).absolute()), "env": env, "extra_path": extra_path}
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.connect(self.path)
                socket.send_fds(conn, [json.dumps(request).encode()], [null.fileno(), out.fileno(), err.fileno()])
                conn.settimeout(timeout)
                reply, pid = b"", None
                try:
                    while reply.count(b"\n") < 2:
                        chunk = conn.recv(64)
                        if not chunk:
                            raise RuntimeError("the segen fork server closed the connection")
                        reply += chunk
                        if pid is None and b"\n" in reply:
                            pid = int(reply.split(b"\n")[0])
                except TimeoutError:
                    if pid is not None:
                        os.kill(pid, signal.SIGKILL)
                    out.seek(0), err.seek(0)
                    raise subprocess.TimeoutExpired(["segen", *args], timeout, out.read(), err.read()) from None
            status = int(reply.split(b"\n")[1])
            out.seek(0), err.seek(0)
            # as subprocess.run(text=True) reads them: locale encoding, universal newlines
            stdout, stderr = (f.read().decode().replace("\r\n", "\n").replace("\r", "\n") for f in (out, err))
        return subprocess.CompletedProcess(["segen", *args], os.waitstatus_to_exitcode(status), stdout, stderr)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)


_SERVER: list[_ForkServer] = []
RUNS = {"forked": 0, "subprocess": 0}


def pytest_sessionfinish(session) -> None:
    if hasattr(session.config, "workeroutput"):  # a pytest-xdist worker: hand its counts to the controller
        session.config.workeroutput["segen_runs"] = dict(RUNS)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: unknown (and skipped) without it
def pytest_testnodedown(node, error) -> None:  # pytest-xdist's controller, as each worker ends
    for kind, count in getattr(node, "workeroutput", {}).get("segen_runs", {}).items():
        RUNS[kind] += count


def pytest_terminal_summary(terminalreporter) -> None:
    if any(RUNS.values()):  # a run that silently stopped forking would take minutes longer
        terminalreporter.write_line(f"segen CLI runs: {RUNS['forked']} forked from tests/segen_server.py, {RUNS['subprocess']} plain subprocesses")
_SESSION_ENV = dict(os.environ)


def _fork_server(env: dict[str, str], inject: bool) -> _ForkServer | None:
    if os.environ.get("SEGEN_TEST_FORKSERVER", "1") == "0":
        return None
    if not _SERVER:  # started with the session's environment, whatever this test has patched
        _SERVER.append(_ForkServer({**_SESSION_ENV, "PYTHONUNBUFFERED": "1"}))
    return _SERVER[0] if _SERVER[0].matches(env, inject) else None


def _interactive_signals() -> None:
    """Give the child the default SIGINT handling a terminal user's run has. A test session
    started in the background (`cmd &`, nohup) ignores SIGINT, and children inherit that, so
    Ctrl-C tests would see a run that never stops."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def segen():
    return run_segen


def overfit(net, x, y, steps: int = 60, lr: float = 1e-2):
    """Fit `net` to one batch with Adam + cross-entropy: a quick check that a model can learn."""
    import torch

    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net
