"""What the benchmarks share: peak RSS, the PyTorch DeepLab-v2, and engines that take turns.

Every engine runs in its own child process (so its peak RSS is its own). All
children start together and warm up; then the parent asks them in turn for one
timed run each, round after round, so that load from other processes on a
shared machine falls on every engine alike. Only one engine computes at a time.

Protocol on the child's stdin/stdout, one line each: the child prints `ready`
after its warm-up; `run` -> the seconds of one timed run; `quit` -> a JSON
object (peak RSS and whatever the engine adds) and the child exits.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import time


def peak_rss_mb():
    """This process's peak resident set size.

    /proc's VmHWM starts afresh at exec; getrusage's ru_maxrss would carry the
    parent's peak over into the child, so it is only the fallback.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def serve(run, warmup=2, finish=None):
    """Child side: warm up, then time `run()` whenever the parent asks.

    Args:
        run: one forward pass or update (blocking until its result exists).
        warmup: untimed runs first (tracing, kernel selection, allocation).
        finish: called before quitting; returns a dict added to the report.
    """
    for _ in range(warmup):
        run()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "run":
            start = time.perf_counter()
            run()
            print(time.perf_counter() - start, flush=True)
        else:
            break
    extra = finish() if finish is not None else {}
    print(json.dumps(dict(extra, peak_rss_mb=peak_rss_mb())), flush=True)


class Child:
    """Parent side of one engine's process."""

    def __init__(self, name, cmd, threads):
        self.name = name
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", OMP_NUM_THREADS=str(threads))
        self.process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=env)
        self.times = []
        self.failed = None

    def _line(self):
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            self.failed = self.process.stderr.read()[-2000:]
            raise RuntimeError(f"{self.name} failed")
        return line.strip()

    def ready(self):
        while self._line() != "ready":
            pass

    def run(self):
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        self.times.append(float(self._line()))

    def finish(self):
        self.process.stdin.write("quit\n")
        self.process.stdin.flush()
        report = json.loads(self._line())
        self.process.wait()
        return dict(report, seconds=statistics.median(self.times), times=self.times)


def alternate(commands, repeats, threads):
    """Runs the engines' timed runs in turns.

    Args:
        commands: {engine name: argv of its child}.
        repeats: timed runs per engine.
        threads: threads each engine may use.
    Returns:
        ({name: report with median `seconds`, `times` and `peak_rss_mb`},
         {name: error text of the engines that failed}).
    """
    children = [Child(name, cmd, threads) for name, cmd in commands.items()]
    failed = {}

    def guard(child, action):
        try:
            action()
        except (RuntimeError, BrokenPipeError, ValueError):
            failed[child.name] = child.failed or "no output"
            child.process.kill()
            child.process.wait()

    for child in children:
        guard(child, child.ready)
    for _ in range(repeats):
        for child in children:
            if child.name not in failed:
                guard(child, child.run)
    results = {}
    for child in children:
        if child.name not in failed:
            guard(child, lambda c=child: results.__setitem__(c.name, c.finish()))
    return results, failed


def torch_deeplab(weights, arch):
    """A PyTorch DeepLab-v2 of `arch`'s geometry holding `weights` (this project's names).

    BatchNorm layers use their running statistics whenever the module is in
    eval mode (frozen BatchNorm, as DeepLab trains).
    """
    import torch
    from torch import nn

    from deeplab_resnet import defaults

    def conv_bn(conv):
        layer = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel, conv.stride,
                          conv.pad, conv.dilation, bias=conv.bias)
        layer.weight.data = torch.from_numpy(
            weights[conv.weights].transpose(3, 2, 0, 1).copy())
        if conv.bias:
            layer.bias.data = torch.from_numpy(weights[conv.biases].copy())
        parts = [layer]
        if conv.bn:
            bn = nn.BatchNorm2d(conv.out_channels, eps=defaults.BN_EPS)
            bn.running_mean.data = torch.from_numpy(weights[conv.bn_param("mean")].copy())
            bn.running_var.data = torch.from_numpy(weights[conv.bn_param("variance")].copy())
            bn.weight.data = torch.from_numpy(weights[conv.bn_param("scale")].copy())
            bn.bias.data = torch.from_numpy(weights[conv.bn_param("offset")].copy())
            parts.append(bn)
        if conv.relu:
            parts.append(nn.ReLU(inplace=True))
        return nn.Sequential(*parts)

    class Bottleneck(nn.Module):
        def __init__(self, block):
            super().__init__()
            self.branch1 = conv_bn(block.branch1) if block.branch1 else None
            self.branch2 = nn.Sequential(*[conv_bn(c) for c in block.branch2])

        def forward(self, x):
            shortcut = x if self.branch1 is None else self.branch1(x)
            return torch.relu(self.branch2(x) + shortcut)

    class DeepLab(nn.Module):
        def __init__(self):
            super().__init__()
            pool = arch.pool
            self.stem = nn.Sequential(conv_bn(arch.stem), nn.MaxPool2d(
                pool.kernel, pool.stride, pool.pad, ceil_mode=True))
            self.blocks = nn.Sequential(*[Bottleneck(b) for b in arch.blocks])
            self.head = nn.ModuleList([conv_bn(c) for c in arch.head])

        def forward(self, x):
            x = self.blocks(self.stem(x))
            return sum(h(x) for h in self.head)

    return DeepLab()


# PyTorch engines: name -> (channels_last, torch.compile, autocast dtype name or None).
# Compiled inference uses inductor with freezing (weights folded as constants, the
# layout chosen once); compiled training cannot freeze (the weights change).
TORCH_ENGINES = {
    "torch": (False, False, None),
    "torch-cl": (True, False, None),
    "torch-compile": (True, True, None),
    "torch-bf16": (False, False, "bfloat16"),
    "torch-cl-bf16": (True, False, "bfloat16"),
    "torch-compile-bf16": (True, True, "bfloat16"),
}


def torch_variant(engine, net, x, inference):
    """(step wrapper, net, input) for one of TORCH_ENGINES.

    Args:
        engine: a TORCH_ENGINES name.
        net: the PyTorch DeepLab (eval mode).
        x: the NCHW input.
        inference: True for a forward pass under inference mode (freezing applies).
    Returns:
        (wrap, model, x): `wrap(fn)` runs fn() under the engine's autocast and
        grad mode; `model` is the (converted, maybe compiled) network.
    """
    import contextlib

    import torch
    channels_last, compiled, autocast = TORCH_ENGINES[engine]
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if compiled:
        import torch._inductor.config as inductor_config
        inductor_config.freezing = inference
        net = torch.compile(net)

    def wrap(fn):
        with contextlib.ExitStack() as stack:
            if inference:
                stack.enter_context(torch.no_grad())
            if autocast:
                stack.enter_context(torch.autocast("cpu", dtype=getattr(torch, autocast)))
            return fn()
    return wrap, net, x
