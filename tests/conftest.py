"""Shared test fixtures: the original release's reference graph and tiny network settings."""
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def reference_dir():
    """../shared/reference beside the repository (CI lays a copy of shared/ there)."""
    candidates = [os.environ.get("DUC_HDC_REFERENCE", ""),
                  os.path.join(REPO, "..", "shared", "reference")]
    for path in candidates:
        if path and os.path.exists(os.path.join(path, "tusimple_duc_hdc_cityscapes-symbol.json")):
            return os.path.abspath(path)
    raise FileNotFoundError("the reference graph tusimple_duc_hdc_cityscapes-symbol.json was not "
                            "found in %s; set DUC_HDC_REFERENCE" % candidates)


@pytest.fixture(scope="session")
def reference_symbol_path():
    return os.path.join(reference_dir(), "tusimple_duc_hdc_cityscapes-symbol.json")


#: settings for tiny networks (ResNet-18 layout at width 8): fast on CPU
TINY = dict(classes=5, base_width=8)
