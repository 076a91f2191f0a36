#!/usr/bin/env python3
"""Rearrange a CamVid folder (SegNet layout) into `data=folder_seg`'s layout, with a classes file.

usage: python scripts/camvid_to_folder.py CAMVID_DIR OUT_DIR [--copy]

    CAMVID_DIR/{train,val,test}/<stem>.png + {train,val,test}annot/<stem>.png
 -> OUT_DIR/{train,val,test}/images/<stem>.png + OUT_DIR/{train,val,test}/masks/<stem>.png
    OUT_DIR/classes.yaml   (SegNet's 11 classes, their index and colour; 11 = unlabelled, ignored)

Files are symlinked (`--copy` copies them), so the layout costs no disk. Splits that CAMVID_DIR
lacks (a copy without test/) are skipped. `segen train model=unet data=folder_seg
data.root=OUT_DIR` then trains on the same pixels as `data=camvid`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from segen.data.camvid import CLASS_NAMES, PALETTE, VOID_ID  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("camvid", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--copy", action="store_true", help="copy files instead of symlinking them")
    args = parser.parse_args()
    for split in ("train", "val", "test"):
        photos, annots = args.camvid / split, args.camvid / f"{split}annot"
        if not photos.is_dir() or not annots.is_dir():
            print(f"{split}: not in {args.camvid}, skipped")
            continue
        count = 0
        for sub, source in (("images", photos), ("masks", annots)):
            target = args.out / split / sub
            target.mkdir(parents=True, exist_ok=True)
            for f in sorted(source.glob("*.png")):
                dest = target / f.name
                if dest.exists() or dest.is_symlink():
                    dest.unlink()
                shutil.copy2(f, dest) if args.copy else dest.symlink_to(f.resolve())
                count += sub == "images"
        print(f"{split}: {count} photos and masks")
    lines = ["# CamVid (SegNet's 11 classes): the mask value (id) and display colour of each class", "classes:"]
    lines += [f"  - {{name: {name}, id: {i}, color: [{', '.join(map(str, PALETTE[i].tolist()))}]}}" for i, name in enumerate(CLASS_NAMES)]
    lines += [f"ignore: {VOID_ID}  # unlabelled"]
    (args.out / "classes.yaml").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'classes.yaml'}")


if __name__ == "__main__":
    main()
