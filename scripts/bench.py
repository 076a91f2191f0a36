# ruff: noqa: E402 (segen.threads must run before torch is imported)
"""Is segen fast? Training images/s against plain loops, the roofline, data path and start-up, in one run.

    python scripts/bench.py                  # CPU, under 5 minutes on 2 cores (`make bench`)
    python scripts/bench.py --device cuda    # trainer=gpu: bf16, channels_last, compile, ...

1. Training: segen on its default path (Hydra compose of configs/train.yaml, objects built as
   in segen/commands/train.py: Lightning, progress bar, logger, checkpoint callback; bf16-mixed
   + channels_last where the CPU has native bf16) against two plain PyTorch loops with the same
   network, optimizer, LR schedule, batch size and uint8 tensor data: "plain fp32" (eager fp32
   NCHW, what a user writes first) and "plain fast" (bf16 autocast + channels_last: segen's own
   overhead). For cnn (the default `segen train`), unet (unet_camvid's net at 128 px), dcgan
   and pix2pix on the built-in shapes data at their recipes' batch sizes. A training step's
   FLOPs (torch.utils.flop_counter) over its time give the achieved GFLOP/s, shown as a share
   of the bf16 (and fp32) matmul rate measured in the same run.
2. Data path: segen's in-memory uint8 tensor loader (normalize + crop/flip on the device)
   against torchvision's datasets + DataLoader + PIL transforms, both reading the same
   MNIST-format idx files and CIFAR-10-format pickles that this script writes to a temp dir.
3. Start-up: `segen --help` wall time, and time from launching `segen train` to its first
   training step.

Other jobs may share the machine, so A and B alternate (A B, B A, A B, ...) within one run,
the first `--warmup` steps of every run are not timed, and the table reports medians, the
min-max spread and the median of the paired B/A ratios.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import pickle
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from segen.threads import configure_threads

configure_threads()  # as `segen` does, before torch loads: OpenMP threads sleep when idle

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from rich.console import Console
from rich.table import Table

from segen.commands.common import fit_data_to_task, quiet_lightning
from segen.config import bind_data, build, config_dir
from segen.data.in_memory import IGNORE_INDEX, random_crop, random_hflip
from segen.data.shapes import make_shapes
from segen.tasks.optim import build_optimizers

console = Console(width=150)
ROOT = Path(__file__).resolve().parent.parent
SEGEN = Path(sys.executable).with_name("segen")

# name -> (model config, Hydra overrides). The recipes (configs/recipe/<model>_shapes.yaml)
# set widths and batch sizes. Fewer images than the recipes (a set's size changes no step's
# cost, only the set-up time).
MODELS = {
    "cnn": ("cnn", ["model=cnn", "data=shapes", "data.num_train=2000"]),  # the default `segen train`
    # unet_camvid's net (depth 4, width 16, bilinear) at its batch of 8, on 128 px shapes.
    "unet": ("unet", ["model=unet", "data=shapes", "data.image_size=128", "data.num_train=400", "data.batch_size=8",
                      "model.net.depth=4", "model.net.base_width=16", "model.net.bilinear=true"]),
    "dcgan": ("dcgan", ["model=dcgan", "data=shapes", "data.num_train=3000"]),
    "pix2pix": ("pix2pix", ["model=pix2pix", "data=shapes", "data.num_train=1500"]),
}
GOALS = {"train": 0.95, "data": 3.0}
# segen (default path) / plain fp32 loop, per model (issue 24).
SPEEDUP_GOALS = {"cnn": 2.0, "unet": 2.0, "dcgan": 1.5, "pix2pix": 1.5}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


# -- 1. segen vs a plain loop ---------------------------------------------------------------------
def compose_train(overrides: list[str], hydra: bool = False):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="train"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=hydra)


class Stopwatch(pl.Callback):
    """Times batches warmup..warmup+steps-1: from the end of batch warmup-1 to the end of the last.

    Added to `segen train` with `+callbacks.stopwatch._target_=__main__.Stopwatch`, so Hydra
    builds it; the readings land in the class-level `readings` list.
    """

    readings: list[float] = []

    def __init__(self, warmup: int, steps: int, cuda: bool):
        self.warmup, self.steps, self.cuda = warmup, steps, cuda
        self.start = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx in (self.warmup - 1, self.warmup + self.steps - 1) and self.cuda:
            torch.cuda.synchronize()
        if batch_idx == self.warmup - 1:
            self.start = time.perf_counter()
        elif batch_idx == self.warmup + self.steps - 1:
            Stopwatch.readings.append(time.perf_counter() - self.start)


class Case:
    """One model: its composed config, a datamodule for the plain loop, and the two runners."""

    def __init__(self, name: str, overrides: list[str], device: torch.device, workdir: Path, batch_size: int | None):
        self.name, self.device, self.workdir = name, device, workdir
        trainer = ["trainer=gpu"] if device.type == "cuda" else ["trainer=cpu"]
        batch = [f"data.batch_size={batch_size}"] if batch_size else []
        base = [*overrides, *trainer, *batch, f"paths.data_dir={workdir}", "test=false"]
        self.runs = 0
        cfg = compose_train([*base, f"paths.output_dir={workdir / name}"])
        self.batch_size = int(cfg.data.batch_size)
        self.base_overrides = base
        self.datamodule = build(cfg.data, "data")
        fit_data_to_task(cfg.model, self.datamodule, name, "shapes")
        bind_data(cfg.model, self.datamodule.info)
        self.datamodule.setup("fit")
        self.cfg = cfg
        self.fast = False
        from segen.perf import choose_fast_path

        self.segen_precision = choose_fast_path(cfg.trainer.get("accelerator"), cfg.trainer.get("precision"), (cfg.get("perf") or {}).get("channels_last")).precision
        self.train_images = self.datamodule.splits["train"].images
        self.train_targets = self.datamodule.splits["train"].targets

    def batches_per_epoch(self) -> int:
        return len(self.train_images) // self.batch_size

    def segen(self, warmup: int, steps: int, seed: int) -> float:
        """Images/s of `segen train` itself: segen.commands.train.main on the composed config,
        as the CLI runs it (Lightning, progress bar, logger, checkpoints, segen's callbacks)."""
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import open_dict

        from segen.commands import train
        from segen.console import console as segen_console

        n = warmup + steps
        self.runs += 1
        # Exactly n batches in one epoch; one val batch and no sanity check keep the run short
        # (both happen outside the timed window anyway).
        cfg = compose_train([*self.base_overrides, f"seed={seed}", "++trainer.max_epochs=1", f"++trainer.limit_train_batches={n}",
                             "++trainer.limit_val_batches=1", "++trainer.num_sanity_val_steps=0",
                             "++callbacks.rich_model_summary=null", "++trainer.enable_model_summary=false",  # a table per run, no per-step cost
                             "+callbacks.stopwatch._target_=__main__.Stopwatch", f"+callbacks.stopwatch.warmup={warmup}",
                             f"+callbacks.stopwatch.steps={steps}", f"+callbacks.stopwatch.cuda={self.device.type == 'cuda'}"],
                            hydra=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(self.workdir / self.name / str(self.runs))
        Path(cfg.hydra.runtime.output_dir).mkdir(parents=True)  # Hydra's job launcher does this
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg.hydra
        before = len(Stopwatch.readings)
        segen_console.quiet = True  # the config tree and run-dir lines, printed once per run
        try:
            train.main(cfg)
        finally:
            segen_console.quiet = False
        if len(Stopwatch.readings) != before + 1:
            raise RuntimeError(f"{self.name}: segen train ran fewer than {n} batches")
        return steps * self.batch_size / Stopwatch.readings[-1]

    # -- the plain loop ---------------------------------------------------------------------------
    def _autocast(self):
        dtype = torch.bfloat16 if self.fast else None
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def _prepare_nets(self, nets: list[torch.nn.Module]) -> None:
        """fp32: eager NCHW. fast: bf16 autocast + channels_last, and on a GPU the rest of
        trainer=gpu's knobs (compile, TF32, cudnn autotuning) as segen runs them."""
        perf = self.cfg.get("perf") or {}
        gpu = self.device.type == "cuda" and self.fast
        torch.backends.cudnn.benchmark = gpu and bool(self.cfg.trainer.get("benchmark") or False)
        if gpu and perf.get("float32_matmul_precision"):
            torch.set_float32_matmul_precision(perf.float32_matmul_precision)
        self._nets = nets
        for net in nets:
            net.to(self.device)
            if self.fast:
                net.to(memory_format=torch.channels_last)
            if gpu and perf.get("compile"):
                net.compile()
            net.train()

    def _batches(self, n: int, seed: int):
        """The best hand-written input pipeline: index a shuffled uint8 tensor, move, normalize."""
        dm = self.datamodule
        perm = torch.randperm(len(self.train_images), generator=torch.Generator().manual_seed(seed))
        mean = torch.tensor(dm.mean, device=self.device).view(1, -1, 1, 1) * 255
        std = torch.tensor(dm.std, device=self.device).view(1, -1, 1, 1) * 255
        masks = dm.target == "masks"
        for i in range(n):
            idx = perm[i * self.batch_size : (i + 1) * self.batch_size]
            x = self.train_images[idx].to(self.device, non_blocking=True)
            y = self.train_targets[idx].to(self.device, non_blocking=True)
            x = (x.float() - mean) / std
            if dm.crop_padding:
                x, y = random_crop(x, dm.crop_padding, y) if masks else (random_crop(x, dm.crop_padding), y)
            if dm.hflip:
                x, y = random_hflip(x, y) if masks else (random_hflip(x), y)
            yield x, (y.long() if masks else y)

    def plain(self, warmup: int, steps: int, seed: int, fast: bool = False) -> float:
        self.fast = fast
        step = self.plain_step(seed, warmup + steps)
        start = None
        for i, (x, y) in enumerate(self._batches(warmup + steps, seed)):
            step(x, y)
            if i == warmup - 1:
                sync(self.device)
                start = time.perf_counter()
        sync(self.device)
        return steps * self.batch_size / (time.perf_counter() - start)

    def plain_step(self, seed: int, total_steps: int) -> Callable:
        torch.manual_seed(seed)
        task = build(self.cfg.model, "model")  # only to borrow its freshly initialized nets
        if self.name == "dcgan":
            return self._gan_step(task)
        if self.name == "pix2pix":
            return self._pix2pix_step(task)
        return self._supervised_step(task, total_steps)

    def step_flops(self) -> int:
        """FLOPs of one training step (forward + backward of every net, as torch counts them)."""
        from torch.utils.flop_counter import FlopCounterMode

        self.fast = False
        step = self.plain_step(0, 10)
        x, y = next(self._batches(1, 0))
        step(x, y)  # lazy set-up out of the count
        with FlopCounterMode(display=False) as counter:
            step(x, y)
        return int(counter.get_total_flops())

    def _supervised_step(self, task, total_steps: int) -> Callable:
        net = task.net
        self._prepare_nets([net])
        m = self.cfg.model
        opts = build_optimizers(net.parameters(), instantiate(m.optimizer), instantiate(m.scheduler) if m.get("scheduler") else None, total_steps)
        opt, sched = opts["optimizer"], opts.get("lr_scheduler", {}).get("scheduler")
        clip = self.cfg.trainer.get("gradient_clip_val")
        if self.name == "unet":
            weight = task.class_weights.to(self.device) if task.class_weights is not None else None
            dice = float(m.get("dice_weight") or 0.0)

            def loss_fn(logits, y):
                loss = F.cross_entropy(logits, y, weight=weight, ignore_index=IGNORE_INDEX)
                if dice:
                    from segen.tasks.segmentation import dice_loss

                    loss = loss + dice * dice_loss(logits, y)
                return loss
        else:
            smoothing = float(m.get("label_smoothing") or 0.0)

            def loss_fn(logits, y):
                return F.cross_entropy(logits, y, label_smoothing=smoothing)

        def step(x, y):
            with self._autocast():
                loss = loss_fn(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
            opt.step()
            if sched is not None:
                sched.step()

        return step

    def _gan_step(self, task) -> Callable:
        from segen.tasks.gan import discriminator_loss, generator_loss

        g, d = task.generator, task.discriminator
        self._prepare_nets([g, d])
        opt_g, opt_d = (instantiate(self.cfg.model.optimizer_g)(params=g.parameters()), instantiate(self.cfg.model.optimizer_d)(params=d.parameters()))
        kind, latent = task.loss, task.latent_dim

        def step(real, _labels):
            with self._autocast():
                fake = g(torch.randn(len(real), latent, device=self.device))
                d_loss = discriminator_loss(kind, d(real), d(fake.detach()))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            d.requires_grad_(False)
            with self._autocast():
                g_loss = generator_loss(kind, d(fake))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            d.requires_grad_(True)

        return step

    def _pix2pix_step(self, task) -> Callable:
        from segen.tasks.gan import discriminator_loss, generator_loss

        g, d = task.generator, task.discriminator
        self._prepare_nets([g, d])
        opt_g, opt_d = (instantiate(self.cfg.model.optimizer_g)(params=g.parameters()), instantiate(self.cfg.model.optimizer_d)(params=d.parameters()))
        kind, lambda_l1 = task.loss, task.lambda_l1

        def step(real, masks):
            with self._autocast():
                fake = g(masks)
                d_loss = 0.5 * discriminator_loss(kind, d(masks, real), d(masks, fake.detach()))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            d.requires_grad_(False)
            with self._autocast():
                g_loss = generator_loss(kind, d(masks, fake)) + lambda_l1 * F.l1_loss(fake, real)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            d.requires_grad_(True)

        return step


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int = 2048, seconds: float = 1.0) -> float:
    """GFLOP/s of an n x n matmul in `dtype`: the roofline a conv net's step is read against."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    sync(device)
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def bench_training(args, device: torch.device, workdir: Path, rows: list, report: dict) -> None:
    roof = {"bf16": matmul_rate(device, torch.bfloat16), "fp32": matmul_rate(device, torch.float32)}
    report["matmul_gflops"] = roof
    console.print(f"2048x2048 matmul: bf16 {roof['bf16']:.0f} GFLOP/s, fp32 {roof['fp32']:.0f} GFLOP/s ({torch.get_num_threads()} threads)")
    for name in args.models:
        model, overrides = MODELS[name]
        if not (config_dir() / "model" / f"{model}.yaml").is_file():
            note = f"skipped: configs/model/{model}.yaml does not exist yet"
            console.print(f"[yellow]{name}: {note}[/]")
            report["training"][name] = {"skipped": note}
            rows.append((f"train {name}", "-", "-", "-", note, ""))
            continue
        t0 = time.perf_counter()
        case = Case(name, overrides, device, workdir, args.batch_size)
        # Calibrate on the fp32 loop (the slowest): enough steps for ~args.run_seconds per run.
        probe = case.plain(args.warmup, 2, seed=0)
        steps = int(min(max(args.run_seconds * probe / case.batch_size, args.min_steps), args.max_steps))
        steps = min(steps, case.batches_per_epoch() - args.warmup)
        runs: dict[str, list[float]] = {"segen": [], "fp32": [], "fast": []}
        runners = {"segen": case.segen, "fp32": case.plain, "fast": functools.partial(case.plain, fast=True)}
        order = list(runners)
        for r in range(args.repeats):  # A B C, B C A, C A B, ...: each runner in each position
            for side in order[r % 3:] + order[: r % 3]:
                runs[side].append(runners[side](args.warmup, steps, seed=r))
        vs_fp32 = [s / p for s, p in zip(runs["segen"], runs["fp32"], strict=True)]
        vs_fast = [s / p for s, p in zip(runs["segen"], runs["fast"], strict=True)]
        flops = case.step_flops()
        achieved = flops * statistics.median(runs["segen"]) / case.batch_size / 1e9
        entry = {
            "batch_size": case.batch_size, "image_size": int(case.train_images.shape[-1]), "steps": steps,
            "warmup": args.warmup, "segen_precision": str(case.segen_precision),
            "segen_img_s": summary(runs["segen"]), "plain_fp32_img_s": summary(runs["fp32"]), "plain_fast_img_s": summary(runs["fast"]),
            "segen_vs_fp32": summary(vs_fp32), "segen_vs_fast": summary(vs_fast),
            "goal_vs_fp32": SPEEDUP_GOALS[name], "goal_vs_fast": GOALS["train"],
            "met": statistics.median(vs_fp32) >= SPEEDUP_GOALS[name] and statistics.median(vs_fast) >= GOALS["train"],
            "gflop_per_step": flops / 1e9, "segen_gflops": achieved,
            "share_of_bf16_matmul": achieved / roof["bf16"], "share_of_fp32_matmul": achieved / roof["fp32"],
            "seconds": time.perf_counter() - t0,
        }
        report["training"][name] = entry
        what = f"train {name} ({entry['image_size']} px, batch {case.batch_size})"
        rows.append(_row(what, "segen / plain fp32", entry["segen_img_s"], entry["plain_fp32_img_s"], entry["segen_vs_fp32"], SPEEDUP_GOALS[name]))
        rows.append(_row(what, "segen / plain fast", entry["segen_img_s"], entry["plain_fast_img_s"], entry["segen_vs_fast"], GOALS["train"]))
        console.print(f"{name}: segen ({entry['segen_precision']}) {entry['segen_img_s']['median']:.0f} img/s, plain fp32 {entry['plain_fp32_img_s']['median']:.0f}, "
                      f"plain fast {entry['plain_fast_img_s']['median']:.0f}; x{statistics.median(vs_fp32):.2f} vs fp32, {statistics.median(vs_fast):.3f} vs fast; "
                      f"{flops / 1e9:.2f} GFLOP/step = {achieved:.0f} GFLOP/s, {100 * entry['share_of_bf16_matmul']:.0f}% of bf16 matmul "
                      f"({entry['seconds']:.0f} s)")


def bench_compile(args, device: torch.device, workdir: Path, rows: list, report: dict) -> None:
    """torch.compile on the fast path (not in `make bench`: minutes of C++ builds): the first
    step's time (the compile), the steady step time against eager, and the steps a run needs
    before the compile has paid for itself."""
    import torch._dynamo

    for name in args.models:
        model, overrides = MODELS[name]
        case = Case(name, overrides, device, workdir, args.batch_size)
        case.fast = True
        entry = {}
        for mode in ("eager", "compiled"):
            torch._dynamo.reset()
            step = case.plain_step(0, 1000)
            if mode == "compiled":
                for net in case._nets:
                    net.compile()
            batches = case._batches(args.compile_steps + 1, 0)
            x, y = next(batches)
            t0 = time.perf_counter()
            step(x, y)
            sync(device)
            first = time.perf_counter() - t0
            times = []
            for x, y in batches:
                t0 = time.perf_counter()
                step(x, y)
                sync(device)
                times.append(time.perf_counter() - t0)
            entry[mode] = {"first_step_s": first, "step_s": statistics.median(times[1:])}
        saved = entry["eager"]["step_s"] - entry["compiled"]["step_s"]
        entry["compile_s"] = entry["compiled"]["first_step_s"] - entry["eager"]["first_step_s"]
        entry["speedup"] = entry["eager"]["step_s"] / entry["compiled"]["step_s"]
        entry["break_even_steps"] = entry["compile_s"] / saved if saved > 0 else None
        report.setdefault("compile", {})[name] = entry
        even = f"{entry['break_even_steps']:.0f} steps" if entry["break_even_steps"] else "never"
        console.print(f"compile {name}: compile {entry['compile_s']:.1f} s, step {1000 * entry['eager']['step_s']:.0f} ms eager -> "
                      f"{1000 * entry['compiled']['step_s']:.0f} ms compiled (x{entry['speedup']:.2f}); pays after {even}")


# -- 2. data path ---------------------------------------------------------------------------------
def write_mnist(root: Path, n_train: int, n_test: int) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels, _ = make_shapes(n, image_size=28, channels=1, seed=seed)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.numpy().tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.to(torch.uint8).numpy().tobytes())


def write_cifar10(root: Path, n_train: int, n_test: int) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    files = [(f"data_batch_{i}", n_train // 5, i) for i in range(1, 6)] + [("test_batch", n_test, 9)]
    for name, n, seed in files:
        images, _, _ = make_shapes(n, image_size=32, channels=3, seed=seed)
        labels = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(seed)).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels, "data": images.reshape(n, -1).numpy(), "filenames": [f"{k}.png" for k in range(n)]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": n_train // 5, "num_vis": 3072}, f)


def _rate(batches: Callable, device: torch.device, min_batches: int, min_seconds: float) -> float:
    """Images/s of pulling float batches ready on `device` from `batches()` (one epoch iterator),
    restarting it as needed; the first batch of the first epoch is not timed (warm-up)."""
    it = iter(batches())
    next(it)
    sync(device)
    count, n, start = 0, 0, time.perf_counter()
    while n < min_batches or time.perf_counter() - start < min_seconds:
        try:
            x = next(it)
        except StopIteration:
            it = iter(batches())
            continue
        count += len(x)
        n += 1
    sync(device)
    return count / (time.perf_counter() - start)


def bench_data(args, device: torch.device, workdir: Path, rows: list, report: dict) -> None:
    from torchvision import transforms as T
    from torchvision.datasets import MNIST

    from segen.data.cifar10 import _CIFAR10, CIFAR10_MEAN, CIFAR10_STD, CIFAR10DataModule
    from segen.data.mnist import MNISTDataModule

    root = workdir / "data"
    write_mnist(root, args.data_images, 1000)
    write_cifar10(root, args.data_images, 1000)
    batch = 256

    def segen_batches(dm):
        dm.setup("fit")
        loader = dm.train_dataloader()

        def epoch():
            for images, labels in loader:
                images = dm.normalize(images.to(device, non_blocking=True))
                images, labels = dm.augment(images, labels.to(device, non_blocking=True))
                yield images

        return epoch

    def pil_batches(dataset):
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True,
                                             num_workers=args.pil_workers, pin_memory=device.type == "cuda",
                                             persistent_workers=args.pil_workers > 0)

        def epoch():
            for images, _ in loader:
                yield images.to(device, non_blocking=True)

        return epoch

    cases = {
        "mnist": (
            MNISTDataModule(str(root), download=False, batch_size=batch, val_split=0.1),
            MNIST(str(root), train=True, download=False, transform=T.Compose([T.ToTensor(), T.Normalize((0.1307,), (0.3081,))])),
        ),
        "cifar10": (
            CIFAR10DataModule(str(root), download=False, verify_checksums=False, batch_size=batch, val_split=0.1, crop_padding=4, hflip=True),
            _CIFAR10(str(root), train=True, download=False, verify_checksums=False, transform=T.Compose(
                [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(CIFAR10_MEAN, CIFAR10_STD)])),
        ),
    }
    # Per core: the PIL loader (num_workers=0) transforms one image at a time on one core, so
    # the tensor path gets one thread too (on a shared, oversubscribed CPU, multi-threaded small
    # ops mostly measure the other jobs).
    threads = torch.get_num_threads()
    torch.set_num_threads(args.data_threads)
    for name, (dm, dataset) in cases.items():
        tensor, pil = segen_batches(dm), pil_batches(dataset)
        a, b = [], []
        for r in range(args.repeats):
            order = [(a, tensor), (b, pil)]
            for out, fn in order if r % 2 == 0 else order[::-1]:
                out.append(_rate(fn, device, min_batches=4, min_seconds=args.data_seconds))
        ratios = [x / y for x, y in zip(a, b, strict=True)]
        entry = {"batch_size": batch, "images": args.data_images, "pil_workers": args.pil_workers, "threads": args.data_threads,
                 "tensor_img_s": summary(a), "pil_img_s": summary(b), "ratio": summary(ratios),
                 "goal": GOALS["data"], "met": statistics.median(ratios) >= GOALS["data"]}
        report["data"][name] = entry
        what = "normalize" if name == "mnist" else "crop+flip+normalize"
        rows.append(_row(f"data {name} ({what})", "tensor path / PIL DataLoader", entry["tensor_img_s"], entry["pil_img_s"], entry["ratio"], GOALS["data"]))
        console.print(f"data {name}: tensor {entry['tensor_img_s']['median']:.0f} img/s, PIL {entry['pil_img_s']['median']:.0f} img/s")
    torch.set_num_threads(threads)


# -- 3. start-up ----------------------------------------------------------------------------------
def bench_startup(args, device: torch.device, workdir: Path, report: dict) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    helps = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([str(SEGEN), "--help"], check=True, capture_output=True, env=env)
        helps.append(time.perf_counter() - t0)
    first_steps = []
    trainer = "trainer=gpu" if device.type == "cuda" else "trainer=cpu"
    for i in range(args.startup_runs):
        marker = workdir / f"first_step_{i}.txt"
        cmd = [str(SEGEN), "train", trainer, "debug=smoke", "test=false", f"hydra.run.dir={workdir / f'startup_{i}'}",
               "+callbacks.first_step._target_=segen.perf.FirstStepTime", f"+callbacks.first_step.path={marker}"]
        t0 = time.time()
        with open(workdir / f"startup_{i}.log", "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
            while proc.poll() is None and not marker.exists():
                time.sleep(0.05)
            proc.terminate()  # the first step is all we wait for
            proc.wait()
        if not marker.exists():
            raise RuntimeError(f"`{' '.join(cmd)}` ended before its first step; see {workdir / f'startup_{i}.log'}")
        first_steps.append(float(marker.read_text().split()[0]) - t0)
    report["startup"] = {
        "help_s": summary(helps),
        "train_to_first_step_s": summary(first_steps),
        "command": f"segen train {trainer} debug=smoke test=false",
    }
    console.print(f"start-up: --help {statistics.median(helps):.2f} s, `segen train` to first step {statistics.median(first_steps):.1f} s")


# -- report ---------------------------------------------------------------------------------------
def _fmt(s: dict) -> str:
    return f"{s['median']:,.0f} ({s['min']:,.0f}-{s['max']:,.0f})"


def _row(what: str, pair: str, a: dict, b: dict, ratio: dict, goal: float) -> tuple:
    ok = "[green]yes[/]" if ratio["median"] >= goal else "[red]no[/]"
    return (what, pair, _fmt(a), _fmt(b), f"{ratio['median']:.2f} ({ratio['min']:.2f}-{ratio['max']:.2f})", f">= {goal:g}: {ok}")


def print_table(rows: list, report: dict) -> None:
    table = Table(title=f"segen benchmark on {report['device_name']} (images/s: median (min-max) over {report['repeats']} interleaved runs)")
    for col in ("benchmark", "A / B", "A img/s", "B img/s", "A/B ratio", "goal"):
        table.add_column(col, justify="right" if "img" in col or "ratio" in col else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    s = report.get("startup")
    if s:
        console.print(f"start-up: `segen --help` {s['help_s']['median']:.2f} s ({s['help_s']['min']:.2f}-{s['help_s']['max']:.2f}); "
                      f"`{s['command']}` to its first training step {s['train_to_first_step_s']['median']:.1f} s "
                      f"({s['train_to_first_step_s']['min']:.1f}-{s['train_to_first_step_s']['max']:.1f})")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cuda composes trainer=gpu (bf16, channels_last, compile)")
    p.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--repeats", type=int, default=5, help="interleaved A/B runs per comparison")
    p.add_argument("--batch-size", type=int, default=None, help="training batch size for every model (default: the recipes')")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of every training run")
    p.add_argument("--run-seconds", type=float, default=1.5, help="target timed seconds per training run (sets the step count)")
    p.add_argument("--min-steps", type=int, default=4)
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--data-images", type=int, default=10000, help="images in the generated MNIST/CIFAR-10 train files")
    p.add_argument("--data-seconds", type=float, default=0.5, help="minimum timed seconds per data-path run")
    p.add_argument("--data-threads", type=int, default=1, help="torch threads for the data-path comparison")
    p.add_argument("--pil-workers", type=int, default=0, help="DataLoader workers of the PIL baseline")
    p.add_argument("--startup-runs", type=int, default=2)
    p.add_argument("--skip", nargs="*", default=[], choices=("training", "data", "startup"))
    p.add_argument("--compile", action="store_true", help="also time torch.compile per model (compile time, steady step, break-even); minutes")
    p.add_argument("--compile-steps", type=int, default=12, help="steps per compile measurement")
    p.add_argument("--out", default="outputs/bench/bench.json")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench.py: --device cuda but torch sees no GPU")
    quiet_lightning()
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # "GPU available: ..." per run
    warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers|LeafSpec|sync_dist|logging interval).*")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    report = {"device": args.device, "device_name": name, "torch": torch.__version__, "lightning": pl.__version__,
              "repeats": args.repeats, "args": vars(args), "training": {}, "data": {}}
    rows: list = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="segen-bench-") as tmp:
        workdir = Path(tmp)
        if "startup" not in args.skip:
            bench_startup(args, device, workdir, report)
        if "data" not in args.skip:
            bench_data(args, device, workdir, rows, report)
        if "training" not in args.skip:
            bench_training(args, device, workdir, rows, report)
        if args.compile:
            bench_compile(args, device, workdir, rows, report)
    report["seconds"] = time.perf_counter() - started
    print_table(rows, report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    console.print(f"wrote {out} ({report['seconds']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
