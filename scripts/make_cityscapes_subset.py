#!/usr/bin/env python
"""Write a smaller Cityscapes copy in the official layout, for sharing a subset or quick runs.

    python scripts/make_cityscapes_subset.py SRC DST [--cities aachen bochum] [--max-images 100]
        [--size 256x512] [--splits train val]

SRC and DST are dataset roots (holding leftImg8bit/ and gtFine/). Files are chosen as
`data=cityscapes` chooses them (sorted, per split, evenly spaced when --max-images is given);
images are resized bilinearly and `*_gtFine_labelIds.png` with nearest neighbour, so label ids
are preserved. Point segen at the copy with `paths.data_dir=<parent of DST>` when DST ends in
`cityscapes`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

from segen.data.cityscapes import list_files
from segen.data.files import read_image
from segen.data.paired import read_label_ids
from segen.errors import SegenError


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size takes HEIGHTxWIDTH, e.g. 256x512, not {text!r}") from None
    return h, w


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="Cityscapes root with leftImg8bit/ and gtFine/")
    parser.add_argument("dst", type=Path, help="where to write the subset (same layout)")
    parser.add_argument("--cities", nargs="+", default=None, help="cities to keep (default: all); unknown ones in a split are skipped")
    parser.add_argument("--max-images", type=int, default=None, help="images per split (default: all)")
    parser.add_argument("--size", type=parse_size, default=None, help="HEIGHTxWIDTH to resize to (default: keep)")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], choices=["train", "val", "test"])
    args = parser.parse_args(argv)

    total = 0
    for split in args.splits:
        try:
            pairs = list_files(args.src, split)
        except SegenError as err:
            print(f"make_cityscapes_subset: error: {err}", file=sys.stderr)
            return 2
        if args.cities:  # a city belongs to one split, so filter per split without failing
            pairs = [p for p in pairs if p[0].parent.name in set(args.cities)]
        if args.max_images is not None and args.max_images < len(pairs):
            step = (len(pairs) - 1) / max(args.max_images - 1, 1)
            pairs = [pairs[round(i * step)] for i in range(args.max_images)]
        for img, lbl in pairs:
            for src, kind in ((img, "leftImg8bit"), (lbl, "gtFine")):
                out = args.dst / kind / split / src.parent.name / src.name
                out.parent.mkdir(parents=True, exist_ok=True)
                if kind == "leftImg8bit":
                    Image.fromarray(read_image(src, 3, args.size, resize="stretch").transpose(1, 2, 0)).save(out)
                else:
                    Image.fromarray(read_label_ids(src, args.size), mode="L").save(out)
        print(f"{split}: {len(pairs)} images -> {args.dst}")
        total += len(pairs)
    return 0 if total else 1


if __name__ == "__main__":
    raise SystemExit(main())
