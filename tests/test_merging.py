"""The head's centre taps computed once (duc_hdc.inference.merging)."""
import json
import re

import mxnet as mx
import numpy as np
import pytest

from duc_hdc import runtime
from duc_hdc.inference import bf16 as bf16_module
from duc_hdc.inference import graphs
from duc_hdc.inference.benchmark import count_flops, format_report
from duc_hdc.inference.compiled import symbol_block
from duc_hdc.inference.folding import inference_graph
from duc_hdc.inference.graphs import conv_summary, inference_runner
from duc_hdc.inference.merging import merge_branch_taps, merge_state, merging_enabled
from test_optimize import _net as optimize_net  # the tiny network with non-trivial BatchNorms

BF16 = runtime.bf16_support() is not None


def _net(rates, seed=0):
    """ResNet-18-DUC-HDC at width 8 (the head reads 64 channels, 19 x 16 -> 320 outputs)."""
    return optimize_net(seed, classes=19, aspp_rates=rates)


def _head_convs(sym):
    return [n for n in json.loads(sym.tojson())["nodes"]
            if n["op"] == "Convolution" and "head" in n["name"]]


def _rel(want, got):
    return float(np.abs(want - got).max() / np.abs(want).max())


def _x(shape, seed=1):
    return mx.nd.array(np.random.RandomState(seed).uniform(-2, 2, shape).astype("float32"))


@pytest.mark.parametrize("rates", [(1, 2, 3), (2, 4, 6, 8), (6, 12, 18, 24)])
def test_merged_head_computes_the_same_with_fewer_taps(rates):
    """Equal to the folded graph within float rounding, on a map where every branch reaches
    real pixels (128 x 192 input: a 16 x 24 map); one middle-row convolution of 2k+1 taps at
    dilation g plus a 2 x 3 convolution per branch; (k - 1) centre taps fewer, counted by
    hand against count_flops."""
    k, g = len(rates), rates[0]
    net = _net(rates)
    graph = inference_graph(net)
    sym, args, auxs = merge_branch_taps(graph)
    head = _head_convs(sym)
    assert [(n["attrs"]["kernel"], n["attrs"]["dilate"], n["attrs"]["pad"]) for n in head] == (
        [("(1, %d)" % (2 * k + 1), "(1, %d)" % g, "(0, %d)" % (k * g))]
        + [("(2, 3)", "(%d, %d)" % (2 * d, d), "(%d, %d)" % (d, d)) for d in rates])
    assert set(sym.list_arguments()) - {"data"} == set(args)
    shape = (2, 3, 128, 192)
    # one centre tap of a branch: 320 x 64 multiply-adds per pixel of the 16 x 24 map
    centre = 2 * 2 * 320 * 64 * 16 * 24
    assert count_flops(graph[0], shape) - count_flops(sym, shape) == (k - 1) * centre
    x = _x(shape)
    want = symbol_block(*graph)(x).asnumpy()
    assert _rel(want, symbol_block(sym, args, auxs)(x).asnumpy()) < 1e-5


def test_the_merged_weights_hold_the_branch_taps():
    """The row weight by hand: column k + j*d/g holds tap (1, j+1) of the branch of rate d,
    the centre column the sum of the centres; the biases summed into the row's."""
    rates = (1, 2, 3)
    graph = inference_graph(_net(rates, seed=5))
    branches = sorted(_head_convs(graph[0]), key=lambda n: n["attrs"]["dilate"])
    w = [graph[1][n["name"].replace("_fwd", "") + "_concat0"].asnumpy() for n in branches]
    b = [graph[1][n["name"].replace("_fwd", "") + "_concat1"].asnumpy() for n in branches]
    sym, args, _ = merge_branch_taps(graph)
    row, tb1 = _head_convs(sym)[:2]
    row_w = args[row["name"] + "_weight"].asnumpy()
    assert row_w.shape == (320, 64, 1, 7)
    np.testing.assert_allclose(row_w[:, :, 0, 3], w[0][:, :, 1, 1] + w[1][:, :, 1, 1]
                               + w[2][:, :, 1, 1], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(row_w[:, :, 0, 0], w[2][:, :, 1, 0])  # column -3: rate 3
    np.testing.assert_array_equal(row_w[:, :, 0, 5], w[1][:, :, 1, 2])  # column +2: rate 2
    np.testing.assert_allclose(args[row["name"] + "_bias"].asnumpy(), b[0] + b[1] + b[2],
                               rtol=1e-6)
    np.testing.assert_array_equal(args[tb1["name"] + "_weight"].asnumpy(), w[0][:, :, [0, 2]])
    np.testing.assert_array_equal(args[tb1["name"] + "_bias"].asnumpy(), np.zeros(320))


def test_lazy_merge_returns_callables():
    net = _net((1, 2))
    sym, lazy, _ = merge_branch_taps(inference_graph(net, lazy=True), lazy=True)
    _, eager, _ = merge_branch_taps(inference_graph(net))
    name = _head_convs(sym)[0]["name"] + "_weight"
    assert callable(lazy[name]) and not callable(eager[name])
    np.testing.assert_array_equal(lazy[name]().asnumpy(), eager[name].asnumpy())


def test_rates_with_holes_are_merged_only_where_they_have_none():
    """(2, 5): a middle row at dilation 1 would hold 7 zero taps of 11: left alone (the same
    graph). (1, 2, 5): the chain's first two branches (1, 2) are merged, rate 5 stays."""
    graph = inference_graph(_net((2, 5)))
    assert merge_branch_taps(graph)[0].tojson() == graph[0].tojson()
    graph = inference_graph(_net((1, 2, 5)))
    sym, args, auxs = merge_branch_taps(graph)
    assert [n["attrs"]["kernel"] for n in _head_convs(sym)] == ["(1, 5)", "(2, 3)", "(2, 3)",
                                                                 "(3, 3)"]
    x = _x((1, 3, 128, 192))
    want = symbol_block(*graph)(x).asnumpy()
    assert _rel(want, symbol_block(sym, args, auxs)(x).asnumpy()) < 1e-5


def test_fused_graph_runs_the_merged_head_as_one_fused_chain(monkeypatch):
    """What predict runs (fp32, MKLDNN): equal to the network; the head is 5 fused
    convolutions (the 1 x 9 row and four 2 x 3), 4 sums fused. Fails without the merge (4
    convolutions, all 3 x 3)."""
    monkeypatch.setattr(graphs, "splitting_helps", lambda: False)
    monkeypatch.delenv("DUC_HDC_NO_MERGE", raising=False)
    net = _net((6, 12, 18, 24), seed=3)
    x = _x((1, 3, 128, 256), seed=2)
    fused = graphs.optimized_block(net)
    assert _rel(net(x).asnumpy(), fused(x).asnumpy()) < 1e-4
    head = [c for c in conv_summary(fused.symbol()) if "head" in c["weight"]]
    # named after the branches (so int8's exclude=DUC_HEAD_LAYERS still finds them)
    assert sorted(c["weight"].split("head_", 1)[1] for c in head) == [
        "c0_fwd_row_weight", "c0_fwd_tb_weight", "c1_fwd_tb_weight", "c2_fwd_tb_weight",
        "c3_fwd_tb_weight"]
    assert {c["op"] for c in head} == {"_sg_mkldnn_conv"}
    assert sorted(tuple(c["post_ops"]) for c in head) == [()] + [("sum",)] * 4


def test_merge_can_be_turned_off(monkeypatch):
    monkeypatch.setattr(graphs, "splitting_helps", lambda: False)
    monkeypatch.setenv("DUC_HDC_NO_MERGE", "1")
    assert not merging_enabled() and "DUC_HDC_NO_MERGE" in merge_state()[1]
    fused = graphs.optimized_block(_net((6, 12, 18, 24)))
    fused(_x((1, 3, 64, 64)))
    head = [c for c in conv_summary(fused.symbol()) if "head" in c["weight"]]
    assert len(head) == 4
    assert merging_enabled({}) and merge_state({})[1].startswith("on")
    assert not merging_enabled({"DUC_HDC_NO_MERGE": "yes"})


def test_bf16_graph_keeps_the_merge_in_bfloat16(monkeypatch):
    """The portable bf16 graph (export --precision bf16) holds the merged head in bfloat16;
    where the CPU runs bf16, the fused graph has it with its sums fused and stays close to
    fp32; elsewhere bf16 is refused."""
    monkeypatch.setattr(bf16_module, "splitting_helps", lambda **_: False)
    net = _net((6, 12, 18, 24), seed=4)
    sym, args, _ = bf16_module.bf16_graph(net)
    head = [c for c in conv_summary(sym) if "head" in c["weight"]]
    assert len(head) == 5 and {c["dtype"] for c in head} == {"bfloat16"}
    assert args[head[0]["weight"]].shape == (320, 64, 1, 9)
    if not BF16:
        with pytest.raises(ValueError, match=re.escape(runtime.no_bf16_reason())):
            inference_runner(net, "bf16")
        return
    x = _x((1, 3, 128, 256), seed=5)
    bf16 = inference_runner(net, "bf16")
    got, want = bf16(x).asnumpy(), inference_runner(net, "fp32")(x).asnumpy()
    head = [c for c in conv_summary(bf16.symbol()) if "head" in c["weight"]]
    assert sorted(tuple(c["post_ops"]) for c in head) == [()] + [("sum",)] * 4
    assert {c["dtype"] for c in head} == {"bfloat16"}
    assert 1e-4 < _rel(want, got) < 0.05 and (want.argmax(1) == got.argmax(1)).mean() > 0.95


def test_env_and_benchmark_name_the_merge(monkeypatch, capsys):
    from duc_hdc.cli.main import main

    monkeypatch.setenv("DUC_HDC_NO_MERGE", "1")
    assert main(["env", "--no-probe"]) == 0
    assert "centre-tap merge  off (DUC_HDC_NO_MERGE is set)" in capsys.readouterr().out
    report = dict(model="m", shape=[1, 3, 64, 64], precision="fp32", graph="fused", fp16=False,
                  ctx="cpu(0)", omp_threads="2", median_s=1.0, min_s=1.0, max_s=1.0,
                  spread=0.0, iters=1, warmup=0, images_per_s=1.0, gflop=1.0,
                  gflops_per_s=1.0, peak_rss_mib=1.0, centre_merge=merge_state({})[1])
    assert "centre-tap merge: on" in format_report(report)


def _grad_run(net, x):
    """Output and parameter gradients of one recorded forward/backward pass (sum of squares)."""
    with mx.autograd.record():
        y = net(x)
        loss = (y * y).sum()
    loss.backward()
    return y.asnumpy(), {name: p.grad().asnumpy()
                         for name, p in net._collect_params_with_prefix().items()
                         if p.grad_req != "null"}


@pytest.mark.parametrize("rates, padding", [((1, 2, 3), False), ((6, 12, 18, 24), True),
                                             ((2, 4), False)])
@pytest.mark.parametrize("hybrid", [False, True])
def test_training_head_merges_the_taps_with_the_plain_gradients(rates, padding, hybrid):
    """``head_merge=True`` (what ``duc-hdc train`` builds): the same parameters, the same
    output and the same gradient of every parameter as the plain head, in training mode
    (BatchNorm on batch statistics), imperative and hybridized, channel padding on or off;
    the graph runs one middle-row convolution plus one 2 x 3 convolution per branch."""
    k, g = len(rates), rates[0]
    kw = dict(classes=19, base_width=8, aspp_rates=rates, head_padding=padding)
    plain = optimize_net(0, **kw)
    merged = optimize_net(1, head_merge=True, **kw)
    names = list(plain._collect_params_with_prefix())
    assert list(merged._collect_params_with_prefix()) == names  # checkpoints are the same
    for name, param in merged._collect_params_with_prefix().items():
        param.set_data(plain._collect_params_with_prefix()[name].data())
    if hybrid:
        plain.hybridize()
        merged.hybridize()
    x = _x((2, 3, 96, 128))
    want, want_grads = _grad_run(plain, x)
    got, got_grads = _grad_run(merged, x)
    assert _rel(want, got) < 1e-5
    assert set(got_grads) == set(want_grads)
    for name in want_grads:
        assert _rel(want_grads[name], got_grads[name]) < 1e-4, name
    head = _head_convs(merged(mx.sym.var("data")))
    assert [(n["name"].split("head_")[1], n["attrs"]["kernel"], n["attrs"]["dilate"])
            for n in head] == (
        [("c0_fwd_row", "(1, %d)" % (2 * k + 1), "(1, %d)" % g)]
        + [("c%d_fwd_tb" % i, "(2, 3)", "(%d, %d)" % (2 * d, d)) for i, d in enumerate(rates)])


def test_training_head_leaves_rates_with_holes_plain():
    """Rates that are not g, 2g, ..., kg: the plain branches (nothing to merge in training)."""
    net = optimize_net(0, classes=19, base_width=8, aspp_rates=(2, 5), head_merge=True)
    assert net.head.merge_step is None
    assert [n["attrs"]["kernel"] for n in _head_convs(net(mx.sym.var("data")))] == ["(3, 3)"] * 2


def test_training_builds_the_merged_head_in_fp32_unless_turned_off(monkeypatch):
    """``duc-hdc train``'s network merges the head's centre taps in fp32 training on CPUs;
    not in bf16 AMP (slower there), and ``DUC_HDC_NO_MERGE=1`` turns it off as it does for
    inference."""
    from duc_hdc.config import load_config
    from duc_hdc.training.build import build_network, training_merge

    cfg = load_config("synthetic", ["model.classes=3", "model.base_width=4"])
    monkeypatch.delenv("DUC_HDC_NO_MERGE", raising=False)
    net = build_network(cfg, mx.cpu())
    assert net.head.merge_step == 1  # the synthetic recipe's rates 1, 2, 3
    assert any(n["name"].endswith("_row") for n in _head_convs(net(mx.sym.var("data"))))
    monkeypatch.setenv("DUC_HDC_NO_MERGE", "1")
    net = build_network(cfg, mx.cpu())
    assert net.head.merge_step is None
    assert not any(n["name"].endswith("_row") for n in _head_convs(net(mx.sym.var("data"))))
    monkeypatch.delenv("DUC_HDC_NO_MERGE")
    monkeypatch.setattr(runtime, "bf16_support", lambda flags=None: "AVX512_BF16")
    bf16 = load_config("synthetic", ["model.classes=3", "model.base_width=4",
                                     "train.amp=bfloat16"])
    assert training_merge(cfg, [mx.cpu(0), mx.cpu(1)])
    assert not training_merge(bf16, [mx.cpu(0)])
    assert build_network(bf16, mx.cpu()).head.merge_step is None
