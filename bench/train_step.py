"""Training step time: our Cityscapes model vs the original graph on mx.mod.Module, same run.

Forward, backward and SGD update (momentum 0.9, wd 5e-5, clip 5) of ResNet-101-DUC-HDC at the
same crop and batch, alternated in one process; prints the median step time of each and the
ratio ours / original (goal <= 1.0). With ``--amp bfloat16`` ours trains with MXNet AMP in
bfloat16 (AMX / AVX512_BF16 CPUs; goal <= 0.6 of the original graph's fp32 step): AMP patches
the operators process-wide, so that run compares the original fp32 graph (loaded from JSON,
untouched by AMP) with ours in bf16 only.

Ours is built as ``duc-hdc train`` builds it: the head unpadded, its centre taps merged in fp32
(``duc_hdc.training.build.training_merge``). ``--both-heads`` adds ours with the other head
(merged in bf16, plain in fp32) to the same run.

``--head-only`` times the DUC head alone instead (forward and backward on the stride-8 map of
the crop, 2048 -> 304 channels, rates 6, 12, 18, 24): plain against merged.

    python bench/train_step.py --crop 512,512 --rounds 5 --both-heads
    python bench/train_step.py --crop 512,512 --rounds 3 --amp bfloat16
    python bench/train_step.py --crop 512,512 --rounds 7 --head-only --amp bfloat16
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import duc_hdc  # noqa: E402,F401  (OMP_NUM_THREADS before mxnet)
import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from mxnet import autograd, gluon  # noqa: E402

from common import alternate, machine, print_table, reference_symbol, summarize  # noqa: E402
from duc_hdc import get_model  # noqa: E402
from duc_hdc.models.duc import DUCHead  # noqa: E402
from duc_hdc.training.build import training_merge  # noqa: E402
from duc_hdc.training.checkpoints import gradient_sum_sq  # noqa: E402
from duc_hdc.training.trainer import SegmentationLoss, attach_loss_scaler  # noqa: E402


def original_step(crop, batch):
    sym = mx.sym.load(reference_symbol())
    h, w = crop
    label_len = 16 * (h // 8) * (w // 8)
    mod = mx.mod.Module(sym, data_names=["data"], label_names=["seg_loss_label"],
                        context=mx.cpu())
    mod.bind(data_shapes=[("data", (batch, 3, h, w))],
             label_shapes=[("seg_loss_label", (batch, label_len))])
    mod.init_params(mx.init.Xavier())
    mod.init_optimizer(optimizer="sgd", optimizer_params=dict(
        learning_rate=1e-4, momentum=0.9, wd=5e-5, clip_gradient=5.0, rescale_grad=1.0))
    rng = np.random.RandomState(0)
    data = mx.nd.array(rng.normal(0, 50, (batch, 3, h, w)))
    label = mx.nd.array(rng.randint(0, 19, (batch, label_len)))
    db = mx.io.DataBatch([data], [label])

    def step():
        mod.forward_backward(db)
        mod.update()
        mx.nd.waitall()
    return step


def train_merges(amp_dtype):
    """Whether ``duc-hdc train`` merges the head's centre taps for this AMP dtype on CPU."""
    return training_merge({"train": {"amp": amp_dtype or False}}, [mx.cpu()])


def ours_step(crop, batch, amp_dtype=None, merge=None):
    h, w = crop
    if merge is None:
        merge = train_merges(amp_dtype)
    net = get_model("duc_hdc_resnet101_cityscapes", head_padding=False, head_merge=merge)
    print("ours%s: head %s" % (", " + amp_dtype if amp_dtype else "",
                               "merged" if net.head.merge_step else "plain"))
    net.hybridize(static_alloc=True, static_shape=True)
    loss_fn = SegmentationLoss()
    loss_fn.hybridize()
    trainer = gluon.Trainer(net.collect_params(), "sgd", dict(
        learning_rate=1e-4, momentum=0.9, wd=5e-5, clip_gradient=5.0))
    attach_loss_scaler(trainer, amp_dtype)  # as duc-hdc train: none for bfloat16
    rng = np.random.RandomState(0)
    data = mx.nd.array(rng.normal(0, 50, (batch, 3, h, w)))
    label = mx.nd.array(rng.randint(0, 19, (batch, h // 2, w // 2)))

    def step():
        with autograd.record():
            loss = loss_fn(net(data), label)
        loss.backward()
        # as duc-hdc train: the loss and the gradient norm read before the update
        loss.asnumpy(), gradient_sum_sq(trainer._params, [mx.cpu()]).asnumpy()
        trainer.step(1)
        mx.nd.waitall()
    return step


def head_step(crop, batch, merge):
    """Forward and backward of the Cityscapes DUC head alone, unpadded as in training."""
    head = DUCHead(19, 4, (6, 12, 18, 24), in_channels=2048, pad_channels=False,
                   merge_taps=merge)
    head.initialize(mx.init.Xavier())
    head.hybridize(static_alloc=True, static_shape=True)
    x = mx.nd.array(np.random.RandomState(0).normal(
        0, 1, (batch, 2048, crop[0] // 8, crop[1] // 8)))
    x.attach_grad()

    def step():
        with autograd.record():
            y = head(x)
        y.backward()
        mx.nd.waitall()
    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--crop", default="512,512", help="H,W (the release trains 800,800)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--amp", choices=("bfloat16",), help="ours in bf16 AMP (see above)")
    p.add_argument("--both-heads", action="store_true",
                   help="also ours with the head duc-hdc train does not build (see above)")
    p.add_argument("--head-only", action="store_true",
                   help="the DUC head alone, plain against merged (see above)")
    args = p.parse_args(argv)
    crop = tuple(int(v) for v in args.crop.split(","))
    print("machine: %s" % machine())
    if args.head_only:
        if args.amp:
            from mxnet.contrib import amp

            amp.init(target_dtype=args.amp)
        times = alternate({"plain head": head_step(crop, args.batch, False),
                           "merged head": head_step(crop, args.batch, True)}, args.rounds)
        rows = summarize(times, "plain head")
        print_table("DUC head forward + backward, %s, %dx%d map (ratio to the plain head)"
                    % (args.amp or "fp32", crop[0] // 8, crop[1] // 8), rows)
        return rows
    print("ResNet-101-DUC-HDC training step, crop %dx%d, batch %d" % (crop + (args.batch,)))
    original = original_step(crop, args.batch)  # built before AMP patches the operators
    if args.amp:
        from mxnet.contrib import amp

        amp.init(target_dtype=args.amp)
        name = "ours, %s AMP" % args.amp
        goal = "goal <= 0.6"
    else:
        name = "ours (Gluon, hybridized)"
        goal = "goal <= 1.0"
    candidates = {"original graph (Module), fp32": original,
                  name: ours_step(crop, args.batch, args.amp)}
    if args.both_heads:
        merged = train_merges(args.amp)
        candidates[name + (", plain head" if merged else ", merged head")] = ours_step(
            crop, args.batch, args.amp, not merged)
    times = alternate(candidates, args.rounds)
    rows = summarize(times, "original graph (Module), fp32")
    print_table("training step (ratio to the original graph; %s)" % goal, rows)
    return rows


if __name__ == "__main__":
    main()
