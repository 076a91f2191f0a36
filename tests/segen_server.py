"""A fork server for the test suite's `segen` subprocesses.

Every `python -m segen.cli ...` spends most of its time importing torch, Lightning and Hydra
(5-10 s on a 2-core CI machine), which over the suite's couple of hundred CLI runs was most of
its wall time. This server imports them once, then forks one fresh child per request; the
child runs `segen.cli` as `python -m segen.cli` would (`runpy`, `__main__`, sys.argv, the
request's cwd, environment and stdin/stdout/stderr) and exits as the interpreter would (threads
joined, atexit handlers run, streams flushed; only the module teardown, which costs seconds once
torch is loaded, is skipped), so exit codes, signals (a SIGKILL mid-run) and files written behave
as in a separate process, because it is one. The server itself never runs a torch op, so its forks
are safe (no thread pools exist yet).

Run by tests/conftest.py (`run_segen`); `SEGEN_TEST_FORKSERVER=0` turns it off. Requests whose
environment would change what gets imported (another PYTHONPATH, such as the blocked-imports
shim) get a plain subprocess instead: conftest decides that.

Protocol, one connection per run: the client sends a JSON request with three file descriptors
(stdin, stdout, stderr); a monitor process forks the worker, sends back "<pid>\n" and, once the
worker has ended, "<wait status>\n".
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import traceback

PRELOAD = (
    "torch", "torchvision", "torchmetrics", "pytorch_lightning", "hydra", "omegaconf",
    "hydra._internal.utils", "segen.commands.train", "segen.commands.evaluate", "segen.commands.sample", "segen.commands.export",
)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _worker(request: dict, fds: list[int]) -> None:
    """In the forked child: become `python -m segen.cli <args>`; never returns normally."""
    import random
    import runpy

    for target, fd in zip((0, 1, 2), fds, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    # The signal handling a fresh interpreter started from a terminal has (conftest's
    # _interactive_signals): Ctrl-C raises KeyboardInterrupt, SIGPIPE is ignored, the rest default.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    for name in ("SIGTERM", "SIGCHLD", "SIGHUP", "SIGQUIT"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    # `python -m` puts the cwd first on sys.path, then PYTHONPATH (here: plus the helpers dir).
    sys.path[0] = os.getcwd()
    for extra in reversed(request["extra_path"]):
        sys.path.insert(1, extra)
    random.seed()  # a fresh process draws fresh seeds; the fork would share the server's
    try:
        import numpy as np

        np.random.seed()
    except ImportError:
        pass
    sys.argv = ["segen", *request["args"]]
    sys.modules.pop("segen.cli", None)  # `python -m` runs it as __main__, not as a loaded module
    try:
        runpy.run_module("segen.cli", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as stop:  # as the interpreter reads it
        code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
        if not isinstance(stop.code, int) and stop.code is not None:
            print(stop.code, file=sys.stderr)
    except KeyboardInterrupt:
        traceback.print_exc()
        _finish()
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Python ends an uncaught Ctrl-C this way
        os.kill(os.getpid(), signal.SIGINT)
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    _finish()
    os._exit(code)


def _finish() -> None:
    """What interpreter shutdown does that anyone can observe (join threads, run atexit, flush),
    without the module teardown that costs seconds once torch is loaded."""
    import atexit
    import threading

    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def serve(path: str) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    print("ready", json.dumps(dict(os.environ)), flush=True)  # as the imports left it (torch sets a few)
    parent = os.getppid()
    server.settimeout(5)
    while True:
        _reap()
        try:
            conn, _ = server.accept()
        except TimeoutError:
            if os.getppid() != parent:  # the test session ended without closing us (killed)
                import shutil

                shutil.rmtree(os.path.dirname(path), ignore_errors=True)
                raise SystemExit(0) from None
            continue
        conn.setblocking(True)
        if os.fork() != 0:
            conn.close()
            continue
        # monitor process
        server.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        request = json.loads(data.decode())
        pid = os.fork()
        if pid == 0:
            conn.close()
            _worker(request, fds)
        for fd in fds:
            os.close(fd)
        conn.sendall(f"{pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        try:
            conn.sendall(f"{status}\n".encode())
        finally:
            os._exit(0)


def main() -> None:
    path = sys.argv[1]
    # Started from a neutral folder, like a `python -m segen.cli` run in a test's tmp_path: segen
    # resolves from PYTHONPATH or the installed package, never from the tests folder.
    sys.path[0] = os.getcwd()
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    import threading

    if threading.active_count() != 1:  # forking a process with threads is not safe
        print(f"threads after imports: {threading.enumerate()}", file=sys.stderr, flush=True)
        raise SystemExit(3)
    serve(path)


if __name__ == "__main__":
    main()
