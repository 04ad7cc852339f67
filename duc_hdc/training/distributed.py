"""The kvstore modes of ``train.kvstore`` and what each worker of a parameter-server job does.

``local`` / ``device``: one process; gradients summed over the devices (``--gpus``,
``--cpu-devices``). ``dist_sync`` / ``dist_device_sync``: the job of ``duc-hdc launch``
(:mod:`duc_hdc.training.launcher`); the servers sum every worker's gradients and each worker
updates its own copy with its own optimizer (``update_on_kvstore=False``), so all copies stay
equal and the optimizer state is checkpointed as for one process. ``dist_async``: the servers
hold the optimizer (``update_on_kvstore=True``, the only mode mxnet allows): each worker's
gradient (averaged over its devices) is applied on the servers as it arrives, and the worker
pulls the new weights. The learning-rate schedule then runs on the servers
(:class:`ServerSchedule`).

What a checkpoint holds (rank 0 writes it; every rank reads the same one, checked at start by
:func:`check_same_checkpoint`):

- sync modes: the parameters (equal on every worker), the optimizer state, the position.
- ``dist_async``: rank 0's parameters as last pulled from the servers and rank 0's position;
  the optimizer state (momentum) lives on the servers and mxnet cannot read it back
  (``save_optimizer_states`` refuses distributed stores), so the ``.states`` file holds a
  marker. Resume restores the parameters and the schedule position for every worker and
  restarts the optimizer state from zero, saying so (:func:`load_trainer_states`).

The run directory must be on a filesystem every machine of the job shares: rank 0 writes
``config.yaml``, ``metrics.jsonl``, checkpoints and ``final.params``; each rank logs to its own
file (``train.log`` for rank 0, ``train.rank<N>.log`` for the others, :class:`RankLogHandler`).
"""
import hashlib
import logging
import os

import mxnet as mx
import numpy as np
from mxnet import gluon

from ..config import ConfigError
from .errors import TrainingError
from .schedule import ReplaceOptimizer, ServerSchedule
from .launcher import LAUNCHERS, LaunchError, free_port, launch, read_hostfile  # noqa: F401

log = logging.getLogger(__name__)

DIST_KVSTORES = ("dist_sync", "dist_device_sync", "dist_async")

#: kvstore keys of the start-up exchanges; far above the trainer's parameter indices
_EXCHANGE_KEY = 1 << 24
_STATES_MARKER = (b"duc-hdc dist_async checkpoint: the optimizer state lived on the kvstore "
                  b"servers and is not saved; resume restarts it\n")


# ---------------------------------------------------------------------------- the kvstore
def is_async(name):
    return str(name) == "dist_async"


def check_launch_env(name, environ=None):
    """Refuse a dist kvstore outside ``duc-hdc launch`` (no ``DMLC_ROLE``/``DMLC_NUM_WORKER``),
    and a one-process kvstore (``local``, ``device``) inside it: every worker would train the
    whole recipe on its own, into the same run folder."""
    environ = os.environ if environ is None else environ
    if str(name) not in DIST_KVSTORES:
        if "DMLC_ROLE" in environ:
            raise ConfigError(
                "train.kvstore=%s trains in one process, and this is a worker of a "
                "parameter-server job (DMLC_ROLE is set, e.g. by `duc-hdc launch`): use "
                "--kvstore %s under launch, or run `duc-hdc train` without launch"
                % (name, "|".join(DIST_KVSTORES)))
        return
    missing = [k for k in ("DMLC_ROLE", "DMLC_NUM_WORKER", "DMLC_PS_ROOT_URI") if k not in environ]
    if missing:
        missing = missing[0] + " is" if len(missing) == 1 else "/".join(missing) + " are"
        raise ConfigError(
            "--kvstore/train.kvstore=%s runs under a parameter-server job, and %s not set: "
            "start it with `duc-hdc launch -n WORKERS -s SERVERS -- duc-hdc train ...`, or use "
            "train.kvstore=device on one machine" % (name, missing))


def make_kvstore(name):
    """``(kvstore, rank, num_workers)`` for ``train.kvstore`` ``name``.

    A dist kvstore is created (after :func:`check_launch_env`); the others stay names for
    ``gluon.Trainer``. Under ``dist_async`` the servers get a pass-through updater until
    :func:`synchronize_start` installs the real optimizer.
    """
    if str(name) not in DIST_KVSTORES:
        return name, 0, 1
    check_launch_env(name)
    kv = mx.kv.create(name)
    if is_async(name):
        kv.set_optimizer(ReplaceOptimizer())
        kv._barrier()
    return kv, kv.rank, kv.num_workers


def allgather(kv, rank, num_workers, values):
    """Every worker's ``values`` (1-D, small integers exact in float32), ordered by rank.

    dist_sync: each worker pushes its values in its own slot of a zero vector and the servers
    sum. dist_async (before :func:`synchronize_start` sets the optimizer): one key per rank.
    Every call uses fresh keys, so calls can follow one another.
    """
    values = np.asarray(values, np.float32).ravel()
    size = values.size
    base = _EXCHANGE_KEY + allgather.calls * 4096
    allgather.calls += 1
    if is_async(kv.type):
        keys = [base + r for r in range(num_workers)]
        kv.init(keys, [mx.nd.zeros((size,)) for _ in keys])
        kv.push(base + rank, mx.nd.array(values))
        mx.nd.waitall()
        kv._barrier()
        outs = [mx.nd.zeros((size,)) for _ in keys]
        kv.pull(keys, out=outs)
        mx.nd.waitall()
        kv._barrier()
        return np.stack([o.asnumpy() for o in outs])
    slots = np.zeros((num_workers, size), np.float32)
    slots[rank] = values
    kv.init(base, mx.nd.zeros((num_workers * size,)))
    total = mx.nd.zeros((num_workers * size,))
    kv.pushpull(base, mx.nd.array(slots.ravel()), out=total)
    mx.nd.waitall()
    kv._barrier()
    return total.asnumpy().reshape(num_workers, size)


allgather.calls = 0


def _digest_values(hexdigest):
    return np.frombuffer(bytes.fromhex(hexdigest), np.uint8).astype(np.float32)


def _hex(values):
    return bytes(np.asarray(values).astype(np.uint8).tolist()).hex()


def checkpoint_digest(stem):
    """sha256 over the checkpoint's ``.params``, ``.states`` and ``.json`` (zeros: none)."""
    if stem is None:
        return "0" * 64
    from ..fileio import sha256sum

    digest = hashlib.sha256()
    for ext in (".params", ".states", ".json"):
        digest.update(bytes.fromhex(sha256sum(stem + ext)))
    return digest.hexdigest()


def check_same_checkpoint(kv, rank, num_workers, stem, run_dir):
    """Every rank resumes the same checkpoint (same bytes), or none does; else raise.

    Ranks on machines that do not share the run directory see another checkpoint or none.
    """
    mine = checkpoint_digest(stem)
    seen = [_hex(v) for v in allgather(kv, rank, num_workers, _digest_values(mine))]
    if len(set(seen)) > 1:
        ranks = "; ".join("rank %d: %s" % (r, "no checkpoint" if s == "0" * 64 else s[:16])
                          for r, s in enumerate(seen))
        raise TrainingError(
            "the %d workers see different checkpoints in %s (%s); the run directory must be "
            "on a filesystem every machine shares" % (num_workers, run_dir, ranks))
    if stem is not None:
        log.info("every rank resumes %s (sha256 %s)", os.path.basename(stem), mine[:16])


# ---------------------------------------------------------------------------- the trainer
def build_trainer(net, kvstore_name, kvstore, optimizer, optimizer_params, num_devices,
                  num_workers, schedule=None, iteration=0):
    """The ``gluon.Trainer`` for ``train.kvstore``.

    Sync modes: each worker updates its own copy (``update_on_kvstore=False``). dist_async:
    the optimizer goes to the servers with ``schedule = (train_cfg, iters_per_epoch,
    total_iters)`` as a :class:`ServerSchedule` started at ``iteration``, gradients averaged
    over this worker's ``num_devices`` (see :func:`step_size`).
    """
    params = net.collect_params()
    if not is_async(kvstore_name):
        dist = str(kvstore_name).startswith("dist") or num_workers > 1
        return gluon.Trainer(params, optimizer, optimizer_params, kvstore=kvstore,
                             update_on_kvstore=False if dist else None)
    opt_params = dict(optimizer_params)
    if schedule is not None:
        opt_params["lr_scheduler"] = ServerSchedule(*schedule, num_workers=num_workers)
    opt_params["begin_num_update"] = int(iteration) * num_workers
    opt = mx.optimizer.create(optimizer, **opt_params)
    trainer = gluon.Trainer(params, opt, kvstore=kvstore, update_on_kvstore=True)
    # what step(step_size(...)) will compute, set before the optimizer is sent to the servers
    opt.rescale_grad = 1.0 / num_devices
    return trainer


def step_size(kvstore_name, num_devices, num_workers):
    """The ``batch_size`` for ``trainer.step``: the gradient is a mean over the devices (each
    device's loss is already a mean) and, when the servers sum the workers, over the workers."""
    return num_devices if is_async(kvstore_name) else num_devices * num_workers


def set_learning_rate(trainer, lr):
    """The loop's learning rate; under dist_async the servers' :class:`ServerSchedule` sets it."""
    if not isinstance(trainer.optimizer.lr_scheduler, ServerSchedule):
        trainer.set_learning_rate(lr)


def updates_on_servers(trainer):
    kv = trainer._kvstore_params["kvstore"]
    return isinstance(kv, mx.kvstore.KVStore) and is_async(kv.type)


def save_trainer_states(trainer, path):
    """``trainer.save_states(path)``; under dist_async a marker (the state is on the servers)."""
    if updates_on_servers(trainer):
        with open(path, "wb") as f:
            f.write(_STATES_MARKER)
        return
    trainer.save_states(path)


def load_trainer_states(trainer, path, iteration=None):
    """``trainer.load_states(path)``; under dist_async nothing to load, and it says so."""
    if updates_on_servers(trainer):
        log.warning("dist_async: the checkpoint holds the parameters and the position "
                    "(iteration %s) but no optimizer state (it lived on the servers); the "
                    "optimizer state (e.g. momentum) restarts from zero", iteration)
        return
    with open(path, "rb") as f:
        head = f.read(len(_STATES_MARKER))
    if head == _STATES_MARKER:
        log.warning("%s was written by a dist_async run and holds no optimizer state; the "
                    "optimizer state restarts from zero", path)
        return
    trainer.load_states(path)


def synchronize_start(net, trainer, kvstore, num_workers, checksum):
    """Give every worker worker 0's parameters before the first iteration, and check it.

    ``gluon.Trainer`` broadcasts the initial parameters lazily, key by key, at its first
    ``step``; on one machine a worker was seen to keep a parameter of its own through that
    broadcast (dist_sync, 2 workers: about 1 run in 5; one ps-lite barrier per key, cf.
    apache/mxnet#7893). Here the broadcast happens before training, every worker waits for all
    the others and pulls every parameter again (a pull changes nothing on the servers), then
    the workers compare their parameter checksums (``checksum(net)``, hex sha256) through the
    kvstore. Under dist_async the real optimizer reaches the servers only after that.

    Raises
    ------
    TrainingError
        The workers still hold different parameters.
    """
    async_ = is_async(kvstore.type)
    # Trainer has no public call for this; these are the ones its first step() makes
    if async_:  # keep the pass-through updater on the servers for the exchange below
        kvstore.set_optimizer = lambda optimizer: None
    try:
        trainer._init_kvstore()
        if trainer._params_to_init:
            trainer._init_params()
    finally:
        if async_:
            del kvstore.set_optimizer
    mx.nd.waitall()
    kvstore._barrier()
    for idx, param in enumerate(trainer._params):
        kvstore.pull(idx, param.list_data(), priority=-idx)
    mx.nd.waitall()
    digest = checksum(net)
    seen = [_hex(v) for v in allgather(kvstore, kvstore.rank, num_workers,
                                       _digest_values(digest))]
    if len(set(seen)) > 1:
        raise TrainingError("the %d workers hold different parameters after the kvstore "
                            "broadcast; not training on diverged copies" % num_workers)
    if async_:
        kvstore.set_optimizer(trainer._optimizer)
    kvstore._barrier()
    log.info("start params checksum: %s (same on all %d workers)", digest, num_workers)


# ---------------------------------------------------------------------------- logs per rank
class RankLogHandler(logging.Handler):
    """The run's log file: ``train.log`` for rank 0, ``train.rank<N>.log`` for the others.

    The rank is known once the kvstore exists; records before :func:`set_log_rank` are kept
    and written then (a process that never learns its rank writes ``train.log`` alone, or
    ``train.pid<PID>.log`` inside a launched job, if the run directory exists). A new run's
    handler is ``deferred``: it writes nothing until :func:`start_log` (the run has passed its
    checks), and a run refused before that leaves no log file.
    """

    def __init__(self, run_dir, deferred=False):
        super().__init__()
        self.run_dir, self.buffer, self.file = run_dir, [], None
        self.deferred, self.rank = deferred, None
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def open(self, rank):
        if rank is None:  # the run stopped before its kvstore existed
            name = "train.pid%d.log" % os.getpid() if "DMLC_ROLE" in os.environ else "train.log"
        else:
            name = "train.log" if rank == 0 else "train.rank%d.log" % rank
        self.file = logging.FileHandler(os.path.join(self.run_dir, name))
        self.file.setFormatter(self.formatter)
        for record in self.buffer:
            self.file.emit(record)
        self.buffer = []

    def emit(self, record):
        if self.file is None:
            self.buffer.append(record)
        else:
            self.file.emit(record)

    def close(self):
        if self.file is None and self.buffer and not self.deferred and \
                os.path.isdir(self.run_dir):
            self.open(self.rank)
        if self.file is not None:
            self.file.close()
        super().close()


def rank_log_handler(run_dir, deferred=False):
    """A :class:`RankLogHandler` on the ``duc_hdc`` logger (remove and close it at the end)."""
    handler = RankLogHandler(run_dir, deferred=deferred)
    logging.getLogger("duc_hdc").addHandler(handler)
    return handler


def _waiting_handlers():
    return [h for h in logging.getLogger("duc_hdc").handlers
            if isinstance(h, RankLogHandler) and h.file is None]


def set_log_rank(rank):
    """Open the log file of ``rank`` on every :class:`RankLogHandler` waiting for it (a
    deferred one opens it at :func:`start_log`)."""
    for handler in _waiting_handlers():
        handler.rank = rank
        if not handler.deferred:
            handler.open(rank)


def start_log():
    """The run starts writing its directory: deferred handlers open their rank's log file."""
    for handler in _waiting_handlers():
        handler.deferred = False
        handler.open(handler.rank)
