"""What `segen export` writes for a generator (dcgan, cgan): the sampling net and the sidecar that
says how to feed it noise (and labels) without segen."""

from __future__ import annotations

import torch


def generator_spec(task, datamodule):
    """The `segen.export.ExportSpec` of a GAN task's sampler: noise (and labels, for cgan) to
    images in [-1, 1]; batch size is free."""
    from segen.export import ExportSpec

    latent = task.latent_dim

    def inputs(batch: int) -> tuple[torch.Tensor, ...]:
        gen = torch.Generator().manual_seed(batch)
        noise = torch.randn(batch, latent, generator=gen)
        if not task.conditional:
            return (noise,)
        return noise, torch.randint(0, task.num_classes, (batch,), generator=gen)

    names = ["noise", "labels"] if task.conditional else ["noise"]
    size = task.sampler.image_size
    channels = task.sampler.channels
    sidecar = {
        "task": "generation",
        "input": {"name": "noise", "shape": ["batch", latent], "dtype": "float32", "distribution": "standard normal N(0, 1)"},
        "latent_dim": latent,
        "output": {"name": "images", "shape": ["batch", channels, size, size], "layout": "NCHW", "dtype": "float32",
                   "value_range": [-1.0, 1.0], "postprocess": "uint8_image = round((x + 1) * 127.5), clipped to [0, 255]",
                   "color": "RGB" if channels == 3 else "grayscale"},
        "ema": task.ema_decay is not None,
    }
    if task.code_classes is not None:
        prior = task.sampler.noise_code.prior()
        sidecar["latent_code"] = {
            "classes": task.code_classes,
            "kind": task.latent_code,
            "source": "the last noise entry u: code = the k with prior[0] + ... + prior[k-1] <= Phi(u) < prior[0] + ... + prior[k], "
            "Phi the standard normal CDF (a uniform prior: floor(classes * Phi(u)))",
            "prior": [round(float(p), 6) for p in prior],
        }
    if task.conditional:
        sidecar["labels"] = {"name": "labels", "shape": ["batch"], "dtype": "int64", "range": [0, task.num_classes - 1]}
        sidecar["class_names"] = list(datamodule.info.class_names)
    return ExportSpec(
        module=task.sampler,
        example_inputs=inputs(2),
        input_names=names,
        output_names=["images"],
        dynamic_axes={**{n: {0: "batch"} for n in names}, "images": {0: "batch"}},
        check_inputs=inputs,
        sidecar=sidecar,
    )
