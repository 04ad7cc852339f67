"""duc-hdc: "Understanding Convolution for Semantic Segmentation" (Wang et al., WACV 2018).

Hybrid dilated convolution (HDC) backbones and the dense upsampling convolution (DUC) head on
MXNet/Gluon, with exact parity to the original TuSimple-DUC release.
"""
import os

__version__ = "0.1.0"

# MXNet's OpenMP pool defaults to half the cores (measured 2x slower on 2 cores); it reads the
# variable once, when mxnet is first imported, so set it before anything imports mxnet.
if "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(os.cpu_count() or 1)


def get_model(name, pretrained=False, root=None, ctx=None, **overrides):
    """Build a DUC-HDC network by name; see :func:`duc_hdc.model.network.get_model`."""
    from .model.network import get_model as _get_model

    return _get_model(name, pretrained=pretrained, root=root, ctx=ctx, **overrides)


__all__ = ["__version__", "get_model"]
