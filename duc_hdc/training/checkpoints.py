"""Verified checkpoints: atomic files, sha256 + size recorded, verified on resume, fallback.

A checkpoint is ``checkpoints/ckpt-<iteration>.{params,states,json}``. The ``.json`` holds the
loop position, the resolved config, the metric history, and ``files``: the name, size and
sha256 of its ``.params`` and ``.states``. ``latest.json`` (written last) names the newest.
On resume every candidate is verified against its record, newest first; a damaged or truncated
one is reported by file name, renamed aside (``*.damaged``) and the next older intact one is
used; when none is intact the run stops naming every file.
"""
import hashlib
import json
import logging
import os

import mxnet as mx
import numpy as np

from ..fileio import atomic_json, atomic_path, sha256sum
from .distributed import save_trainer_states
from .errors import TrainingError

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- arrays
def params_checksum(net, trainable_only=False):
    """sha256 over every array of ``net`` (sorted by name) as float32 bytes, on its first device.

    Every array: trainable parameters and BatchNorm running statistics (``trainable_only``:
    the trainable ones alone, which the kvstore keeps equal on every worker of a distributed
    job, where each worker's statistics follow its own batches).
    """
    digest = hashlib.sha256()
    for name, param in sorted(net._collect_params_with_prefix().items()):
        if trainable_only and param.grad_req == "null":
            continue
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(param.data(param.list_ctx()[0]).asnumpy(),
                                           dtype=np.float32).tobytes())
    return digest.hexdigest()


def sync_replica_statistics(net):
    """Give every device the mean of the devices' BatchNorm statistics (what a ``.params``
    file holds: ``save_parameters`` averages them), so the state in memory is the saved one.

    Running statistics never enter a training step (BatchNorm normalizes by the batch's), and
    their update is linear, so this changes no parameter and not the saved mean; it only makes
    a resumed run hold, on every device, exactly what the straight run holds at that point.
    """
    for param in net.collect_params().values():
        if param.grad_req != "null":
            continue
        arrays = param.list_data()
        if len(arrays) < 2:
            continue
        mean = mx.nd.add_n(*[a.as_in_context(arrays[0].context) for a in arrays]) / len(arrays)
        for a in arrays:
            mean.copyto(a)


def non_finite_arrays(net):
    """Names of ``net``'s arrays (parameters and statistics) holding NaN or inf, on any device.

    One reduction per device and one synchronisation in all.
    """
    params = sorted(net._collect_params_with_prefix().items())
    if not params:
        return []
    sums = []
    for ctx in params[0][1].list_ctx():
        arrays = [p.data(ctx) for _, p in params]
        sums.append(mx.nd.multi_sum_sq(*arrays, num_arrays=len(arrays)).as_in_context(mx.cpu()))
    total = np.stack([s.asnumpy() for s in sums]).sum(0)
    return [name for (name, _), v in zip(params, total) if not np.isfinite(v)]


def gradient_sum_sq(trainer_params, ctx_list):
    """Sum of squared gradients over every device: a lazy scalar NDArray on cpu (no sync)."""
    parts = []
    for ctx in ctx_list:
        grads = [p.grad(ctx) for p in trainer_params if p.grad_req != "null"]
        if grads:
            parts.append(mx.nd.sum(mx.nd.multi_sum_sq(*grads, num_arrays=len(grads)))
                         .as_in_context(mx.cpu()))
    return mx.nd.add_n(*parts) if len(parts) > 1 else parts[0]


# ---------------------------------------------------------------------------- AMP scaler
def loss_scaler_state(trainer):
    """The AMP dynamic loss scaler's state (None without AMP or without a scaler)."""
    scaler = getattr(trainer, "_amp_loss_scaler", None)
    if scaler is None:
        return None
    return {k: v for k, v in vars(scaler).items() if isinstance(v, (int, float, bool))}


def restore_loss_scaler(trainer, state):
    scaler = getattr(trainer, "_amp_loss_scaler", None)
    if state is None or scaler is None:
        return
    for key, value in state.items():
        setattr(scaler, key, value)
    log.info("AMP loss scaler restored: %s", state)


# ---------------------------------------------------------------------------- checkpoints
class Checkpointer:
    """Atomic, verified checkpoints in ``run_dir/checkpoints``; keeps the last ``keep_last``."""

    EXTS = (".params", ".states")

    def __init__(self, run_dir, keep_last=3):
        self.dir = os.path.join(run_dir, "checkpoints")
        self.keep_last = max(1, int(keep_last))  # the folder is made by the first save()

    def save(self, net, trainer, state):
        """Write params, optimizer states, then the JSON with their sizes and sha256, then
        ``latest.json``: a kill at any point leaves the previous checkpoint as the newest."""
        os.makedirs(self.dir, exist_ok=True)
        stem = os.path.join(self.dir, "ckpt-%08d" % state["iteration"])
        files = {}
        with atomic_path(stem + ".params") as tmp:
            net.save_parameters(tmp)
        with atomic_path(stem + ".states") as tmp:
            save_trainer_states(trainer, tmp)
        for ext in self.EXTS:
            path = stem + ext
            files[ext[1:]] = dict(name=os.path.basename(path), size=os.path.getsize(path),
                                  sha256=sha256sum(path))
        atomic_json(stem + ".json", dict(state, files=files))
        atomic_json(os.path.join(self.dir, "latest.json"), dict(checkpoint=stem))
        self._prune()
        return stem

    def _stems(self):
        if not os.path.isdir(self.dir):
            return []
        return sorted(f[:-5] for f in os.listdir(self.dir)
                      if f.startswith("ckpt-") and f.endswith(".json"))

    def _prune(self):
        for stem in self._stems()[:-self.keep_last]:
            for ext in self.EXTS + (".json",):
                path = os.path.join(self.dir, stem + ext)
                if os.path.exists(path):
                    os.remove(path)

    def verify(self, stem):
        """Problems of checkpoint ``stem`` (a list of one-line texts; empty = intact)."""
        meta = stem + ".json"
        try:
            with open(meta) as f:
                doc = json.load(f)
        except FileNotFoundError:
            return ["%s is missing" % meta]
        except (OSError, ValueError) as e:
            return ["%s is not readable JSON (%s)" % (meta, e)]
        files = doc.get("files") if isinstance(doc, dict) else None
        if not files:
            return ["%s records no sizes and checksums of its files (written by an older "
                    "duc-hdc): it cannot be verified" % meta]
        problems = []
        for ext in self.EXTS:
            path = stem + ext
            rec = files.get(ext[1:], {})
            if not os.path.exists(path):
                problems.append("%s is missing" % path)
            elif os.path.getsize(path) != rec.get("size"):
                problems.append("%s is %d bytes, %s bytes when written (truncated or damaged)"
                                % (path, os.path.getsize(path), rec.get("size")))
            elif sha256sum(path) != rec.get("sha256"):
                problems.append("%s has sha256 %s..., %s... when written (damaged)"
                                % (path, sha256sum(path)[:12], str(rec.get("sha256"))[:12]))
        return problems

    def latest(self):
        """The newest complete checkpoint's stem named by ``latest.json`` (unverified), or None."""
        pointer = os.path.join(self.dir, "latest.json")
        if not os.path.exists(pointer):
            return None
        with open(pointer) as f:
            stem = json.load(f)["checkpoint"]
        return os.path.join(self.dir, os.path.basename(stem))  # the run dir may have moved

    def find_intact(self):
        """(stem, saved document, damaged stems) of the newest checkpoint that verifies;
        (None, None, []) when there is none at all. Reads only: the damaged checkpoints newer
        than it are logged and returned, for :meth:`set_aside` once the resume is accepted.

        Raises
        ------
        TrainingError
            Checkpoints exist but none is intact.
        """
        try:
            named = self.latest()
        except (OSError, ValueError, KeyError) as e:  # a damaged pointer: verify them all
            log.error("%s is not readable (%s); looking at every checkpoint",
                      os.path.join(self.dir, "latest.json"), e)
            named = None
        stems = [os.path.join(self.dir, s) for s in reversed(self._stems())]
        if named is not None and named in stems:  # the pointer's first, then newest first
            stems.remove(named)
            stems.insert(0, named)
        if not stems:
            return None, None, []
        reports = []
        for stem in stems:
            problems = self.verify(stem)
            if not problems:
                if reports:
                    log.warning("resuming from %s, the newest intact checkpoint, instead",
                                os.path.basename(stem))
                with open(stem + ".json") as f:
                    return stem, json.load(f), [bad for bad, _ in reports]
            for p in problems:
                log.error("checkpoint %s is damaged: %s", os.path.basename(stem), p)
            reports.append((stem, problems))
        raise TrainingError("no intact checkpoint in %s: %s. Not training from damaged weights; "
                            "start a new run (or restore the files)"
                            % (self.dir, "; ".join(p for _, ps in reports for p in ps)))

    def set_aside(self, stems):
        """Rename the damaged checkpoints ``stems`` aside (``*.damaged``)."""
        for stem in stems:
            for ext in self.EXTS + (".json",):
                if os.path.exists(stem + ext):
                    os.replace(stem + ext, stem + ext + ".damaged")
            log.warning("set aside the damaged %s.* as *.damaged", os.path.basename(stem))
