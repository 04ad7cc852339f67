"""Dense upsampling convolution (Section 3.1 of Wang et al., WACV 2018) and the bilinear baseline.

DUC predicts, for every cell of the stride-8 feature map, an r x r patch of labels as
``classes * r * r`` channels and rearranges them into a map r times larger (r = 8 / cell_width).

Channel order: ours is ``depth_to_space``'s, channel ``(i * r + j) * classes + c`` holds class c
at sub-pixel (i, j). The original release orders them ``c * r * r + i * r + j`` and rearranges
with Reshape codes that mxnet's ONNX exporter rejects; :mod:`duc_hdc.hub.convert` permutes the
release's head weights into our order, so the two compute the same map.
"""
import mxnet as mx
from mxnet import gluon
from mxnet.gluon import nn


def padded_channels(channels):
    """How many output channels the head's convolutions compute for ``channels`` wanted.

    ``channels`` rounded up to a multiple of 32, unless it already is a multiple of 32 or 48
    or rounding would add more than an eighth. The extra channels have zero weights and are
    sliced off after the branch sum, so the output is unchanged.

    Why: oneDNN (MXNet 1.9's MKLDNN) runs a 3x3 convolution on its AVX-512 ``brgconv``
    kernels only when the output channels split into blocks of 32, 48 or 64, and otherwise
    falls back to older kernels. The Cityscapes head has 19 classes x 16 sub-pixels = 304
    channels (= 16 x 19): its four dilated branches ran 925 ms at 304 channels and 717 ms at
    320 on the 64 x 128 map of a 512 x 1024 image, 4.87 s and 3.22 s on the 128 x 256 map of
    1024 x 2048 (AMD EPYC, 2 cores; ``bench/inference.py``). Elsewhere (cuDNN, oneDNN on
    AVX2, oneDNN's training kernels) nothing is gained, and the head costs at most an eighth
    more multiply-adds (304 -> 320: 5%).
    """
    if channels % 32 == 0 or channels % 48 == 0:
        return channels
    up = -(-channels // 32) * 32
    return up if (up - channels) * 8 <= channels else channels


class PaddedConv2D(nn.Conv2D):
    """A ``Conv2D`` that computes ``padded_channels(channels)`` outputs, the extra ones zero.

    Its parameters keep the shapes of a plain ``Conv2D(channels, ...)`` (checkpoints, the
    release converter and parameter counts are unaffected); the zero rows are appended to
    weight and bias inside the graph (``zeros_like`` of a slice: no shape arithmetic, so one
    exported graph serves every input size, and ONNX runtimes fold it into a constant).
    """

    def __init__(self, channels, *args, **kwargs):
        super().__init__(channels, *args, **kwargs)
        self.padded = padded_channels(channels)
        self._kwargs["num_filter"] = self.padded

    def hybrid_forward(self, F, x, weight, bias=None):
        extra = self.padded - self._channels
        if extra:
            weight = F.concat(weight, F.zeros_like(F.slice_axis(weight, axis=0, begin=0,
                                                                end=extra)), dim=0)
            if bias is not None:
                bias = F.concat(bias, F.zeros_like(F.slice_axis(bias, axis=0, begin=0,
                                                                end=extra)), dim=0)
        if bias is None:
            return F.Convolution(x, weight, name="fwd", **self._kwargs)
        return F.Convolution(x, weight, bias, name="fwd", **self._kwargs)


class _BranchSum(gluon.HybridBlock):
    """Parallel dilated 3x3 convs on the backbone output, summed (the head of both variants).

    The sum is a chain of two-input additions (not one ``add_n``): MKLDNN's subgraph pass fuses
    each into the convolution that produces its second input (an in-place ``sum`` post-op).
    With ``pad_channels`` the branches are :class:`PaddedConv2D` (see :func:`padded_channels`).
    """

    def __init__(self, channels, aspp_rates, in_channels, pad_channels=True, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        # deferred shape inference cannot see through the padding: it needs in_channels
        conv = PaddedConv2D if pad_channels and in_channels else nn.Conv2D
        self.computed = padded_channels(channels) if conv is PaddedConv2D else channels
        with self.name_scope():
            self.branches = nn.HybridSequential(prefix="")
            for i, rate in enumerate(aspp_rates):
                self.branches.add(conv(channels, 3, padding=rate, dilation=rate,
                                       in_channels=in_channels, use_bias=True,
                                       weight_initializer=mx.init.Xavier(),
                                       prefix="c%d_" % i))

    def _branch_sum(self, F, x):
        total = None
        for branch in self.branches:
            out = branch(x)
            total = out if total is None else F.elemwise_add(total, out)
        if self.computed != self.channels:
            total = F.slice_axis(total, axis=1, begin=0, end=self.channels)
        return total


class DUCHead(_BranchSum):
    """Parallel dilated 3x3 convs (ASPP-style), summed, then rearranged by depth_to_space.

    Parameters
    ----------
    classes : int
        Number of output classes.
    upscale : int
        r = 8 / cell_width: sub-pixels per feature-map cell along each axis.
    aspp_rates : sequence of int
        Dilation of each branch (the release: 6, 12, 18, 24).
    in_channels : int
        Channels of the backbone output.
    pad_channels : bool
        Compute the branches with output channels padded to oneDNN's fast-kernel blocks
        (:func:`padded_channels`; same output).
    """

    def __init__(self, classes, upscale, aspp_rates=(6, 12, 18, 24), in_channels=0,
                 pad_channels=True, **kwargs):
        super().__init__(classes * upscale * upscale, aspp_rates, in_channels, pad_channels,
                         **kwargs)
        self.classes = classes
        self.upscale = upscale

    def hybrid_forward(self, F, x):
        x = self._branch_sum(F, x)
        if self.upscale == 1:
            return x
        return F.depth_to_space(x, block_size=self.upscale)


class BilinearHead(_BranchSum):
    """The paper's baseline: the same branches to ``classes`` channels, then bilinear upsampling.

    Produces the same output size as a DUC head with the same cell width, so the two can be
    swapped for ablations (Table 1 of the paper).
    """

    def __init__(self, classes, upscale, aspp_rates=(6, 12, 18, 24), in_channels=0,
                 pad_channels=True, **kwargs):
        super().__init__(classes, aspp_rates, in_channels, pad_channels, **kwargs)
        self.classes = classes
        self.upscale = upscale

    def hybrid_forward(self, F, x):
        x = self._branch_sum(F, x)
        if self.upscale == 1:
            return x
        # scale factors, not a target shape: one graph serves every input size
        return F.contrib.BilinearResize2D(x, scale_height=float(self.upscale),
                                          scale_width=float(self.upscale))
