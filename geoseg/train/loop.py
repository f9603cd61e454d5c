"""``geoseg train``: fit IIC / AC networks (or a classical baseline) on a tile store.

The loop reads top to bottom, nanoGPT style: schedule → periodic eval + checkpoint →
forward/backward → step → log. Every source of randomness is explicit: the batch of step ``s``
(crops and augmentations) comes from a generator seeded with ``(seed, s)``, and the global
torch/numpy/python RNG states travel in the checkpoint, so ``--resume`` continues exactly where
an interrupted run stopped.

Run folder layout: ``config.yaml`` (the resolved config), ``last.pt`` (every
``checkpoint_every`` steps and at the end), ``best.pt`` (lowest evaluation loss, never chosen by
labels), ``metrics.csv`` and ``quicklook/epoch_XXX.png``. Files are written atomically one by
one; the folder itself is not a temporary name, because an interrupted run must keep its
``last.pt`` to be resumable. Under ``torchrun`` the same loop runs data-parallel
(:mod:`geoseg.train.distributed`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from geoseg.checkpoint import Checkpoint, build_from_spec
from geoseg.config import TrainConfig, load_config, to_dict
from geoseg.errors import BadInput, GeoSegError
from geoseg.models.device import resolve_device
from geoseg.paths import atomic_output, check_input, check_output, remove
from geoseg.progress import progress
from geoseg.progress import set_enabled as set_progress
from geoseg.train.baselines import fit_baseline, store_pixel_size
from geoseg.train.data import (
    CropSampler,
    StallMeter,
    loader_workers,
    rng_state,
    seed_everything,
    set_rng_state,
    step_batches,
    step_generator,
    torch_threads,
)
from geoseg.train.distributed import setup, wrap
from geoseg.train.evaluation import evaluate
from geoseg.train.methods import BASELINES, method_for, model_spec
from geoseg.train.monitor import MetricsLog, quicklook
from geoseg.train.rundir import check_run_output, swap_in, work_folder

log = logging.getLogger(__name__)


def train(
    store: Any,
    output: str | Path,
    *,
    config: str | Path | dict | TrainConfig | None = None,
    overrides: tuple[str, ...] | list[str] = (),
    method: str | None = None,
    resume: bool = False,
    device: str = "auto",
    overwrite: bool = False,
    max_seconds: float | None = None,
) -> Path:
    """Train (or fit a baseline) on ``store`` into the run folder ``output``.

    ``overwrite`` replaces an existing run only on success: the new run is written beside it
    and swapped in at the end, so a failed or interrupted retrain leaves the old run as it was
    (:mod:`geoseg.train.rundir`).

    Args:
        store: tile store URL/path or an open :class:`geoseg.tiles.TileStore`.
        output: run folder; refused if it exists unless ``overwrite`` or ``resume``.
        config: YAML path, dict or TrainConfig; ``overrides`` (``"optim.lr=0.001"``) go on top.
        method: overrides ``config.method``.
        resume: continue from ``output/last.pt`` with the run's saved config (plus overrides,
            e.g. a larger ``schedule.steps``).
        device: ``auto`` | ``cpu`` | ``cuda``.
        overwrite: replace an existing run folder (on success only, see above).
        max_seconds: a time budget for the gradient steps (evaluation excluded): the run
            stops at the first step past it, evaluated and checkpointed like a last step
            (``pipelines/gpu_check.py``); ``schedule.steps`` stays the upper bound.

    Returns:
        the path of ``best.pt``.
    """
    output = Path(output)
    check_run_output(output, store, overwrite=overwrite, resume=resume)
    work = work_folder(output, overwrite=overwrite, resume=resume)
    try:
        dist, dev = setup(resolve_device(device))
        # 1. settings: a fresh config, or the resumed run's config plus overrides
        ckpt = _resume_checkpoint(work) if resume else None
        cfg = _config(ckpt["config"] if ckpt else config, tuple(overrides), method)
        if ckpt is None and dist.main:  # other ranks would see the folder rank 0 is creating
            check_output(work, overwrite=overwrite)
        # 2. everything that can reject the inputs runs before the run folder is touched
        if not dist.main:
            set_progress(False)
        store = _open(store)
        if ckpt is not None:
            _check_same_store(ckpt, store)
        seed_everything(cfg.seed)
        model = build_from_spec(model_spec(cfg, len(store.bands), store_pixel_size(cfg, store)))
        model = model.to(dev)
        sampler = CropSampler(
            store,
            crop_size=cfg.data.crop_size,
            batch_size=cfg.data.batch_size,
            min_valid=cfg.data.min_valid,
            seed=cfg.seed,
            rank=dist.rank,
            size_multiple=model.size_multiple,
        )
        # 3. the run folder, then the fit: once for a baseline, gradient steps for a network
        if dist.main:
            if ckpt is None:
                if work.exists():
                    remove(work)
                work.mkdir()
            with atomic_output(work / "config.yaml", overwrite=True) as tmp:
                tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        dist.barrier()
        objective = method_for(cfg, store.band_names)
        if cfg.method in BASELINES:
            _fit_once(model, sampler, objective, cfg, dist=dist, dev=dev, output=work)
        else:
            _fit_steps(
                model,
                sampler,
                objective,
                cfg,
                dist=dist,
                dev=dev,
                output=work,
                ckpt=ckpt,
                max_seconds=max_seconds,
            )
    except BaseException:
        if work != output:
            remove(work)
        raise
    swap_in(work, output)
    return output / "best.pt"


def _fit_once(model, sampler, method, cfg: TrainConfig, *, dist, dev, output: Path) -> None:
    """A baseline: fitted once, by rank 0 (they are cheap), then saved like a network's run."""
    if dist.main:
        metrics = MetricsLog(output / "metrics.csv")
        steps = fit_baseline(model, sampler, cfg, metrics, dev)
        rows, _ = evaluate(model, sampler, method, cfg, dev, steps)
        for row in rows:
            metrics.write(**row)
        ckpt = snapshot(model, None, cfg, sampler, steps, None)
        ckpt.save(output / "last.pt")
        ckpt.save(output / "best.pt")
        look = sampler.fixed_tiles(cfg.data.quicklook_tiles)
        quicklook(model, sampler, look, output / "quicklook" / "epoch_001.png", dev)
    dist.barrier()


def _fit_steps(
    model, sampler, method, cfg: TrainConfig, *, dist, dev, output: Path, ckpt, max_seconds
) -> None:
    """The gradient loop, nanoGPT style: eval + checkpoint when due → forward/backward → step
    → log. ``ckpt`` is the checkpoint being resumed (None for a fresh run)."""
    store = sampler.store
    cuda = dev.type == "cuda"
    if cuda:
        # NHWC is what cuDNN's tensor-core convolutions run natively (no layout transposes)
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay
    )
    # Mixed precision on CUDA only: bf16 where the GPU has it (fp32's exponent range, so no
    # loss scaling), else fp16 with the GradScaler. On CPU training stays plain fp32.
    amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and amp_dtype == torch.float16)
    step, best_loss, resumed_at, saved = 0, math.inf, None, None
    if ckpt is not None:
        model.load_state_dict(ckpt["model_state"])
        optimizer.load_state_dict(ckpt["optimizer_state"])
        step = resumed_at = saved = int(ckpt["step"])
        best_loss = ckpt["best_loss"] if ckpt["best_loss"] is not None else math.inf
        set_rng_state(ckpt["rng_state"])
        if scaler.is_enabled() and ckpt.get("scaler_state"):
            scaler.load_state_dict(ckpt["scaler_state"])
        log.info("resuming %s at step %d", output, step)
    net = wrap(model, dist, dev)
    if cfg.compile:
        net = torch.compile(net)  # the training forward only; eval and quicklooks stay eager
    if dist.main:
        metrics = MetricsLog(output / "metrics.csv", resume_step=step if ckpt else None)
    look_tiles = sampler.fixed_tiles(cfg.data.quicklook_tiles)
    sch = cfg.schedule
    n_heads = len(model.head_names)
    model.train()

    # crops are cut by loader workers ahead of the model (the same batches as in this thread)
    workers = loader_workers(cfg.data.workers, cuda=cuda, store=store)
    torch.set_num_threads(torch_threads(workers))  # the cores the workers leave, once
    batches = step_batches(
        sampler, step, sch.steps, workers=workers, pin_memory=cuda and cfg.data.pin_memory
    )
    meter = StallMeter()
    start_step = step

    bar = progress(total=sch.steps, desc=f"train {cfg.method}", unit="step")
    bar.update(step)
    while True:
        out_of_time = max_seconds is not None and meter.stepped >= max_seconds
        # periodic evaluation and checkpoints (also at the very end)
        last = step >= sch.steps or out_of_time
        # (a resumed run does not repeat the evaluation its checkpoint step already logged;
        # in a torchrun job rank 0 evaluates and saves while the others wait in the next step)
        due = step > 0 and step % sch.eval_every == 0 and step != resumed_at
        ckpt_due = step > 0 and step % sch.checkpoint_every == 0
        if cuda and (last or due or ckpt_due):
            t0 = time.perf_counter()  # the queued GPU work belongs to the steps' time
            torch.cuda.synchronize(dev)
            meter.stepped += time.perf_counter() - t0
        if dist.main and (last or due):
            rows, best_subs = evaluate(model, sampler, method, cfg, dev, step)  # only looks
            # the loop's decision: predict uses each head's lowest-loss sub-head (IIC paper)
            model.select_sub_heads(best_subs)
            for row in rows:
                metrics.write(**row)
            _finite(rows[0]["loss"], "evaluation loss", step, output, saved)
            _finite(_weights_finite(model), "weights", step, output, saved)
            if rows[0]["loss"] < best_loss:
                best_loss = rows[0]["loss"]
                snapshot(model, None, cfg, sampler, step, best_loss).save(output / "best.pt")
        if dist.main and (last or ckpt_due):
            _finite(_weights_finite(model), "weights", step, output, saved)
            ckpt = snapshot(model, optimizer, cfg, sampler, step, best_loss)
            # the loss scale of mixed precision is training state too (plain floats and ints)
            Checkpoint({**ckpt, "scaler_state": scaler.state_dict()}).save(output / "last.pt")
            saved = step
        if last:
            break

        # forward / backward on one batch; heads alternate (main, over, main, ...)
        meter.begin()
        head = step % n_heads
        batch = next(batches)
        meter.got_batch()
        x = batch["image"].to(dev, non_blocking=True)
        valid = batch["valid"].to(dev, non_blocking=True)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=cuda):
            rng = step_generator(cfg.seed, step, 1, dist.rank)
            p1s, p2s, both = method.pair(net, x, valid, head, rng)
        # sub-heads share the trunk; their losses are averaged (IIC paper)
        loss = sum(method.loss(p1, p2, both) for p1, p2 in zip(p1s, p2s, strict=True))
        loss = loss / len(p1s)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        step += 1

        # log
        bar.update(1)
        if dist.main and step % sch.log_every == 0:
            # (checked where the loss is read anyway: no extra GPU sync per step)
            _finite(float(loss.detach()), "training loss", step, output, saved)
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", head=model.head_names[head])
            meter.end()
            metrics.write(
                step=step,
                split="train",
                head=model.head_names[head],
                loss=float(loss.detach()),
                data_stall=meter.stall,
            )
        else:
            meter.end()
        if dist.main and (step % sch.steps_per_epoch == 0 or step == sch.steps):
            epoch = math.ceil(step / sch.steps_per_epoch)
            quicklook(
                model, sampler, look_tiles, output / "quicklook" / f"epoch_{epoch:03d}.png", dev
            )
    batches.close()  # stops the loader workers (a time budget leaves batches unused)
    if dist.main:
        _write_summary(
            output / "summary.json",
            meter,
            steps=step - start_step,
            crops=(step - start_step) * sampler.batch_size * dist.world,
            stopped="time" if step < sch.steps else "steps",
            workers=workers,
            device=dev,
            amp=(str(amp_dtype).removeprefix("torch.") if cuda else None),
            compiled=cfg.compile,
        )
    bar.close()
    dist.barrier()


# --- the pieces the loop calls ---------------------------------------------------------------


def _open(store: Any):
    from geoseg.tiles.store import open_store

    if isinstance(store, (str, Path)):
        if "://" not in str(store):
            check_input(store, param="STORE")
        return open_store(str(store))
    return store


def _config(config: Any, overrides: tuple[str, ...], method: str | None) -> TrainConfig:
    if isinstance(config, TrainConfig):
        cfg = load_config(TrainConfig, to_dict(config), overrides)
    else:
        cfg = load_config(TrainConfig, config, overrides)
    if method is not None:
        cfg = load_config(TrainConfig, to_dict(cfg), (f"method={method}",))
    return cfg


def _resume_checkpoint(output: Path) -> Checkpoint:
    """``last.pt`` of the run being resumed (refused, naming --resume, when there is none)."""
    if not (output / "last.pt").is_file():
        raise BadInput(f"{output} has no last.pt to resume from; drop --resume", param="--resume")
    return Checkpoint.load(output / "last.pt", param="--resume")


def _check_same_store(ckpt: Checkpoint, store) -> None:
    """A resumed run continues on the pixels it started on: same bands, same statistics."""
    if list(ckpt["bands"]) != list(store.bands):
        raise BadInput(
            f"the run was trained on bands {ckpt['bands']}, the store has {store.bands}; "
            "resume on the same store",
            param="STORE",
        )
    if not all(
        math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
        for k in ("mean", "std", "p2", "p98")
        for a, b in zip(ckpt["norm"][k], store.stats[k], strict=True)
    ):  # a store re-tiled from other pixels under the same path: resuming would mix them
        raise BadInput(
            f"{store.url} changed since the run was started (other band statistics); "
            "use --overwrite to train again from the start",
            param="STORE",
        )


def snapshot(
    model, optimizer, cfg: TrainConfig, sampler: CropSampler, step: int, best_loss: float | None
) -> Checkpoint:
    """The checkpoint of docs/contracts.md for the current state."""
    store = sampler.store
    return Checkpoint.new(
        model,
        method=cfg.method,
        spec=model_spec(cfg, len(store.bands), store_pixel_size(cfg, store)),
        bands=sampler.bands,
        crop_size=sampler.crop_size,
        config=to_dict(cfg),
        step=step,
        epoch=step // max(1, cfg.schedule.steps_per_epoch),
        optimizer_state=optimizer.state_dict() if optimizer is not None else None,
        rng_state=rng_state(),
        best_loss=None if best_loss is None or math.isinf(best_loss) else float(best_loss),
        # the band contract (docs/reliability.md): predict matches unnamed bands only on
        # rasters with the training band count
        band_count=int(store.sources[0]["count"]) if store.sources else len(store.bands),
    )


class Diverged(GeoSegError):
    """Training produced a non-finite loss or weights (exit 1); the last good checkpoint stays."""


def _finite(value: float, what: str, step: int, output: Path, saved: int | None) -> None:
    """Stop with one clear line instead of training on NaN (and never save NaN weights)."""
    if math.isfinite(value):
        return
    if output.name.startswith(".") and output.name.endswith(".partial"):  # an --overwrite run
        kept = "the previous run is kept unchanged"
    elif saved is not None:
        kept = f"{output / 'last.pt'} keeps step {saved}"
    else:
        kept = "no checkpoint was written"
    raise Diverged(
        f"training stopped at step {step}: non-finite {what} ({value}); {kept}. Lower "
        "optim.lr, or check the store for NaN/inf pixels (geoseg info STORE)"
    )


def _weights_finite(model) -> float:
    """0.0 when every weight is finite, else NaN (one reduction, at checkpoint time only)."""
    bad = any(not torch.isfinite(p).all() for p in model.parameters())
    return math.nan if bad else 0.0


def _write_summary(path: Path, meter: StallMeter, *, steps: int, crops: int, **info) -> None:
    """``summary.json``: this process's training throughput and input stall (the figures of
    docs/benchmarks.md). A resumed run's summary covers the steps it ran itself."""
    device = info.pop("device")
    peak = None
    if device.type == "cuda":
        peak = int(torch.cuda.max_memory_allocated(device))
    seconds = meter.stepped
    summary = {
        "steps": steps,
        "crops": crops,
        "step_seconds": round(seconds, 3),
        "wait_seconds": round(meter.waited, 3),
        "data_stall": round(meter.stall, 5),
        "steps_per_s": round(steps / seconds, 3) if seconds > 0 else None,
        "crops_per_s": round(crops / seconds, 2) if seconds > 0 else None,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "peak_gpu_memory_bytes": peak,
        **info,
    }
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(summary, indent=1) + "\n")
