"""Where a Rein training step spends its time and memory, component by component, and how step
time, memory and inference latency grow with crop, batch and image size (used by
``tools/benchmark.py --profile`` and ``--scaling``).

The breakdown records every call of each component during one real training step (its inputs,
detached), then replays the calls of one component at a time: forward, then backward from
random output gradients, each timed on its own. Inputs that needed a gradient in the real step
need one in the replay, so a frozen block still pays for its input gradient. Memory per
component is the size of the activations its forward saves for backward (parameters excluded),
and on CUDA also the peak allocated above the start of the replay. Composite parts ("rest")
are a whole module's replay minus its named parts.

This file only uses rein_d2's public modules by their attribute names, so ``--baseline REV``
runs it unchanged against an older checkout.
"""
import math
import statistics
import time
from typing import Callable, Dict, List, Tuple

import torch
from torch import nn

# (component, how to reach the object whose method is recorded, method name)
PARTS: List[Tuple[str, Callable, str]] = [
    ("backbone: blocks", lambda m: list(m.backbone.vit.blocks), "forward"),
    ("backbone: Rein", lambda m: [m.backbone.rein] if getattr(m.backbone, "rein", None) is not None else [], "forward"),
    ("backbone: neck", lambda m: [m.backbone], "_pyramid"),
    ("backbone (whole)", lambda m: [m.backbone], "forward"),
    ("pixel decoder: deformable attention", lambda m: [l.self_attn for l in m.pixel_decoder.encoder.layers], "forward"),
    ("pixel decoder: FFN", lambda m: [l.ffn for l in m.pixel_decoder.encoder.layers], "forward"),
    ("pixel decoder (whole)", lambda m: [m.pixel_decoder], "forward"),
    ("query decoder: masked attention", lambda m: [l.cross_attn for l in m.predictor.transformer_decoder.layers], "forward"),
    ("query decoder: mask prediction", lambda m: [m.predictor], "predict"),
    ("query decoder (whole)", lambda m: [m.predictor], "forward"),
    ("criterion: matcher", lambda m: [m.criterion.matcher], "match_one"),
    ("criterion: point sampling", lambda m: [m.criterion], "loss_points"),
    ("criterion (whole)", lambda m: [m.criterion], "forward"),
]
# "(whole)" rows minus their named parts give these remainders.
REST = {"backbone (whole)": ("backbone: rest (embedding)", ["backbone: blocks", "backbone: Rein", "backbone: neck"]),
        "pixel decoder (whole)": ("pixel decoder: rest (convs, FPN)", ["pixel decoder: deformable attention", "pixel decoder: FFN"]),
        "query decoder (whole)": ("query decoder: rest (self-attn, FFN)", ["query decoder: masked attention", "query decoder: mask prediction"]),
        "criterion (whole)": ("criterion: losses", ["criterion: matcher", "criterion: point sampling"])}
HEAD = ("pixel decoder (whole)", "query decoder (whole)", "criterion (whole)")


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _map(obj, fn):
    """fn applied to every tensor of a nested list / tuple / dict."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map(o, fn) for o in obj)
    if isinstance(obj, dict):
        return {k: _map(v, fn) for k, v in obj.items()}
    return obj


def _tensors(obj) -> List[torch.Tensor]:
    out = []
    _map(obj, out.append)
    return out


class _Frozen:
    """A recorded input: its value, detached, and whether the step needed its gradient."""

    def __init__(self, t: torch.Tensor):
        self.value, self.grad = t.detach().clone(), t.requires_grad

    def thaw(self) -> torch.Tensor:
        v = self.value.clone()
        return v.requires_grad_(self.grad) if v.is_floating_point() else v


class _Recorder:
    """Wraps a method on some objects and keeps the (args, kwargs) of every call."""

    def __init__(self, objects, method):
        self.calls, self.objects, self.method = [], list(objects), method
        for obj in self.objects:
            original = getattr(obj, method)

            def wrapped(*args, _original=original, _obj=obj, **kwargs):
                kwargs_ = dict(_map(kwargs, _Frozen), _grad_mode=torch.is_grad_enabled())
                self.calls.append((_obj, _map(args, _Frozen), kwargs_))
                return _original(*args, **kwargs)
            setattr(obj, method, wrapped)

    def remove(self):
        for obj in self.objects:
            delattr(obj, self.method)  # back to the class's method


def _inputs(recorded):
    """Fresh leaves from recorded inputs, needing a gradient where the step's did."""
    if isinstance(recorded, _Frozen):
        return recorded.thaw()
    if isinstance(recorded, (list, tuple)):
        return type(recorded)(_inputs(o) for o in recorded)
    if isinstance(recorded, dict):
        return {k: _inputs(v) for k, v in recorded.items()}
    return recorded


def _param_storages(model: nn.Module):
    return {p.untyped_storage().data_ptr() for p in model.parameters()}


def replay(model, calls, method, device) -> Dict[str, float]:
    """Forward and backward time (s), saved activations (bytes) and, on CUDA, peak memory
    above the start (bytes) of replaying ``calls`` of ``method``."""
    params = _param_storages(model)
    fwd = bwd = saved_total = 0.0
    saved: Dict[int, int] = {}  # one call's saved storages (freed ones are reused: per call)

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    for obj, args, kwargs in calls:
        saved.clear()
        args, kwargs = _inputs(args), _inputs(kwargs)
        grad_mode = kwargs.pop("_grad_mode")  # as in the step (the point sampling runs without)
        fn = getattr(type(obj), method)
        sync(device)
        t = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.set_grad_enabled(grad_mode):
            out = fn(obj, *args, **kwargs)
        sync(device)
        fwd += time.perf_counter() - t
        outs = [o for o in _tensors(out) if o.requires_grad]
        if outs:
            grads = [torch.randn_like(o) * 1e-3 for o in outs]
            sync(device)
            t = time.perf_counter()
            torch.autograd.backward(outs, grads)
            sync(device)
            bwd += time.perf_counter() - t
        saved_total += sum(saved.values())
        del out, outs
    row = {"forward_s": fwd, "backward_s": bwd, "saved_bytes": saved_total}
    if device == "cuda":
        row["peak_bytes"] = float(torch.cuda.max_memory_allocated() - base)
    model.zero_grad(set_to_none=True)
    return row


def profile_step(model, data, device, repeats: int = 3) -> Dict[str, Dict[str, float]]:
    """Per component: forward / backward seconds (median over ``repeats`` replays), saved
    activation bytes (and CUDA peak); plus the measured whole step ("step")."""
    recorders = {}
    for name, objects, method in PARTS:
        objs = objects(model)
        if objs:
            recorders[name] = _Recorder(objs, method)
    torch.manual_seed(0)
    losses = sum(model(data).values())
    losses.backward()
    for r in recorders.values():
        r.remove()
    model.zero_grad(set_to_none=True)

    steps = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        sum(model(data).values()).backward()
        sync(device)
        steps.append(time.perf_counter() - t)
        model.zero_grad(set_to_none=True)

    rows = {}
    for name, rec in recorders.items():
        replay(model, rec.calls, rec.method, device)  # warm-up (first-call set-up costs)
        runs = [replay(model, rec.calls, rec.method, device) for _ in range(repeats)]
        rows[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        rows[name]["calls"] = len(rec.calls)
    for whole, (rest, parts) in REST.items():
        if whole in rows:
            rows[rest] = {k: rows[whole][k] - sum(rows[p][k] for p in parts if p in rows)
                          for k in ("forward_s", "backward_s")}
            rows[rest].update(saved_bytes=float("nan"), calls=rows[whole]["calls"])
    rows["head (pixel decoder + query decoder + criterion)"] = {
        k: sum(rows[h][k] for h in HEAD) for k in ("forward_s", "backward_s", "saved_bytes")}
    rows["step"] = {"forward_s": float("nan"), "backward_s": float("nan"),
                    "total_s": statistics.median(steps), "saved_bytes": float("nan")}
    for r in rows.values():
        r.setdefault("total_s", r["forward_s"] + r["backward_s"])
    return rows


def backbone_step(model, data, device, repeats: int = 3) -> Dict[str, float]:
    """Forward + backward of the backbone alone (blocks, Rein, neck) from random feature
    gradients: with Rein, to its tokens; without Rein, the frozen network's input gradient
    (the floor of any method that refines inside it)."""
    images = torch.stack([(d["image"].to(device) - model.pixel_mean) / model.pixel_std for d in data])
    rein = getattr(model.backbone, "rein", None)
    times = []
    for i in range(repeats + 1):  # the first run warms up
        x = images.clone().requires_grad_(rein is None)
        sync(device)
        t = time.perf_counter()
        feats = model.backbone(x)
        outs = list(feats.values())
        torch.autograd.backward(outs, [torch.ones_like(o) * 1e-3 for o in outs])
        sync(device)
        if i:
            times.append(time.perf_counter() - t)
        model.zero_grad(set_to_none=True)
    return {"step_s": statistics.median(times)}


def growth_exponent(xs: List[float], ys: List[float]) -> float:
    """Slope of log y against log x (least squares): y ~ x ** slope."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    den = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / den if den else float("nan")


def rss(field):
    """A VmRSS / VmHWM line of /proc/self/status, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak(device):
    """Start a peak-memory window: CUDA max allocated, or the process's peak RSS (VmHWM)."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    return rss("VmRSS")


def _peak(device, base):
    return float((torch.cuda.max_memory_allocated() if device == "cuda" else rss("VmHWM")) - base)


def head_step(model, data, device, repeats: int = 3) -> Dict[str, float]:
    """Forward + backward of the head alone (pixel decoder, query decoder, matcher, losses) on
    the backbone features of one real step: time (median) and peak memory above the start (run
    it in a fresh process: the CPU figure is the process's peak RSS growth)."""
    recs = [_Recorder([model.pixel_decoder], "forward"), _Recorder([model.predictor], "forward"),
            _Recorder([model.criterion], "forward")]
    with torch.no_grad():
        model(data)
    for r in recs:
        r.remove()
    feats = recs[0].calls[0][1]
    _, args, kwargs = recs[1].calls[0]
    queries = args[2] if len(args) > 2 else kwargs.get("queries")  # (no other kwargs needed)
    targets = recs[2].calls[0][1][2]
    del recs
    times, first = [], []
    base = _reset_peak(device)
    for i in range(repeats + 1):  # the first run warms up
        f, q = _inputs(feats), _inputs(queries)
        if q is not None:
            q.requires_grad_(True)  # Rein's tokens train through the queries
        for t in _tensors(f):
            t.requires_grad_(True)  # and through the features
        sync(device)
        t0 = time.perf_counter()
        mask_features, memories = model.pixel_decoder(*f)
        cls, masks = model.predictor(mask_features, memories, q)
        sum(model.criterion(cls, masks, _inputs(targets)).values()).backward()
        sync(device)
        (times.append if i else first.append)(time.perf_counter() - t0)  # first: warm-up (compilation)
        model.zero_grad(set_to_none=True)
        del mask_features, memories, cls, masks
    return {"step_s": statistics.median(times), "peak_mem": _peak(device, base), "first_s": first[0]}


# ---- reports -----------------------------------------------------------------------------

def _s(x):
    return "-" if x is None or x != x else f"{x:.2f} s"


def _mib(x):
    return "-" if x is None or x != x else f"{x / 2**20:,.0f} MiB"


def _ratio(cur, base):
    return "-" if not base or cur != cur or base != base else f"{cur / base:.2f}x"


COMPARE_METRICS = {"step_s": ("time", _s), "peak_mem": ("peak memory", _mib),
                   "latency_s": ("latency", _s), "first_s": ("first call", _s)}
# Breakdown rows in the table's order (composites last).
ORDER = ["backbone: blocks", "backbone: Rein", "backbone: neck", "backbone: rest (embedding)",
         "pixel decoder: deformable attention", "pixel decoder: FFN", "pixel decoder: rest (convs, FPN)",
         "query decoder: masked attention", "query decoder: mask prediction",
         "query decoder: rest (self-attn, FFN)", "criterion: matcher", "criterion: point sampling",
         "criterion: losses"]
TOTALS = ["backbone (whole)", "pixel decoder (whole)", "query decoder (whole)", "criterion (whole)",
          "head (pixel decoder + query decoder + criterion)", "step"]


def compare_table(rows, baseline="", current="this checkout"):
    """rows: label -> {"current": result, "baseline": result}; ``baseline`` and ``current`` head
    the two columns ("" baseline: the current column alone)."""
    head = "| row | measure | " + (f"{baseline} | {current} | ratio |" if baseline else f"{current} |")
    lines = [head, "|---|---|" + ("---:|---:|---:|" if baseline else "---:|")]
    for label, r in rows.items():
        cur, base = r["current"], r.get("baseline")
        for key, (name, fmt) in COMPARE_METRICS.items():
            if key not in cur and "error" not in cur:
                continue
            c = "failed: " + cur["error"] if "error" in cur else fmt(cur[key])
            if baseline:
                b = "failed: " + base["error"] if "error" in base else fmt(base[key]) if key in base else "-"
                ratio = _ratio(cur[key], base[key]) if key in cur and key in base else "-"
                lines.append(f"| {label} | {name} | {b} | {c} | {ratio} |")
            else:
                lines.append(f"| {label} | {name} | {c} |")
            if "error" in cur:
                break
    return lines


def profile_table(cur, base=None, baseline=""):
    step = cur["step"]["total_s"]
    cols = "| component | calls | forward | backward | total | share of the step | saved activations |"
    sep = "|---|---:|---:|---:|---:|---:|---:|"
    if base:
        cols += f" total, {baseline} | ratio |"
        sep += "---:|---:|"
    lines = [cols, sep]
    for name in ORDER + TOTALS:
        if name not in cur:
            continue
        r = cur[name]
        line = (f"| {name} | {r.get('calls', '') or ''} | {_s(r['forward_s'])} | {_s(r['backward_s'])} | "
                f"{_s(r['total_s'])} | {100 * r['total_s'] / step:.0f}% | {_mib(r['saved_bytes'])} |")
        if base:
            b = base.get(name, {}).get("total_s")
            line += f" {_s(b)} | {_ratio(r['total_s'], b)} |"
        lines.append(line)
    return lines


def plot_profile(profiles, path):
    """Stacked bars: the step's components (forward + backward), one bar per run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.7 * len(profiles)))
    colors = plt.get_cmap("tab20").colors
    labels = list(profiles)
    for i, name in enumerate(ORDER):
        left = [sum(p.get(n, {}).get("total_s", 0) for n in ORDER[:i]) for p in profiles.values()]
        vals = [p.get(name, {}).get("total_s", 0) for p in profiles.values()]
        ax.barh(labels, vals, left=left, color=colors[i % len(colors)], label=name)
    ax.invert_yaxis()
    ax.set_xlabel("seconds per training step (forward + backward, replayed per component)")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(profiles) < 3 else -0.2))
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def scaling_tables(scaling, crop=512):
    """scaling: kind -> [(x, result)]; a table per kind with the fitted growth exponent."""
    lines = []
    spec = {"crop": ("Training, batch 1, against the crop", lambda x: x * x, "pixels", ["step_s", "peak_mem"]),
            "batch": (f"Training at crop {crop}, against the batch", lambda x: x, "batch", ["step_s", "peak_mem"]),
            "image": ("Whole-image inference, against the image size", lambda x: x[0] * x[1], "pixels", ["latency_s"])}
    for kind, rows in scaling.items():
        title, size_of, unit, keys = spec[kind]
        ok = [(x, r) for x, r in rows if "error" not in r]
        lines += [f"### {title}", "", "| " + kind + " | " + " | ".join(COMPARE_METRICS[k][0] for k in keys) + " |",
                  "|---|" + "---:|" * len(keys)]
        for x, r in rows:
            label = "x".join(map(str, x)) if isinstance(x, (list, tuple)) else str(x)
            lines.append(f"| {label} | " + " | ".join(
                ("failed: " + r["error"]) if "error" in r else COMPARE_METRICS[k][1](r[k]) for k in keys) + " |")
        if len(ok) >= 2:
            fits = [f"{COMPARE_METRICS[k][0]} ~ {unit}^{growth_exponent([size_of(x) for x, _ in ok], [r[k] for _, r in ok]):.2f}"
                    for k in keys]
            lines += ["", "Fitted growth (least squares in log-log): " + ", ".join(fits) + "."]
        lines.append("")
    return lines


def plot_scaling(scaling, path, crop=512):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(scaling), figsize=(4.2 * len(scaling), 3.4), squeeze=False)
    for ax, (kind, rows) in zip(axes[0], scaling.items()):
        ok = [(x, r) for x, r in rows if "error" not in r]
        xs = [x[0] * x[1] / 1e6 if kind == "image" else (x * x / 1e6 if kind == "crop" else x) for x, _ in ok]
        key = "latency_s" if kind == "image" else "step_s"
        ax.plot(xs, [r[key] for _, r in ok], "o-", label="time (s)")
        ax.set_xlabel({"crop": "crop (megapixels), batch 1", "batch": f"batch (crop {crop})",
                       "image": "image (megapixels)"}[kind])
        ax.set_ylabel("inference latency (s)" if kind == "image" else "training step (s)")
        if kind != "image":
            ax2 = ax.twinx()
            ax2.plot(xs, [r["peak_mem"] / 2**30 for _, r in ok], "s--", color="#c44e52")
            ax2.set_ylabel("peak memory (GiB)", color="#c44e52")
        ax.set_title(kind)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
