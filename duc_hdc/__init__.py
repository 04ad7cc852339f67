"""duc-hdc: "Understanding Convolution for Semantic Segmentation" (Wang et al., WACV 2018).

Hybrid dilated convolution (HDC) backbones and the dense upsampling convolution (DUC) head on
MXNet/Gluon, with exact parity to the original TuSimple-DUC release.

This module is the package's face: it composes the layers (``models`` + ``hub`` for
:func:`get_model`, ``training`` + ``evaluation`` for :func:`train`) and sets up the process
before mxnet loads.
"""
from . import runtime as _runtime

__version__ = "0.1.0"

# Before anything imports mxnet (oneDNN and OpenMP read these once, when they initialize):
# OMP_NUM_THREADS = all cores, and AMX where the CPU has it and the kernel grants the tile
# permission (duc_hdc.runtime; DUC_HDC_NO_AMX=1 opts out).
_runtime.setup_process()


def get_model(name, pretrained=False, root=None, ctx=None, **overrides):
    """Build a DUC-HDC network by name (:func:`duc_hdc.models.network.get_model`).

    With ``pretrained=True`` the zoo's weights for ``name`` are downloaded (cached in ``root``,
    default ``$DUC_HDC_HOME`` or ``~/.duc_hdc/models``) and loaded, with the settings their
    sidecar records (e.g. BatchNorm eps); ``overrides`` may not contradict them.
    """
    from .models.network import get_model as build

    if not pretrained:
        return build(name, ctx=ctx, **overrides)
    from .inference.loader import load

    return load(name, root=root, ctx=ctx, overrides=overrides)


def load(model_or_artifact=None, params=None, config=None, ctx=None, **kwargs):
    """The one loader (:func:`duc_hdc.inference.loader.load`): any model a user can have."""
    from .inference.loader import load as _load

    return _load(model_or_artifact, params=params, config=config, ctx=ctx, **kwargs)


def train(cfg, ctx=None, resume=None, progress=True, overrides=None, overwrite=False):
    """Train recipe ``cfg``, validating on ``data.val_rec`` (:func:`duc_hdc.training.trainer.train`
    with :func:`duc_hdc.evaluation.evaluate.recipe_validator`).

    With ``resume=RUN_DIR``, ``cfg`` may be None: the run continues under its saved config, with
    ``overrides`` (``a.b=v`` strings) checked against what a resume may change. A new run
    refuses a ``train.out_dir`` that holds a run, unless ``overwrite`` (that run is deleted).
    """
    from .evaluation.evaluate import recipe_validator
    from .training.trainer import train as _train

    return _train(cfg, ctx=ctx, resume=resume, progress=progress, overrides=overrides,
                  validator_for=recipe_validator, overwrite=overwrite,
                  backbone_weights=_backbone_weights)


def _backbone_weights(name):
    """The zoo's file of GluonCV backbone ``name`` (``duc-hdc download NAME`` fetches the same
    one into ``$DUC_HDC_HOME``), downloaded if missing; None for a name the zoo lacks."""
    from .hub.entries import MODELS
    from .hub.zoo import get_weights

    entry = MODELS.get(name)
    if entry is None or entry.source != "gluoncv":
        return None
    return get_weights(name)


__all__ = ["__version__", "get_model", "load", "train"]
