#!/usr/bin/env python3
"""Measure segen's data path on a folder larger than memory: batches/s and resident memory of
the memory-mapped disk cache against the in-memory path (`data.in_memory=true`).

usage:
  python scripts/bench_data.py make DIR [--images 15000] [--size 256]   write a class-per-folder JPEG set
  python scripts/bench_data.py loader DIR [--size 256] [--batch 64] [--batches 300]
      decode DIR once into the cache (data=folder's own code), warm the page cache, then time
      the training loader + normalization per mode, each in a fresh process (its peak RSS is its own)

The train run itself is measured with /usr/bin/time -v (docs/benchmarks.md gives the command).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CLASSES = [f"class_{i}" for i in range(10)]


def make(out: Path, images: int, size: int) -> None:
    """Smooth images (a class colour, a gradient, a box) saved as JPEG: ~10 KB each on disk,
    size*size*3 bytes each decoded."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    for i in range(images):
        label = i % len(CLASSES)
        folder = out / "train" / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        base = np.array([(label * 25) % 256, (label * 70) % 256, (label * 130) % 256], dtype=np.float32)
        image = base + 80 * ramp[None, :, None] * rng.uniform(-1, 1, 3) + 80 * ramp[:, None, None] * rng.uniform(-1, 1, 3)
        y, x = rng.integers(0, size // 2, 2)
        image[y : y + size // 3, x : x + size // 3] = rng.uniform(0, 255, 3)
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)
    print(f"wrote {images} {size}x{size} JPEGs under {out / 'train'} ({images * size * size * 3 / 1e9:.2f} GB decoded)")


def datamodule(root: Path, size: int, batch: int, in_memory: bool, cache_dir: str | None):
    from segen.data.folder import FolderDataModule

    return FolderDataModule(str(root), image_size=size, batch_size=batch, in_memory=in_memory, cache_dir=cache_dir, hflip=False)


def one_mode(root: Path, size: int, batch: int, batches: int, in_memory: bool, cache_dir: str | None) -> dict:
    """Time `batches` training batches (loader + uint8 -> normalized float) after one untimed pass."""
    import torch

    torch.manual_seed(0)
    dm = datamodule(root, size, batch, in_memory, cache_dir)
    start = time.perf_counter()
    dm.setup("fit")
    setup_s = time.perf_counter() - start

    def run(n: int) -> float:
        done, t0 = 0, time.perf_counter()
        while done < n:
            for batch_ in dm.train_dataloader():
                images, _ = dm.on_after_batch_transfer(batch_, 0)
                done += 1
                if done == n:
                    break
        return time.perf_counter() - t0

    run(min(batches, 20))  # first touches, allocator warm-up
    elapsed = run(batches)
    return {
        "mode": "in_memory" if in_memory else "memory-mapped cache",
        "images_per_s": round(batches * batch / elapsed, 1),
        "setup_s": round(setup_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def loader(root: Path, size: int, batch: int, batches: int, cache_dir: str | None) -> None:
    dm = datamodule(root, size, batch, False, cache_dir)
    t0 = time.perf_counter()
    dm.prepare_data()  # decodes into the cache once (later calls: a no-op)
    path = dm.cache_path("train")
    print(f"cache {path}: {path.stat().st_size / 1e9:.2f} GB (prepare_data {time.perf_counter() - t0:.1f} s)")
    with open(path, "rb") as f:  # warm the page cache: both modes then read from memory, not disk
        while f.read(1 << 24):
            pass
    results = []
    for in_memory in (False, True):
        cmd = [sys.executable, __file__, "_one", str(root), str(size), str(batch), str(batches), str(int(in_memory)), cache_dir or ""]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        results.append(json.loads(out))
        print(json.dumps(results[-1]))
    ratio = results[0]["images_per_s"] / results[1]["images_per_s"]
    print(f"memory-mapped / in-memory images/s: {ratio:.2f} (batch {batch}, {batches} batches, {size}x{size}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_one":
        root, size, batch, batches, in_memory, cache_dir = sys.argv[2:8]
        print(json.dumps(one_mode(Path(root), int(size), int(batch), int(batches), bool(int(in_memory)), cache_dir or None)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir", type=Path)
    m.add_argument("--images", type=int, default=15000)
    m.add_argument("--size", type=int, default=256)
    b = sub.add_parser("loader")
    b.add_argument("dir", type=Path)
    b.add_argument("--size", type=int, default=256)
    b.add_argument("--batch", type=int, default=64)
    b.add_argument("--batches", type=int, default=300)
    b.add_argument("--cache-dir", default=None, help="data.cache_dir (default: paths.cache_dir/data)")
    args = parser.parse_args()
    if args.command == "make":
        make(args.dir, args.images, args.size)
    else:
        loader(args.dir, args.size, args.batch, args.batches, args.cache_dir)


if __name__ == "__main__":
    main()
