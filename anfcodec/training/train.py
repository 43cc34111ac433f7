"""Resumable variable-rate training loop.

One run lives in a folder (default ``runs/anfic``): ``last.pt`` is written
every few minutes and on exit, ``best.pt`` whenever the validation RD loss
improves, and ``log.jsonl`` holds one line per log interval. Starting the
same command again resumes from ``last.pt``, including the data sampler's
random state and the cumulative step and CPU-time counters.
"""
from __future__ import annotations

import copy
import json
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..models import build_model
from ..zoo import ModelNotFound, load_state_dict_file, manifest
from ..models.anfic import ANFICConfig, native_bf16
from .data import CropSampler, DEFAULT_TRAIN_DIR, load_rgb, split, validation_crops
from .loss import rd_loss
from .narrow import narrow_state_dict

VAL_QUALITIES = (1.0, 4.0, 8.0)


def val_qualities(model) -> tuple:
    """VAL_QUALITIES, plus the top quality of a model that has more than 8."""
    top = float(model.num_qualities)
    return VAL_QUALITIES + ((top,) if top > VAL_QUALITIES[-1] else ())


@dataclass
class TrainOptions:
    run_dir: Path = Path("runs/anfic")
    data: Path = DEFAULT_TRAIN_DIR
    minutes: float = 60.0
    batch: int = 2
    crop: int = 256  # 128 crops left the hyperprior no interior positions (see docs/RESULTS.md)
    val_size: int = 512  # validation centre crops: large enough for interior hyperlatents (8x8)
    lr: float = 5e-4
    lr_final: float | None = None  # cosine decay from lr to this over the --minutes budget; None: constant
    warmup: int = 200
    gain_lr_mult: float = 10.0
    bf16: bool = True  # where the hardware has it (native_bf16); emulated bf16 is ~10x slower
    channels_last: bool = True  # measured: ~35% faster bf16 steps on the 2-core AVX-512 CPU
    threads: int = 2
    device: str | None = None  # default: CUDA when present
    seed: int = 0
    checkpoint_minutes: float = 5.0
    val_minutes: float = 10.0
    log_every: int = 50
    init: Path | None = None   # start from these weights instead of the DCT warm start
    arch: str | None = None    # architecture of a new run (e.g. grow --init ANFIC weights into "ms-anfic")
    widths: dict | None = None  # narrow the --init weights to these widths, e.g. {"N": 64, "qe_width": 16}
    max_steps: int | None = None  # stop at this cumulative step count (equal-step ablations)
    lambdas: tuple | None = None  # retarget the qualities of a resumed or initialised run
    extend_from: int | None = None  # train only the per-quality tables of the qualities above this one
    quantizer: str | None = None  # switch a run's latent quantizer ("fixed" or "mean")
    freeze_base: bool = False  # train only the modules a grown model added (model.fresh_modules)
    config: dict | None = None
    settings: dict | None = None  # fields of a new run's model config to override, e.g. {"coarse_explore": 0.25}


def scheduled_lr(opts: TrainOptions, elapsed_fraction: float) -> float:
    """The base learning rate after this fraction of the invocation's budget.

    Constant without ``lr_final``; otherwise a cosine from ``lr`` to ``lr_final``. The budget
    is the steps up to ``max_steps`` when given (so equal-step runs see the same schedule),
    else the wall-clock minutes: each invocation anneals once.
    """
    if opts.lr_final is None:
        return opts.lr
    f = min(max(elapsed_fraction, 0.0), 1.0)
    return opts.lr_final + (opts.lr - opts.lr_final) * 0.5 * (1 + math.cos(math.pi * f))


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class DivergenceGuard:
    """Skips batches whose loss is non-finite or far above its running average; rolls back if they persist."""

    def __init__(self, lr_scale: float = 1.0, spike: float = 8.0, patience: int = 8, every: int = 200):
        self.lr_scale, self.spike, self.patience, self.every = lr_scale, spike, patience, every
        self.avg = None
        self.bad = 0
        self.good = None

    def accept(self, loss: float) -> bool:
        if math.isfinite(loss) and (self.avg is None or loss < self.spike * self.avg):
            self.avg = loss if self.avg is None else 0.98 * self.avg + 0.02 * loss
            self.bad = 0
            return True
        self.bad += 1
        return False

    def should_roll_back(self) -> bool:
        return self.bad >= self.patience

    def snapshot(self, model, opt) -> None:
        self.good = copy.deepcopy((model.state_dict(), opt.state_dict()))

    def maybe_snapshot(self, step: int, model, opt) -> None:
        if step % self.every == 0 and all(torch.isfinite(p).all() for p in model.parameters()):
            self.snapshot(model, opt)

    def roll_back(self, model, opt) -> None:
        model.load_state_dict(self.good[0])
        opt.load_state_dict(self.good[1])
        self.lr_scale *= 0.5
        self.bad = 0
        self.avg = None


@torch.no_grad()
def evaluate(model, crops: torch.Tensor) -> dict:
    """Validation with real rounding (eval mode), per quality."""
    model.eval()
    saved, model.autocast_dtype = model.autocast_dtype, None
    res = {}
    qualities = val_qualities(model)
    for q in qualities:
        qt = torch.full((crops.shape[0],), q, device=crops.device)
        out = model(crops, qt)
        out["x_hat"] = out["x_hat"].clamp(0, 1)
        m = rd_loss(out, crops, model.lmbda(qt))
        res[q] = {"bpp": m["bpp"].mean().item(), "psnr": m["psnr"].mean().item(), "loss": m["loss"].item()}
    model.autocast_dtype = saved
    model.train()
    res["loss"] = sum(res[q]["loss"] for q in qualities) / len(qualities)
    return res


def _param_groups(model):
    """(transforms, per-quality gains, modules a grown model added, EntropyBottleneck quantiles)."""
    named = [(n, p) for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    gains = [p for n, p in named if n in ("log_gain", "post_filter.strength")]
    fresh = [p for n, p in named if n.startswith(getattr(model, "fresh_modules", ()))]
    ids = {id(p) for p in gains + fresh}
    main = [p for _, p in named if id(p) not in ids]
    return main, gains, fresh, aux


def train_only_qualities_above(model, k: int) -> None:
    """Freeze all but the per-quality tables, and in them the rows of qualities 1..k.

    Qualities 1..k then code exactly as before (same transforms, gains and entropy
    model), while the qualities that ``--lambdas`` added above them find their gains and
    post-filter strengths: a model's range grows without a release changing its old files.
    Adam without weight decay leaves a parameter whose gradient is always zero exactly where it is.
    """
    if not 1 <= k < model.num_qualities:
        raise ValueError(f"no qualities above {k} to train (the model has {model.num_qualities})")
    for name, p in model.named_parameters():
        if name in ("log_gain", "post_filter.strength"):
            keep = torch.ones_like(p)
            keep[:k] = 0
            p.register_hook(lambda grad, keep=keep: grad * keep)
        else:
            p.requires_grad_(False)


def train_only_fresh_modules(model) -> int:
    """Freeze everything but the modules a grown model added (``model.fresh_modules``): the
    weights it grew from, their gains and entropy tables included, stay exactly as they are, and
    no gradient flows into them (nor back through the analysis, which then needs none: cheaper
    steps). Returns the number of parameters left to train."""
    fresh = tuple(getattr(model, "fresh_modules", ()))
    if not fresh:
        raise ValueError(f"{type(model).__name__} adds no modules to its base: nothing to train with the base frozen")
    masks = model.fresh_masks() if hasattr(model, "fresh_masks") else {}  # new entries of widened tensors
    count = 0
    for name, p in model.named_parameters():
        if name in masks:  # Adam without weight decay leaves an entry whose gradient is always zero where it is
            keep = masks[name].to(p.device)
            p.register_hook(lambda grad, keep=keep: grad * keep)
            count += int(keep.sum())
            continue
        p.requires_grad_(name.startswith(fresh))
        count += p.numel() if p.requires_grad else 0
    return count


def _shipped_entry(weights: Path) -> dict:
    """The manifest entry of shipped weights, a current or a previous release, or {} for a loose file."""
    try:
        man = manifest(weights.parent)
    except ModelNotFound:
        return {}
    entries = [*man["models"].values(), *man.get("previous", [])]
    return next((e for e in entries if e["file"] == weights.name), {})


def _shipped_counters(entry: dict) -> dict:
    """Continue the step and CPU-time record of shipped weights."""
    if "training" not in entry:
        return {}
    t = entry["training"]
    return {"step": t["steps"], "cpu_seconds": t["cpu_hours"] * 3600, "wall_seconds": t["wall_hours"] * 3600,
            "gpu_seconds": t.get("gpu_hours", 0.0) * 3600}


def train(opts: TrainOptions) -> Path:
    torch.set_num_threads(opts.threads)
    device = opts.device or default_device()
    run = Path(opts.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    last, best = run / "last.pt", run / "best.pt"

    train_files, val_files = split(opts.data)
    if not train_files:
        raise SystemExit(f"no training images in {opts.data}")
    images = [load_rgb(p).to(device) for p in train_files]  # crops are cut where the model runs
    val_images = [load_rgb(p) for p in val_files] if val_files else images[:2]
    val = validation_crops(val_images, min(opts.val_size, *(min(v.shape[1:]) for v in val_images))).to(device)

    config = (opts.config or ANFICConfig().to_dict())
    state = torch.load(last, map_location="cpu", weights_only=False) if last.exists() else None
    shipped = _shipped_entry(Path(opts.init)) if state is None and opts.init is not None else {}
    if state is not None:
        config = state["config"]
    elif "config" in shipped:
        config = shipped["config"]  # the weights' own architecture and qualities
    if state is None and opts.arch is not None:
        config = {**config, "arch": opts.arch}
    model = build_model(config)
    if state is None and opts.settings:
        unknown = set(opts.settings) - set(model.config.to_dict())
        if unknown:
            raise SystemExit(f"--set: {model.config.arch_name} has no config field {', '.join(sorted(unknown))}")
        config = {**config, **opts.settings}
        model = build_model(config)
    if state is None:
        config = model.config.to_dict()  # with the defaults of fields the initial weights lack
    counters = {"step": 0, "cpu_seconds": 0.0, "wall_seconds": 0.0, "gpu_seconds": 0.0, "best_val": math.inf}
    if state is None and opts.init is not None:
        model.init_from(load_state_dict_file(opts.init))
        counters.update(_shipped_counters(shipped))
        widths = {k: v for k, v in (opts.widths or {}).items() if v != getattr(model.config, k)}
        if widths:
            calibration = validation_crops(images[:16], min(256, *(min(v.shape[1:]) for v in images[:16])))
            narrowed = narrow_state_dict(model, widths, calibration.to(device))
            config = {**config, **widths}
            model = build_model(config)
            model.load_state_dict(narrowed)
            tqdm.write(f"narrowed {opts.init} to {widths}")
    main_params, gain_params, fresh_params, aux_params = _param_groups(model)
    # The per-quality gains set each quality's operating point; at the transforms' learning rate
    # they drift there over thousands of steps, so they get a larger one. So do the small modules
    # a grown model adds (MS-ANFIC's coarse scale), which start from scratch beside trained ones.
    opt = torch.optim.Adam([{"params": main_params, "lr_mult": 1.0},
                            {"params": gain_params + fresh_params, "lr_mult": opts.gain_lr_mult}], lr=opts.lr)
    aux_opt = torch.optim.Adam(aux_params, lr=1e-3)
    sampler = CropSampler(images, opts.crop, seed=opts.seed)
    qgen = torch.Generator().manual_seed(opts.seed + 1)
    adam_start = counters["step"]  # a fresh Adam state warms up again from here
    if state is not None:
        model.load_state_dict(state["model"])
        if len(state["opt"]["param_groups"]) == len(opt.param_groups):
            opt.load_state_dict(state["opt"])
            # A checkpoint shipped without its Adam moments (to fit a transfer) warms up again.
            adam_start = None if state["opt"]["state"] else state["counters"]["step"]
        else:
            tqdm.write("optimizer layout changed since the checkpoint: Adam state restarts")
            adam_start = state["counters"]["step"]
        aux_opt.load_state_dict(state["aux_opt"])
        sampler.load_state(state["sampler"])
        qgen.set_state(state["qgen"])
        counters.update(state["counters"])
    if opts.lambdas is not None and tuple(opts.lambdas) != tuple(model.config.lambdas):
        tqdm.write(f"qualities retargeted: lambdas {list(model.config.lambdas)} -> {list(opts.lambdas)}")
        resized = len(opts.lambdas) != model.num_qualities
        model.retarget_qualities(tuple(opts.lambdas))
        if resized:  # Adam's moments of the per-quality tables have the old row count
            for p in gain_params:
                opt.state.pop(p, None)
        config = {**config, "lambdas": list(opts.lambdas)}
        counters["best_val"] = math.inf  # validation losses at other lambdas do not compare
    if opts.quantizer is not None and opts.quantizer != model.config.quantizer:
        tqdm.write(f"quantizer: {model.config.quantizer} -> {opts.quantizer}")
        model.config.quantizer = opts.quantizer
        config = {**config, "quantizer": opts.quantizer}
        counters["best_val"] = math.inf
    if counters.get("val_size") != val.shape[-1]:
        counters["val_size"] = val.shape[-1]
        counters["best_val"] = math.inf  # validation losses on other crops do not compare
    if model.config.synthesis == "int8":  # train for the decoder's 8-bit activations
        from ..int8net import fake_quantize
        tqdm.write(f"int8 synthesis: {len(fake_quantize(model))} convolution inputs rounded to 8 bits in training")
    if opts.bf16 and native_bf16(torch.device(device).type):
        model.autocast_dtype = torch.bfloat16
    memory_format = torch.channels_last if opts.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    if opts.extend_from is not None:
        train_only_qualities_above(model, opts.extend_from)
        tqdm.write(f"training qualities {opts.extend_from}..{model.num_qualities} only; 1..{opts.extend_from} stay as they are")
    if opts.freeze_base:
        tqdm.write(f"base frozen: training {train_only_fresh_modules(model)} parameters of "
                   f"{', '.join(m.rstrip('.') for m in model.fresh_modules)}")
    for o in (opt, aux_opt):  # moments restored from a CPU checkpoint follow the model
        for st in o.state.values():
            for k, v in st.items():
                if torch.is_tensor(v) and k != "step":
                    st[k] = v.to(device)
    model.train()

    def save(path: Path) -> None:
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            tqdm.write(f"not saving {path.name}: non-finite weights")
            return
        counters["lr_scale"] = guard.lr_scale
        tmp = path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "aux_opt": aux_opt.state_dict(),
                    "sampler": sampler.state(), "qgen": qgen.get_state(), "counters": counters,
                    "config": config}, tmp)
        os.replace(tmp, path)

    guard = DivergenceGuard(counters.get("lr_scale", 1.0))
    guard.snapshot(model, opt)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("now", True))
    logf = open(run / "log.jsonl", "a")
    t_start, cpu_start = time.time(), time.process_time()
    t_ckpt = t_val = t_start
    wall0, cpu0 = counters["wall_seconds"], counters["cpu_seconds"]
    gpu0 = counters.setdefault("gpu_seconds", 0.0)
    acc = {"loss": 0.0, "bpp": 0.0, "psnr": 0.0, "x2": 0.0, "fine": 0.0, "n": 0}
    bar = tqdm(desc="train", unit="step", initial=counters["step"], dynamic_ncols=True)
    first_step = counters["step"]
    if opts.max_steps is not None:
        # An equal-step schedule survives interruptions: a resumed invocation toward the same end
        # continues the cosine where it stood instead of annealing again from --lr.
        key = [opts.max_steps, opts.lr, opts.lr_final]
        sched = counters.get("step_schedule")
        if not sched or sched["key"] != key or sched["from"] > first_step:
            sched = counters["step_schedule"] = {"key": key, "from": first_step}
        first_step = sched["from"]
    while not stop["now"] and time.time() - t_start < opts.minutes * 60 and \
            (opts.max_steps is None or counters["step"] < opts.max_steps):
        step = counters["step"]
        if opts.max_steps is not None:
            progress = (step - first_step) / max(1, opts.max_steps - first_step)
        else:
            progress = (time.time() - t_start) / (opts.minutes * 60)
        base_lr = scheduled_lr(opts, progress)
        for g in opt.param_groups:
            warm = 1.0 if adam_start is None else min(1.0, (step - adam_start + 1) / opts.warmup)
            g["lr"] = base_lr * guard.lr_scale * g["lr_mult"] * warm
        x = sampler.batch(opts.batch).contiguous(memory_format=memory_format)
        q_lo = opts.extend_from or 1
        q = (q_lo + (model.num_qualities - q_lo) * torch.rand(opts.batch, generator=qgen)).to(device)
        out = model(x, q)
        m = rd_loss(out, x, model.lmbda(q))
        loss = m["loss"].item()
        if not guard.accept(loss):
            # A rate blow-up (seen once in 800 steps at lr 5e-4): skip the batch, and after
            # several in a row roll back to the last good weights at half the learning rate.
            if guard.should_roll_back():
                guard.roll_back(model, opt)
                tqdm.write(f"step {step}: loss blew up; rolled back, lr x{guard.lr_scale:g}")
            continue
        opt.zero_grad(set_to_none=True)
        m["loss"].backward()
        torch.nn.utils.clip_grad_norm_(main_params + gain_params, 1.0)
        if fresh_params:  # clipped apart, so that their large early gradients do not shrink the others'
            torch.nn.utils.clip_grad_norm_(fresh_params, 1.0)
        opt.step()
        aux = model.aux_loss() if opts.extend_from is None else None  # CDF tables shared by every quality
        if aux is not None and aux.requires_grad:  # a frozen base's tables have no gradient
            aux_opt.zero_grad(set_to_none=True)
            aux.backward()
            aux_opt.step()
        guard.maybe_snapshot(step, model, opt)

        counters["step"] = step + 1
        counters["wall_seconds"] = wall0 + time.time() - t_start
        if device == "cpu":
            counters["cpu_seconds"] = cpu0 + time.process_time() - cpu_start
        else:  # accelerator time is its own budget line, not the project's CPU time
            counters["gpu_seconds"] = gpu0 + time.time() - t_start
        for k in ("bpp", "psnr", "x2"):
            acc[k] += m[k].mean().item()
        acc["loss"] += m["loss"].item()
        acc["fine"] += out["split"].mean().item() if "split" in out else 1.0  # multiscale: area coded fine
        acc["n"] += 1
        bar.update(1)
        if acc["n"] == opts.log_every:
            row = {k: acc[k] / acc["n"] for k in ("loss", "bpp", "psnr", "x2", "fine")}
            row.update(step=counters["step"], lr=base_lr * guard.lr_scale, wall_h=counters["wall_seconds"] / 3600,
                       cpu_h=counters["cpu_seconds"] / 3600)
            logf.write(json.dumps(row) + "\n"); logf.flush()
            bar.set_postfix(loss=f"{row['loss']:.3f}", bpp=f"{row['bpp']:.3f}", psnr=f"{row['psnr']:.2f}")
            acc = {k: 0.0 for k in acc} | {"n": 0}
        now = time.time()
        if now - t_val > opts.val_minutes * 60:
            t_val = now
            _validate(model, val, counters, logf, save, best)
        if now - t_ckpt > opts.checkpoint_minutes * 60:
            t_ckpt = now
            save(last)
    _validate(model, val, counters, logf, save, best)
    save(last)
    bar.close()
    logf.close()
    return best


def _validate(model, val, counters, logf, save, best: Path) -> None:
    res = evaluate(model, val)
    qualities = val_qualities(model)
    row = {"val": {str(q): res[q] for q in qualities}, "val_loss": res["loss"], "step": counters["step"],
           "cpu_h": counters["cpu_seconds"] / 3600}
    logf.write(json.dumps(row) + "\n"); logf.flush()
    tqdm.write("val step %d: %s" % (counters["step"], "  ".join(
        f"q{q:g} {res[q]['bpp']:.3f}bpp {res[q]['psnr']:.2f}dB" for q in qualities)))
    if res["loss"] < counters["best_val"]:
        counters["best_val"] = res["loss"]
        save(best)
