"""Export a task's inference network to ONNX or TorchScript, and check the file against PyTorch.

The task says what to export (`task.export_spec(datamodule) -> ExportSpec`): the network, example
inputs, input/output names, which axes may vary, and a sidecar dict that tells a caller without
segen how to feed it (shape, dtype, normalization, class names, palette). This module only writes
files and verifies them; it never guesses what kind of model it holds.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segen.errors import SegenError

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
TOLERANCE = 1e-4  # max |exported - PyTorch| accepted in fp32


class ExportError(SegenError):
    """The exported file could not be written, or does not compute what PyTorch computes."""


@dataclass
class ExportSpec:
    """What a task exports: `module(*example_inputs)` is the inference computation.

    `dynamic_axes` maps an input/output name to {axis: symbolic name}; an axis with a `multiple`
    (e.g. U-Net's height that must divide by 2**depth) is listed in `axis_multiples`.
    `check_inputs` builds inputs of another size for the post-export check: (batch_size) -> tuple.
    """

    module: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]
    sidecar: dict[str, Any]
    check_inputs: Any = None
    axis_multiples: dict[str, int] = field(default_factory=dict)


def _dynamic_shapes(spec: ExportSpec):
    """torch.export's form of `dynamic_axes` for the inputs: one Dim per symbolic name, shared
    across inputs, scaled by its multiple so that shape arithmetic stays exact."""
    from torch.export import Dim

    dims: dict[str, Any] = {}
    shapes = []
    for name in spec.input_names:
        axes = {}
        for axis, symbol in spec.dynamic_axes.get(name, {}).items():
            if symbol not in dims:
                multiple = spec.axis_multiples.get(symbol, 1)
                dims[symbol] = Dim(symbol, min=1, max=4096) * multiple if multiple > 1 else Dim(symbol, min=1, max=65536)
            axes[axis] = dims[symbol]
        shapes.append(axes or None)
    return tuple(shapes)


def write(spec: ExportSpec, fmt: str, out: Path, opset: int | None = None) -> Path:
    """Write the network of `spec` to `out` as `fmt` (onnx | torchscript), in eval mode."""
    module = spec.module.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # torch marks TorchScript deprecated; the file still loads with torch.jit.load and LibTorch.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        # U-Net's "pad to a multiple" branch is traced as not taken: the sidecar asks for multiples.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        if fmt == "torchscript":
            traced = torch.jit.trace(module, spec.example_inputs, check_trace=False)
            traced.save(str(out))
        elif fmt == "onnx":
            # The exporter's graph passes log every rewrite at INFO, which Hydra would print.
            for name in ("onnx_ir", "onnxscript", "torch.onnx"):
                logging.getLogger(name).setLevel(logging.WARNING)
            program = torch.onnx.export(
                module,
                spec.example_inputs,
                input_names=spec.input_names,
                output_names=spec.output_names,
                dynamic_shapes=_dynamic_shapes(spec),
                opset_version=opset,
                dynamo=True,
                external_data=False,  # one self-contained file
                verbose=False,
            )
            program.save(str(out))
        else:
            raise ExportError(f"format={fmt} is not an export format; use one of: {', '.join(FORMATS)}")
    return out


def run_exported(path: Path, fmt: str, inputs: tuple[torch.Tensor, ...], input_names: list[str]) -> torch.Tensor:
    """The first output of the exported file on `inputs`, run by its own runtime."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = {name: x.cpu().numpy() for name, x in zip(input_names, inputs, strict=True)}
        return torch.from_numpy(session.run(None, feeds)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        out = loaded(*inputs)
    return (out[0] if isinstance(out, (tuple, list)) else out).float()


def verify(spec: ExportSpec, path: Path, fmt: str, batch_size: int) -> float:
    """Max |exported - PyTorch| on fresh inputs of `batch_size` (not the export batch size)."""
    inputs = spec.check_inputs(batch_size)
    module = spec.module.eval()
    with torch.no_grad():
        expected = module(*inputs).float()
    got = run_exported(path, fmt, inputs, spec.input_names)
    if got.shape != expected.shape:
        raise ExportError(f"{path} returns shape {tuple(got.shape)} for inputs {[tuple(x.shape) for x in inputs]}; PyTorch returns {tuple(expected.shape)}")
    return float((got - expected).abs().max())


def write_sidecar(spec: ExportSpec, path: Path, extra: dict[str, Any]) -> Path:
    """`<file>.json` (model.onnx.json): everything a caller needs to feed the file and read its output."""
    sidecar = path.with_name(path.name + ".json")  # model.onnx.json: one sidecar per exported file
    sidecar.write_text(json.dumps({**extra, **spec.sidecar}, indent=2) + "\n")
    return sidecar


def image_input(name: str, channels: int, size: tuple[int, int], mean, std, size_multiple: int | None = None) -> dict[str, Any]:
    """The sidecar's description of an image input: how to turn an RGB/grey uint8 image into it."""
    hw: list[Any] = [size[0], size[1]] if size_multiple is None else ["height", "width"]
    entry: dict[str, Any] = {
        "name": name,
        "shape": ["batch", channels, *hw],
        "layout": "NCHW",
        "dtype": "float32",
        "color": "RGB" if channels == 3 else "grayscale",
        "trained_size": list(size),
        "preprocess": "x = (uint8_image / 255 - mean) / std, per channel",
        "value_range": [0, 255],
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
    }
    if size_multiple is not None:
        entry["size_multiple"] = size_multiple
    return entry


def image_hw(size) -> tuple[int, int]:
    """(H, W) from a data module's `image_size` (an int for square images, or a pair)."""
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
