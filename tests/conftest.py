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
