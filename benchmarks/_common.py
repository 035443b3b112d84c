"""Shared helpers of the benchmarks: timing, peak memory, environment description, tables."""

from __future__ import annotations

import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """Accumulates wall-clock seconds (`times`) and process CPU seconds (`cpu_times`, summed over
    threads: far less disturbed by other processes on a shared machine) per named stage
    (device-synchronised)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.times: dict[str, list[float]] = {}
        self.cpu_times: dict[str, list[float]] = {}

    def run(self, name: str, fn, *args, **kwargs):
        sync(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn(*args, **kwargs)
        sync(self.device)
        self.times.setdefault(name, []).append(time.perf_counter() - t0)
        self.cpu_times.setdefault(name, []).append(time.process_time() - c0)
        return out


class OpTimes(TorchDispatchMode):
    """CPU time of the process (time.process_time: robust to other processes on a shared machine,
    summed over threads) per aten op called inside the context, e.g. {"linear": ns, ...}. Ops are
    seen below autograd, so a composite op that reaches the dispatcher whole (linear, conv2d) is one
    entry; the ops it runs internally are inside its time."""

    def __init__(self):
        super().__init__()
        self.ns: dict[str, int] = {}
        self.calls: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        t0 = time.process_time_ns()
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        self.ns[name] = self.ns.get(name, 0) + time.process_time_ns() - t0
        self.calls[name] = self.calls.get(name, 0) + 1
        return out


def min_op_ms(profiles: list[OpTimes]) -> dict[str, float]:
    """Per op, the smallest total over several profiled passes (ms): the least disturbed one."""
    names = {k for p in profiles for k in p.ns}
    return {k: min(p.ns.get(k, 0) for p in profiles) / 1e6 for k in names}


def median_ms(xs: list[float]) -> float:
    return 1000.0 * statistics.median(xs)


def p90_ms(xs: list[float]) -> float:
    s = sorted(xs)
    return 1000.0 * s[min(len(s) - 1, round(0.9 * (len(s) - 1)))]


def maxrss_mb() -> float:
    """Peak resident set size of this process so far (Linux: ru_maxrss is in KiB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device, rss_before: float) -> float:
    """CUDA: max_memory_allocated; CPU: growth of the peak RSS (ru_maxrss) over `rss_before`."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return maxrss_mb() - rss_before


def memory_method(device: torch.device) -> str:
    return (
        "torch.cuda.max_memory_allocated"
        if device.type == "cuda"
        else "ru_maxrss growth in a fresh subprocess (peak RSS after the measured runs minus "
        "peak RSS before them)"
    )


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu:{cpu} ({torch.get_num_threads()} threads)"


def run_child(
    module: str, args: list[str], eclipse_seg_from: str | None = None, threads: int | None = None
) -> dict:
    """Run `python -m module args` in a fresh process; it prints one JSON line last.

    `eclipse_seg_from`: a directory holding another checkout's `eclipse_seg` package (e.g. the
    revision before a change, from `git worktree add`), imported by the child instead of this
    one's; the benchmark code stays this checkout's. `threads`: torch.set_num_threads in the child.
    """
    setup = [f"torch.set_num_threads({int(threads)})"] if threads else []
    if (
        eclipse_seg_from
    ):  # after importing the benchmark module, so only eclipse_seg comes from there
        setup.append(f"sys.path.insert(0, {str(Path(eclipse_seg_from).resolve())!r})")
    code = "; ".join(
        [
            f"import runpy, sys, torch, {module}",
            *setup,
            f"sys.argv = [{module!r}, *{list(args)!r}]",
            f"runpy.run_module({module!r}, run_name='__main__')",
        ]
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(
            f"benchmark child {module} {' '.join(args)} failed:\n{out.stderr[-3000:]}"
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(headers: list[str], rows: list[list]) -> str:
    def fmt(v):
        return f"{v:.1f}" if isinstance(v, float) else str(v)

    cells = [headers] + [[fmt(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def write_json(path: str | None, data: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=1))
