"""Training: devices, kvstore, learning-rate schedules, checkpoints, exact resume, validation.

One run lives in one directory (``train.out_dir``)::

    config.yaml              the resolved recipe (with --set overrides applied)
    train.log                console log, also to file
    metrics.jsonl            one JSON line per logging interval (and the last iteration) and
                             per validation
    checkpoints/ckpt-<iteration>.{params,states,json}   last ``keep_last`` kept
    checkpoints/latest.json  points at the newest complete checkpoint (written last)
    best.params / best.json  the best validation mIoU so far (+ model settings sidecar)
    final.params / final.json
    curves.png               loss and mIoU curves

A checkpoint holds everything to continue *exactly*: parameters (with BatchNorm statistics),
optimizer states (momentum), the iteration (so the schedule position), the epoch and the
batch within it (the data order and augmentation are functions of (seed, epoch, index)), the
resolved config, the metric history and the logged loss's running average; its JSON
records the size and sha256 of its ``.params`` and ``.states``, verified on resume (a damaged newest checkpoint is reported and the
newest intact one used). Nothing non-finite is written or trained from. Checkpoint files and their verification are in
:mod:`.checkpoints`, the loss in :mod:`.loss`, schedules in :mod:`.schedule`, what a run is
built from in :mod:`.build`, its log / metrics / curves in :mod:`.runlog`.
"""
import contextlib
import logging
import math
import os
import time

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from ..config import ConfigError, absolute_paths, resume_config, save_config
from ..fileio import atomic_path
from ..models.sidecar import write_sidecar
from ..stops import deferred_stops, launched_worker
from .build import amp_target_dtype, build_network, build_transform, parse_devices
from . import distributed as dist
from .checkpoints import (Checkpointer, gradient_sum_sq, loss_scaler_state,
                          non_finite_arrays, params_checksum, restore_loss_scaler,
                          sync_replica_statistics)
from .errors import TrainingError
from .loss import SegmentationLoss
from .runlog import append_jsonl as _append_jsonl
from .runlog import plot_curves, progress_bar as _progress_bar, truncate_metrics
from .rundir import (check_checkpoint_of_run, check_new_run_dir, clear_run, remove_stale_temps,
                     run_contents, run_lock)
from .schedule import learning_rate

__all__ = ["train", "resumed_config", "parse_devices", "build_network", "build_transform", "plot_curves",
           "Checkpointer", "TrainingError", "SegmentationLoss", "learning_rate",
           "params_checksum"]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------- train

def attach_loss_scaler(trainer, amp_dtype):
    """Give ``trainer`` MXNet AMP's dynamic loss scaler where the dtype needs one: float16
    only. Returns whether it did.

    bfloat16 has float32's exponent range, so its gradients need no scaling, and the scaler
    would cost without helping: before every update it checks all gradients with
    ``multi_all_finite``, which took 539 ms per step on CPU for ResNet-101-DUC-HDC's 65 M
    parameters (2 cores, AMD EPYC Zen 4; about a tenth of the bf16 step). Non-finite
    gradients are caught as in fp32, by the step's gradient norm (``_check_step``)."""
    if amp_dtype != "float16":
        return False
    from mxnet.contrib import amp

    amp.init_trainer(trainer)
    return True


def train(cfg, ctx=None, resume=None, progress=True, validator=None, overrides=None,
          validator_for=None, overwrite=False, backbone_weights=None):
    """Train as ``cfg`` says; returns a summary dict (run_dir, iterations, best, checksum).

    Parameters
    ----------
    cfg : dict or None
        A validated recipe (:func:`duc_hdc.config.load_config`). With ``resume`` it may be
        None (the saved config, plus ``overrides``).
    ctx : list of mx.Context
        Devices (default one CPU).
    resume : str, optional
        A run directory to continue exactly from its newest intact checkpoint, under its saved
        config (:func:`duc_hdc.config.resume_config`): ``cfg`` and ``overrides`` may change only
        :data:`duc_hdc.config.RESUME_KEYS`; the devices, the distributed worker count and the
        batch size must be those of the run.
    validator : callable, optional
        ``validator(net, ctx, progress) -> dict(pixel_accuracy, mean_iou, iou)``, run every
        ``train.val_every_epochs`` when ``data.val_rec`` is set. Training does not know the
        evaluation layer: :func:`duc_hdc.train` passes
        :func:`duc_hdc.evaluation.evaluate.recipe_validator`. Without one, no validation runs.
    validator_for : callable, optional
        ``validator_for(cfg) -> validator``, called with the config the run continues under
        (the saved one when resuming), when no ``validator`` is given.
    overrides : list of str, optional
        With ``resume``: the user's ``a.b=v`` settings, checked as above.
    overwrite : bool
        A new run into a ``train.out_dir`` that holds a run deletes that run first (its files
        only, once everything else has been checked); without it such a folder is refused.
    backbone_weights : callable, optional
        ``backbone_weights(name) -> path or None``: the file of ``model.backbone_pretrained``
        (training does not know the zoo: :func:`duc_hdc.train` passes the zoo's, which keeps
        GluonCV backbones where ``duc-hdc download`` puts them); None, or a name it does not
        know, fetches through GluonCV's model store.

    Everything that can be checked (the run folder, the recipe against the devices, the data,
    the initial weights, the kvstore's environment, a resumed checkpoint) is checked before
    anything is written: a refused run leaves the file system as it was.
    """
    ctx = ctx or [mx.cpu()]
    if cfg is None and not resume:
        raise ConfigError("train: a recipe is needed unless resuming a run")
    if resume and overwrite:
        raise ConfigError("--resume continues the run in %s, --overwrite deletes it and starts "
                          "a new one: give one of them" % resume)
    if not resume:
        cfg = absolute_paths(cfg)  # saved so: the run resumes from any folder
    run_dir = resume or cfg["train"]["out_dir"]
    # one training process per run folder (a distributed job's workers share theirs)
    with (contextlib.nullcontext() if launched_worker() else run_lock(run_dir)):
        if not resume:
            check_new_run_dir(run_dir, overwrite)
        # train.log, or train.rank<N>.log, written once the run starts (a resumed run's too: a
        # refused resume leaves its log as it was)
        handler = dist.rank_log_handler(run_dir, deferred=True)
        try:
            with deferred_stops() as stop_check:
                return _train(cfg, ctx, run_dir, resume, progress, validator, overrides,
                              validator_for, overwrite, backbone_weights, stop_check)
        finally:
            logging.getLogger("duc_hdc").removeHandler(handler)
            handler.close()


def _resume_point(cfg, ctx, run_dir, overrides):
    """The newest intact checkpoint of ``run_dir``, the config the run continues under, the
    loop state and the saved document, and the damaged checkpoints newer than it (set aside
    only once the resume is accepted: reads only)."""
    if os.path.isfile(run_dir):
        raise TrainingError("--resume %s is a file; --resume takes a run's folder (its "
                            "train.out_dir) and continues from its newest intact checkpoint; "
                            "to start a new run from these weights: --set model.init_params=%s"
                            % (run_dir, run_dir))
    if not os.path.isdir(run_dir):
        raise TrainingError("--resume %s: no checkpoint found: no such folder (give the "
                            "train.out_dir of a run)" % run_dir)
    stem, saved, damaged = Checkpointer(run_dir).find_intact()
    if stem is None:
        raise TrainingError("--resume %s: no checkpoint found in %s"
                            % (run_dir, os.path.join(run_dir, "checkpoints")))
    check_checkpoint_of_run(run_dir, stem, saved["config"])
    merged, changed = resume_config(saved["config"], cfg, overrides,
                                    init_params_hint=stem + ".params")
    for key, old, new in changed:
        log.info("resume: %s changed from %r to %r", key, old, new)
    devices = saved.get("num_devices")
    if devices is not None and devices != len(ctx):
        raise ConfigError("--resume: the run trained on %d device(s), now %d: the batch (and so "
                          "its position in the data) would differ. Resume on %d device(s) "
                          "(--gpus with %d ids, or --cpu-devices %d), or start a new run with "
                          "--set model.init_params=%s.params"
                          % (devices, len(ctx), devices, devices, devices, stem))
    state = {k: saved[k] for k in ("epoch", "batch", "iteration", "history", "best")}
    # the logged loss's running average (absent from checkpoints of older versions)
    state["running_loss"] = saved.get("running_loss")
    return stem, merged, state, saved, damaged


def resumed_config(run_dir, cfg=None, overrides=None, ctx=None):
    """The config ``train(..., resume=run_dir)`` will continue under (checked as there), e.g.
    to build a validator for it: ``train(resumed_config(d, overrides=sets), resume=d)``."""
    return _resume_point(cfg, ctx or [mx.cpu()], run_dir, overrides)[1]


def _build_trainer(net, train_cfg, kvstore, num_workers, num_devices, schedule, iteration):
    optimizer_params = dict(learning_rate=float(train_cfg["lr"]), wd=float(train_cfg["wd"]))
    if train_cfg["optimizer"] in ("sgd", "nag"):
        optimizer_params["momentum"] = float(train_cfg["momentum"])
    if train_cfg["clip_gradient"]:
        optimizer_params["clip_gradient"] = float(train_cfg["clip_gradient"])
    # sync modes: each worker updates its own copy from the summed gradients (identical on every
    # worker), optimizer states local and savable; dist_async: the servers hold the optimizer
    return dist.build_trainer(net, train_cfg["kvstore"], kvstore, train_cfg["optimizer"],
                              optimizer_params, num_devices, num_workers, schedule=schedule,
                              iteration=iteration)


def _train(cfg, ctx, run_dir, resume, progress, validator, overrides, validator_for=None,
           overwrite=False, backbone_weights=None, stop_check=lambda: None):
    from ..data.loader import build_train_loader, epoch_indices

    # --- checks: nothing below writes a file until _start_run
    state = dict(epoch=0, batch=0, iteration=0, history=[], best=None, running_loss=None)
    stem = saved = None
    damaged = []
    if resume:
        stem, cfg, state, saved, damaged = _resume_point(cfg, ctx, run_dir, overrides)
    if validator is None and validator_for is not None:
        validator = validator_for(cfg)
    train_cfg, data_cfg = cfg["train"], cfg["data"]
    amp_dtype = amp_target_dtype(train_cfg["amp"], ctx)
    dist.check_launch_env(train_cfg["kvstore"])
    base = _open_rec("data.train_rec", data_cfg["train_rec"], resume)
    if validator is not None and data_cfg["val_rec"]:  # opened now, not at the first epoch's end
        _open_rec("data.val_rec", data_cfg["val_rec"], resume)
    if amp_dtype:
        from mxnet.contrib import amp

        amp.init(target_dtype=amp_dtype)  # process-wide, before the network is built
        log.info("mixed precision: mxnet AMP, %s", amp_dtype)
    mx.random.seed(train_cfg["seed"])
    np.random.seed(train_cfg["seed"])
    net = build_network(cfg, ctx, backbone_weights)
    net.hybridize(static_alloc=True, static_shape=True)
    loss_fn = SegmentationLoss(data_cfg["ignore_label"])
    loss_fn.hybridize()
    # every worker of a job has checked its run folder before the kvstore exists (creating it
    # waits for all of them), so no worker takes another's new files for an old run
    kvstore, rank, num_workers = dist.make_kvstore(train_cfg["kvstore"])
    dist.set_log_rank(rank)
    if num_workers > 1:  # every rank resumes the same checkpoint (a shared run directory)
        dist.check_same_checkpoint(kvstore, rank, num_workers, stem, run_dir)
    if saved is not None and saved.get("num_workers", num_workers) != num_workers:
        raise ConfigError("--resume: the run had %d distributed worker(s), now %d: each "
                          "worker's shard of the data would differ. Resume with %d workers, "
                          "or start a new run with --set model.init_params=%s.params"
                          % (saved["num_workers"], num_workers, saved["num_workers"], stem))
    batch_size = train_cfg["batch_size_per_device"] * len(ctx)
    shard = (rank, num_workers)
    iters_per_epoch = len(epoch_indices(len(base), train_cfg["seed"], 0, shard)) // batch_size
    if iters_per_epoch < 1:
        raise ConfigError("data.train_rec %s: %d images for %d workers cannot fill one batch of "
                          "%d" % (data_cfg["train_rec"], len(base), num_workers, batch_size))
    # the schedule spans the recipe's epochs; max_iters only stops early (same lr curve)
    schedule_iters = iters_per_epoch * train_cfg["epochs"]
    if saved is not None:
        _log_schedule_change(saved["config"]["train"], train_cfg, state["iteration"],
                             iters_per_epoch)
    trainer = _build_trainer(net, train_cfg, kvstore, num_workers, len(ctx),
                             (train_cfg, iters_per_epoch, schedule_iters), state["iteration"])
    if stem:
        net.load_parameters(stem + ".params", ctx=ctx)
        bad = non_finite_arrays(net)
        if bad:  # verified files holding NaN: written so, never trained from
            raise TrainingError("%s.params holds non-finite values in %s (%d arrays); not "
                                "training from damaged weights" % (stem, bad[0], len(bad)))
        dist.load_trainer_states(trainer, stem + ".states", state["iteration"])
        log.info("resumed from %s: epoch %d, batch %d, iteration %d", stem, state["epoch"],
                 state["batch"], state["iteration"])
    total_iters = schedule_iters
    if train_cfg["max_iters"]:
        total_iters = min(total_iters, train_cfg["max_iters"])
    if resume and state["iteration"] > total_iters:  # it would rewrite final.params and the
        # saved config with a limit the run is already past (at the limit: nothing to train)
        raise TrainingError(
            "--resume %s: the run is at iteration %d, past what train.epochs=%d (%d iterations) "
            "with train.max_iters=%s allow (%d): nothing was changed; to continue it, raise "
            "train.epochs or train.max_iters (--set)"
            % (run_dir, state["iteration"], train_cfg["epochs"], schedule_iters,
               train_cfg["max_iters"], total_iters))
    # --- the run starts: its folder, log and config
    _start_run(run_dir, cfg, resume, overwrite, rank, kvstore, num_workers)
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    # built from the run's own config (a resumed run keeps its keep_last)
    checkpointer = Checkpointer(run_dir, train_cfg["keep_last"])
    if resume and rank == 0:
        checkpointer.set_aside(damaged)
        truncate_metrics(metrics_path, state)
    if attach_loss_scaler(trainer, amp_dtype) and saved is not None:
        restore_loss_scaler(trainer, saved.get("loss_scaler"))
    if num_workers > 1:
        dist.synchronize_start(net, trainer, kvstore, num_workers,
                               lambda n: params_checksum(n, trainable_only=True))

    transform = build_transform(cfg, net)
    log.info("training %s on %s: %d iterations (%d per epoch), batch %d per worker, %d "
             "worker(s), kvstore %s", cfg["name"], ",".join(map(str, ctx)), total_iters,
             iters_per_epoch, batch_size, num_workers, train_cfg["kvstore"])
    run = dict(checkpointer=checkpointer, net=net, trainer=trainer, cfg=cfg, rank=rank,
               extra=dict(num_devices=len(ctx), num_workers=num_workers))

    bar = _progress_bar(total_iters, state["iteration"], progress and rank == 0)
    last_ckpt = stem
    tic, seen = time.time(), 0
    while state["iteration"] < total_iters:
        epoch = state["epoch"]
        loader = build_train_loader(base, batch_size, transform, data_cfg["num_workers"],
                                    train_cfg["seed"], epoch, shard, start_batch=state["batch"])
        for data, label in _batches(loader, state, run_dir, lambda: last_ckpt):
            stop_check()  # a Ctrl-C or SIGTERM since the last step: stop here, between steps
            if state["iteration"] >= total_iters or state["batch"] >= iters_per_epoch:
                break
            lr = learning_rate(state["iteration"], train_cfg, iters_per_epoch, schedule_iters)
            dist.set_learning_rate(trainer, lr)
            datas = gluon.utils.split_and_load(data, ctx, even_split=False)
            labels = gluon.utils.split_and_load(label, ctx, even_split=False)
            with autograd.record():
                losses = [loss_fn(net(x), y) for x, y in zip(datas, labels)]
                if amp_dtype == "float16":  # see attach_loss_scaler
                    with amp.scale_loss(losses, trainer) as scaled:
                        autograd.backward(scaled)
                else:
                    autograd.backward(losses)
            # the step's one synchronisation: the loss and, before any update, the gradients
            # (under AMP overflowing gradients are the loss scaler's business: it skips them)
            loss = _check_step(losses, None if amp_dtype == "float16" else
                               gradient_sum_sq(trainer._params, ctx), epoch, state, lr,
                               last_ckpt)
            # each device's loss is a mean over its valid pixels; average devices and workers
            trainer.step(dist.step_size(train_cfg["kvstore"], len(ctx), num_workers))
            running = state["running_loss"]
            running = loss if running is None else 0.9 * running + 0.1 * loss
            state["running_loss"] = running
            state["iteration"] += 1
            state["batch"] += 1
            seen += data.shape[0]
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss="%.4f" % running, lr="%.2e" % lr,
                                sps="%.1f" % (seen / max(1e-9, time.time() - tic)))
            # every log_every_iters iterations, and the last one (a short run has its row)
            if rank == 0 and (state["iteration"] % train_cfg["log_every_iters"] == 0
                              or state["iteration"] == total_iters):
                _append_jsonl(metrics_path, dict(kind="train", iteration=state["iteration"],
                                                 epoch=epoch, loss=running, lr=lr,
                                                 samples_per_sec=seen / (time.time() - tic)))
            if state["iteration"] % train_cfg["checkpoint_every_iters"] == 0:
                last_ckpt = _checkpoint(run, state, last_ckpt) or last_ckpt
        if state["batch"] >= iters_per_epoch:
            state["epoch"] += 1
            state["batch"] = 0
            if validator is not None and data_cfg["val_rec"] and rank == 0 and (
                    state["epoch"] % train_cfg["val_every_epochs"] == 0
                    or state["iteration"] >= total_iters):
                _validate_and_keep_best(net, cfg, ctx, state, run_dir, metrics_path, progress,
                                        validator)
            last_ckpt = _checkpoint(run, state, last_ckpt) or last_ckpt
        stop_check()
    if bar is not None:
        bar.close()
    if state["batch"]:  # stopped mid-epoch (max_iters): keep that position too
        last_ckpt = _checkpoint(run, state, last_ckpt) or last_ckpt
    final = os.path.join(run_dir, "final.params")
    _synced_and_finite(net, "final.params", last_ckpt)
    checksum = params_checksum(net)
    trainable = params_checksum(net, trainable_only=True)
    if rank == 0:
        with atomic_path(final) as tmp:
            net.save_parameters(tmp)
        write_sidecar(final, net.config, dataset=data_cfg["dataset"], run=cfg["name"])
        if os.path.exists(metrics_path):
            plot_curves(metrics_path, os.path.join(run_dir, "curves.png"))
    # the trainable parameters' checksum is equal on every worker of a distributed job; the
    # checksum of every array adds the BatchNorm statistics (per worker under dist_*)
    log.info("params checksum: %s", trainable)
    log.info("checksum of every array (parameters and BatchNorm statistics): %s", checksum)
    return dict(run_dir=run_dir, iterations=state["iteration"], epochs=state["epoch"],
                best=state["best"], history=state["history"], checksum=checksum,
                params_checksum=trainable, final=final, rank=rank, num_workers=num_workers,
                last_checkpoint=last_ckpt)


def _log_schedule_change(old, new, iteration, iters_per_epoch):
    """A resume that changes ``train.epochs`` stretches or shrinks a ``poly`` or ``step``
    schedule, which spans the epochs: say what the learning rate does at the resume point."""
    if old["epochs"] == new["epochs"]:
        return
    before = learning_rate(iteration, old, iters_per_epoch, iters_per_epoch * old["epochs"])
    after = learning_rate(iteration, new, iters_per_epoch, iters_per_epoch * new["epochs"])
    if not math.isclose(before, after, rel_tol=1e-3):
        log.warning("resume: train.epochs %d -> %d changes the %s schedule: the learning rate at "
                    "iteration %d goes from %.3g to %.3g", old["epochs"], new["epochs"],
                    new["lr_schedule"], iteration, before, after)


def _open_rec(key, path, resume):
    """The records ``path``; a missing file is named with its recipe ``key`` (and, for a
    resumed run that saved it relative, the folder it is relative to)."""
    from ..data import SegRecordDataset
    from ..data.recordio import RecordFileError

    try:
        return SegRecordDataset(path)
    except RecordFileError as e:
        where = (" (the run saved it relative to the folder it was started in: resume from "
                 "there)" if resume and not os.path.isabs(path) else "")
        raise RecordFileError("%s: %s%s" % (key, e, where)) from None


def _start_run(run_dir, cfg, resume, overwrite, rank, kvstore, num_workers):
    """Every check passed: make the run folder (a new run with ``overwrite``: rank 0 deletes
    the old run first, and every worker waits for that), open the log, write config.yaml."""
    if not resume and overwrite and rank == 0 and run_contents(run_dir):
        log.warning("--overwrite: deleting the run in %s (%s)", run_dir,
                    ", ".join(run_contents(run_dir)))
        clear_run(run_dir)
    if not resume and overwrite and num_workers > 1:
        kvstore._barrier()  # no worker opens its log in the folder while it is cleared
    os.makedirs(run_dir, exist_ok=True)
    dist.start_log()
    if rank == 0:
        removed = remove_stale_temps(run_dir)
        if removed:
            log.info("removed %d temporary file(s) of writes an earlier stop cut short: %s",
                     len(removed), ", ".join(os.path.basename(p) for p in removed))
        save_config(cfg, os.path.join(run_dir, "config.yaml"))


def _batches(loader, state, run_dir, last_ckpt):
    """The batches of ``loader``; a data loader worker process that dies (or no batch within
    the loader's timeout) stops the run in one line: what happened, where, and the checkpoint
    to resume from (``last_ckpt()``, the newest written so far)."""
    from ..data.loader import LoaderWorkerDied

    try:
        yield from loader
    except (LoaderWorkerDied, TimeoutError) as e:
        stem = last_ckpt()
        if stem:
            then = ("the last checkpoint is %s: `duc-hdc train --resume %s` continues from it"
                    % (os.path.basename(stem), run_dir))
        else:
            then = "no checkpoint was written yet: start the run again"
        hint = (" (if memory ran out: fewer data.num_workers, which --set may change on "
                "resume)" if isinstance(e, LoaderWorkerDied) else "")
        raise TrainingError("%s at epoch %d, iteration %d; training stopped, %s%s"
                            % (e, state["epoch"], state["iteration"], then, hint)) from e


def _check_step(losses, grad_sq, epoch, state, lr, last_ckpt):
    """The mean loss over devices; stops the run on a non-finite loss or gradient."""
    values = [mx.nd.add_n(*[l.as_in_context(mx.cpu()) for l in losses])]
    if grad_sq is not None:
        values.append(grad_sq.reshape((1,)))
    values = mx.nd.concat(*[v.reshape((1,)) for v in values], dim=0).asnumpy()
    loss = float(values[0]) / len(losses)
    bad = []
    if not math.isfinite(loss):
        bad.append("loss (%r)" % loss)
    if len(values) > 1 and not math.isfinite(float(values[1])):
        bad.append("gradients (sum of squares %r)" % float(values[1]))
    if bad:
        raise TrainingError(
            "non-finite %s at epoch %d, iteration %d (lr %.3g); stopping before the update. "
            "The last good checkpoint is %s; lower train.lr or check the data"
            % (" and ".join(bad), epoch, state["iteration"], lr, last_ckpt or "(none yet)"))
    return loss


def _synced_and_finite(net, what, last_ckpt):
    """Before writing ``what``: every device holds the saved BatchNorm statistics and no array
    is non-finite (else the run stops, naming the last good checkpoint)."""
    sync_replica_statistics(net)
    bad = non_finite_arrays(net)
    if bad:
        raise TrainingError("non-finite values in %s (%d arrays) before writing %s; stopping. "
                            "The last good checkpoint is %s" % (bad[0], len(bad), what,
                                                                last_ckpt or "(none yet)"))


def _checkpoint(run, state, last_ckpt):
    """Write a checkpoint (rank 0; every worker holds the same parameters under dist_sync)."""
    net, trainer = run["net"], run["trainer"]
    _synced_and_finite(net, "checkpoint %d" % state["iteration"], last_ckpt)
    if run["rank"] != 0:
        return None
    doc = dict(state, config=run["cfg"], model=net.config, time=time.time(),
               loss_scaler=loss_scaler_state(trainer), **run["extra"])
    stem = run["checkpointer"].save(net, trainer, doc)
    log.debug("checkpoint %s", stem)
    return stem


def _validate_and_keep_best(net, cfg, ctx, state, run_dir, metrics_path, progress,
                                        validator):
    # validate (and keep as best.params) the statistics a .params file holds: their mean
    sync_replica_statistics(net)
    result = validator(net, ctx[0], progress)
    row = dict(kind="val", iteration=state["iteration"], epoch=state["epoch"], **result)
    state["history"].append(row)
    _append_jsonl(metrics_path, row)
    log.info("epoch %d: val mIoU %.4f, pixel accuracy %.4f", state["epoch"], result["mean_iou"],
             result["pixel_accuracy"])
    if state["best"] is None or result["mean_iou"] > state["best"]["mean_iou"]:
        state["best"] = dict(mean_iou=result["mean_iou"], epoch=state["epoch"],
                             iteration=state["iteration"])
        best = os.path.join(run_dir, "best.params")
        with atomic_path(best) as tmp:
            net.save_parameters(tmp)
        write_sidecar(best, net.config, dataset=cfg["data"]["dataset"], run=cfg["name"],
                      metric=state["best"])
    # the hybridized training graph was replaced by inference shapes; retrace for training
    net.hybridize(static_alloc=True, static_shape=True)

