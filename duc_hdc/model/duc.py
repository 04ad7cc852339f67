"""Dense upsampling convolution (Section 3.1 of Wang et al., WACV 2018) and the bilinear baseline.

DUC predicts, for every cell of the stride-8 feature map, an r x r patch of labels as
``classes * r * r`` channels and rearranges them into a map r times larger (r = 8 / cell_width).

Channel order: ours is ``depth_to_space``'s, channel ``(i * r + j) * classes + c`` holds class c
at sub-pixel (i, j). The original release orders them ``c * r * r + i * r + j`` and rearranges
with Reshape codes that mxnet's ONNX exporter rejects; :mod:`duc_hdc.convert` permutes the
release's head weights into our order, so the two compute the same map.
"""
import mxnet as mx
from mxnet import gluon
from mxnet.gluon import nn


class _BranchSum(gluon.HybridBlock):
    """Parallel dilated 3x3 convs on the backbone output, summed (the head of both variants)."""

    def __init__(self, channels, aspp_rates, in_channels, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.branches = nn.HybridSequential(prefix="")
            for i, rate in enumerate(aspp_rates):
                self.branches.add(nn.Conv2D(channels, 3, padding=rate, dilation=rate,
                                            in_channels=in_channels, use_bias=True,
                                            weight_initializer=mx.init.Xavier(),
                                            prefix="c%d_" % i))

    def _branch_sum(self, F, x):
        outs = [branch(x) for branch in self.branches]
        return outs[0] if len(outs) == 1 else F.add_n(*outs)


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
    """

    def __init__(self, classes, upscale, aspp_rates=(6, 12, 18, 24), in_channels=0, **kwargs):
        super().__init__(classes * upscale * upscale, aspp_rates, in_channels, **kwargs)
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

    def __init__(self, classes, upscale, aspp_rates=(6, 12, 18, 24), in_channels=0, **kwargs):
        super().__init__(classes, aspp_rates, in_channels, **kwargs)
        self.classes = classes
        self.upscale = upscale

    def hybrid_forward(self, F, x):
        x = self._branch_sum(F, x)
        if self.upscale == 1:
            return x
        # scale factors, not a target shape: one graph serves every input size
        return F.contrib.BilinearResize2D(x, scale_height=float(self.upscale),
                                          scale_width=float(self.upscale))
