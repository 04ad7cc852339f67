"""Training data loading: per-item augmentation seeds, epoch orders and shards, DataLoader."""
import numpy as np

from .datasets import SegRecordDataset, _gluon_dataset_base


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
    mxnet.gluon.data.DataLoader
        Yields (data (N, 3, H, W) float32, label (N, H / cw, W / cw) float32) NDArrays.
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
    return gluon.data.DataLoader(data, batch_sampler=sampler, num_workers=num_workers)
