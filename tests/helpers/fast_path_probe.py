"""Test-only callback, injected with `+callbacks.probe._target_=fast_path_probe.FastPathProbe`:
it records what really ran inside the first training step (autocast state, the networks' output
dtypes, the loss dtype) and the weights' memory format, as JSON at `path`."""

from __future__ import annotations

import json

import pytorch_lightning as pl
import torch

from segen.perf import networks


class FastPathProbe(pl.Callback):
    def __init__(self, path: str):
        self.path = path
        self.seen: dict = {"outputs": {}, "autocast": {}}
        self.handles: list = []

    def on_train_start(self, trainer, pl_module):
        for net in networks(pl_module):
            name = next(n for n, m in pl_module.named_children() if m is net)

            def hook(module, args, output, name=name):
                out = output[0] if isinstance(output, tuple) else output
                self.seen["outputs"].setdefault(name, str(out.dtype))
                self.seen["autocast"].setdefault(name, [torch.is_autocast_enabled("cpu"), str(torch.get_autocast_dtype("cpu"))])

            self.handles.append(net.register_forward_hook(hook))
        nets = [id(net) for net in networks(pl_module)]
        self.seen["compiled"] = {n: getattr(m, "_compiled_call_impl", None) is not None for n, m in pl_module.named_children() if id(m) in nets}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == 0:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.seen["loss"] = str(loss.dtype)
            for handle in self.handles:
                handle.remove()
            weights = {n: p for n, p in pl_module.named_parameters() if p.dim() == 4}
            self.seen["channels_last"] = {n: p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for n, p in weights.items()
                                          if p.shape[-1] * p.shape[-2] > 1 and p.shape[1] > 1}
            self.seen["weight_dtypes"] = sorted({str(p.dtype) for p in pl_module.parameters()})
            self.seen["precision"] = str(trainer.precision)
            with open(self.path, "w") as f:
                json.dump(self.seen, f)
