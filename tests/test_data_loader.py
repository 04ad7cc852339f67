"""Batches through gluon DataLoader workers: shapes, exact reproducibility, shards."""
import numpy as np
import pytest

import data_fixtures as fx
from duc_hdc.data import SegRecordDataset, build_eval_dataset, build_train_loader, datasets, loader
from duc_hdc.data.transforms import TrainTransform


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loader")
    root = str(tmp / "cs")
    fx.make_cityscapes(root, np.random.default_rng(11), counts={"train": 10})
    datasets.convert_cityscapes(root, "train", str(tmp / "train"), progress=False)
    return str(tmp / "train.rec"), root


def _batches(loader):
    return [(d.asnumpy(), l.asnumpy()) for d, l in loader]


def test_batches_shapes_and_reproducibility(rec):
    path, _ = rec
    t = TrainTransform(crop_size=(32, 48), cell_width=2, anchor_jitter=10)
    loader = build_train_loader(path, 4, t, num_workers=2, seed=3, epoch=1)
    assert len(loader) == 2  # 10 items, last partial batch discarded
    first = _batches(loader)
    data, label = first[0]
    assert data.shape == (4, 3, 32, 48) and data.dtype == np.float32
    assert label.shape == (4, 16, 24)
    assert set(np.unique(label)) <= set(range(19)) | {255}
    # same (seed, epoch): identical batches in identical order, whatever the workers
    again = _batches(build_train_loader(path, 4, t, num_workers=0, seed=3, epoch=1))
    for (d1, l1), (d2, l2) in zip(first, again):
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(l1, l2)
    other = _batches(build_train_loader(path, 4, t, num_workers=0, seed=3, epoch=2))
    assert not np.array_equal(first[0][0], other[0][0])
    keep = build_train_loader(path, 4, t, num_workers=0, seed=3, epoch=1, last_batch="keep")
    assert len(keep) == 3


def test_shards_are_disjoint_and_equal():
    parts = [loader.epoch_indices(10, 0, 0, shard=(r, 3)) for r in range(3)]
    assert [len(p) for p in parts] == [3, 3, 3]
    assert len(set(np.concatenate(parts))) == 9
    np.testing.assert_array_equal(loader.epoch_indices(10, 0, 0, shard=(1, 3)), parts[1])
    assert not np.array_equal(loader.epoch_indices(10, 0, 1), loader.epoch_indices(10, 0, 0))
    np.testing.assert_array_equal(loader.epoch_indices(5, 0, 0, shuffle=False), range(5))
    with pytest.raises(ValueError, match="rank"):
        loader.epoch_indices(10, 0, 0, shard=(3, 3))


def test_folder_dataset_gives_the_same_batches(rec):
    path, root = rec
    t = TrainTransform(crop_size=(32, 48), cell_width=2, anchor_jitter=10)
    from_rec = _batches(build_train_loader(path, 5, t, num_workers=0, seed=1, epoch=0))
    folder = datasets.CityscapesFolder(root, "train")
    from_folder = _batches(build_train_loader(folder, 5, t, num_workers=0, seed=1, epoch=0))
    for (d1, l1), (d2, l2) in zip(from_rec, from_folder):
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(l1, l2)


def test_eval_dataset_and_errors(rec):
    path, _ = rec
    ds = build_eval_dataset(path)
    assert isinstance(ds, SegRecordDataset) and len(ds) == 10
    img, label = ds[-1]
    assert img.shape == (64, 128, 3) and label.shape == (64, 128)
    with pytest.raises(IndexError, match="out of range"):
        ds[10]
    t = TrainTransform(crop_size=(32, 48))
    with pytest.raises(ValueError, match="fewer than one batch"):
        build_train_loader(path, 4, t, num_workers=0, shard=(0, 4))
