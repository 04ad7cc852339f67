"""Shared test fixtures: the original release's reference graph and tiny network settings."""
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


#: the original release's graph and what it pins down (tests/data/README.md), carried in the
#: repository so that a bare clone tests itself
DATA = os.path.join(HERE, "data")


@pytest.fixture(scope="session")
def reference_symbol_path():
    return os.path.join(DATA, "tusimple_duc_hdc_cityscapes-symbol.json")


#: settings for tiny networks (ResNet-18 layout at width 8): fast on CPU
TINY = dict(classes=5, base_width=8)


@pytest.fixture(scope="module")
def tiny_recs(tmp_path_factory):
    """Tiny synthetic RecordIO (8 train, 2 val scenes of 64x128): {"train": rec, "val": rec}."""
    from duc_hdc.data.datasets import convert_cityscapes
    from duc_hdc.demo.synthetic import make_synthetic_cityscapes

    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_cityscapes(str(root / "cityscapes"), num_train=8, num_val=2, size=(64, 128),
                              seed=1, progress=False)
    recs = {}
    for split in ("train", "val"):
        convert_cityscapes(str(root / "cityscapes"), split, str(root / split), progress=False)
        recs[split] = str(root / split) + ".rec"
    return recs
