#!/usr/bin/env python
"""Speed, memory and storage of Rein against full fine-tuning, the frozen backbone, LoRA and
VPT, measured side by side in one run on one machine, model and input.

    python tools/benchmark.py                          # ViT-S and ViT-L, on CUDA if present
    python tools/benchmark.py --sizes small --steps 5 --output docs/benchmarks

Per backbone size and method: trainable / total parameters, the size on disk of the checkpoint
training saves (light where the VFM is frozen, with AdamW state), training step time (median)
and peak training memory (CUDA: max allocated; CPU: peak RSS growth over the process before
the first step), all at the same batch and crop on random images. Per size, Rein's inference
latency and throughput on a 1024x2048 image, whole-image and in 512x512 sliding windows (stride
341, batched). Each measurement runs in a fresh process, so peaks do not leak between rows.
Writes <output>/<device>.md (tables, ratios, the machine) and <output>/<device>.png.

The models start from random weights (no pretrained file is needed): speed and memory do not
depend on the values.
"""
import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import benchmark_profile as bp
from benchmark_profile import rss as _rss, sync as _sync

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"small": "configs/gtav/rein_dinov2_s.yaml", "large": "configs/gtav/rein_dinov2_l.yaml"}
DEPTH = {"small": 12, "large": 24}
# Method -> config overrides on the Rein config of the size (configs/gtav/baselines/ for ViT-L).
METHODS = {
    "Rein": [],
    "Rein + checkpointing (all blocks)": ["MODEL.VIT.CHECKPOINT_BLOCKS", -1],
    "Rein + checkpointing (half)": ["MODEL.VIT.CHECKPOINT_BLOCKS", "HALF"],
    "full fine-tuning": ["MODEL.REIN.ENABLED", False, "MODEL.VIT.FREEZE", False],
    "frozen backbone": ["MODEL.REIN.ENABLED", False],
    "LoRA (r=16, qkv)": ["MODEL.REIN.ENABLED", False, "MODEL.VIT.LORA_RANK", 16],
    "VPT (150 tokens)": ["MODEL.REIN.ENABLED", False, "MODEL.VIT.VPT_TOKENS", 150],
}
# Published anchors (docs/method.md sections 3 and 7, DINOv2-L, GTAV -> Citys / BDD / Map mIoU);
# the paper's own timing and memory figures are not part of the spec.
ANCHORS = {
    "Rein": "Rein itself 2.99M; 66.4 / 60.4 / 66.1",
    "full fine-tuning": "all 304M VFM weights train; 63.7 / 57.4 / 64.2",
    "frozen backbone": "63.3 / 56.1 / 63.9",
}


def _repo():
    """The checkout whose rein_d2 and configs are measured (a --baseline worktree sets it)."""
    return os.environ.get("REIN_D2_BENCH_REPO", REPO)


def _cfg(size, method, device):
    from rein_d2 import load_config
    opts = [DEPTH[size] // 2 if v == "HALF" else v for v in METHODS[method]]
    extra = json.loads(os.environ.get("REIN_D2_BENCH_OPTS", "[]"))  # a row's options (isolated(opts=))
    return load_config(os.path.join(_repo(), CONFIGS[size]),
                       opts + ["MODEL.DEVICE", device, "MODEL.WEIGHTS", ""] + extra)


def _model(size, method, device, train=True):
    from detectron2.modeling import build_model
    torch.manual_seed(0)
    return build_model(_cfg(size, method, device)).train(train)


def _batch(n, crop):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        seg = torch.randint(0, 19, (crop // 32, crop // 32), generator=g)
        seg = seg.repeat_interleave(32, 0).repeat_interleave(32, 1)  # blocky classes
        out.append({"image": torch.rand(3, crop, crop, generator=g) * 255, "sem_seg": seg,
                    "height": crop, "width": crop})
    return out


def measure_training(size, method, batch, crop, steps, warmup, device):
    from detectron2.modeling import build_model
    from rein_d2.engine import LightCheckpointer, build_optimizer

    torch.manual_seed(0)
    cfg = _cfg(size, method, device)
    model = build_model(cfg).train()
    optimizer = build_optimizer(cfg, model)
    data = _batch(batch, crop)
    params = list(model.parameters())
    row = {"trainable": sum(p.numel() for p in params if p.requires_grad),
           "total": sum(p.numel() for p in params),
           # timm's blocks call F.scaled_dot_product_attention when fused_attn is set
           "sdpa": all(getattr(b.attn, "fused_attn", False) for b in model.backbone.vit.blocks)}
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak-RSS mark (VmHWM) to the current RSS
        base = _rss("VmRSS")
    times = []
    for i in range(warmup + steps):
        _sync(device)
        t = time.perf_counter()
        losses = sum(model(data).values())
        optimizer.zero_grad(set_to_none=True)
        losses.backward()
        optimizer.step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
        elif i == 0:
            row["first_s"] = time.perf_counter() - t  # with MODEL.COMPILE: the compilation
    row["step_s"] = statistics.median(times)
    row["peak_mem"] = (torch.cuda.max_memory_allocated() if device == "cuda"
                       else _rss("VmHWM") - base)
    with tempfile.TemporaryDirectory() as d:
        LightCheckpointer(model, d, light=cfg.SOLVER.LIGHT_CHECKPOINTS, optimizer=optimizer).save("ckpt")
        row["ckpt_bytes"] = os.path.getsize(os.path.join(d, "ckpt.pth"))
    return row


def measure_inference(size, mode, runs, device, image_hw=(1024, 2048), opts=()):
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    cfg = _cfg(size, "Rein", device)
    cfg.defrost()
    cfg.MODEL.MASK2FORMER.TEST.MODE = mode
    cfg.merge_from_list(list(opts))
    model = build_model(cfg).eval()
    h, w = image_hw
    inputs = [{"image": torch.rand(3, h, w) * 255, "height": h, "width": w}]
    times = []
    with torch.no_grad():
        for i in range(runs + 1):  # the first run warms up
            _sync(device)
            t = time.perf_counter()
            model(inputs)
            _sync(device)
            if i:
                times.append(time.perf_counter() - t)
            else:
                first = time.perf_counter() - t
    latency = statistics.median(times)
    windows = len(model.slide_windows(h, w)[0]) if mode == "slide" else 1
    return {"latency_s": latency, "images_per_s": 1.0 / latency, "windows": windows, "first_s": first}


def measure_export(size, runs, device, image_hw=(512, 1024)):
    """Whole-image latency of the ONNX export (onnxruntime, CPU) against eager PyTorch, on the
    same normalised image."""
    import onnxruntime as ort
    from detectron2.modeling import build_model
    from rein_d2.export import SemanticExport, export_onnx

    torch.manual_seed(0)
    cfg = _cfg(size, "Rein", "cpu")
    module = SemanticExport(build_model(cfg).eval(), mode="whole")
    image = torch.randn(1, 3, *image_hw, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        path = export_onnx(module, image, os.path.join(tmp, "m.onnx"))
        export_s = time.perf_counter() - t
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: image.numpy()}

        def timed(fn):
            times = []
            for i in range(runs + 1):  # the first run warms up
                t = time.perf_counter()
                out = fn()
                if i:
                    times.append(time.perf_counter() - t)
            return statistics.median(times), out

        with torch.no_grad():
            eager_s, ref = timed(lambda: module(image))
        onnx_s, out = timed(lambda: session.run(None, feed)[0])
    return {"eager_s": eager_s, "onnx_s": onnx_s, "export_s": export_s,
            "max_diff": float(abs(out - ref.numpy()).max()), "image": list(image_hw)}


def measure_profile(size, batch, crop, device, repeats):
    """Per-component time and memory of one Rein training step (benchmark_profile.py)."""
    return bp.profile_step(_model(size, "Rein", device), _batch(batch, crop), device, repeats)


def measure_head(size, batch, crop, device, repeats):
    """The head alone (pixel decoder, query decoder, matcher, losses), forward + backward."""
    return bp.head_step(_model(size, "Rein", device), _batch(batch, crop), device, repeats)


def measure_backbone(size, method, batch, crop, device, repeats):
    """The backbone alone, forward + backward: Rein's to its tokens, the frozen network's to
    its input."""
    return bp.backbone_step(_model(size, method, device), _batch(batch, crop), device, repeats)


def measure_numerics(size, batch, crop, device, out_path):
    """Every layer's class and mask logits of one seeded training-mode forward, and the
    gradients of a fixed random linear function of them, saved to ``out_path`` for the parent
    to compare across checkouts (the same weights and images). The loss itself is left out: it
    passes through the Hungarian assignment, a discrete choice that rounding-level differences
    can flip at random weights (a seeded step with importance sampling off differed by 1.7e-3)."""
    model = _model(size, "Rein", device)
    images = torch.stack([(d["image"].to(device) - model.pixel_mean) / model.pixel_std
                          for d in _batch(batch, crop)])
    torch.manual_seed(1)
    cls_list, mask_list = model.predict_logits(images)
    g = torch.Generator().manual_seed(2)
    outputs = list(cls_list) + list(mask_list)
    sum((o * torch.randn(o.shape, generator=g).to(o.device)).sum() for o in outputs).backward()
    torch.save({"outputs": [o.detach().cpu() for o in outputs],
                "grads": {n: p.grad.detach().cpu() for n, p in model.named_parameters() if p.grad is not None}},
               out_path)
    return {"outputs": len(outputs), "saved": out_path}


def compare_numerics(base, cur):
    """Largest output and gradient differences between two measure_numerics results."""
    if "error" in base or "error" in cur:
        return {"error": base.get("error") or cur.get("error")}
    b = torch.load(base["saved"], weights_only=True)
    c = torch.load(cur["saved"], weights_only=True)
    if len(b["outputs"]) != len(c["outputs"]) or set(b["grads"]) != set(c["grads"]):
        return {"error": "different outputs or trained parameters"}
    gb, gc = b["grads"], c["grads"]
    return {"out_diff": max(float((x - y).abs().max()) for x, y in zip(b["outputs"], c["outputs"])),
            "out_scale": max(float(x.abs().max()) for x in b["outputs"]),
            "grad_diff": max(float((gb[k] - gc[k]).abs().max()) for k in gb),
            "grad_rel": max(float((gb[k] - gc[k]).abs().max() / gb[k].abs().max().clamp(min=1e-12)) for k in gb),
            "outputs": len(b["outputs"]), "grads": len(gb)}


def _child(conn, fn, args, repo=None, opts=()):
    # every row starts from an empty inductor cache: a compiled row's first call compiles fully
    cache = tempfile.mkdtemp(prefix="rein_d2_inductor_")
    try:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        os.environ["REIN_D2_BENCH_OPTS"] = json.dumps(list(opts))
        # the measured checkout's rein_d2 and configs come first (an installed rein_d2 may be
        # another checkout's)
        repo = repo or REPO
        os.environ["REIN_D2_BENCH_REPO"] = repo
        sys.path.insert(0, repo)
        result = fn(*args)
        import rein_d2
        if isinstance(result, dict):
            result["rein_d2"] = os.path.dirname(os.path.dirname(os.path.abspath(rein_d2.__file__)))
        conn.send(("ok", result))
    except BaseException as e:  # reported in the table, the other rows still run
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    conn.close()


def isolated(fn, *args, repo=None, opts=()):
    """fn(*args) in a fresh process (spawned: clean memory peaks), on the rein_d2 of ``repo``
    (default: this checkout), with config overrides ``opts`` on every model it builds; its
    result or error text."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn, args, repo, opts))
    proc.start()
    child.close()
    try:
        status, value = parent.recv()
    except EOFError:  # the worker died without a word
        status, value = "error", None
    proc.join()
    if value is None:
        value = f"worker died (exit code {proc.exitcode}; out of memory?)"

    return value if status == "ok" else {"error": value}


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo; the platform's processor string elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine(device):
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    cpu = cpu_model()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {len(os.sched_getaffinity(0))} cores, {mem:.0f} GiB RAM, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads)")


def _mib(n):
    return f"{n / 2**20:,.0f} MiB"


def report(results, args, device, elapsed):
    lines = [f"# rein_d2 benchmark: {device.upper()}", "",
             f"Machine: {machine(device)}. Run: `python tools/benchmark.py {' '.join(sys.argv[1:])}` "
             f"({elapsed / 60:.1f} min). Crop {args.crop}x{args.crop}, AdamW, random weights and "
             f"images; step time is the median of {args.steps} steps after {args.warmup} warm-up.",
             "Attention: F.scaled_dot_product_attention in every ViT block ("
             + ("checked" if all(r.get("sdpa") for rows in results["train"].values() for r in rows.values()
                                 if "error" not in r) else "NOT in every run") + "); sliding windows "
             "run 8 at a time (MODEL.MASK2FORMER.TEST.CROP_BATCH_SIZE).",
             "", "Memory: " + ("max allocated (weights included)." if device == "cuda" else
                               "peak RSS growth from just before the first step (activations, "
                               "gradients, optimiser state)."), ""]
    for size, rows in results["train"].items():
        batch = args.batch if size == "small" else args.large_batch
        lines += [f"## DINOv2-{size[0].upper()}: training, batch {batch}", "",
                  "| method | trainable | total | checkpoint | step time | vs full FT | peak memory | vs full FT | published, DINOv2-L (params; mIoU C / B / M) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        full = rows.get("full fine-tuning", {})
        for method, r in rows.items():
            if "error" in r:
                lines.append(f"| {method} | failed: {r['error']} |||||||")
                continue
            rt = f"{r['step_s'] / full['step_s']:.2f}x" if "step_s" in full else "-"
            rm = f"{r['peak_mem'] / full['peak_mem']:.2f}x" if "peak_mem" in full else "-"
            lines.append(f"| {method} | {r['trainable'] / 1e6:.2f}M | {r['total'] / 1e6:.1f}M | "
                         f"{_mib(r['ckpt_bytes'])} | {r['step_s']:.2f} s | {rt} | {_mib(r['peak_mem'])} | "
                         f"{rm} | {ANCHORS.get(method, '')} |")
        rein = rows.get("Rein", {})
        for method, ck in rows.items():
            if method.startswith("Rein + checkpointing") and "step_s" in ck and "step_s" in rein:
                lines += ["", f"{method}: Rein's peak memory {100 * (1 - ck['peak_mem'] / rein['peak_mem']):.0f}% "
                              f"lower for {100 * (ck['step_s'] / rein['step_s'] - 1):.0f}% more step time."]
        lines.append("")
    if results.get("export"):
        lines += ["## Exported model: ONNX Runtime (CPU) against eager PyTorch, whole image", "",
                  "| backbone | image | eager PyTorch | ONNX Runtime | ratio | export time | largest difference |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for size, r in results["export"].items():
            if "error" in r:
                lines.append(f"| DINOv2-{size[0].upper()} | failed: {r['error']} ||||||")
            else:
                lines.append(f"| DINOv2-{size[0].upper()} | {r['image'][0]}x{r['image'][1]} | "
                             f"{r['eager_s']:.2f} s | {r['onnx_s']:.2f} s | {r['onnx_s'] / r['eager_s']:.2f}x | "
                             f"{r['export_s']:.0f} s | {r['max_diff']:.1e} |")
        lines.append("")
    if results["infer"]:
        lines += ["## Rein inference on one 1024x2048 image", "",
                  "| backbone | mode | windows | latency | throughput |", "|---|---|---:|---:|---:|"]
        for (size, mode), r in results["infer"].items():
            if "error" in r:
                lines.append(f"| DINOv2-{size[0].upper()} | {mode} | failed: {r['error']} ||")
            else:
                lines.append(f"| DINOv2-{size[0].upper()} | {mode} | {r['windows']} | "
                             f"{r['latency_s']:.2f} s | {r['images_per_s']:.2f} img/s |")
        lines.append("")
    return "\n".join(lines)


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(results["train"])
    if not sizes:  # export rows only: no training plot
        return False
    fig, axes = plt.subplots(len(sizes), 2, figsize=(11, 3.2 * len(sizes)), squeeze=False)
    for row, size in zip(axes, sizes):
        ok = {m: r for m, r in results["train"][size].items() if "error" not in r}
        names = list(ok)
        for ax, key, label, scale in ((row[0], "step_s", "step time (s)", 1),
                                      (row[1], "peak_mem", "peak memory (GiB)", 2**30)):
            bars = ax.barh(names, [ok[m][key] / scale for m in names], color="#4c72b0")
            ax.bar_label(bars, fmt="%.2f")
            ax.invert_yaxis()
            ax.set_xlabel(label)
            ax.set_title(f"DINOv2-{size[0].upper()} training")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _hw(text):
    """An image size "HxW" -> (H, W)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an image size HxW, e.g. 1024x2048") from None
    return h, w


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["small", "large"], choices=sorted(CONFIGS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=4, help="training batch (ViT-S)")
    parser.add_argument("--large-batch", type=int, default=None,
                        help="training batch for ViT-L (default: --batch on CUDA, 1 on CPU)")
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--inference-runs", type=int, default=2)
    parser.add_argument("--no-inference", action="store_true")
    parser.add_argument("--output", default=os.path.join(REPO, "docs", "benchmarks"))
    parser.add_argument("--export", action="store_true",
                        help="add the ONNX Runtime (CPU) vs eager PyTorch rows (needs onnxruntime)")
    parser.add_argument("--export-only", action="store_true", help="only those rows")
    parser.add_argument("--export-size", nargs=2, type=int, default=[512, 1024], metavar=("H", "W"))
    parser.add_argument("--profile", action="store_true",
                        help="per-component time and memory of a Rein training step (instead of the method table)")
    parser.add_argument("--scaling", action="store_true",
                        help="step time and peak memory against crop and batch, inference latency against "
                             "image size, with fitted growth exponents (instead of the method table)")
    parser.add_argument("--baseline", metavar="REV",
                        help="measure the head, backbone, step and inference rows (and the --profile "
                             "breakdown) on a git worktree of REV too, side by side, with ratios, and "
                             "compare one seeded step's losses and gradients")
    parser.add_argument("--compile", metavar="MODE", choices=["default", "reduce-overhead", "max-autotune"],
                        help="measure the head, step and inference rows eager and with MODEL.COMPILE MODE "
                             "(torch.compile) side by side, with ratios and the first call's time; with "
                             "--baseline: compiled inference rows against REV's eager ones instead")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of --profile / --baseline rows")
    parser.add_argument("--scaling-crops", nargs="+", type=int, default=[512, 768, 1024])
    parser.add_argument("--scaling-batches", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--scaling-images", nargs="+", type=_hw, default=[(512, 1024), (768, 1536), (1024, 2048)],
                        metavar="HxW")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.large_batch is None:
        args.large_batch = args.batch if args.device == "cuda" else 1
    if args.profile or args.scaling or args.baseline or args.compile:
        return analysis(args)

    start = time.time()
    results = {"train": {}, "infer": {}, "export": {}}
    for size in args.sizes:
        if args.export or args.export_only:
            r = isolated(measure_export, size, args.inference_runs, args.device, tuple(args.export_size))
            results["export"][size] = r
            print(f"[{time.time() - start:6.0f} s] {size} / export: {r}", flush=True)
        if args.export_only:
            continue
        batch = args.batch if size == "small" else args.large_batch
        results["train"][size] = {}
        for method in args.methods:
            r = isolated(measure_training, size, method, batch, args.crop, args.steps, args.warmup, args.device)
            results["train"][size][method] = r
            print(f"[{time.time() - start:6.0f} s] {size} / {method}: {r}", flush=True)
        if not args.no_inference:
            for mode in ("whole", "slide"):
                r = isolated(measure_inference, size, mode, args.inference_runs, args.device)
                results["infer"][(size, mode)] = r
                print(f"[{time.time() - start:6.0f} s] {size} / inference {mode}: {r}", flush=True)

    os.makedirs(args.output, exist_ok=True)
    stem = os.path.join(args.output, args.device)
    text = report(results, args, args.device, time.time() - start)
    with open(stem + ".md", "w") as f:
        f.write(text)
    with open(stem + ".json", "w") as f:
        json.dump({"train": results["train"], "export": results["export"],
                   "infer": {f"{s}/{m}": r for (s, m), r in results["infer"].items()}}, f, indent=2)
    plotted = plot(results, stem + ".png") is not False
    print(text)
    print(f"wrote {stem}.md, .json" + (", .png" if plotted else ""))


def _worktree(rev):
    """A detached git worktree of ``rev`` in a temporary folder (removed by the caller)."""
    path = tempfile.mkdtemp(prefix="rein_d2_baseline_")
    try:
        subprocess.run(["git", "-C", REPO, "worktree", "add", "--detach", path, rev], check=True,
                       capture_output=True, text=True)
    except subprocess.CalledProcessError as e:
        os.rmdir(path)
        print(f"error: cannot check out --baseline {rev!r}: {' '.join(e.stderr.split())} (give a "
              "commit, branch or tag of this repository)", file=sys.stderr)
        sys.exit(2)  # rein_d2.utils.cli.EXIT_REFUSED (rein_d2 is not imported here: a baseline brings its own)
    return path


def analysis_rows(args):
    """(section, label, fn, args) of the --baseline / --profile / --scaling rows."""
    rows = []
    for size in args.sizes:
        tag = f"DINOv2-{size[0].upper()}"
        batch = args.batch if size == "small" else args.large_batch
        common = (batch, args.crop, args.device, args.repeats)
        if args.baseline:
            rows += [
                ("compare", f"{tag} head forward + backward, batch {batch}, {args.crop}", measure_head, (size,) + common),
                ("compare", f"{tag} backbone forward + backward (Rein), batch {batch}", measure_backbone,
                 (size, "Rein") + common),
                ("compare", f"{tag} backbone forward + backward (frozen, input gradient)", measure_backbone,
                 (size, "frozen backbone") + common),
                ("compare", f"{tag} training step, batch {batch}", measure_training,
                 (size, "Rein", batch, args.crop, args.steps, args.warmup, args.device)),
            ]
            if not args.no_inference:
                rows += [("compare", f"{tag} inference 1024x2048, {mode}", measure_inference,
                          (size, mode, args.inference_runs, args.device)) for mode in ("whole", "slide")]
                # options this checkout adds, measured on it alone (the ratio is against the
                # baseline's default row above)
                options = [(f"{dtype} autocast", ("MODEL.MASK2FORMER.TEST.AUTOCAST", dtype)) for dtype in
                           ["bfloat16"] + (["float16"] if args.device == "cuda" else [])]
                if args.compile:
                    options.append((f"torch.compile {args.compile}", ("MODEL.COMPILE", args.compile)))
                rows += [(("compare", "current"), f"{tag} inference 1024x2048, {mode}, {name}", measure_inference,
                          (size, mode, args.inference_runs, args.device, (1024, 2048), opts))
                         for mode in ("whole", "slide") for name, opts in options]
        if args.compile and not args.baseline:
            rows += [("compile", f"{tag} head forward + backward, batch {batch}, {args.crop}", measure_head, (size,) + common),
                     ("compile", f"{tag} training step, batch {batch}", measure_training,
                      (size, "Rein", batch, args.crop, args.steps, args.warmup, args.device))]
            if not args.no_inference:
                rows += [("compile", f"{tag} inference 1024x2048, {mode}", measure_inference,
                          (size, mode, args.inference_runs, args.device)) for mode in ("whole", "slide")]
        if args.profile:
            rows.append(("profile", tag, measure_profile, (size,) + common))
        if args.scaling:
            rows += [(("scaling", "crop"), c, measure_training, (size, "Rein", 1, c, args.steps, args.warmup, args.device))
                     for c in args.scaling_crops]
            rows += [(("scaling", "batch"), b, measure_training, (size, "Rein", b, args.crop, args.steps, args.warmup, args.device))
                     for b in args.scaling_batches]
            rows += [(("scaling", "image"), hw, measure_inference, (size, "whole", args.inference_runs, args.device, hw))
                     for hw in args.scaling_images]
    return rows


def analysis(args):
    """--profile / --scaling / --baseline: run the rows (on REV too, alternating), write
    <output>/<device>_profile.{md,json} and its plots."""
    start = time.time()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped (SIGTERM)"))  # still remove the worktree
    base_repo = _worktree(args.baseline) if args.baseline else None
    results = []
    try:
        for section, label, fn, fn_args in analysis_rows(args):
            r = {}
            if section == ("compare", "current"):  # a new option: no baseline run of it
                section = "compare"
                base_ref = next((x for s, l, x in results if s == "compare" and label.startswith(l + ",")), {})
                r["baseline"] = base_ref.get("baseline", {"error": "not measured"})
            elif section == "compile":  # eager against compiled, both on this checkout
                r["eager"] = isolated(fn, *fn_args)
            elif base_repo and not isinstance(section, tuple):  # scaling curves: this checkout only
                r["baseline"] = isolated(fn, *fn_args, repo=base_repo)
            r["current"] = isolated(fn, *fn_args, opts=["MODEL.COMPILE", args.compile] if section == "compile" else ())
            results.append((section, label, r))
            print(f"[{time.time() - start:6.0f} s] {section} / {label}: "
                  + "; ".join(f"{k}: {_brief(v)}" for k, v in r.items()), flush=True)
        if base_repo:  # the same seeded step on both: do losses and gradients still agree?
            size = args.sizes[0]
            batch = args.batch if size == "small" else args.large_batch
            with tempfile.TemporaryDirectory() as tmp:
                runs = [isolated(measure_numerics, size, batch, args.crop, args.device,
                                 os.path.join(tmp, f"{name}.pth"), repo=repo)
                        for name, repo in (("baseline", base_repo), ("current", None))]
                numerics = compare_numerics(*runs)
            print(f"numerics: {numerics}", flush=True)
    finally:
        if base_repo:
            subprocess.run(["git", "-C", REPO, "worktree", "remove", "--force", base_repo], check=False)
    elapsed = time.time() - start
    cmd = "python tools/benchmark.py " + " ".join(args.argv)
    lines = [f"# rein_d2 profile: {args.device.upper()}", "",
             f"Machine: {machine(args.device)}. Run: `{cmd.strip()}` ({elapsed / 60:.1f} min). "
             "Random weights and images; each row in a fresh process"
             + (f", alternating between this checkout and a worktree of `{args.baseline}`." if args.baseline else "."),
             ""]
    compare = {label: r for s, label, r in results if s == "compare"}
    if compare:
        lines += [f"## This checkout against `{args.baseline}`", "",
                  "Time: median of the timed repeats. Peak memory: CUDA max allocated, or the "
                  "process's peak RSS growth (head: from just before its first step).", ""]
        lines += bp.compare_table(compare, f"baseline {args.baseline}" if args.baseline else "") + [""]
    compiled = {label: {"baseline": r["eager"], "current": r["current"]} for s, label, r in results if s == "compile"}
    if compiled:
        lines += [f"## torch.compile (`MODEL.COMPILE {args.compile}`) against eager, this checkout", "",
                  "Each row twice in fresh processes: eager, then with backbone, pixel decoder and query "
                  "decoder compiled. Time: median of the timed repeats, after a first call (its own "
                  "row: it includes the compilation, from an empty inductor cache per row).", ""]
        lines += bp.compare_table(compiled, "eager", "compiled") + [""]
    if args.baseline:
        n = numerics
        lines += (["Numerics: " + ("failed: " + n["error"] if "error" in n else
                   f"one seeded training-mode forward ({args.sizes[0]}, batch {args.batch}, crop "
                   f"{args.crop}) on both: the {n['outputs']} class and mask logit tensors (every "
                   f"layer) differ by at most {n['out_diff']:.1e} (largest value {n['out_scale']:.1e}); "
                   f"the {n['grads']} gradients of a fixed random linear function of them by at most "
                   f"{n['grad_diff']:.1e}, {n['grad_rel']:.1e} of each tensor's largest value. "
                   "(Losses are not compared here: they pass through the Hungarian assignment, a "
                   "discrete choice that rounding-level differences can flip at random weights; the "
                   "reference-fixture tests check them with recorded points.)"), ""])
    profiles = {label: r for s, label, r in results if s == "profile"}
    for label, r in profiles.items():
        lines += [f"## Where a {label} training step goes (batch {args.batch}, crop {args.crop})", "",
                  "Each component's recorded calls replayed alone: forward, then backward from "
                  "random output gradients; saved activations: what its forward keeps for backward "
                  "(parameters excluded). \"rest\" rows: the whole module less its named parts. The "
                  "step row is the measured whole step; replayed parts add up to about it.", ""]
        cur, base = r["current"], r.get("baseline")
        if "error" in cur:
            lines += [f"failed: {cur['error']}", ""]
            continue
        lines += bp.profile_table(cur, base if base and "error" not in base else None, args.baseline) + [""]
    scaling = {}
    for s, label, r in results:
        if isinstance(s, tuple):
            scaling.setdefault(s[1], []).append((label, r["current"]))
    if scaling:
        lines += ["## Scaling", ""] + bp.scaling_tables(scaling, args.crop)
    stem = os.path.join(args.output, f"{args.device}_profile")
    os.makedirs(args.output, exist_ok=True)
    plotted = []
    if profiles:
        bars = {}
        for label, r in profiles.items():
            if base_repo and "error" not in r.get("baseline", {"error": 1}):
                bars[f"{label}, {args.baseline}"] = r["baseline"]
            if "error" not in r["current"]:
                bars[f"{label}, this checkout"] = r["current"]
        if bars:
            bp.plot_profile(bars, stem + ".png")
            plotted.append(stem + ".png")
            lines += [f"![components](./{os.path.basename(stem)}.png)", ""]
    if scaling:
        bp.plot_scaling(scaling, stem + "_scaling.png", args.crop)
        plotted.append(stem + "_scaling.png")
        lines += [f"![scaling](./{os.path.basename(stem)}_scaling.png)", ""]
    text = "\n".join(lines)
    with open(stem + ".md", "w") as f:
        f.write(text)
    with open(stem + ".json", "w") as f:
        json.dump([{"section": s if isinstance(s, str) else "/".join(s), "label": label, **r}
                   for s, label, r in results], f, indent=2, default=str)
    print(text)
    print(f"wrote {stem}.md, .json" + "".join(", " + p for p in plotted))
    return results


def _brief(r):
    if "error" in r:
        return "failed: " + r["error"]
    keys = [k for k in ("step_s", "latency_s", "peak_mem") if k in r]
    if keys:
        return ", ".join(f"{k} {r[k]:.3g}" for k in keys)
    return f"step {r.get('step', {}).get('total_s', float('nan')):.3g} s"


if __name__ == "__main__":
    main()
