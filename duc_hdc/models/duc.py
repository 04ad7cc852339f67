"""Dense upsampling convolution (Section 3.1 of Wang et al., WACV 2018) and the bilinear baseline.

DUC predicts, for every cell of the stride-8 feature map, an r x r patch of labels as
``classes * r * r`` channels and rearranges them into a map r times larger (r = 8 / cell_width).

Channel order: ours is ``depth_to_space``'s, channel ``(i * r + j) * classes + c`` holds class c
at sub-pixel (i, j). The original release orders them ``c * r * r + i * r + j`` and rearranges
with Reshape codes that mxnet's ONNX exporter rejects; :mod:`duc_hdc.hub.convert` permutes the
release's head weights into our order, so the two compute the same map.
"""
import os

import mxnet as mx
from mxnet import gluon
from mxnet.gluon import nn


def merge_state(environ=None):
    """``(on, reason)``: whether the head's branches compute their shared centre tap once, in
    training (``head_merge``) and in the fp32, bf16 and int8 inference graphs
    (:mod:`duc_hdc.inference.merging`); the line ``duc-hdc env`` and ``duc-hdc benchmark``
    print. ``DUC_HDC_NO_MERGE=1`` turns it off everywhere (for comparisons)."""
    environ = os.environ if environ is None else environ
    if environ.get("DUC_HDC_NO_MERGE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False, "off (DUC_HDC_NO_MERGE is set)"
    return True, ("on (the DUC head's branches as one middle-row convolution plus one "
                  "top-and-bottom convolution each: the shared centre tap computed once)")


def merging_enabled(environ=None):
    """False when ``DUC_HDC_NO_MERGE`` is set to 1 / true / yes / on."""
    return merge_state(environ)[0]


def progression_step(rates):
    """``g`` when the rates are ``g, 2g, ..., kg`` in some order with k >= 2, else None: then
    the branches' middle rows together read every column ``-kg, ..., kg`` (no zero taps)."""
    rates = sorted(rates)
    g = rates[0] if rates else 0
    if len(rates) < 2 or rates != [g * (j + 1) for j in range(len(rates))]:
        return None
    return g


def merged_row(F, middles):
    """The ``1 x (2k+1)`` row kernel (dilation ``g``) of branches of rates ``g, 2g, ..., kg``
    from their middle rows ``(O, I, 1, 3)``, given in that rate order: column ``k + j*m``
    holds tap ``j`` (-1, 0, 1) of the branch of rate ``m*g``, the centre column the sum of
    the k centre taps. ``F`` is ``mx.sym`` (the training graph) or ``mx.nd`` (the inference
    pass, :mod:`duc_hdc.inference.merging`). Only ``split``, ``concat`` and ``add_n``: their
    backward passes copy each gradient once."""
    pieces = [F.split(middle, num_outputs=3, axis=3) for middle in middles]
    return F.concat(*([left for left, _, _ in reversed(pieces)]
                      + [F.add_n(*[centre for _, centre, _ in pieces])]
                      + [right for _, _, right in pieces]), dim=3)


def _zero_rows(F, array, extra):
    """``array`` with ``extra`` zero rows appended along axis 0 (no shape arithmetic)."""
    return F.concat(array, F.zeros_like(F.slice_axis(array, axis=0, begin=0, end=extra)), dim=0)


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
            weight = _zero_rows(F, weight, extra)
            if bias is not None:
                bias = _zero_rows(F, bias, extra)
        if bias is None:
            return F.Convolution(x, weight, name="fwd", **self._kwargs)
        return F.Convolution(x, weight, bias, name="fwd", **self._kwargs)


class _BranchSum(gluon.HybridBlock):
    """Parallel dilated 3x3 convs on the backbone output, summed (the head of both variants).

    The sum is a chain of two-input additions (not one ``add_n``): MKLDNN's subgraph pass fuses
    each into the convolution that produces its second input (an in-place ``sum`` post-op).
    With ``pad_channels`` the branches are :class:`PaddedConv2D` (see :func:`padded_channels`).

    With ``merge_taps`` and rates ``g, 2g, ..., kg`` the same sum is computed as one
    ``1 x (2k+1)`` convolution of the branches' middle rows (dilation ``(1, g)``, the k centre
    taps summed, the biases summed) plus one ``2 x 3`` convolution of each branch's top and
    bottom rows (dilation ``(2d, d)``): ``9k - (k - 1)`` taps instead of ``9k``, the layout
    :mod:`duc_hdc.inference.merging` gives the inference graphs. Here the merged weights are
    built inside the graph from the branches' own parameters (splits and concatenations, so
    gradients flow back to them): the parameters, their names and checkpoints are those of the
    plain head. ``duc-hdc train`` turns it on for fp32 training on CPUs, where the head's
    forward and backward pass took 0.93-0.96 of the plain head's time (see
    :func:`duc_hdc.training.build.training_merge`).
    """

    def __init__(self, channels, aspp_rates, in_channels, pad_channels=True, merge_taps=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        # deferred shape inference cannot see through the padding: it needs in_channels
        conv = PaddedConv2D if pad_channels and in_channels else nn.Conv2D
        self.computed = padded_channels(channels) if conv is PaddedConv2D else channels
        # the merged weights are built from the branch weights: their shapes must be known
        self.merge_step = progression_step(aspp_rates) if merge_taps and in_channels else None
        with self.name_scope():
            self.branches = nn.HybridSequential(prefix="")
            for i, rate in enumerate(aspp_rates):
                self.branches.add(conv(channels, 3, padding=rate, dilation=rate,
                                       in_channels=in_channels, use_bias=True,
                                       weight_initializer=mx.init.Xavier(),
                                       prefix="c%d_" % i))

    def _branch_sum(self, F, x):
        if self.merge_step is not None:
            total = self._merged_sum(F, x)
        else:
            total = None
            for branch in self.branches:
                out = branch(x)
                total = out if total is None else F.elemwise_add(total, out)
        if self.computed != self.channels:
            total = F.slice_axis(total, axis=1, begin=0, end=self.channels)
        return total

    def _merged_sum(self, F, x):
        """The branch sum as a middle-row convolution plus one top-and-bottom one per branch.

        The merged weights are cut with ``split`` and joined with ``concat`` only: their
        backward passes copy each gradient once, where ``slice`` would fill a zero array of
        the whole weight per tap (measured: 150 ms more per head step in bf16 AMP)."""
        g = self.merge_step
        k = len(self.branches)
        parts = {}  # multiple m of g -> the pieces of the branch of rate m * g
        for i, branch in enumerate(self.branches):
            if F is mx.sym:
                weight, bias = branch.weight.var(), branch.bias.var()
            else:
                weight, bias = branch.weight.data(x.context), branch.bias.data(x.context)
            top, middle, bottom = F.split(weight, num_outputs=3, axis=2)
            parts[branch._kwargs["dilate"][0] // g] = dict(
                index=i, kwargs=branch._kwargs, middle=middle,
                top_bottom=F.concat(top, bottom, dim=2), bias=bias)
        extra = self.computed - self.channels

        def padded(array):
            return _zero_rows(F, array, extra) if extra else array

        multiples = range(1, k + 1)
        row = merged_row(F, [parts[m]["middle"] for m in multiples])
        bias = F.add_n(*[parts[m]["bias"] for m in multiples])
        base = dict(parts[1]["kwargs"], no_bias=False)
        total = F.Convolution(x, padded(row), padded(bias),
                              name="c%d_fwd_row" % parts[1]["index"],
                              **dict(base, kernel=(1, 2 * k + 1), dilate=(1, g),
                                     pad=(0, k * g)))
        for m in multiples:
            d = m * g
            out = F.Convolution(x, padded(parts[m]["top_bottom"]),
                                name="c%d_fwd_tb" % parts[m]["index"],
                                **dict(base, kernel=(2, 3), dilate=(2 * d, d), pad=(d, d),
                                       no_bias=True))
            total = F.elemwise_add(total, out)
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
    merge_taps : bool
        Compute the branches' shared centre tap once (see :class:`_BranchSum`; same output,
        same parameters).
    """

    def __init__(self, classes, upscale, aspp_rates=(6, 12, 18, 24), in_channels=0,
                 pad_channels=True, merge_taps=False, **kwargs):
        super().__init__(classes * upscale * upscale, aspp_rates, in_channels, pad_channels,
                         merge_taps, **kwargs)
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
                 pad_channels=True, merge_taps=False, **kwargs):
        super().__init__(classes, aspp_rates, in_channels, pad_channels, merge_taps, **kwargs)
        self.classes = classes
        self.upscale = upscale

    def hybrid_forward(self, F, x):
        x = self._branch_sum(F, x)
        if self.upscale == 1:
            return x
        # scale factors, not a target shape: one graph serves every input size
        return F.contrib.BilinearResize2D(x, scale_height=float(self.upscale),
                                          scale_width=float(self.upscale))
