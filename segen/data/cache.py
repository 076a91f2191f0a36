"""Decoded datasets on disk: one uint8 file per split, memory-mapped, read a batch at a time.

Decoding PNGs and JPEGs costs far more than training on the pixels, so every file-based dataset
(CamVid, Cityscapes, `data=folder`, `data=folder_seg`) is decoded once into a cache file keyed
by everything that changes the pixels (file list with sizes and mtimes, image size, resize
policy, class mapping, `CACHE_VERSION`). The file lives in a per-user cache folder, never in
the data folder (which may be read-only or shared): `data.cache_dir`, by default
`paths.cache_dir/data` (SEGEN_CACHE_DIR, else $XDG_CACHE_HOME/segen, else ~/.cache/segen).

Layout of a cache file: the magic bytes, each array's rows at a page-aligned offset, then a JSON
trailer (dtypes, shapes, offsets, metadata such as file names) and its length. It is written
while decoding, one row at a time, so building a 20 GB cache needs no more memory than one image,
and atomically (`segen.io.atomic_write`): a crash or a full disk leaves no half file.

Reading: every array is a `torch.Tensor` over a private memory map (`mmap`: pages come from the
page cache when touched, nothing is read up front), and training batches are read with `pread`
into a fresh tensor (`read_rows`). The batch path maps nothing, so a process's resident memory
stays at about one batch whatever the dataset's size, while the page cache (shared by DDP ranks
and later runs) holds the hot data. Under DDP the cache is built by each node's local rank 0 in
`prepare_data`; the other ranks wait at Lightning's barrier and open the finished file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segen.errors import DataError

CACHE_VERSION = 2  # bump when decoding changes, so old caches are not reused
MAGIC = b"SEGENU8\x01"
ALIGN = 4096
SUFFIX = ".u8"


def default_cache_dir() -> Path:
    """segen's per-user cache folder, as `configs/paths/default.yaml` defines `paths.cache_dir`."""
    if os.environ.get("SEGEN_CACHE_DIR"):
        return Path(os.environ["SEGEN_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path(os.environ.get("HOME") or ".") / ".cache")
    return Path(base).expanduser() / "segen"


def data_cache_dir(cache_dir: str | Path | None, name: str) -> Path:
    """Where the caches of dataset `name` go: `<cache_dir>/<name>` (default `paths.cache_dir/data`)."""
    base = Path(cache_dir).expanduser() if cache_dir else default_cache_dir() / "data"
    return base / name


def cache_key(params: Mapping[str, Any]) -> str:
    """A short digest of everything that changes a cache's bytes."""
    return hashlib.sha1(json.dumps({"version": CACHE_VERSION, **params}, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_stamp(path: Path, root: Path) -> list:
    """A file's part of a cache key: its path under `root`, size and modification time."""
    stat = path.stat()
    return [str(path.relative_to(root)), stat.st_size, stat.st_mtime_ns]


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


class CacheFile:
    """An opened cache file: arrays as memory-mapped tensors, rows read with `pread`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise ValueError("not a segen cache file")
            f.seek(size - 8 - len(MAGIC))
            length = int.from_bytes(f.read(8), "little")
            if f.read(len(MAGIC)) != MAGIC or length > size:
                raise ValueError("truncated")
            f.seek(size - 8 - len(MAGIC) - length)
            trailer = json.loads(f.read(length))
        if trailer.get("version") != CACHE_VERSION:
            raise ValueError("another cache version")
        self.meta: dict = trailer["meta"]
        self.count: int = trailer["count"]
        self.layout: dict[str, dict] = trailer["arrays"]
        for spec in self.layout.values():
            if spec["offset"] + self.count * self._row_bytes(spec) > size:
                raise ValueError("truncated")
        self._maps: dict[str, torch.Tensor] = {}
        self._fd: tuple[int, int] | None = None  # (pid, fd): a forked loader worker opens its own

    @staticmethod
    def _row_bytes(spec: dict) -> int:
        return int(np.prod(spec["shape"], dtype=np.int64)) * np.dtype(spec["dtype"]).itemsize

    def __len__(self) -> int:
        return self.count

    def __getstate__(self):  # for spawned loader workers: maps and descriptors are reopened
        return {**self.__dict__, "_maps": {}, "_fd": None}

    def tensor(self, name: str) -> torch.Tensor:
        """The whole array `(N, *shape)`, memory-mapped (copy-on-write: the file is never changed)."""
        if name not in self._maps:
            spec = self.layout[name]
            if self.count == 0:
                return torch.empty((0, *spec["shape"]), dtype=getattr(torch, spec["dtype"]))
            array = np.memmap(self.path, dtype=spec["dtype"], mode="c", offset=spec["offset"], shape=(self.count, *spec["shape"]))
            self._maps[name] = torch.from_numpy(array)
        return self._maps[name]

    def load(self, name: str) -> torch.Tensor:
        """The whole array read into memory (the in-memory path, `data.in_memory=true`)."""
        return self.read_rows(name, torch.arange(self.count))

    def _descriptor(self) -> int:
        if self._fd is None or self._fd[0] != os.getpid():
            self._fd = (os.getpid(), os.open(self.path, os.O_RDONLY))
        return self._fd[1]

    def read_rows(self, name: str, indices: torch.Tensor) -> torch.Tensor:
        """Rows `indices` of an array as a new tensor, read with positional reads (runs of
        consecutive rows in one call); nothing stays mapped, so resident memory stays one batch."""
        spec = self.layout[name]
        indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if not hasattr(os, "preadv"):  # no positional vector reads on this OS: gather from the map
            return self.tensor(name)[indices].clone()
        order = torch.argsort(indices)
        rows = indices[order].tolist()
        if rows and not 0 <= rows[0] <= rows[-1] < self.count:
            raise IndexError(f"row {rows[0] if rows[0] < 0 else rows[-1]} of a cache of {self.count}")
        row_bytes = self._row_bytes(spec)
        ordered = np.empty((len(rows), *spec["shape"]), dtype=spec["dtype"])  # rows in file order
        target = memoryview(ordered.reshape(-1).view(np.uint8))
        fd, start = self._descriptor(), 0
        while start < len(rows):
            end = start + 1
            while end < len(rows) and rows[end] == rows[end - 1] + 1:
                end += 1
            self._read_into(fd, target[start * row_bytes : end * row_bytes], spec["offset"] + rows[start] * row_bytes)
            start = end
        if bool((order == torch.arange(len(order))).all()):
            return torch.from_numpy(ordered)
        out = np.empty_like(ordered)
        out[order.numpy()] = ordered
        return torch.from_numpy(out)

    def _read_into(self, fd: int, view: memoryview, offset: int) -> None:
        """Fill `view` from `offset`; a read returns at most ~2 GiB (Linux), so loop."""
        done = 0
        while done < len(view):
            got = os.preadv(fd, [view[done : done + (1 << 30)]], offset + done)
            if got <= 0:
                raise DataError(f"cache file {self.path} is shorter than it says (changed while in use?); delete it and run again")
            done += got

    def close(self) -> None:
        if self._fd is not None and self._fd[0] == os.getpid():
            os.close(self._fd[1])
        self._fd = None
        self._maps.clear()


def write_cache(
    path: Path,
    arrays: Mapping[str, tuple[str, tuple[int, ...]]],
    rows: Iterable[Mapping[str, np.ndarray] | None],
    capacity: int,
    meta: Callable[[list[int]], dict] | None = None,
) -> None:
    """Stream `rows` (one dict of arrays per item, or None for an item left out) into a cache
    file at `path`, atomically; `arrays` gives each array's dtype and row shape, `capacity` the
    number of items. `meta(kept)` makes the trailer's metadata from the kept items' positions."""
    from segen.io import atomic_write

    offsets, offset = {}, _aligned(len(MAGIC))
    for name, (dtype, shape) in arrays.items():
        offsets[name] = offset
        offset = _aligned(offset + capacity * int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
    row_bytes = {name: int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize for name, (dtype, shape) in arrays.items()}
    try:
        with atomic_write(path) as f:
            f.write(MAGIC)
            kept: list[int] = []
            for position, row in enumerate(rows):
                if row is None:
                    continue
                for name, (dtype, shape) in arrays.items():
                    value = np.asarray(row[name], dtype=dtype)
                    if value.shape != tuple(shape):
                        raise ValueError(f"{name} row of shape {value.shape}, expected {tuple(shape)}")
                    f.seek(offsets[name] + len(kept) * row_bytes[name])
                    f.write(value.tobytes())
                kept.append(position)
            f.seek(0, os.SEEK_END)
            end = f.tell()
            if end < offset:  # reserve the arrays' full extent, so every offset is inside the file
                f.truncate(offset)
                f.seek(offset)
            trailer = json.dumps({
                "version": CACHE_VERSION,
                "count": len(kept),
                "arrays": {name: {"dtype": dtype, "shape": list(shape), "offset": offsets[name]} for name, (dtype, shape) in arrays.items()},
                "meta": meta(kept) if meta else {},
            }).encode()
            f.write(trailer + len(trailer).to_bytes(8, "little") + MAGIC)
    except PermissionError as err:
        raise DataError(
            f"cannot write the dataset cache {path} ({err.strerror}); set data.cache_dir= (or SEGEN_CACHE_DIR) to a writable folder"
        ) from None
    except OSError as err:
        if err.errno in (30, 13):  # EROFS, EACCES
            raise DataError(
                f"cannot write the dataset cache {path} ({err.strerror}); set data.cache_dir= (or SEGEN_CACHE_DIR) to a writable folder"
            ) from None
        raise


def open_cache(path: Path) -> CacheFile | None:
    """The cache file at `path`, or None when it is missing or unusable (then it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        return CacheFile(path)
    except (ValueError, KeyError, OSError, json.JSONDecodeError):
        return None  # truncated, foreign or an older version: rebuilt, never trusted


def announce(path: Path, what: str, count: int) -> None:
    """The one console line a build prints: what is decoded and where the cache goes."""
    from segen.console import note

    note(f"Decoding {count} {what} once into the cache {path} (data.cache_dir; safe to delete)")


class CachedDataset(torch.utils.data.Dataset):
    """A split served from a cache file, one batch per read (`__getitems__`, like
    `TensorImageDataset`); `rows` are the file's rows that make up the split (a carved split),
    `target` the array a batch's second element comes from ("labels" or "masks").

    `images` and `targets` are the whole split as tensors (memory-mapped; a carved split is
    gathered), for what needs all of it at once (FID's real set, class weights).
    """

    def __init__(self, cache: CacheFile, target: str, rows: torch.Tensor | None = None):
        self.cache, self.target = cache, target
        self.rows = None if rows is None else torch.as_tensor(rows, dtype=torch.long)
        # Labels are 8 bytes an image: kept in memory. Masks are as large as images: read per batch.
        self._labels = cache.load(target) if target == "labels" else None

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else len(self.cache)

    def _file_rows(self, indices) -> torch.Tensor:
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.rows[index] if self.rows is not None else index

    def _whole(self, name: str) -> torch.Tensor:
        # A carved split is gathered with reads (its rows are scattered over the file), so the
        # copy is the only memory it costs; a whole file is a map, paged in only where touched.
        return self.cache.tensor(name) if self.rows is None else self.cache.read_rows(name, self.rows)

    @property
    def images(self) -> torch.Tensor:
        return self._whole("images")

    @property
    def targets(self) -> torch.Tensor:
        if self._labels is not None:
            return self._labels if self.rows is None else self._labels[self.rows]
        return self._whole(self.target)

    def __getitem__(self, index: int):
        images, targets = self.__getitems__([index])
        return images[0], targets[0]

    def __getitems__(self, indices: list[int]):
        rows = self._file_rows(indices)
        images = self.cache.read_rows("images", rows)
        targets = self._labels[rows] if self._labels is not None else self.cache.read_rows(self.target, rows)
        return images, targets


def split_dataset(cache: CacheFile, target: str, rows: torch.Tensor | None = None, in_memory: bool = False):
    """A split's dataset: read from the cache per batch, or (`in_memory`) loaded whole into RAM."""
    if not in_memory:
        return CachedDataset(cache, target, rows)
    from segen.data.in_memory import TensorImageDataset

    index = torch.arange(len(cache)) if rows is None else torch.as_tensor(rows, dtype=torch.long)
    return TensorImageDataset(cache.read_rows("images", index), cache.read_rows(target, index))
