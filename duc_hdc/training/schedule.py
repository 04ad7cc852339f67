"""Learning-rate schedule, and what a dist_async job sends its servers (no gluon import).

A kvstore server unpickles the optimizer it is sent while ``import mxnet`` is still running
(importing mxnet with ``DMLC_ROLE=server`` *is* the server loop), so only mxnet modules loaded
by then can be imported: this module uses ``mxnet.optimizer`` and ``mxnet.lr_scheduler`` alone.
"""
from mxnet.lr_scheduler import LRScheduler
from mxnet.optimizer import Optimizer


def learning_rate(iteration, train_cfg, iters_per_epoch, total_iters):
    """The learning rate at ``iteration`` (0-based): a pure function, so resume is exact."""
    base = float(train_cfg["lr"])
    warmup = int(train_cfg["warmup_iters"])
    if warmup and iteration < warmup:
        return base * (iteration + 1) / warmup
    kind = train_cfg["lr_schedule"]
    if kind == "constant":
        return base
    if kind == "step":
        epoch = iteration // max(1, iters_per_epoch)
        return base * float(train_cfg["lr_factor"]) ** (epoch // int(train_cfg["lr_step_epochs"]))
    # poly, over the iterations after warm-up
    span = max(1, total_iters - warmup)
    progress = min(1.0, (iteration - warmup) / span)
    return base * (1.0 - progress) ** float(train_cfg["lr_power"])



class ServerSchedule(LRScheduler):
    """The recipe's learning rate, computed on the dist_async servers from their update count.

    Every worker's push counts one update per parameter, so the servers' ``num_update`` over
    ``num_workers`` is the workers' iteration: the lr of :func:`learning_rate` at that iteration.
    """

    def __init__(self, train_cfg, iters_per_epoch, total_iters, num_workers):
        keys = ("lr", "warmup_iters", "lr_schedule", "lr_factor", "lr_step_epochs", "lr_power")
        self.train_cfg = {k: train_cfg[k] for k in keys}
        self.iters_per_epoch, self.total_iters = int(iters_per_epoch), int(total_iters)
        self.num_workers = int(num_workers)
        super().__init__(base_lr=float(train_cfg["lr"]))

    def __call__(self, num_update):
        iteration = max(0, int(num_update) - 1) // self.num_workers
        return learning_rate(iteration, self.train_cfg, self.iters_per_epoch, self.total_iters)


class ReplaceOptimizer(Optimizer):
    """Server-side 'update' that stores what was pushed: the async start-up exchanges (mxnet's
    async servers refuse a push before an optimizer is set)."""

    def create_state(self, index, weight):
        return None

    def update(self, index, weight, grad, state):
        weight[:] = grad
