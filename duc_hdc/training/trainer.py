"""Training: devices, kvstore, learning-rate schedules, checkpoints, exact resume, validation.

One run lives in one directory (``train.out_dir``)::

    config.yaml              the resolved recipe (with --set overrides applied)
    train.log                console log, also to file
    metrics.jsonl            one JSON line per logging interval and per validation
    checkpoints/ckpt-<iteration>.{params,states,json}   last ``keep_last`` kept
    checkpoints/latest.json  points at the newest complete checkpoint (written last)
    best.params / best.json  the best validation mIoU so far (+ model settings sidecar)
    final.params / final.json
    curves.png               loss and mIoU curves

A checkpoint holds everything to continue *exactly*: parameters (with BatchNorm statistics),
optimizer states (momentum), the iteration (so the schedule position), the epoch and the
batch within it (the data order and augmentation are functions of (seed, epoch, index)), the
resolved config and the metric history.
"""
import hashlib
import json
import logging
import math
import os
import time

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from ..config import ConfigError, model_overrides, save_config
from ..models.network import get_model
from ..models.sidecar import write_sidecar
from . import distributed as dist
from .errors import TrainingError  # noqa: F401  (re-exported: the CLI and tests import it here)
from .schedule import learning_rate  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------- devices
def parse_devices(gpus=None, cpu_devices=1):
    """``--gpus 0,1`` -> [gpu(0), gpu(1)]; otherwise ``cpu_devices`` CPU contexts.

    Several CPU contexts (``mx.cpu(0)``, ``mx.cpu(1)``) exercise the multi-device code path on
    machines without GPUs.
    """
    if gpus is not None and str(gpus).strip():
        try:
            ids = [int(g) for g in str(gpus).split(",") if g.strip()]
        except ValueError:
            ids = []
        if not ids or min(ids) < 0:
            raise ConfigError("--gpus %s: expected GPU ids like 0 or 0,1,2" % (gpus,))
        count = mx.context.num_gpus()
        if count == 0:
            raise ConfigError("--gpus %s: this MXNet sees no GPU (CPU-only build or no device); "
                              "drop --gpus to train on the CPU" % (gpus,))
        if max(ids) >= count:
            raise ConfigError("--gpus %s: this machine has %d GPU(s) (ids 0..%d)"
                              % (gpus, count, count - 1))
        return [mx.gpu(i) for i in ids]
    return [mx.cpu(i) for i in range(max(1, int(cpu_devices)))]


# ------------------------------------------------------------------------------------- the loss
class SegmentationLoss(gluon.HybridBlock):
    """Softmax cross-entropy over pixels, ignoring ``ignore_label``, averaged over valid pixels.

    The release's ``SoftmaxOutput(multi_output, use_ignore, normalization='valid')``: its
    gradient ``(softmax - onehot) * valid / num_valid`` is this loss's gradient.
    """

    def __init__(self, ignore_label=255, **kwargs):
        super().__init__(**kwargs)
        self.ignore_label = ignore_label

    def hybrid_forward(self, F, pred, label):
        valid = label != self.ignore_label
        target = F.where(valid, label, F.zeros_like(label))
        nll = -F.pick(F.log_softmax(pred, axis=1), target, axis=1)
        return F.sum(nll * valid) / F.maximum(F.sum(valid), 1.0)


# ---------------------------------------------------------------------------------- helpers
def params_checksum(net):
    """sha256 over the trainable parameters (sorted by name) as float32 bytes.

    These are what the kvstore keeps equal on every device and worker; BatchNorm's moving
    statistics are per-device state (each sees its own batch) and are left out.
    """
    digest = hashlib.sha256()
    for name, param in sorted(net._collect_params_with_prefix().items()):
        if param.grad_req == "null":
            continue
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(param.data(param.list_ctx()[0]).asnumpy(),
                                           dtype=np.float32).tobytes())
    return digest.hexdigest()


def _atomic_json(path, doc):
    tmp = "%s.tmp%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


class Checkpointer:
    """Atomic checkpoints in ``run_dir/checkpoints``; keeps the last ``keep_last``."""

    def __init__(self, run_dir, keep_last=3):
        self.dir = os.path.join(run_dir, "checkpoints")
        self.keep_last = max(1, int(keep_last))
        os.makedirs(self.dir, exist_ok=True)

    def save(self, net, trainer, state):
        stem = os.path.join(self.dir, "ckpt-%08d" % state["iteration"])
        # each file under a temporary name, renamed once complete; latest.json last, so a kill
        # at any point leaves the previous checkpoint as the one resumed
        net.save_parameters(stem + ".params.tmp")
        os.replace(stem + ".params.tmp", stem + ".params")
        dist.save_trainer_states(trainer, stem + ".states.tmp")
        os.replace(stem + ".states.tmp", stem + ".states")
        _atomic_json(stem + ".json", state)
        _atomic_json(os.path.join(self.dir, "latest.json"), dict(checkpoint=stem))
        self._prune()
        return stem

    def _prune(self):
        stems = sorted(f[:-5] for f in os.listdir(self.dir)
                       if f.startswith("ckpt-") and f.endswith(".json"))
        for stem in stems[:-self.keep_last]:
            for ext in (".params", ".states", ".json"):
                path = os.path.join(self.dir, stem + ext)
                if os.path.exists(path):
                    os.remove(path)

    def latest(self):
        """The newest complete checkpoint's stem, or None."""
        pointer = os.path.join(self.dir, "latest.json")
        if not os.path.exists(pointer):
            return None
        with open(pointer) as f:
            stem = json.load(f)["checkpoint"]
        stem = os.path.join(self.dir, os.path.basename(stem))  # the run dir may have moved
        if not all(os.path.exists(stem + e) for e in (".params", ".states", ".json")):
            raise TrainingError("%s names %s, whose files are incomplete" % (pointer, stem))
        return stem


# -------------------------------------------------------------------------- initialization
def _load_backbone(net, model_cfg, ctx):
    """ImageNet weights for the backbone: a GluonCV store name or a local params file."""
    path = model_cfg["backbone_params"]
    if path is None and model_cfg["backbone_pretrained"]:
        from gluoncv.model_zoo.model_store import get_model_file

        path = get_model_file(model_cfg["backbone_pretrained"],
                              root=os.path.join(os.path.expanduser("~"), ".mxnet", "models"))
    if path is None:
        return
    if not os.path.exists(path):
        raise ConfigError("model.backbone_params: %s not found" % path)
    # GluonCV's ResNetV1b names match our backbone's (see resnet_hdc); its classifier is extra
    net.backbone.load_parameters(path, ctx=ctx, ignore_extra=True)
    log.info("backbone initialized from %s", path)


def build_network(cfg, ctx):
    """The network of ``cfg['model']``, initialized as the recipe says."""
    model_cfg = cfg["model"]
    # the head's channel padding speeds up oneDNN inference kernels only (see DUCHDC)
    net = get_model(model_cfg["name"], ctx=ctx, head_padding=False, **model_overrides(cfg))
    if model_cfg["init_params"]:
        if not os.path.exists(model_cfg["init_params"]):
            raise ConfigError("model.init_params: %s not found" % model_cfg["init_params"])
        net.load_parameters(model_cfg["init_params"], ctx=ctx)
        log.info("network initialized from %s", model_cfg["init_params"])
    else:
        _load_backbone(net, model_cfg, ctx)
    return net


def build_transform(cfg, net):
    from ..data.transforms import TrainTransform

    data = cfg["data"]
    return TrainTransform(crop_size=data["crop_size"], scales=data["scales"],
                          mean=net.normalization["mean"], std=net.normalization["std"],
                          cell_width=net.cell_width, anchor_jitter=data["anchor_jitter"],
                          mirror=data["mirror"], ignore_label=data["ignore_label"])


def plot_curves(metrics_path, out_path):
    """Loss and validation mIoU against iterations, from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in open(metrics_path) if line.strip()]
    train = [r for r in rows if r["kind"] == "train"]
    val = [r for r in rows if r["kind"] == "val"]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot([r["iteration"] for r in train], [r["loss"] for r in train])
    ax[0].set_xlabel("iteration")
    ax[0].set_ylabel("training loss")
    ax[0].set_yscale("log")
    if val:
        ax[1].plot([r["iteration"] for r in val], [r["mean_iou"] for r in val], "o-")
    ax[1].set_xlabel("iteration")
    ax[1].set_ylabel("validation mIoU")
    ax[1].set_ylim(0, 1)
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_path + ".tmp.png", dpi=100)
    plt.close(fig)
    os.replace(out_path + ".tmp.png", out_path)


# ----------------------------------------------------------------------------------- train
def train(cfg, ctx=None, resume=None, progress=True, validator=None):
    """Train as ``cfg`` says; returns a summary dict (run_dir, iterations, best, checksum).

    Parameters
    ----------
    cfg : dict
        A validated recipe (:func:`duc_hdc.config.load_config`).
    ctx : list of mx.Context
        Devices (default one CPU).
    resume : str, optional
        A run directory to continue from its latest checkpoint (its saved config is used;
        ``cfg`` may differ only in ``train.epochs`` / ``train.max_iters``).
    validator : callable, optional
        ``validator(net, ctx, progress) -> dict(pixel_accuracy, mean_iou, iou)``, run every
        ``train.val_every_epochs`` when ``data.val_rec`` is set. Training does not know the
        evaluation layer: :func:`duc_hdc.train` passes
        :func:`duc_hdc.evaluation.evaluate.recipe_validator`. Without one, no validation runs.
    """
    ctx = ctx or [mx.cpu()]
    run_dir = resume or cfg["train"]["out_dir"]
    os.makedirs(run_dir, exist_ok=True)
    handler = dist.rank_log_handler(run_dir)  # train.log, or train.rank<N>.log
    try:
        return _train(cfg, ctx, run_dir, resume, progress, validator)
    finally:
        logging.getLogger("duc_hdc").removeHandler(handler)
        handler.close()


def _train(cfg, ctx, run_dir, resume, progress, validator):
    from ..data import SegRecordDataset
    from ..data.datasets import build_train_loader, epoch_indices

    train_cfg, data_cfg = cfg["train"], cfg["data"]
    checkpointer = Checkpointer(run_dir, train_cfg["keep_last"])
    state = dict(epoch=0, batch=0, iteration=0, history=[], best=None)
    stem = checkpointer.latest() if resume else None
    if resume and stem is None:
        raise TrainingError("--resume %s: no checkpoint found in %s" % (resume, checkpointer.dir))
    if stem:
        with open(stem + ".json") as f:
            saved = json.load(f)
        # the run continues under its own recipe; only its length may be changed
        for key in ("epochs", "max_iters"):
            saved["config"]["train"][key] = train_cfg[key]
        cfg = saved["config"]
        train_cfg, data_cfg = cfg["train"], cfg["data"]
        state = {k: saved[k] for k in ("epoch", "batch", "iteration", "history", "best")}
    if train_cfg["amp"]:
        if any(c.device_type != "gpu" for c in ctx):
            raise ConfigError("train.amp: mixed precision (mxnet AMP, float16) needs GPUs; "
                              "pass --gpus or --set train.amp=false")
        from mxnet.contrib import amp

        amp.init()
    kvstore, rank, num_workers = dist.make_kvstore(train_cfg["kvstore"])
    dist.set_log_rank(rank)
    if num_workers > 1:
        dist.check_same_checkpoint(kvstore, rank, num_workers, stem, run_dir)
    if rank == 0:
        save_config(cfg, os.path.join(run_dir, "config.yaml"))
    mx.random.seed(train_cfg["seed"])
    np.random.seed(train_cfg["seed"])
    net = build_network(cfg, ctx)
    net.hybridize(static_alloc=True, static_shape=True)
    loss_fn = SegmentationLoss(data_cfg["ignore_label"])
    loss_fn.hybridize()
    optimizer_params = dict(learning_rate=float(train_cfg["lr"]), wd=float(train_cfg["wd"]))
    if train_cfg["optimizer"] in ("sgd", "nag"):
        optimizer_params["momentum"] = float(train_cfg["momentum"])
    if train_cfg["clip_gradient"]:
        optimizer_params["clip_gradient"] = float(train_cfg["clip_gradient"])
    base = SegRecordDataset(data_cfg["train_rec"])
    batch_size = train_cfg["batch_size_per_device"] * len(ctx)
    shard = (rank, num_workers)
    iters_per_epoch = len(epoch_indices(len(base), train_cfg["seed"], 0, shard)) // batch_size
    if iters_per_epoch < 1:
        raise ConfigError("data.train_rec %s: %d images for %d workers cannot fill one batch of "
                          "%d" % (data_cfg["train_rec"], len(base), num_workers, batch_size))
    # the schedule spans the recipe's epochs; max_iters only stops early (same lr curve)
    schedule_iters = iters_per_epoch * train_cfg["epochs"]
    # sync modes: each worker updates its own copy from the summed gradients (identical on every
    # worker), optimizer states local and savable; dist_async: the servers hold the optimizer
    trainer = dist.build_trainer(net, train_cfg["kvstore"], kvstore, train_cfg["optimizer"],
                                 optimizer_params, len(ctx), num_workers,
                                 schedule=(train_cfg, iters_per_epoch, schedule_iters),
                                 iteration=state["iteration"])
    if stem:
        net.load_parameters(stem + ".params", ctx=ctx)
        dist.load_trainer_states(trainer, stem + ".states", state["iteration"])
        log.info("resumed from %s: epoch %d, batch %d, iteration %d", stem, state["epoch"],
                 state["batch"], state["iteration"])
    if train_cfg["amp"]:
        amp.init_trainer(trainer)
    if num_workers > 1:
        dist.synchronize_start(net, trainer, kvstore, num_workers, params_checksum)

    total_iters = schedule_iters
    if train_cfg["max_iters"]:
        total_iters = min(total_iters, train_cfg["max_iters"])
    transform = build_transform(cfg, net)
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    log.info("training %s on %s: %d iterations (%d per epoch), batch %d per worker, %d "
             "worker(s), kvstore %s", cfg["name"], ",".join(map(str, ctx)), total_iters,
             iters_per_epoch, batch_size, num_workers, train_cfg["kvstore"])

    bar = _progress_bar(total_iters, state["iteration"], progress and rank == 0)
    last_ckpt = stem
    tic, seen, running = time.time(), 0, None
    while state["iteration"] < total_iters:
        epoch = state["epoch"]
        loader = build_train_loader(base, batch_size, transform, data_cfg["num_workers"],
                                    train_cfg["seed"], epoch, shard, start_batch=state["batch"])
        for data, label in loader:
            if state["iteration"] >= total_iters or state["batch"] >= iters_per_epoch:
                break
            lr = learning_rate(state["iteration"], train_cfg, iters_per_epoch, schedule_iters)
            dist.set_learning_rate(trainer, lr)
            datas = gluon.utils.split_and_load(data, ctx, even_split=False)
            labels = gluon.utils.split_and_load(label, ctx, even_split=False)
            with autograd.record():
                losses = [loss_fn(net(x), y) for x, y in zip(datas, labels)]
                if train_cfg["amp"]:
                    with amp.scale_loss(losses, trainer) as scaled:
                        autograd.backward(scaled)
                else:
                    autograd.backward(losses)
            # each device's loss is a mean over its valid pixels; average devices and workers
            trainer.step(dist.step_size(train_cfg["kvstore"], len(ctx), num_workers))
            loss = float(sum(l.asscalar() for l in losses) / len(losses))
            if not math.isfinite(loss):
                raise TrainingError(
                    "non-finite loss (%r) at epoch %d, iteration %d (lr %.3g); stopping. The "
                    "last good checkpoint is %s; lower train.lr or check the data"
                    % (loss, epoch, state["iteration"], lr, last_ckpt or "(none yet)"))
            running = loss if running is None else 0.9 * running + 0.1 * loss
            state["iteration"] += 1
            state["batch"] += 1
            seen += data.shape[0]
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss="%.4f" % running, lr="%.2e" % lr,
                                sps="%.1f" % (seen / max(1e-9, time.time() - tic)))
            if state["iteration"] % train_cfg["log_every_iters"] == 0 and rank == 0:
                _append_jsonl(metrics_path, dict(kind="train", iteration=state["iteration"],
                                                 epoch=epoch, loss=running, lr=lr,
                                                 samples_per_sec=seen / (time.time() - tic)))
            if train_cfg["checkpoint_every_iters"] and \
                    state["iteration"] % train_cfg["checkpoint_every_iters"] == 0:
                last_ckpt = _checkpoint(checkpointer, net, trainer, cfg, state, rank)
        if state["batch"] >= iters_per_epoch:
            state["epoch"] += 1
            state["batch"] = 0
            if validator is not None and data_cfg["val_rec"] and rank == 0 and (
                    state["epoch"] % train_cfg["val_every_epochs"] == 0
                    or state["iteration"] >= total_iters):
                _validate_and_keep_best(net, cfg, ctx, state, run_dir, metrics_path, progress,
                                        validator)
            last_ckpt = _checkpoint(checkpointer, net, trainer, cfg, state, rank)
    if bar is not None:
        bar.close()
    if state["batch"]:  # stopped mid-epoch (max_iters): keep that position too
        last_ckpt = _checkpoint(checkpointer, net, trainer, cfg, state, rank)
    final = os.path.join(run_dir, "final.params")
    checksum = params_checksum(net)
    if rank == 0:
        net.save_parameters(final + ".tmp")
        os.replace(final + ".tmp", final)
        write_sidecar(final, net.config, dataset=data_cfg["dataset"], run=cfg["name"])
        if os.path.exists(metrics_path):
            plot_curves(metrics_path, os.path.join(run_dir, "curves.png"))
    log.info("params checksum: %s", checksum)
    return dict(run_dir=run_dir, iterations=state["iteration"], epochs=state["epoch"],
                best=state["best"], history=state["history"], checksum=checksum,
                final=final, rank=rank, num_workers=num_workers)


def _progress_bar(total, initial, enabled):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="it", dynamic_ncols=True)


def _append_jsonl(path, row):
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def _checkpoint(checkpointer, net, trainer, cfg, state, rank):
    if rank != 0:  # one writer; every worker holds the same parameters under dist_sync
        return None
    doc = dict(state, config=cfg, model=net.config, time=time.time())
    stem = checkpointer.save(net, trainer, doc)
    log.debug("checkpoint %s", stem)
    return stem


def _validate_and_keep_best(net, cfg, ctx, state, run_dir, metrics_path, progress,
                                        validator):
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
        net.save_parameters(best + ".tmp")
        os.replace(best + ".tmp", best)
        write_sidecar(best, net.config, dataset=cfg["data"]["dataset"], run=cfg["name"],
                      metric=state["best"])
    # the hybridized training graph was replaced by inference shapes; retrace for training
    net.hybridize(static_alloc=True, static_shape=True)

