"""DUC-HDC: a ResNet-HDC backbone with a DUC head, its spec table and ``get_model``."""
import logging

import mxnet as mx
from mxnet import gluon

from ..normalization import NORMALIZATION
from .duc import BilinearHead, DUCHead
from .resnet_hdc import VARIANTS, ResNetHDC

log = logging.getLogger(__name__)

#: Settings every model takes; a recipe fixes some of them, ``get_model`` overrides any.
DEFAULTS = dict(
    depth=101,
    classes=None,
    cell_width=2,
    dilations="hdc",
    aspp_rates=(6, 12, 18, 24),
    variant="v1s",
    head="duc",
    base_width=64,
    bn_frozen=False,
    bn_eps=None,
    mean=None,
    std=None,
)

#: name -> settings. Generic names need ``classes=``; recipes carry the paper's settings.
MODEL_SPECS = {
    "duc_hdc_resnet18": dict(depth=18),
    "duc_hdc_resnet34": dict(depth=34),
    "duc_hdc_resnet50": dict(depth=50),
    "duc_hdc_resnet101": dict(depth=101),
    "duc_hdc_resnet152": dict(depth=152),
    # The original release (TuSimple-DUC): 80.1 mIoU on the Cityscapes test set.
    "duc_hdc_resnet101_cityscapes": dict(depth=101, classes=19, cell_width=2, variant="tusimple",
                                         dilations="hdc", bn_frozen=True),
    # PASCAL VOC: DUC on ResNet-152 with DeepLab's dilation (the paper's VOC entry).
    "duc_resnet152_voc": dict(depth=152, classes=21, cell_width=2, variant="v1s",
                              dilations="deeplab", bn_frozen=True),
    "duc_hdc_resnet101_kitti_road": dict(depth=101, classes=2, cell_width=2, variant="v1s",
                                         dilations="hdc", bn_frozen=True),
}

HEADS = {"duc": DUCHead, "bilinear": BilinearHead}


def _check_int(name, value, minimum):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError("%s must be an integer >= %d, got %r" % (name, minimum, value))


class DUCHDC(gluon.HybridBlock):
    """ResNet-HDC backbone + DUC head (Wang et al., WACV 2018).

    ``net(x)`` takes x of shape (N, 3, H, W), float32, normalized with :attr:`normalization`,
    H and W multiples of 8, and returns logits (N, classes, H // cell_width, W // cell_width).
    The graph holds no shape arithmetic, so one exported symbol serves every such size.

    Parameters
    ----------
    depth : int
        ResNet depth: 18, 34, 50, 101 or 152.
    classes : int
        Number of classes (>= 1).
    cell_width : int
        Output stride of the logits: 1, 2, 4 or 8. The DUC head predicts r = 8 / cell_width
        sub-pixels per feature-map cell along each axis (Section 3.1).
    dilations : str or sequence
        Stage 4/5 dilation schedule: 'hdc', 'deeplab', 'none' or explicit per-block rates
        (Section 3.2); see :func:`duc_hdc.models.resnet_hdc.dilation_schedule`.
    aspp_rates : sequence of int
        Dilations of the head's parallel 3x3 branches.
    variant : str
        'tusimple' (the original release's layout) or 'v1s' (GluonCV's ImageNet backbones).
    head : str
        'duc' or 'bilinear' (the paper's baseline).
    base_width : int
        Width of stage 2 (64 = standard ResNet); narrower for tiny test/demo networks.
    bn_frozen : bool
        BatchNorm uses its moving statistics in training too (as the release trains).
    bn_eps : float, optional
        BatchNorm epsilon; default per variant (tusimple 1e-6, v1s 1e-5).
    mean, std : sequence of 3 float, optional
        Input normalization on the 0..255 RGB scale; default per variant (:data:`NORMALIZATION`).
    head_padding : bool
        Compute the head's convolutions with their output channels padded to a block size
        oneDNN's AVX-512 inference kernels need (:func:`duc_hdc.models.duc.padded_channels`:
        the same output, parameters and checkpoints; 1.3-1.5x faster head on CPU inference).
        ``duc-hdc train`` turns it off: oneDNN 2.x has no such kernels for training, where
        the padding only adds work. A runtime choice, not a model setting: not in ``config``.
    head_merge : bool
        Compute the head's branches with their shared centre tap once, the merged weights built
        in the graph from the branch parameters (:class:`duc_hdc.models.duc._BranchSum`: the
        same output, parameters and checkpoints). ``duc-hdc train`` turns it on for fp32
        training on CPUs (:func:`duc_hdc.training.build.training_merge`); off by default
        because the inference passes (BatchNorm folding, :mod:`duc_hdc.inference.merging`,
        int8) and the exports read the plain branches. A runtime choice, not in ``config``.
    """

    def __init__(self, depth=101, classes=19, cell_width=2, dilations="hdc",
                 aspp_rates=(6, 12, 18, 24), variant="v1s", head="duc", base_width=64,
                 bn_frozen=False, bn_eps=None, mean=None, std=None, head_padding=True,
                 head_merge=False, **kwargs):
        super().__init__(**kwargs)
        _check_int("classes", classes, 1)
        if cell_width not in (1, 2, 4, 8):
            raise ValueError("cell_width must divide 8 (1, 2, 4 or 8), got %r" % (cell_width,))
        aspp_rates = tuple(aspp_rates)
        if not aspp_rates:
            raise ValueError("aspp_rates must name at least one dilation rate")
        for rate in aspp_rates:
            _check_int("every aspp_rates entry", rate, 1)
        if head not in HEADS:
            raise ValueError("head %r: choose one of %s" % (head, sorted(HEADS)))
        if variant not in VARIANTS:
            raise ValueError("variant %r: choose one of %s" % (variant, sorted(VARIANTS)))
        norm = NORMALIZATION[variant]
        mean = tuple(norm["mean"] if mean is None else mean)
        std = norm["std"] if std is None else std
        std = None if std is None else tuple(std)
        if len(mean) != 3 or (std is not None and len(std) != 3):
            raise ValueError("mean and std need 3 values (R, G, B), got %r and %r" % (mean, std))
        if std is not None and not all(float(v) > 0 for v in std):
            raise ValueError("std %r: the input is divided by it, so every value must be > 0 "
                             "(std null: no division)" % (std,))
        self.classes = classes
        self.cell_width = cell_width
        with self.name_scope():
            self.backbone = ResNetHDC(depth, dilations=dilations, variant=variant,
                                      base_width=base_width, bn_frozen=bn_frozen, bn_eps=bn_eps,
                                      prefix="backbone_")
            self.head = HEADS[head](classes, 8 // cell_width, aspp_rates,
                                    in_channels=self.backbone.out_channels,
                                    pad_channels=head_padding, merge_taps=head_merge,
                                    prefix="head_")
        # Everything needed to rebuild this network (saved with checkpoints and exports).
        s4, s5 = self.backbone.stage_dilations
        self.config = dict(depth=depth, classes=classes, cell_width=cell_width,
                           dilations=[list(s4), list(s5)], aspp_rates=list(aspp_rates),
                           variant=variant, head=head, base_width=base_width,
                           bn_frozen=bn_frozen, bn_eps=bn_eps, mean=list(mean),
                           std=None if std is None else list(std))

    @property
    def normalization(self):
        """The input normalization: dict(mean=(r, g, b), std=(r, g, b) or None), 0..255 scale."""
        return dict(mean=tuple(self.config["mean"]),
                    std=None if self.config["std"] is None else tuple(self.config["std"]))

    def forward(self, x, *args):
        # Shape checks on concrete arrays only; the traced graph itself stays shape-free.
        if isinstance(x, mx.nd.NDArray):
            if x.ndim != 4 or x.shape[1] != 3:
                raise ValueError("input must be (N, 3, H, W), got shape %s" % (x.shape,))
            if x.shape[2] % 8 or x.shape[3] % 8:
                raise ValueError("input height and width must be multiples of 8, got %dx%d; "
                                 "pad the image first (duc_hdc.data.transforms.pad_to_multiple)"
                                 % (x.shape[2], x.shape[3]))
        return super().forward(x, *args)

    def initialize(self, init=None, ctx=None, verbose=False, force_reinit=False):
        """Gluon's ``initialize``; on a network whose parameters all hold values already
        (:func:`duc_hdc.get_model` initializes, a loaded one holds its weights) it does nothing
        but say so once, where Gluon warns once per parameter (123 warnings for ResNet-18)
        and does nothing either. ``force_reinit=True`` draws new weights."""
        params = self.collect_params().values()
        if not force_reinit and params and all(p._data is not None for p in params):
            log.info("%s: its parameters are initialized already (get_model and load do it); "
                     "initialize(force_reinit=True) draws new ones", type(self).__name__)
            return
        return super().initialize(mx.init.Uniform() if init is None else init, ctx, verbose,
                                  force_reinit)

    def hybrid_forward(self, F, x):
        return self.head(self.backbone(x))


def model_names():
    """All names :func:`get_model` accepts."""
    return sorted(MODEL_SPECS)


def resolve_settings(name, **overrides):
    """The full settings of model ``name`` with ``overrides`` applied (validated keys)."""
    if name not in MODEL_SPECS:
        raise ValueError("unknown model %r; choose one of: %s" % (name, ", ".join(model_names())))
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise ValueError("unknown model setting(s) %s for %r; valid: %s"
                         % (", ".join(unknown), name, ", ".join(sorted(DEFAULTS))))
    settings = dict(DEFAULTS)
    settings.update(MODEL_SPECS[name])
    # None means "keep the recipe's value" (how command-line options arrive when not given)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    if settings["classes"] is None:
        recipes = [n for n in model_names() if MODEL_SPECS[n].get("classes")]
        raise ValueError("%r is a generic name: pass classes=N, or use a recipe: %s"
                         % (name, ", ".join(recipes)))
    return settings


def build_model(config, ctx=None, initialize=True, head_padding=True, head_merge=False):
    """Build a :class:`DUCHDC` from a settings dict (as stored in ``net.config``)."""
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ValueError("unknown model setting(s) %s; valid: %s"
                         % (", ".join(unknown), ", ".join(sorted(DEFAULTS))))
    net = DUCHDC(head_padding=head_padding, head_merge=head_merge, **config)
    if initialize:
        # He-normal for the backbone convs; the head's convs carry their own Xavier init.
        net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2),
                       ctx=ctx)
    return net


def get_model(name, ctx=None, head_padding=True, head_merge=False, **overrides):
    """Build a DUC-HDC network by name, with initialized parameters.

    The network alone: :func:`duc_hdc.get_model` adds ``pretrained=True`` (the zoo's weights).

    Parameters
    ----------
    name : str
        A generic name ``duc_hdc_resnet{18,34,50,101,152}`` (needs ``classes=``) or a recipe:
        ``duc_hdc_resnet101_cityscapes``, ``duc_resnet152_voc``, ``duc_hdc_resnet101_kitti_road``.
    ctx : mx.Context or list, optional
        Where the parameters live (default CPU).
    head_padding : bool
        See :class:`DUCHDC` (on for inference; ``duc-hdc train`` turns it off).
    head_merge : bool
        See :class:`DUCHDC` (off; ``duc-hdc train`` turns it on for fp32 on CPUs).
    **overrides
        Any of ``classes``, ``cell_width``, ``dilations``, ``aspp_rates``, ``variant``,
        ``head``, ``base_width``, ``bn_frozen``, ``bn_eps``, ``mean``, ``std``.

    Returns
    -------
    DUCHDC
        With initialized parameters.
    """
    settings = resolve_settings(name, **overrides)
    return build_model(settings, ctx=ctx or mx.cpu(), head_padding=head_padding,
                       head_merge=head_merge)
