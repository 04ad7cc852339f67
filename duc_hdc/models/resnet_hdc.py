"""ResNet backbones with output stride 8 and a per-block dilation schedule (HDC).

Section 3.2 of Wang et al. (WACV 2018): instead of one dilation rate per stage (DeepLab), every
residual block of stages 4 and 5 gets its own rate, chosen so that a stack of dilated 3x3 convs
covers its receptive field without holes ("gridding").

Two stem / stride layouts:

``tusimple``
    The original TuSimple-DUC release: deep stem 64-64-128 (first conv stride 2), 3x3 max-pool
    stride 2 without padding, stage-3 downsampling stride in the first 1x1 conv and in the
    projection, BatchNorm eps 1e-6, no conv bias.
``v1s``
    GluonCV's ``resnet*_v1s``: the same deep stem 64-64-128, padded max-pool, stride in the
    3x3 conv, BatchNorm eps 1e-5. The child names mirror GluonCV's ``ResNetV1b`` so its ImageNet weights
    load by structural name.
"""
import itertools

from mxnet import gluon
from mxnet.gluon import nn

#: depth -> (block type, blocks per stage 2..5)
RESNET_SPECS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}

#: stem / stride / BatchNorm layout of each variant
VARIANTS = {
    "tusimple": dict(stem_widths=(64, 64, 128), pool_pad=0, stride_in_1x1=True, bn_eps=1e-6,
                     bn_momentum=0.9995),
    "v1s": dict(stem_widths=(64, 64, 128), pool_pad=1, stride_in_1x1=False, bn_eps=1e-5,
                bn_momentum=0.9),
}

# The release's HDC cycle for stage 4 (its first block uses 2: it follows the removed stride).
_HDC_STAGE4_CYCLE = (1, 2, 5, 9)
_HDC_STAGE5_CYCLE = (5, 9, 17)


def dilation_schedule(schedule, layers):
    """Resolve a dilation schedule into per-block rates for stages 4 and 5.

    Parameters
    ----------
    schedule : str or sequence
        ``'hdc'``: the release's rule, 2,2,5,9 then 1,2,5,9 repeated in stage 4 and 5,9,17
        (repeated) in stage 5; ``'deeplab'``: 2 in every block of stage 4, 4 in stage 5;
        ``'none'``: all 1 (the stride-8 network without dilation, for ablations); or explicit
        rates: a pair ``(stage4_rates, stage5_rates)`` or one flat list covering both stages.
    layers : sequence of 4 int
        Blocks per stage (stages 2..5).

    Returns
    -------
    tuple of (tuple of int, tuple of int)
    """
    n4, n5 = layers[2], layers[3]
    if isinstance(schedule, str):
        if schedule == "hdc":
            s4 = [_HDC_STAGE4_CYCLE[i % 4] for i in range(n4)]
            s4[0] = 2
            s5 = [_HDC_STAGE5_CYCLE[i % 3] for i in range(n5)]
        elif schedule == "deeplab":
            s4, s5 = [2] * n4, [4] * n5
        elif schedule == "none":
            s4, s5 = [1] * n4, [1] * n5
        else:
            raise ValueError("unknown dilation schedule %r; choose 'hdc', 'deeplab', 'none' or "
                             "give explicit rates" % (schedule,))
        return tuple(s4), tuple(s5)
    rates = list(schedule)
    if len(rates) == 2 and all(isinstance(r, (list, tuple)) for r in rates):
        s4, s5 = list(rates[0]), list(rates[1])
    else:
        s4, s5 = rates[:n4], rates[n4:]
        if len(rates) != n4 + n5:
            raise ValueError("dilations: %d rates given, the backbone has %d blocks in stages 4 "
                             "and 5 (%d + %d)" % (len(rates), n4 + n5, n4, n5))
    if len(s4) != n4 or len(s5) != n5:
        raise ValueError("dilations: stage 4 needs %d rates (got %d), stage 5 needs %d (got %d)"
                         % (n4, len(s4), n5, len(s5)))
    for r in itertools.chain(s4, s5):
        if not isinstance(r, int) or isinstance(r, bool) or r < 1:
            raise ValueError("dilations: every rate must be an integer >= 1, got %r" % (r,))
    return tuple(s4), tuple(s5)


def _conv(channels, kernel, stride=1, dilation=1, in_channels=0):
    pad = dilation * (kernel // 2)
    return nn.Conv2D(channels, kernel, strides=stride, padding=pad, dilation=dilation,
                     use_bias=False, in_channels=in_channels)


class _BNFactory:
    """Builds the BatchNorm layers of a backbone with one set of settings."""

    def __init__(self, eps, momentum, frozen):
        self.kwargs = dict(epsilon=eps, momentum=momentum, use_global_stats=frozen)

    def __call__(self, channels=0):
        return nn.BatchNorm(in_channels=channels, **self.kwargs)


class BasicBlock(gluon.HybridBlock):
    """Two 3x3 convs (ResNet-18/34); both use the block's dilation rate."""

    expansion = 1

    def __init__(self, channels, stride, dilation, in_channels, bn, stride_in_1x1, **kwargs):
        super().__init__(**kwargs)
        del stride_in_1x1  # a basic block has no 1x1 conv to put the stride in
        with self.name_scope():
            self.conv1 = _conv(channels, 3, stride, dilation, in_channels)
            self.bn1 = bn(channels)
            self.conv2 = _conv(channels, 3, 1, dilation, channels)
            self.bn2 = bn(channels)
            self.downsample = None
            if stride != 1 or in_channels != channels:
                self.downsample = nn.HybridSequential(prefix="down_")
                with self.downsample.name_scope():
                    self.downsample.add(_conv(channels, 1, stride, 1, in_channels), bn(channels))

    def hybrid_forward(self, F, x):
        out = F.Activation(self.bn1(self.conv1(x)), act_type="relu")
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.Activation(out + residual, act_type="relu")


class Bottleneck(gluon.HybridBlock):
    """1x1 reduce, 3x3 (dilated), 1x1 increase; stride in the first 1x1 or in the 3x3."""

    expansion = 4

    def __init__(self, channels, stride, dilation, in_channels, bn, stride_in_1x1, **kwargs):
        super().__init__(**kwargs)
        out_channels = channels * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        with self.name_scope():
            self.conv1 = _conv(channels, 1, s1, 1, in_channels)
            self.bn1 = bn(channels)
            self.conv2 = _conv(channels, 3, s3, dilation, channels)
            self.bn2 = bn(channels)
            self.conv3 = _conv(out_channels, 1, 1, 1, channels)
            self.bn3 = bn(out_channels)
            self.downsample = None
            if stride != 1 or in_channels != out_channels:
                self.downsample = nn.HybridSequential(prefix="down_")
                with self.downsample.name_scope():
                    self.downsample.add(_conv(out_channels, 1, stride, 1, in_channels),
                                        bn(out_channels))

    def hybrid_forward(self, F, x):
        out = F.Activation(self.bn1(self.conv1(x)), act_type="relu")
        out = F.Activation(self.bn2(self.conv2(out)), act_type="relu")
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.Activation(out + residual, act_type="relu")


class ResNetHDC(gluon.HybridBlock):
    """ResNet with output stride 8 and a dilation rate per block in stages 4 and 5.

    Parameters
    ----------
    depth : int
        18, 34, 50, 101 or 152.
    dilations : str or sequence
        See :func:`dilation_schedule`.
    variant : str
        ``'tusimple'`` or ``'v1s'`` (see the module docstring).
    base_width : int
        Width of stage 2's 3x3 conv (64 in a standard ResNet); stem and later stages scale with
        it. Narrow widths give tiny networks for tests and CPU demos.
    bn_frozen : bool
        Use the BatchNorm moving statistics in training too (the release trains this way);
        gamma and beta still learn.
    bn_eps : float, optional
        Overrides the variant's BatchNorm epsilon.
    """

    def __init__(self, depth=101, dilations="hdc", variant="tusimple", base_width=64,
                 bn_frozen=False, bn_eps=None, **kwargs):
        super().__init__(**kwargs)
        if depth not in RESNET_SPECS:
            raise ValueError("depth %r: choose one of %s" % (depth, sorted(RESNET_SPECS)))
        if variant not in VARIANTS:
            raise ValueError("variant %r: choose one of %s" % (variant, sorted(VARIANTS)))
        if not isinstance(base_width, int) or base_width < 1:
            raise ValueError("base_width must be a positive integer, got %r" % (base_width,))
        block_type, layers = RESNET_SPECS[depth]
        spec = VARIANTS[variant]
        block = BasicBlock if block_type == "basic" else Bottleneck
        self.stage_dilations = dilation_schedule(dilations, layers)
        bn = _BNFactory(spec["bn_eps"] if bn_eps is None else bn_eps, spec["bn_momentum"],
                        bn_frozen)
        scale = base_width / 64.0
        stem = [max(1, int(round(w * scale))) for w in spec["stem_widths"]]
        stride_in_1x1 = spec["stride_in_1x1"]
        with self.name_scope():
            # Child names follow GluonCV's ResNetV1b (conv1 / bn1 / layer1..4) so its ImageNet
            # weights load by structural name into the v1s variant.
            self.conv1 = nn.HybridSequential(prefix="conv1_")
            with self.conv1.name_scope():
                self.conv1.add(_conv(stem[0], 3, 2, 1, 3), bn(stem[0]), nn.Activation("relu"),
                               _conv(stem[1], 3, 1, 1, stem[0]), bn(stem[1]),
                               nn.Activation("relu"), _conv(stem[2], 3, 1, 1, stem[1]))
            self.bn1 = bn(stem[2])
            self.maxpool = nn.MaxPool2D(pool_size=3, strides=2, padding=spec["pool_pad"])
            in_channels = stem[2]
            stage_dilations = [(1,) * layers[0], (1,) * layers[1]] + list(self.stage_dilations)
            stage_strides = (1, 2, 1, 1)  # output stride 8: no stride in stages 4 and 5
            for s, (n, stride, rates) in enumerate(zip(layers, stage_strides, stage_dilations)):
                channels = int(round(base_width * 2 ** s))
                stage = nn.HybridSequential(prefix="layer%d_" % (s + 1))
                with stage.name_scope():
                    for b in range(n):
                        stage.add(block(channels, stride if b == 0 else 1, rates[b],
                                        in_channels, bn, stride_in_1x1))
                        in_channels = channels * block.expansion
                setattr(self, "layer%d" % (s + 1), stage)
        self.out_channels = in_channels
        self.layers = layers

    def hybrid_forward(self, F, x):
        x = F.Activation(self.bn1(self.conv1(x)), act_type="relu")
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)
