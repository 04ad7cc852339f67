"""The training loss: softmax cross-entropy over pixels with an ignore label."""
from mxnet import gluon


class SegmentationLoss(gluon.HybridBlock):
    """Softmax cross-entropy over pixels, ignoring ``ignore_label``, averaged over valid pixels.

    The release's ``SoftmaxOutput(multi_output, use_ignore, normalization='valid')``: its
    gradient ``(softmax - onehot) * valid / num_valid`` is this loss's gradient.
    """

    def __init__(self, ignore_label=255, **kwargs):
        super().__init__(**kwargs)
        self.ignore_label = ignore_label

    def hybrid_forward(self, F, pred, label):
        valid = label != self.ignore_label
        target = F.where(valid, label, F.zeros_like(label))
        nll = -F.pick(F.log_softmax(pred, axis=1), target, axis=1)
        return F.sum(nll * valid) / F.maximum(F.sum(valid), 1.0)
