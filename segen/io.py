"""One way to write a file that a crash must never leave half-written.

Checkpoints, feature caches, dataset caches, `metrics.json` and `summary.json` all go through
`atomic_write`: the bytes land in a temporary file with a unique name in the target's folder,
are flushed and fsync'ed, and the file is renamed over the target (`os.replace` is atomic on
POSIX). A reader, or a second writer of the same file, sees either the old complete file or the
new complete one, never a mix; two processes building the same cache both succeed and the last
rename wins with an equally valid file.

A full disk (ENOSPC), a quota (EDQUOT) or a failing device (EIO) is a `WriteError`: one line
naming the file and the cause. The temporary file is removed and the previous file is
untouched, so the last good checkpoint, cache or metrics.json stays loadable.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from segen.errors import WriteError

# Errors that mean "this disk cannot take the file", not a bug: reported as a WriteError.
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG}


def write_error(path: Path, err: OSError) -> WriteError:
    """One line: which file, what the OS said, and what to do about it."""
    cause = f"{os.strerror(err.errno)} ({errno.errorcode.get(err.errno, err.errno)})"
    return WriteError(
        f"cannot write {path}: {cause}; the previous file (if any) is intact. Free space on that disk "
        "or write elsewhere (hydra.run.dir=, paths.cache_dir=), then run again"
    )


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file for writing; on a clean exit it replaces `path`, else it is removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        if err.errno in DISK_ERRORS:
            raise write_error(path, err) from None
        raise
    try:
        # mkstemp makes the file private (0600); give it the mode open() would have (caches in
        # a shared dataset folder must stay readable by its other users).
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.errno in DISK_ERRORS:
            raise write_error(path, err) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (the directory entry itself) where the OS allows it."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def write_json(path: str | Path, data: Any) -> Path:
    """`data` as indented JSON, written atomically."""
    with atomic_write(path, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")
    return Path(path)


def save_tensors(path: str | Path, data: Any) -> Path:
    """`torch.save(data)`, written atomically (caches read back with `weights_only=True`).

    Serialized in memory first: torch's zip writer turns a failing `write` into a RuntimeError
    that no longer says "disk full"; a plain `write` of the bytes keeps the OSError."""
    import torch

    buffer = io.BytesIO()
    torch.save(data, buffer)
    with atomic_write(path) as f:
        f.write(buffer.getbuffer())
    return Path(path)


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks (archives and weights never sit in memory)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
