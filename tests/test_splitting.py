"""Input-channel splitting of the head's wide convolutions (duc_hdc.inference.splitting)."""
import json
import re

import mxnet as mx
import numpy as np
import pytest

from duc_hdc import runtime
from duc_hdc.inference import bf16 as bf16_module
from duc_hdc.inference import graphs, splitting
from duc_hdc.inference.compiled import symbol_block
from duc_hdc.inference.folding import inference_graph
from duc_hdc.inference.graphs import conv_summary, inference_runner
from duc_hdc.inference.splitting import split_input_channels, split_state, splitting_helps
from test_optimize import _net as optimize_net  # the tiny network with non-trivial BatchNorms

BF16 = runtime.bf16_support() is not None
AVX512 = ["avx512f", "avx512bw", "avx512dq", "avx512vl"]


def _net(seed=0):
    """ResNet-18-DUC-HDC at width 8, BatchNorms far from identity: the head reads 64 channels
    (split at 16: 4 chunks)."""
    return optimize_net(seed, classes=19)


def _convs(sym):
    return [n for n in json.loads(sym.tojson())["nodes"] if n["op"] == "Convolution"]


def _rel(want, got):
    return float(np.abs(want - got).max() / np.abs(want).max())


def test_split_graph_computes_the_same_as_the_unsplit_graph():
    net = _net()
    x = mx.nd.array(np.random.RandomState(1).uniform(-2, 2, (2, 3, 64, 96)).astype("float32"))
    sym, args, auxs = inference_graph(net)
    head = [n for n in _convs(sym) if "head" in n["name"]]
    assert len(head) == 4 and len(_convs(sym)) == 27
    split_sym, split_args, split_auxs = split_input_channels((sym, args, auxs), channels=16)
    convs = _convs(split_sym)
    # each of the 4 head branches (64 input channels) becomes 4 convolutions of 16 (so do the
    # backbone's 3x3 convolutions wider than 16: the pass is not specific to the head)
    chunks = [n for n in convs if "head" in n["name"]]
    assert len(chunks) == 16 and len(convs) > 27 - 4 + 16
    assert {split_args[n["name"] + "_weight"].shape for n in chunks} == {(320, 16, 3, 3)}
    # the split weights and biases are gone; every convolution reads parameters it has
    assert not [k for k in args if "head" in k and k in split_args]
    assert set(split_sym.list_arguments()) - {"data"} == set(split_args)
    # dilations and paddings carried over: 4 chunks per rate
    rates = sorted(n["attrs"]["dilate"] for n in chunks)
    assert rates == sorted(n["attrs"]["dilate"] for n in head for _ in range(4))
    want = symbol_block(sym, args, auxs)(x).asnumpy()
    got = symbol_block(split_sym, split_args, split_auxs)(x).asnumpy()
    assert _rel(want, got) < 1e-5


def test_fused_split_graph_is_one_chain_of_fused_convolutions(monkeypatch):
    """The fp32 fused graph with the split: equal to the network; the head's 5 convolutions
    (4 branches, centre taps merged: :mod:`duc_hdc.inference.merging`) split into 20
    ``_sg_mkldnn_conv`` with the branch sum fused (one chain: 19 sum post-ops)."""
    net = _net(seed=3)
    x = mx.nd.array(np.random.RandomState(2).uniform(-2, 2, (1, 3, 64, 128)).astype("float32"))
    want = net(x).asnumpy()
    monkeypatch.setattr(splitting, "SPLIT_CHANNELS", 16)
    monkeypatch.setattr(graphs, "splitting_helps", lambda: True)
    fused = graphs.optimized_block(net)
    got = fused(x).asnumpy()
    assert _rel(want, got) < 1e-4
    head = [c for c in conv_summary(fused.symbol()) if "head" in c["weight"]]
    assert len(head) == 20 and {c["op"] for c in head} == {"_sg_mkldnn_conv"}
    assert [tuple(c["post_ops"]) for c in head].count(("sum",)) == 19
    monkeypatch.setattr(graphs, "splitting_helps", lambda: False)
    unsplit = graphs.optimized_block(net)
    assert len([c for c in conv_summary(unsplit.symbol()) if "head" in c["weight"]]) == 5


def _graph(ic, kernel, group=1, name="c"):
    d = mx.sym.var("data")
    y = mx.sym.Convolution(d, kernel=kernel, pad=tuple(k // 2 for k in kernel),
                           num_filter=8, num_group=group, name=name)
    rng = np.random.RandomState(0)
    args = {"%s_weight" % name: mx.nd.array(rng.normal(0, 1, (8, ic // group) + kernel)),
            "%s_bias" % name: mx.nd.array(rng.normal(0, 1, (8,)))}
    return y, args, {}


@pytest.mark.parametrize("ic,kernel,group,split", [
    (64, (3, 3), 1, True),    # wide 3x3: split
    (64, (1, 1), 1, False),   # 1x1: oneDNN's 1x1 kernels do not slow down with width
    (64, (3, 3), 2, False),   # grouped: left alone
    (50, (3, 3), 1, False),   # 50 does not split into equal chunks of <= 16
    (16, (3, 3), 1, False),   # not wider than a chunk
])
def test_what_is_split(ic, kernel, group, split):
    sym, args, auxs = _graph(ic, kernel, group)
    out_sym, out_args, _ = split_input_channels((sym, args, auxs), channels=16,
                                                data_shape=(1, ic, 8, 8))
    assert len(_convs(out_sym)) == (ic // 16 if split else 1)
    x = mx.nd.array(np.random.RandomState(1).normal(0, 1, (1, ic, 8, 8)))
    want = symbol_block(sym, args, auxs)(x).asnumpy()
    assert _rel(want, symbol_block(out_sym, out_args, {})(x).asnumpy()) < 1e-5


def test_lazy_split_returns_callables_that_compute_the_chunks():
    sym, args, auxs = _graph(64, (3, 3))
    _, lazy, _ = split_input_channels((sym, args, auxs), channels=16, data_shape=(1, 64, 8, 8),
                                      lazy=True)
    _, eager, _ = split_input_channels((sym, args, auxs), channels=16, data_shape=(1, 64, 8, 8))
    assert callable(lazy["c_in1_weight"]) and not callable(eager["c_in1_weight"])
    np.testing.assert_array_equal(lazy["c_in1_weight"]().asnumpy(),
                                  args["c_weight"].asnumpy()[:, 16:32])
    np.testing.assert_array_equal(lazy["c_in1_bias"]().asnumpy(), np.zeros(8))  # bias once
    np.testing.assert_array_equal(eager["c_in0_bias"].asnumpy(), args["c_bias"].asnumpy())


@pytest.mark.parametrize("flags,environ,expected", [
    (AVX512, {}, True),
    (AVX512 + ["amx_tile"], {"DNNL_MAX_CPU_ISA": "AVX512_CORE_AMX"}, True),
    (AVX512, {"ONEDNN_MAX_CPU_ISA": "avx512_core_bf16"}, True),
    (AVX512, {"DNNL_MAX_CPU_ISA": "AVX2"}, False),       # oneDNN capped below brgconv
    (["avx2", "fma"], {}, False),                        # AMD EPYC AVX2: not measured
    (["avx512f"], {}, False),                            # AVX-512 F without BW/DQ/VL
    (AVX512, {"DUC_HDC_NO_SPLIT": "1"}, False),          # the opt-out
])
def test_splitting_helps_where_onednn_runs_avx512_kernels(flags, environ, expected):
    assert splitting_helps(flags=flags, environ=environ) is expected


def test_bf16_graph_is_split_and_stays_close_to_fp32(monkeypatch):
    net = _net(seed=4)
    x = mx.nd.array(np.random.RandomState(5).uniform(-2, 2, (1, 3, 64, 128)).astype("float32"))
    monkeypatch.setattr(splitting, "SPLIT_CHANNELS", 16)
    monkeypatch.setattr(bf16_module, "splitting_helps", lambda **_: True)
    if not BF16:  # a CPU without AVX512_BF16 / AMX_BF16: refused, with a message
        with pytest.raises(ValueError, match=re.escape(runtime.no_bf16_reason())):
            inference_runner(net, "bf16")
        return
    fp32 = inference_runner(net, "fp32")
    bf16 = inference_runner(net, "bf16")
    want, got = fp32(x).asnumpy(), bf16(x).asnumpy()
    head = [c for c in conv_summary(bf16.symbol()) if "head" in c["weight"]]
    assert len(head) == 20 and {c["dtype"] for c in head} == {"bfloat16"}
    assert [tuple(c["post_ops"]) for c in head].count(("sum",)) == 19
    assert 1e-4 < _rel(want, got) < 0.05
    assert (want.argmax(1) == got.argmax(1)).mean() > 0.95


def test_partitioning_survives_a_sum_chain_of_differently_shaped_convolutions():
    """MXNet 1.9.1's ``block.optimize_for(x, backend='MKLDNN')`` fails on this graph ("Shape
    inconsistent, Provided = [8,8,3,3], inferred shape=(8,8,1,1)"); InferenceNet partitions
    the symbol without its arguments and computes what the plain graph does."""
    from duc_hdc.inference.compiled import InferenceNet

    d = mx.sym.var("data")
    outs = [mx.sym.Convolution(d, kernel=k, pad=p, dilate=r, num_filter=8, name=n)
            for n, k, p, r in (("a", (1, 1), (0, 0), (1, 1)), ("b", (3, 3), (1, 1), (1, 1)),
                               ("c", (3, 3), (2, 2), (2, 2)))]
    total = mx.sym.elemwise_add(mx.sym.elemwise_add(outs[0], outs[1]), outs[2])
    rng = np.random.RandomState(0)
    args = {}
    for n, k in (("a", (1, 1)), ("b", (3, 3)), ("c", (3, 3))):
        args[n + "_weight"] = mx.nd.array(rng.normal(0, 1, (8, 8) + k))
        args[n + "_bias"] = mx.nd.array(rng.normal(0, 1, (8,)))
    x = mx.nd.array(rng.normal(0, 1, (1, 8, 16, 16)))
    want = symbol_block(total, args, {})(x).asnumpy()
    config = dict(classes=8, cell_width=1, mean=(0, 0, 0), std=None)
    fused = InferenceNet(config, "fused", symbol_block(total, args, {}), backend="MKLDNN")
    got = fused(x).asnumpy()
    assert _rel(want, got) < 1e-5
    assert [c["op"] for c in conv_summary(fused.symbol())] == ["_sg_mkldnn_conv"] * 3


def test_env_and_benchmark_say_whether_the_graphs_are_split(capsys, monkeypatch):
    from duc_hdc import cli

    assert cli.main(["env", "--no-probe"]) == 0
    rows = [l.split(None, 2) for l in capsys.readouterr().out.splitlines()
            if l.startswith("input split")]
    fp32 = [r for r in rows if r[2:] and not r[2].startswith("bf16")]
    assert len(fp32) == 1 and fp32[0][2] == split_state()[1]
    bf16 = [r for r in rows if r[2].startswith("bf16")]
    if split_state(precision="bf16") != split_state():  # e.g. AVX512_BF16 without AMX
        assert len(bf16) == 1 and bf16[0][2].endswith(split_state(precision="bf16")[1])
    else:
        assert not bf16
    monkeypatch.setenv("DUC_HDC_NO_SPLIT", "1")
    assert cli.main(["benchmark", "--model", "duc_hdc_resnet18", "--classes", "5",
                     "--base-width", "8", "--shape", "1,3,32,64", "--iters", "1"]) == 0
    assert "input split: off (DUC_HDC_NO_SPLIT is set)" in capsys.readouterr().out


@pytest.mark.parametrize("flags,environ,expected", [
    (AVX512 + ["amx_tile", "amx_bf16", "avx512_bf16"], {"DNNL_MAX_CPU_ISA": "AVX512_CORE_AMX"},
     True),                                              # Intel Xeon, AMX enabled
    (AVX512 + ["amx_tile", "amx_bf16", "avx512_bf16"], {}, False),  # AMX present, not enabled
    (AVX512 + ["avx512_bf16"], {}, False),               # AMD EPYC Zen 5: AVX512_BF16 only
])
def test_bf16_splits_only_on_amx(flags, environ, expected):
    """With AVX512_BF16 and no AMX the split bf16 graph took 1.08-1.10 of the unsplit one; fp32
    on the same CPU still splits."""
    assert splitting_helps(flags=flags, environ=environ, precision="bf16") is expected
    assert splitting_helps(flags=flags, environ=environ, precision="fp32") is True
    if not expected:
        assert "without AMX" in split_state(flags, environ, precision="bf16")[1]


def test_bf16_graph_is_not_split_without_amx(monkeypatch):
    """bf16_graph asks for the bf16 decision: on an AVX512_BF16 CPU without AMX the head's
    convolutions stay whole (5 of them after the centre-tap merge, not 20), while the fp32
    graph is split."""
    monkeypatch.setattr(splitting, "SPLIT_CHANNELS", 16)
    monkeypatch.setattr(runtime, "cpu_flags", lambda: set(AVX512 + ["avx512_bf16"]))
    for var in ("DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA", "DUC_HDC_NO_SPLIT"):
        monkeypatch.delenv(var, raising=False)
    sym = bf16_module.bf16_graph(_net())[0]
    assert len([n for n in _convs(sym) if "head" in n["name"]]) == 5
    assert splitting_helps() is True


def test_split_state_names_the_reason():
    assert split_state(AVX512, {})[0] and "512" in split_state(AVX512, {})[1]
    assert "avx512bw" in split_state(["avx512f"], {})[1]
    assert "DNNL_MAX_CPU_ISA=AVX2" in split_state(AVX512, {"DNNL_MAX_CPU_ISA": "AVX2"})[1]
    # values oneDNN 2.4 ignores cap nothing (it matches upper-case names only, and reads no
    # ONEDNN_MAX_CPU_ISA): the split stays on, as oneDNN stays on AVX-512
    for environ in ({"DNNL_MAX_CPU_ISA": "avx2"}, {"DNNL_MAX_CPU_ISA": "FOO"},
                    {"ONEDNN_MAX_CPU_ISA": "AVX2"}):
        assert split_state(AVX512, environ)[0] is True, environ
