"""Training data loading: per-item augmentation seeds, epoch orders and shards, DataLoader,
and the watch on its worker processes (:class:`WatchedLoader`)."""
import logging
import multiprocessing
import multiprocessing.pool
import queue
import signal
import threading
import time

import numpy as np

from .datasets import SegRecordDataset, _gluon_dataset_base

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- loaders

def item_rng(seed, epoch, index):
    """The augmentation generator of item ``index`` in ``epoch`` (independent of workers)."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


class AugmentedDataset(_gluon_dataset_base()):
    """Applies a joint transform with a generator derived from (seed, epoch, index).

    Parameters
    ----------
    base : dataset with ``.sample(i)`` (SegRecordDataset or a folder dataset)
    transform : callable ``(img, label, anchors, rng) -> (data, label)``
    seed, epoch : int
    """

    def __init__(self, base, transform, seed=0, epoch=0):
        self.base = base
        self.transform = transform
        self.seed = int(seed)
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        img, label, meta = self.base.sample(i)
        if label is None:
            raise ValueError("%s item %d (%s) has no label; a training set needs labels"
                             % (getattr(self.base, "path", type(self.base).__name__), i,
                                meta.get("name")))
        return self.transform(img, label, meta.get("anchors"), item_rng(self.seed, self.epoch, i))


class _IndexSampler(object):
    """A fixed sequence of indices (gluon samplers are plain iterables with a length)."""

    def __init__(self, indices):
        self.indices = [int(i) for i in indices]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def epoch_indices(num_items, seed, epoch, shard=(0, 1), shuffle=True):
    """The item order of one shard for (seed, epoch).

    Every shard sees ``num_items // num_shards`` items of one common permutation, so all
    workers of a distributed job run the same number of batches.
    """
    rank, num_shards = int(shard[0]), int(shard[1])
    if num_shards < 1 or not 0 <= rank < num_shards:
        raise ValueError("shard must be (rank, num_shards) with 0 <= rank < num_shards, got %r"
                         % (shard,))
    order = np.arange(num_items)
    if shuffle:
        # a stream apart from the items' augmentation streams ([seed, epoch, index])
        order = np.random.default_rng([int(seed), int(epoch), 2 ** 32 - 1]).permutation(num_items)
    per_shard = num_items // num_shards
    return order[rank * per_shard: (rank + 1) * per_shard]


def build_train_loader(rec_path, batch_size, transform, num_workers=2, seed=0, epoch=0,
                       shard=(0, 1), shuffle=True, last_batch="discard", start_batch=0):
    """A DataLoader of augmented training batches.

    Parameters
    ----------
    rec_path : str or dataset
        ``.rec`` file, or any dataset with ``.sample(i)`` (e.g. :class:`CityscapesFolder`).
    batch_size : int
    transform : callable
        ``(img, label, anchors, rng) -> (data, label)``, e.g. :class:`TrainTransform`.
    num_workers : int
        Worker processes (0 = in the calling process).
    seed, epoch : int
        Order and augmentation are a function of (seed, epoch): the same pair gives the same
        batches in the same order whatever ``num_workers`` is (exact resume).
    shard : (int, int)
        (rank, num_shards) of a distributed job; shards are disjoint and of equal size.
    shuffle : bool
    last_batch : {'discard', 'keep', 'rollover'}
    start_batch : int
        Skip the epoch's first batches without reading them (resuming mid-epoch).

    Returns
    -------
    WatchedLoader
        A gluon DataLoader, iterated once, whose worker processes are watched. Yields (data
        (N, 3, H, W) float32, label (N, H / cw, W / cw) float32) NDArrays.
    """
    from mxnet import gluon

    base = SegRecordDataset(rec_path) if isinstance(rec_path, str) else rec_path
    data = AugmentedDataset(base, transform, seed, epoch)
    indices = epoch_indices(len(base), seed, epoch, shard, shuffle)
    if len(indices) < batch_size and last_batch == "discard":
        raise ValueError("%s: %d items per shard, fewer than one batch of %d (last_batch="
                         "'discard' would give no batch)" % (rec_path, len(indices), batch_size))
    indices = indices[int(start_batch) * batch_size:]
    sampler = gluon.data.BatchSampler(_IndexSampler(indices), batch_size, last_batch)
    loader = _data_loader(data, sampler, num_workers)
    pool = getattr(loader, "_worker_pool", None)
    workers = pool.started if pool is not None else []
    return WatchedLoader(loader, workers)


class _Retired(object):
    """What :class:`_WorkerPool` lists in place of a worker that exited: a process that never
    starts and never exits (``exitcode`` None), so the pool never replaces it."""

    name, pid, daemon, exitcode = "PoolWorker-retired", None, True, None

    def start(self):
        pass

    def terminate(self):
        pass

    def is_alive(self):
        return False

    def join(self, timeout=None):
        pass


class _WorkerPool(multiprocessing.pool.Pool):
    """A ``multiprocessing.Pool`` that starts its workers once, in its constructor (the
    calling thread), and never replaces one that exits; ``started`` lists them.

    A Pool replaces an exited worker from its worker-handler thread, at any moment: a fork
    there while the main thread waits on MXNet's engine deadlocked training for good (MXNet's
    fork handlers stop and restart the engine; seen with the handler in ``os.fork`` and the
    main thread in ``NDArray.asnumpy``). A dead worker's batch is lost either way, and the
    watch stops the training on it. multiprocessing has no option for this: its handler
    thread calls ``Pool._maintain_pool`` by class name, so only the process factory the pool
    is given (``self.Process``) can be replaced: after ``processes`` real workers it hands
    out :class:`_Retired` placeholders.
    """

    def __init__(self, processes, *args, **kwargs):
        self.started = []
        self.Process = self._process  # read by the constructor and its handler thread
        super().__init__(processes, *args, **kwargs)

    def _process(self, ctx, *args, **kwargs):
        if len(self.started) >= self._processes:
            return _Retired()
        process = ctx.Process(*args, **kwargs)
        self.started.append(process)
        return process


def _data_loader(data, sampler, num_workers):
    """A gluon DataLoader of ``data`` in ``sampler``'s batches, whose ``num_workers`` worker
    processes run in a :class:`_WorkerPool`: MXNet 1.9.1's multi-worker set-up
    (``gluon/data/dataloader.py``: the pool, its initializer, SIGINT ignored while it forks,
    2 batches prefetched per worker, the shared-memory batchify) with that pool in place of
    ``multiprocessing.Pool``, which gluon offers no way to choose."""
    from mxnet.gluon.data import DataLoader
    from mxnet.gluon.data import dataloader as gluon_loader
    from mxnet.util import is_np_array, is_np_shape

    loader = DataLoader(data, batch_sampler=sampler, num_workers=0, timeout=LOADER_TIMEOUT)
    if num_workers > 0:
        sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the workers ignore Ctrl-C
        try:
            pool = _WorkerPool(num_workers, initializer=gluon_loader._worker_initializer,
                               initargs=[data, is_np_shape(), is_np_array()])
        finally:
            signal.signal(signal.SIGINT, sigint)
        loader._worker_pool, loader._num_workers = pool, num_workers
        loader._prefetch = 2 * num_workers
        loader._batchify_fn = gluon_loader.default_mp_batchify_fn
    return loader


# ----------------------------------------------------------------------- worker watch

#: seconds MXNet's DataLoader waits for one batch from a (live but stuck) worker (its default)
LOADER_TIMEOUT = 120


class LoaderWorkerDied(RuntimeError):
    """A worker process of the data loader exited while the loader was in use (killed by
    the out-of-memory killer, a crash in native code): its batch never comes."""

    def __init__(self, pid, exitcode):
        self.pid, self.exitcode = pid, exitcode
        super().__init__("data loader worker process %s died (%s)" % (pid, exit_text(exitcode)))


def exit_text(exitcode):
    """``exitcode`` of a multiprocessing.Process in words."""
    if exitcode is None:
        return "exit code unknown"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "signal %d" % -exitcode
        killer = ", e.g. by the out-of-memory killer" if -exitcode == signal.SIGKILL else ""
        return "killed by %s (signal %d%s)" % (name, -exitcode, killer)
    return "exit code %d" % exitcode


_END = object()


class WatchedLoader(object):
    """A gluon DataLoader whose worker processes are watched, iterated once.

    A worker of the DataLoader (a :class:`_WorkerPool`, which never replaces one) that dies
    takes its batch with it, and the pool cannot be terminated afterwards when the dead
    process held the lock of its task queue (``Pool.terminate`` waits for it forever; MXNet
    terminates the pool when the loader is garbage-collected). So the batches are fetched by
    a helper thread and the caller waits for them polling the workers' ``exitcode``: a
    worker that exits raises :class:`LoaderWorkerDied` within :attr:`POLL` seconds of the
    caller waiting for a batch that is not there (a SIGTERM counts once the pool is known not
    to have sent it: MXNet terminates its pool on a failed batch, whose error is raised). At
    the end of the iteration (exhausted, broken off or failed) the pool is stopped, without
    waiting on a lock a dead worker held; a live worker that sends no batch for
    ``LOADER_TIMEOUT`` seconds makes MXNet's own timeout end the iteration. Without worker
    processes (``num_workers=0``) the loader is iterated as it is.
    """

    POLL = 0.2
    #: seconds to let a healthy pool stop (or the helper thread finish its batch) at the end
    STOP_TIMEOUT = 30

    def __init__(self, loader, workers):
        self.loader = loader
        self.workers = list(workers)
        self._used = False

    def __len__(self):
        return len(self.loader)

    def dead_worker(self, terminated=False):
        """The first of the loader's worker processes that has exited (None while all run).

        One ended by SIGTERM, or with exit code 0, counts only with ``terminated``: MXNet
        terminates the pool itself when a batch fails (e.g. bad data), and that error is the
        one to report; a worker that takes the pool's stop message before the SIGTERM exits
        with 0 (no crash or kill exits so)."""
        for p in self.workers:
            code = p.exitcode
            if code is not None and (terminated or code not in (0, -signal.SIGTERM)):
                return p
        return None

    def _raise_if_dead(self, error):
        """``error`` came from fetching a batch: when a worker died, say that instead. A worker
        killed after sending a batch fails its reading with an OSError or EOFError (the batch's
        shared memory is passed over a connection to it), possibly a moment before the
        worker's exit code can be read: waited for, briefly."""
        deadline = time.time() + (1.0 if isinstance(error, (OSError, EOFError)) else 0)
        # no batch within the timeout: MXNet has not terminated the pool, any exit counts
        terminated = isinstance(error, multiprocessing.TimeoutError)
        while True:
            dead = self.dead_worker(terminated)
            if dead is not None:
                raise LoaderWorkerDied(dead.pid, dead.exitcode) from error
            if time.time() >= deadline:
                return
            time.sleep(0.05)

    def __iter__(self):
        if not self.workers and getattr(self.loader, "_worker_pool", None) is None:
            yield from self.loader  # no worker processes (num_workers=0)
            return
        if self._used:
            raise RuntimeError("a training loader is iterated once (its workers are stopped "
                               "at the end); build another one")
        self._used = True
        results, stop = queue.Queue(maxsize=1), threading.Event()

        def put(item):
            while not stop.is_set():
                try:
                    results.put(item, timeout=self.POLL)
                    return True
                except queue.Full:
                    pass
            return False

        def fetch():
            try:
                for batch in self.loader:
                    if not put((True, batch)):
                        return
                put((True, _END))
            except BaseException as e:  # handed to the caller: raised there
                put((False, e))

        thread = threading.Thread(target=fetch, name="duc-hdc data loader", daemon=True)
        thread.start()
        try:
            while True:
                try:
                    ok, item = results.get(timeout=self.POLL)
                except queue.Empty:
                    dead = self.dead_worker()
                    if dead is not None:
                        raise LoaderWorkerDied(dead.pid, dead.exitcode)
                    continue
                if not ok:
                    self._raise_if_dead(item)
                    if isinstance(item, multiprocessing.TimeoutError):
                        raise TimeoutError(
                            "the data loader's worker processes sent no batch in %d s; stopped "
                            "waiting (a stuck worker? lower data.num_workers or check the "
                            "data)" % LOADER_TIMEOUT)
                    raise item
                if item is _END:
                    dead = self.dead_worker()
                    if dead is not None:  # after sending every batch: none was lost
                        log.warning("data loader worker process %s died (%s) after its last "
                                    "batch; the next epoch starts new ones", dead.pid,
                                    exit_text(dead.exitcode))
                    return
                yield item
        finally:
            stop.set()
            self._stop(thread, results)

    def close(self):
        """Stop the worker processes of a loader that is not iterated to its end (iterating
        does this itself); safe where a dead worker holds the pool's lock, where MXNet's own
        stop (the DataLoader's ``__del__``) would wait forever."""
        self._used = True
        self._stop(None, None)

    def _stop(self, thread, results):
        """Let the helper thread finish the batch it waits for (while the workers live), then
        terminate the pool; a pool whose terminate hangs on a dead worker's lock is left to
        its daemon thread and its processes are killed."""
        deadline = time.time() + self.STOP_TIMEOUT
        while (thread is not None and thread.is_alive() and self.dead_worker() is None
               and time.time() < deadline):
            try:
                results.get_nowait()
            except queue.Empty:
                pass
            thread.join(self.POLL)
        pool = getattr(self.loader, "_worker_pool", None)  # MXNet's multiprocessing.Pool
        if pool is None:
            return
        finalizer = getattr(pool, "_terminate", None)  # multiprocessing.util.Finalize
        if finalizer is not None and not finalizer.still_active():
            return  # stopped before
        # terminate once: it unregisters the pool's finalizer, so the loader's __del__ and
        # the interpreter's exit do not wait on that lock again
        stopper = threading.Thread(target=pool.terminate, name="duc-hdc loader stop",
                                   daemon=True)
        stopper.start()
        deadline = time.time() + self.STOP_TIMEOUT
        stopper.join(self.POLL)
        while stopper.is_alive() and self.dead_worker() is None and time.time() < deadline:
            stopper.join(self.POLL)
        if stopper.is_alive():
            self._kill_workers(pool, time.time() + self.STOP_TIMEOUT)

    def _kill_workers(self, pool, deadline):
        """Kill the pool's worker processes once its terminate has begun (from then on the
        interpreter's exit does not run it again, and wait on the lock a dead worker held)."""
        finalizer = getattr(pool, "_terminate", None)
        while finalizer is not None and finalizer.still_active() and time.time() < deadline:
            time.sleep(0.01)  # terminate not begun yet: its thread has not run
        for p in self.workers:
            if p.exitcode is None:
                p.kill()
        for p in self.workers:
            p.join(self.POLL)
