"""Data: label tables, RecordIO records, datasets, joint transforms. (Synthetic scenes: duc_hdc.demo.synthetic.)

Importing this package is light (numpy only); the names below that need MXNet or OpenCV are
loaded on first use.
"""
import importlib

__all__ = ["SegRecordDataset", "CityscapesFolder", "VOCFolder", "KittiRoadFolder",
           "build_train_loader", "build_eval_dataset", "TrainTransform", "EvalTransform",
           "labels", "recordio", "datasets", "transforms", "sources", "convert", "loader"]

_LAZY = {
    "SegRecordDataset": "datasets",
    "CityscapesFolder": "datasets",
    "VOCFolder": "datasets",
    "KittiRoadFolder": "datasets",
    "build_train_loader": "loader",
    "build_eval_dataset": "datasets",
    "TrainTransform": "transforms",
    "EvalTransform": "transforms",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module("." + _LAZY[name], __name__), name)
    if name in ("labels", "recordio", "datasets", "transforms", "sources", "convert", "loader"):
        return importlib.import_module("." + name, __name__)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def __dir__():
    return sorted(list(globals()) + __all__)
