"""How often a classifier sees the class a cgan was asked for.

    python scripts/cgan_class_consistency.py CGAN_CKPT CNN_CKPT [--per-class 100] [--seed 0]

Draws `per_class` images of every class from the cgan (as `segen sample per_class=...` does:
seeded noise, eval-mode generator, images rounded to uint8 like the PNGs), normalizes them the
way the classifier's own datamodule does, and prints the share classified as the requested
class, overall and per class. Both checkpoints are read with segen's own loaders
(`weights_only=True`); they must share image size and channels (e.g. both trained on shapes).
"""

from __future__ import annotations

import argparse

import torch

from segen.restore import restore_task
from segen.viz import to_uint8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cgan_ckpt")
    parser.add_argument("cnn_ckpt")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    gan_cfg, gan, gan_data = restore_task(args.cgan_ckpt)
    cnn_cfg, cnn, cnn_data = restore_task(args.cnn_ckpt)
    gan, cnn = gan.eval(), cnn.eval()
    gan_name, cnn_name = gan_cfg.choices.get("model"), cnn_cfg.choices.get("model")
    if not getattr(gan, "conditional", False):
        raise SystemExit(f"{args.cgan_ckpt} holds a {gan_name} model, not a class-conditional generator")
    names = list(gan_data.class_names)
    if list(cnn_data.class_names) != names:
        raise SystemExit(f"the classifier's classes {list(cnn_data.class_names)} differ from the cgan's {names}")

    labels = torch.arange(len(names)).repeat_interleave(args.per_class)
    noise = torch.randn(len(labels), gan.latent_dim, generator=torch.Generator().manual_seed(args.seed))
    images = to_uint8(gan.sample(noise, labels))  # exactly what the PNGs hold
    with torch.no_grad():
        predicted = torch.cat([cnn(cnn_data.normalize(chunk)).argmax(1) for chunk in images.split(256)])

    hits = predicted == labels
    print(f"{cnn_name} classifies {hits.float().mean():.1%} of {len(labels)} {gan_name} samples as the requested class")
    for i, name in enumerate(names):
        counts = torch.bincount(predicted[labels == i], minlength=len(names)).tolist()
        print(f"  {name:>12}: {hits[labels == i].float().mean():6.1%}  predicted counts {counts}")


if __name__ == "__main__":
    main()
