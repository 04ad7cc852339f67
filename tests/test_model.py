"""Network shapes, schedules, hybridization, the heads by hand and argument errors."""
import cv2
import mxnet as mx
import numpy as np
import pytest

from duc_hdc import get_model
from duc_hdc.hub.convert import architecture_from_symbol_json
from duc_hdc.models.duc import BilinearHead, padded_channels
from duc_hdc.models.network import model_names
from duc_hdc.models.resnet_hdc import RESNET_SPECS, dilation_schedule


def _x(shape, seed=0):
    return mx.nd.array(np.random.RandomState(seed).normal(0, 1, shape).astype(np.float32))


@pytest.mark.parametrize("depth", sorted(RESNET_SPECS))
@pytest.mark.parametrize("cell_width", [1, 2, 4, 8])
def test_output_shape_every_depth_and_cell_width(depth, cell_width):
    net = get_model("duc_hdc_resnet%d" % depth, classes=3, cell_width=cell_width, base_width=4)
    for h, w in [(32, 48), (40, 24)]:
        y = net(_x((2, 3, h, w)))
        assert y.shape == (2, 3, h // cell_width, w // cell_width)


@pytest.mark.parametrize("variant", ["tusimple", "v1s"])
@pytest.mark.parametrize("head", ["duc", "bilinear"])
def test_hybridized_equals_imperative(variant, head):
    net = get_model("duc_hdc_resnet50", classes=4, base_width=8, variant=variant, head=head)
    x = _x((1, 3, 48, 64))
    imperative = net(x).asnumpy()
    net.hybridize(static_alloc=True, static_shape=True)
    hybrid = net(x).asnumpy()
    np.testing.assert_allclose(hybrid, imperative, rtol=1e-4, atol=1e-4 * np.abs(imperative).max())


def test_cityscapes_recipe_matches_the_release():
    net = get_model("duc_hdc_resnet101_cityscapes")
    trainable = sum(int(np.prod(p.shape)) for p in net.collect_params().values()
                    if p.grad_req != "null")
    assert trainable == 65038464  # as the release's graph (reference README)
    assert net.classes == 19 and net.cell_width == 2
    assert net.config["variant"] == "tusimple" and net.config["bn_frozen"] is True
    bns = [b for b in _blocks(net) if isinstance(b, mx.gluon.nn.BatchNorm)]
    assert bns and all(b._kwargs["eps"] == 1e-6 and b._kwargs["use_global_stats"] for b in bns)
    convs = [b for b in _blocks(net.backbone) if isinstance(b, mx.gluon.nn.Conv2D)]
    assert all(b.bias is None for b in convs)
    assert all(b.bias is not None for b in _blocks(net.head) if isinstance(b, mx.gluon.nn.Conv2D))
    assert net.normalization == dict(mean=(122.675, 116.669, 104.008), std=None)


def _blocks(block):
    yield block
    for child in block._children.values():
        yield from _blocks(child)


def test_hdc_schedule_is_the_release_schedule(reference_symbol_path):
    arch = architecture_from_symbol_json(reference_symbol_path)
    s4, s5 = dilation_schedule("hdc", RESNET_SPECS[101][1])
    assert [list(s4), list(s5)] == arch["dilations"]
    assert s4[:4] == (2, 2, 5, 9) and s4[4:8] == (1, 2, 5, 9) and s4[-3:] == (1, 2, 5)
    assert s5 == (5, 9, 17)
    net = get_model("duc_hdc_resnet101_cityscapes")
    rates = [blk.conv2._kwargs["dilate"][0] for blk in net.backbone.layer3]
    assert rates == list(s4)


def test_named_and_explicit_schedules():
    layers = RESNET_SPECS[50][1]
    assert dilation_schedule("deeplab", layers) == ((2,) * 6, (4,) * 3)
    assert dilation_schedule("hdc", layers) == ((2, 2, 5, 9, 1, 2), (5, 9, 17))
    flat = [1, 2, 3, 1, 2, 3, 4, 5, 6]
    assert dilation_schedule(flat, layers) == ((1, 2, 3, 1, 2, 3), (4, 5, 6))
    assert dilation_schedule([[1] * 6, [2] * 3], layers) == ((1,) * 6, (2,) * 3)
    net = get_model("duc_hdc_resnet50", classes=2, base_width=4, dilations=flat)
    assert [b.conv2._kwargs["dilate"][0] for b in net.backbone.layer4] == [4, 5, 6]
    with pytest.raises(ValueError, match="3 rates given, the backbone has 9 blocks"):
        dilation_schedule([1, 2, 3], layers)
    with pytest.raises(ValueError, match="unknown dilation schedule 'foo'"):
        dilation_schedule("foo", layers)
    with pytest.raises(ValueError, match="integer >= 1"):
        dilation_schedule([0] * 9, layers)


def test_tusimple_stride_placement():
    net = get_model("duc_hdc_resnet50", classes=2, base_width=8, variant="tusimple")
    first = net.backbone.layer2[0]
    assert first.conv1._kwargs["stride"] == (2, 2) and first.conv2._kwargs["stride"] == (1, 1)
    assert first.downsample[0]._kwargs["stride"] == (2, 2)
    v1s = get_model("duc_hdc_resnet50", classes=2, base_width=8, variant="v1s")
    first = v1s.backbone.layer2[0]
    assert first.conv1._kwargs["stride"] == (1, 1) and first.conv2._kwargs["stride"] == (2, 2)


def test_v1s_backbone_matches_gluoncv_imagenet_layout():
    """The v1s variant's backbone parameters are GluonCV resnet50_v1s's, by name and shape."""
    from gluoncv.model_zoo import get_model as gcv_get_model

    ref = gcv_get_model("resnet50_v1s", pretrained=False)
    ref.initialize()
    ref(mx.nd.zeros((1, 3, 32, 32)))
    ref_params = {k: v.shape for k, v in ref._collect_params_with_prefix().items()}
    net = get_model("duc_hdc_resnet50", classes=2, variant="v1s")
    ours = {k[len("backbone."):]: v.shape for k, v in net._collect_params_with_prefix().items()
            if k.startswith("backbone.")}
    assert set(ours) == set(ref_params) - {"fc.weight", "fc.bias"}
    assert all(ours[k] == ref_params[k] for k in ours)


def test_cell_width_one_skips_rearrangement_and_bilinear_baseline_shape():
    net = get_model("duc_hdc_resnet18", classes=3, base_width=4, cell_width=8)
    assert net(_x((1, 3, 32, 32))).shape == (1, 3, 4, 4)
    base = get_model("duc_hdc_resnet18", classes=3, base_width=4, head="bilinear")
    assert base(_x((1, 3, 32, 64))).shape == (1, 3, 16, 32)


def test_duc_rearrangement_is_depth_to_space_order():
    """Channel (i*r + j)*C + c of the head lands at sub-pixel (i, j) of class c."""
    net = get_model("duc_hdc_resnet18", classes=2, base_width=4, cell_width=4, aspp_rates=[1])
    r, classes = 2, 2
    feats = mx.nd.zeros((1, net.backbone.out_channels, 1, 1))
    branch = net.head.branches[0]
    branch.weight.set_data(mx.nd.zeros(branch.weight.shape))
    bias = np.arange(classes * r * r, dtype=np.float32)
    branch.bias.set_data(mx.nd.array(bias))
    out = net.head(feats).asnumpy()[0]
    for c in range(classes):
        for i in range(r):
            for j in range(r):
                assert out[c, i, j] == bias[(i * r + j) * classes + c]


def _dilated_conv(x, weight, bias, rate):
    """3x3 convolution, dilation = padding = rate, by hand: (C, H, W) -> (O, H, W)."""
    c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (rate, rate), (rate, rate)))
    out = np.repeat(bias[:, None, None], h * w).reshape(-1, h, w).astype(np.float64)
    for i in range(3):
        for j in range(3):
            patch = xp[:, i * rate:i * rate + h, j * rate:j * rate + w]
            out += np.einsum("oc,chw->ohw", weight[:, :, i, j], patch)
    return out


def _corner_aligned(n_in, n_out):
    """Linear interpolation matrix (n_out, n_in), corners aligned: output i samples input
    position i * (n_in - 1) / (n_out - 1)."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        pos = i * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        lo = min(int(np.floor(pos)), n_in - 1)
        hi = min(lo + 1, n_in - 1)
        m[i, lo] += 1 - (pos - lo)
        m[i, hi] += pos - lo
    return m


def test_bilinear_upsampling_is_corner_aligned_by_hand():
    # 2x3 -> 4x6: rows sample 0, 1/3, 2/3, 1; columns 0, 0.4, ..., 2
    head = BilinearHead(1, 2, aspp_rates=[1], in_channels=1)
    head.initialize()
    head.branches[0].weight.set_data(mx.nd.zeros((1, 1, 3, 3)))
    head.branches[0].bias.set_data(mx.nd.zeros(1))
    up = mx.nd.contrib.BilinearResize2D(mx.nd.arange(6).reshape((1, 1, 2, 3)),
                                        scale_height=2.0, scale_width=2.0).asnumpy()[0, 0]
    np.testing.assert_allclose(up[0], [0, 0.4, 0.8, 1.2, 1.6, 2.0], atol=1e-6)
    np.testing.assert_allclose(up[:, 0], [0, 1, 2, 3], atol=1e-6)
    np.testing.assert_allclose(up, _corner_aligned(2, 4) @ np.arange(6.).reshape(2, 3)
                               @ _corner_aligned(3, 6).T, atol=1e-6)


@pytest.mark.parametrize("cell_width", [2, 4, 8])
def test_bilinear_head_equals_a_numpy_computation(cell_width):
    """The baseline head: the branches' dilated 3x3 convolutions summed, then bilinear
    upsampling by r = 8 / cell_width with corners aligned (BilinearResize2D's default; not the
    pixel-centre convention of cv2.resize the Segmenter uses for the softmax)."""
    classes, cin, h, w, rates = 3, 5, 3, 4, (1, 2)
    r = 8 // cell_width
    head = BilinearHead(classes, r, aspp_rates=rates, in_channels=cin)
    head.initialize()
    rng = np.random.RandomState(7)
    for b in head.branches:
        b.weight.set_data(mx.nd.array(rng.normal(0, 1, b.weight.shape)))
        b.bias.set_data(mx.nd.array(rng.normal(0, 1, b.bias.shape)))
    x = rng.normal(0, 1, (cin, h, w)).astype(np.float32)
    logits = sum(_dilated_conv(x.astype(np.float64), b.weight.data().asnumpy(),
                               b.bias.data().asnumpy(), rate)
                 for b, rate in zip(head.branches, rates))
    if r == 1:
        want = logits
    else:
        rows, cols = _corner_aligned(h, h * r), _corner_aligned(w, w * r)
        want = np.einsum("yi,cij,xj->cyx", rows, logits, cols)
    for hybrid in (False, True):
        if hybrid:
            head.hybridize()
        got = head(mx.nd.array(x[None])).asnumpy()[0]
        assert got.shape == (classes, h * r, w * r)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # and not the pixel-centre resize: the two differ away from the corners
    if r > 1:
        centred = np.stack([cv2.resize(c.astype(np.float32), (w * r, h * r),
                                       interpolation=cv2.INTER_LINEAR) for c in logits])
        assert np.abs(centred - want).max() > 1e-2


@pytest.mark.parametrize("channels, padded", [
    (304, 320), (152, 160), (320, 320), (336, 336), (240, 240), (80, 80), (76, 76), (2, 2),
    (1216, 1216), (608, 608), (1200, 1200), (1232, 1248)])
def test_head_channel_padding_rule(channels, padded):
    """Multiples of 32 or 48 stay; others round up to 32 unless that adds over an eighth."""
    assert padded_channels(channels) == padded


@pytest.mark.parametrize("head", ["duc", "bilinear"])
def test_padded_head_equals_the_unpadded_branch_sum(head):
    # 19 classes x 16 sub-pixels = 304 channels, computed as 320 (duc); bilinear: 19 stays
    net = get_model("duc_hdc_resnet18", classes=19, base_width=4, head=head)
    wanted = 304 if head == "duc" else 19
    branches = list(net.head.branches)
    assert all(b.weight.shape[0] == wanted and b.bias.shape == (wanted,) for b in branches)
    assert [getattr(b, "padded", wanted) for b in branches] == [padded_channels(wanted)] * 4
    feats = _x((2, net.backbone.out_channels, 7, 9), seed=3)
    rng = np.random.RandomState(4)
    for b in branches:  # non-zero biases: the padding must not shift any channel
        b.bias.set_data(mx.nd.array(rng.normal(0, 1, wanted)))
    want = 0
    for b, rate in zip(branches, (6, 12, 18, 24)):
        want = want + mx.nd.Convolution(feats, b.weight.data(), b.bias.data(), kernel=(3, 3),
                                        dilate=(rate, rate), pad=(rate, rate),
                                        num_filter=wanted).asnumpy()
    if head == "duc":
        want = mx.nd.depth_to_space(mx.nd.array(want), 4).asnumpy()
    for hybrid in (False, True):
        if hybrid:
            net.head.hybridize()
        got = net.head(feats)
        if head == "bilinear":
            assert got.shape == (2, 19, 28, 36)
            continue
        np.testing.assert_allclose(got.asnumpy(), want, rtol=1e-4, atol=1e-4)
    # gradients reach the (unpadded) weights through the padding
    net.head.hybridize(False)
    with mx.autograd.record():
        loss = net.head(feats).sum()
    loss.backward()
    assert all(float(b.weight.grad().abs().sum().asscalar()) > 0 for b in branches)


def test_weights_trained_unpadded_load_into_the_padded_network(tmp_path):
    """duc-hdc train builds the head unpadded; inference builds it padded: same parameters."""
    from duc_hdc.training.trainer import build_network

    trained = get_model("duc_hdc_resnet18", classes=19, base_width=4, head_padding=False)
    assert not any(hasattr(b, "padded") for b in trained.head.branches)
    path = str(tmp_path / "w.params")
    trained.save_parameters(path)
    served = get_model("duc_hdc_resnet18", classes=19, base_width=4)
    served.load_parameters(path)
    assert {b.padded for b in served.head.branches} == {320}
    x = _x((1, 3, 48, 64), seed=5)
    np.testing.assert_allclose(served(x).asnumpy(), trained(x).asnumpy(), rtol=1e-4, atol=1e-4)
    # and the training loop builds the unpadded head
    from duc_hdc.config import load_config

    cfg = load_config("synthetic", ["model.classes=19", "model.base_width=4",
                                    "model.cell_width=2"])
    net = build_network(cfg, mx.cpu())
    assert not any(hasattr(b, "padded") for b in net.head.branches)


@pytest.mark.parametrize("kwargs, message", [
    (dict(classes=0), "classes must be an integer >= 1"),
    (dict(classes=3, cell_width=3), "cell_width must divide 8"),
    (dict(classes=3, aspp_rates=[]), "at least one"),
    (dict(classes=3, head="fcn"), "head 'fcn'"),
    (dict(classes=3, variant="v1c"), "variant 'v1c'"),
    (dict(classes=3, colour="red"), "unknown model setting"),
])
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        get_model("duc_hdc_resnet18", base_width=4, **kwargs)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        get_model("duc_hdc_resnet99", classes=3)
    for name in model_names():
        assert name in str(err.value)


def test_generic_name_needs_classes():
    with pytest.raises(ValueError, match="pass classes=N"):
        get_model("duc_hdc_resnet18")


def test_input_sizes_not_multiple_of_8_are_rejected():
    net = get_model("duc_hdc_resnet18", classes=3, base_width=4)
    with pytest.raises(ValueError, match="multiples of 8, got 36x48"):
        net(_x((1, 3, 36, 48)))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        net(_x((1, 1, 32, 32)))
    net.hybridize()
    with pytest.raises(ValueError, match="multiples of 8"):
        net(_x((1, 3, 32, 30)))


def test_recipes_build():
    for name, classes in [("duc_resnet152_voc", 21), ("duc_hdc_resnet101_kitti_road", 2)]:
        net = get_model(name, base_width=4)
        assert net.classes == classes
        assert net(_x((1, 3, 32, 32))).shape == (1, classes, 16, 16)
