# ruff: noqa: E402 (segen.threads must run before torch is imported)
"""Where does a training step's time go, in fp32 and on the fast path? One table per model.

    python scripts/profile_step.py                          # unet, dcgan, pix2pix; 1 thread
    python scripts/profile_step.py --models cnn unet --steps 10
    python scripts/profile_step.py --models dcgan --torch-profiler   # torch.profiler's own op table too

The steps are `scripts/bench.py`'s plain loops (the networks, optimizers, batch sizes and uint8
tensor data of `make bench`: unet = unet_camvid's net at 128 px, batch 8; dcgan and pix2pix =
their shapes recipes, batch 32 and 16; cnn = the default `segen train`), once in fp32 NCHW and
once in bf16 autocast + channels_last ("fast"), on one thread.

Every aten op the step runs is timed with the thread's CPU clock (CLOCK_THREAD_CPUTIME_ID),
not the wall clock, so other jobs on the machine do not land in whichever op was running when
the scheduler took the core away (torch.profiler measures wall time; under load its per-op
split is noise). Each op goes to one family, forward and backward apart:

- forward: by the leaf module it runs in (a hook tracks them; spectral norm's parametrization
  is its own module inside the conv whose weight it makes), else by the op (`cat`, losses);
- backward: by the autograd node running it (`torch._C._current_autograd_node`), ConvolutionBackward0
  split into conv and conv-transpose by the op's `transposed` argument;
- `optimizer step`: everything inside `torch.optim`'s step (Adam's foreach ops) but the closure
  that Lightning's automatic optimization runs the forward and backward in;
- `autocast casts`: every `_to_copy` that changes a dtype (autocast's casts of weights and
  activations, and their backward); `layout copies`: copies that only change the memory
  format (an op that wants NCHW meeting channels_last, or the reverse);
- `framework (not in ops)`: the step's CPU time minus all ops: Python, autograd's engine,
  hooks, allocation.

The "fast / fp32" column is the family's speed-up; "share" is its part of the fast step.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from segen.threads import configure_threads

configure_threads()

import bench  # scripts/bench.py: the plain loops and the model list
import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
MODULE_FAMILY = {
    "Conv2d": "conv", "ParametrizedConv2d": "conv", "ConvTranspose2d": "conv-transpose",
    "ParametrizedConvTranspose2d": "conv-transpose", "Linear": "linear", "ParametrizedLinear": "linear",
    "Embedding": "embedding", "ParametrizedEmbedding": "embedding",
    "BatchNorm2d": "batch norm", "InstanceNorm2d": "instance norm", "_SpectralNorm": "spectral norm",
    "Upsample": "upsampling", "MaxPool2d": "pooling", "AvgPool2d": "pooling", "AdaptiveAvgPool2d": "pooling",
    "ReLU": "activations, dropout", "LeakyReLU": "activations, dropout", "Tanh": "activations, dropout",
    "Sigmoid": "activations, dropout", "Dropout": "activations, dropout", "Identity": "activations, dropout",
}
NODE_FAMILY = {  # autograd node name (without the trailing digit) -> family
    "NativeBatchNormBackward": "batch/instance norm", "UpsampleBilinear2DBackward": "upsampling",
    "UpsampleNearest2DBackward": "upsampling", "MvBackward": "spectral norm", "DotBackward": "spectral norm",
    "VdotBackward": "spectral norm", "CatBackward": "cat", "ToCopyBackward": "autocast casts",
    "AddmmBackward": "linear", "MmBackward": "linear", "EmbeddingBackward": "embedding",
    "MaxPool2DWithIndicesBackward": "pooling", "AvgPool2DBackward": "pooling", "MeanBackward": "loss and other ops",
    "torch::autograd::AccumulateGrad": "gradient accumulation",
}
ELEMENTWISE_NODES = ("Relu", "LeakyRelu", "Tanh", "Sigmoid", "Threshold", "NativeDropout", "Mul", "Div", "Add", "Sub", "Neg",
                     "Softplus", "Clamp", "Where", "Expand", "View", "UnsafeView", "Reshape", "Clone", "Permute", "Squeeze",
                     "Unsqueeze", "T", "Transpose", "Sum", "Slice", "Select", "Index", "Gather")
OP_FAMILY = {"cat": "cat", "upsample_bilinear2d": "upsampling", "upsample_nearest2d": "upsampling"}


class OpClock(TorchDispatchMode):
    """Thread CPU time of every aten op, by family (see the module docstring)."""

    def __init__(self):
        super().__init__()
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.modules: list[str] = []
        self.in_optimizer = False
        self.active = True  # off: ops run untimed (segen train's set-up, warm-up and validation)
        self.convs: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))  # conv shape -> fwd/bwd seconds

    def family(self, func, args, kwargs) -> tuple[str, str]:
        name = func.overloadpacket.__name__
        if name == "_to_copy":
            src, dtype = args[0], kwargs.get("dtype")
            if dtype is not None and dtype != src.dtype:
                return "autocast casts", self.phase()
            return "layout copies", self.phase()
        if name == "clone" and kwargs.get("memory_format") is not None and args[0].dim() == 4:
            return "layout copies", self.phase()
        if name == "copy_" and args[0].dim() == 4 and args[0].stride() != args[1].stride():
            return "layout copies", self.phase()
        if self.in_optimizer:
            return "optimizer step", "step"
        node = torch._C._current_autograd_node()
        if node is not None:
            node_name = node.name().rstrip("0123456789")
            if node_name == "ConvolutionBackward":
                return ("conv-transpose" if name == "convolution_backward" and args[7] else "conv"), "bwd"
            if node_name in NODE_FAMILY:
                return NODE_FAMILY[node_name], "bwd"
            if node_name.removesuffix("Backward") in ELEMENTWISE_NODES:
                return "elementwise (bwd of activations, losses, sigma)", "bwd"
            return node_name, "bwd"
        if self.modules:
            return MODULE_FAMILY.get(self.modules[-1], self.modules[-1]), "fwd"
        if name == "convolution":
            return ("conv-transpose" if args[6] else "conv"), "fwd"
        return OP_FAMILY.get(name, "loss and other ops"), "fwd"

    def phase(self) -> str:
        if self.in_optimizer:
            return "step"
        return "bwd" if torch._C._current_autograd_node() is not None else "fwd"

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.active:
            return func(*args, **kwargs)
        key = self.family(func, args, kwargs)
        start = time.thread_time()
        out = func(*args, **kwargs)
        seconds = time.thread_time() - start
        self.seconds[key] += seconds
        if key[0] in ("conv", "conv-transpose") and func.overloadpacket.__name__ in ("convolution", "convolution_backward"):
            x, w = (args[0], args[1]) if func.overloadpacket.__name__ == "convolution" else (args[1], args[2])
            stride = args[3] if func.overloadpacket.__name__ == "convolution" else args[4]
            shape = f"{key[0]} {w.shape[1] if key[0] == 'conv' else w.shape[0]}->{w.shape[0] if key[0] == 'conv' else w.shape[1]}" \
                    f" k{w.shape[-1]} s{stride[0]} on {x.shape[-2]}x{x.shape[-1]}"
            self.convs[shape][key[1]] += seconds
        return out


def track_modules(clock: OpClock) -> list:
    """Keep `clock.modules` at the stack of leaf modules (and parametrizations) now running, for
    every module (global hooks: segen's own nets, built inside `segen train`, included)."""
    from torch.nn.modules.module import (
        register_module_forward_hook,
        register_module_forward_pre_hook,
    )

    def leaf(mod) -> bool:  # no children but its parametrizations (a spectrally normalized conv is one)
        return not any(n != "parametrizations" for n, _ in mod.named_children())

    def pre(mod, args):
        if leaf(mod):
            clock.modules.append(type(mod).__name__)

    def post(mod, args, out):
        if leaf(mod):
            clock.modules.pop()

    return [register_module_forward_pre_hook(pre), register_module_forward_hook(post)]


def track_optimizer(clock: OpClock) -> list:
    from torch.optim.optimizer import (
        register_optimizer_step_post_hook,
        register_optimizer_step_pre_hook,
    )

    def pre(opt, args, kwargs):
        clock.in_optimizer = True
        closure = args[1] if len(args) > 1 else kwargs.get("closure")  # args[0] is the optimizer
        if closure is None:
            return None

        def unclocked(closure=closure):  # Lightning's automatic optimization: forward and backward run in here
            clock.in_optimizer = False
            try:
                return closure()
            finally:
                clock.in_optimizer = True

        if len(args) > 1:
            return (args[0], unclocked, *args[2:]), kwargs
        return args, {**kwargs, "closure": unclocked}

    def post(opt, args, kwargs):
        clock.in_optimizer = False

    return [register_optimizer_step_pre_hook(pre), register_optimizer_step_post_hook(post)]


class Stopwatch(bench.Stopwatch):
    """bench.py's stopwatch in `segen train` (found as `__main__.Stopwatch`), which also adds up
    the thread CPU time of the timed batches and switches the op clock on for them only."""

    clock: OpClock | None = None
    cpu_seconds = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.warmup <= batch_idx < self.warmup + self.steps:
            Stopwatch.started = time.thread_time()
            if Stopwatch.clock is not None:
                Stopwatch.clock.active = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.warmup <= batch_idx < self.warmup + self.steps:
            if Stopwatch.clock is not None:
                Stopwatch.clock.active = False
            Stopwatch.cpu_seconds += time.thread_time() - Stopwatch.started
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


def summarize(clock: OpClock, steps: int, step_cpu: float, step_wall: float) -> dict:
    families: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for (family, phase), seconds in clock.seconds.items():
        families[family][phase] += 1000 * seconds / steps
    in_ops = sum(sum(p.values()) for p in families.values())
    families["framework (not in ops)"]["other"] = step_cpu - in_ops  # a residual: negative when the two runs differ by more
    convs = {shape: {phase: 1000 * t / steps for phase, t in p.items()} for shape, p in clock.convs.items()}
    return {"step_cpu_ms": step_cpu, "step_wall_ms": step_wall, "families": {f: dict(p) for f, p in families.items()}, "convs": convs}


def profile_segen(case: bench.Case, warmup: int, steps: int) -> dict:
    """`segen train` on its default path (bench.py's Case.segen: the composed config, Lightning,
    callbacks), timed over batches warmup..warmup+steps-1: once plain, once with the op clock."""
    Stopwatch.clock, Stopwatch.cpu_seconds = None, 0.0
    case.segen(warmup, steps, seed=0)
    step_cpu = 1000 * Stopwatch.cpu_seconds / steps
    step_wall = 1000 * bench.Stopwatch.readings[-1] / steps
    clock = OpClock()
    clock.active = False
    Stopwatch.clock = clock
    handles = track_modules(clock) + track_optimizer(clock)
    try:
        with clock:
            case.segen(warmup, steps, seed=0)
    finally:
        for h in handles:
            h.remove()
        Stopwatch.clock = None
    return summarize(clock, steps, step_cpu, step_wall)


def profile_mode(case: bench.Case, fast: bool, warmup: int, steps: int, torch_profiler: bool) -> dict:
    case.fast = fast
    step = case.plain_step(0, warmup + 3 * steps)
    batches = list(case._batches(warmup + 3 * steps, 0))
    for x, y in batches[:warmup]:
        step(x, y)
    wall, cpu = time.perf_counter(), time.thread_time()  # the plain step, nothing attached
    for x, y in batches[warmup : warmup + steps]:
        step(x, y)
    step_cpu = 1000 * (time.thread_time() - cpu) / steps
    step_wall = 1000 * (time.perf_counter() - wall) / steps
    clock = OpClock()
    handles = track_modules(clock) + track_optimizer(clock)
    with clock:
        for x, y in batches[warmup + steps : warmup + 2 * steps]:
            step(x, y)
    for h in handles:
        h.remove()
    result = summarize(clock, steps, step_cpu, step_wall)
    if torch_profiler:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for x, y in batches[warmup + 2 * steps :]:
                step(x, y)
        result["torch_profiler"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)
    return result


def print_table(name: str, case: bench.Case, a: dict, b: dict, convs: int, labels: tuple[str, str] = ("fp32", "fast")) -> None:
    fa, fb = a["families"], b["families"]
    ta, tb = a["step_cpu_ms"], b["step_cpu_ms"]
    la, lb = labels

    def ms(fam: dict) -> float:
        return sum(fam.values())

    def back(fam: dict) -> float:
        return fam.get("bwd", 0.0) + fam.get("step", 0.0) + fam.get("other", 0.0)

    frame = "framework (not in ops)"
    rows = sorted((set(fa) | set(fb)) - {frame}, key=lambda f: -ms(fb.get(f, {})))
    oa, ob = sum(ms(fa[f]) for f in fa if f != frame), sum(ms(fb[f]) for f in fb if f != frame)
    print(f"\n### {name}: batch {case.batch_size}, {int(case.train_images.shape[-1])} px, {torch.get_num_threads()} thread: {la} vs {lb}")
    print(f"step CPU time: {la} {ta:.1f} ms, {lb} {tb:.1f} ms, x{ta / tb:.2f} (wall {a['step_wall_ms']:.1f} / {b['step_wall_ms']:.1f} ms); "
          f"in ops: {oa:.1f} / {ob:.1f} ms, x{oa / ob:.2f}\n")
    print(f"| family | {la} fwd | {la} bwd/step | {lb} fwd | {lb} bwd/step | {la} ms | {lb} ms | {la} / {lb} | share of {lb} ops |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    small = []
    for f in rows:
        x, y = fa.get(f, {}), fb.get(f, {})
        if max(ms(x), ms(y)) < 0.005 * ob:  # under 0.5% in both: one row below
            small.append(f)
            continue
        speed = f"x{ms(x) / ms(y):.2f}" if ms(y) > 0.01 else "-"
        print(f"| {f} | {x.get('fwd', 0.0):.1f} | {back(x):.1f} | {y.get('fwd', 0.0):.1f} | {back(y):.1f} | {ms(x):.1f} | {ms(y):.1f} | {speed} | {100 * ms(y) / ob:.1f}% |")
    if small:
        sa, sb = sum(ms(fa.get(f, {})) for f in small), sum(ms(fb.get(f, {})) for f in small)
        print(f"| {len(small)} smaller families | | | | | {sa:.1f} | {sb:.1f} | | {100 * sb / ob:.1f}% |")
    print(f"| **all ops** | | | | | {oa:.1f} | {ob:.1f} | x{oa / ob:.2f} | 100% |")
    print(f"| framework: step CPU time (without the op clock) minus all ops; noisy | | | | | {ta - oa:.1f} | {tb - ob:.1f} | | |")
    ca, cb = a["convs"], b["convs"]
    shapes = sorted(set(ca) | set(cb), key=lambda k: -sum(ca.get(k, {}).values()))[:convs]
    if shapes:
        print(f"\n{name}: the {len(shapes)} costliest convolution shapes (forward + backward, all calls in a step; batch {case.batch_size})\n")
        print(f"| convolution (in->out channels, kernel, stride, on input size) | {la} ms | {lb} ms | {la} / {lb} |")
        print("|---|---:|---:|---:|")
        for k in shapes:
            x, y = sum(ca.get(k, {}).values()), sum(cb.get(k, {}).values())
            print(f"| {k} | {x:.1f} | {y:.1f} | x{x / y:.2f} |" if y > 0 else f"| {k} | {x:.1f} | - | - |")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=["unet", "dcgan", "pix2pix"], choices=list(bench.MODELS))
    p.add_argument("--steps", type=int, default=10, help="steps timed per mode (plain, then with the op clock)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--convs", type=int, default=8, help="convolution shapes listed per model (0: none)")
    p.add_argument("--segen", action="store_true", help="also profile `segen train` itself (default path) against the plain fast loop")
    p.add_argument("--torch-profiler", action="store_true", help="also print torch.profiler's top ops by self CPU (wall) time")
    p.add_argument("--json", default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # one thread: the thread CPU clock then sees all of the step's work
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            _, overrides = bench.MODELS[name]
            case = bench.Case(name, overrides, torch.device("cpu"), Path(tmp), None)
            fp32 = profile_mode(case, False, args.warmup, args.steps, args.torch_profiler)
            fast = profile_mode(case, True, args.warmup, args.steps, args.torch_profiler)
            print_table(name, case, fp32, fast, args.convs)
            for mode, r in (("fp32", fp32), ("fast", fast)):
                if "torch_profiler" in r:
                    print(f"\ntorch.profiler, {name} {mode} (wall clock, {args.steps} steps):\n{r.pop('torch_profiler')}")
            report[name] = {"batch_size": case.batch_size, "fp32": fp32, "fast": fast}
            if args.segen:
                report[name]["segen"] = profile_segen(case, args.warmup, args.steps)
                print_table(name, case, fast, report[name]["segen"], 0, ("plain fast", "segen"))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
