"""Residual streams kept in pieces (duc_hdc.inference.streams)."""
import json
import re

import mxnet as mx
import numpy as np
import pytest

from duc_hdc.inference import graphs, streams
from duc_hdc.inference.compiled import symbol_block
from duc_hdc.inference.folding import inference_graph
from duc_hdc.inference.graphs import conv_summary
from duc_hdc.inference.streams import split_streams, stream_state
from test_optimize import _net as optimize_net  # tiny networks with non-trivial BatchNorms

AVX512 = ["avx512f", "avx512bw", "avx512dq", "avx512vl"]
#: ResNet-50 at width 8: streams of 64 (res3), 128 (res4) and 256 (res5) channels
PIECES = {128: (96, 32)}


def _net(seed=0):
    return optimize_net(seed, name="duc_hdc_resnet50", classes=5)


def _nodes(sym):
    return json.loads(sym.tojson())["nodes"]


def _rel(want, got):
    return float(np.abs(want - got).max() / np.abs(want).max())


def _x(seed=1, shape=(2, 3, 64, 96)):
    return mx.nd.array(np.random.RandomState(seed).uniform(-2, 2, shape).astype("float32"))


@pytest.mark.parametrize("pieces", [PIECES, {64: (48, 16), 128: (96, 32), 256: (160, 64, 32)}])
def test_pieced_graph_computes_the_same_as_the_whole_graph(pieces):
    net = _net()
    x = _x()
    sym, args, auxs = inference_graph(net)
    got_graph = split_streams((sym, args, auxs), pieces=pieces)
    nodes = _nodes(got_graph[0])
    convs = [n for n in nodes if n["op"] == "Convolution"]
    # no 1x1 convolution writes a whole stream any more: each writer became its pieces
    whole = _nodes(sym)
    summed = {whole[i]["name"] for n in whole if n["op"] == "elemwise_add"
              for i, _, _ in n["inputs"]}
    for width, parts in pieces.items():
        writers = [n for n in whole if n["op"] == "Convolution" and n["name"] in summed
                   and n["attrs"]["kernel"] == "(1, 1)" and int(n["attrs"]["num_filter"]) == width]
        assert writers
        for w in writers:
            assert not [n for n in convs if n["name"] == w["name"]]
            # piece k: NAME_pieceK, or NAME_pieceK_inJ where the writer also reads a cut stream
            cut = {}
            for n in convs:
                m = re.match(re.escape(w["name"]) + r"_piece(\d+)(_in\d+)?$", n["name"])
                if m:
                    size = got_graph[1][n["name"] + "_weight"].shape[0]
                    assert size == int(n["attrs"]["num_filter"])
                    cut.setdefault(int(m.group(1)), set()).add(size)
            assert cut == {k: {size} for k, size in enumerate(parts)}
    # every reader of a stream is a convolution or a residual sum: nothing joins the pieces
    assert not [n for n in nodes if n["op"] == "Concat"]
    # the cut weights' originals are gone, every argument is one the graph reads
    assert set(got_graph[0].list_arguments()) - {"data"} == set(got_graph[1])
    want = symbol_block(sym, args, auxs)(x).asnumpy()
    got = symbol_block(*got_graph)(x).asnumpy()
    assert _rel(want, got) < 1e-5


def test_a_stream_read_by_something_else_is_joined_again():
    """A graph whose output is the stream itself: the pieces are concatenated (once)."""
    data = mx.sym.var("data")
    # a stream begins where two 1x1 convolutions are summed (a ResNet stage's first block)
    s = mx.sym.Activation(mx.sym.Convolution(data, num_filter=8, kernel=(1, 1), name="w")
                          + mx.sym.Convolution(data, num_filter=8, kernel=(1, 1), name="v"),
                          act_type="relu", name="s")
    out = mx.sym.Group([mx.sym.Pooling(s, kernel=(2, 2), stride=(2, 2), pool_type="max"),
                        mx.sym.Convolution(s, num_filter=4, kernel=(3, 3), pad=(1, 1), name="r")])
    rng = np.random.RandomState(0)
    shapes = dict(zip(out.list_arguments(), out.infer_shape(data=(1, 3, 8, 8))[0]))
    args = {k: mx.nd.array(rng.normal(0, 1, v)) for k, v in shapes.items() if k != "data"}
    sym2, args2, _ = split_streams((out, args, {}), pieces={8: (6, 2)})
    nodes = _nodes(sym2)
    assert [n["name"] for n in nodes if n["op"] == "Concat"] == ["s_joined"]
    for writer in "wv":
        assert [int(n["attrs"]["num_filter"]) for n in nodes
                if n["op"] == "Convolution" and n["name"].startswith(writer + "_piece")] == [6, 2]
    # the 3x3 reader reads the pieces, the pooling the joined stream
    assert [n["name"] for n in nodes
            if n["op"] == "Convolution" and n["name"].startswith("r")] == ["r_in0", "r_in1"]
    x = _x(shape=(1, 3, 8, 8))
    want = [o.asnumpy() for o in symbol_block(out, args, {})(x)]
    got = [o.asnumpy() for o in symbol_block(sym2, args2, {})(x)]
    assert max(_rel(w, g) for w, g in zip(want, got)) < 1e-5


def test_streams_of_other_widths_are_left_alone():
    sym, args, auxs = inference_graph(_net())
    got = split_streams((sym, args, auxs), pieces={1024: (768, 256)})
    assert got[0].tojson() == sym.tojson()


@pytest.mark.parametrize("pieces", [{128: (96, 16)}, {128: (128, 0)}])
def test_pieces_that_do_not_add_up_to_the_stream_are_refused(pieces):
    with pytest.raises(ValueError, match="pieces of a 128-channel stream"):
        split_streams(inference_graph(_net()), pieces=pieces)


def test_fused_graph_keeps_the_pieces_with_their_sums_fused(monkeypatch):
    """In the fp32 fused graph every piece's residual sum and ReLU are fused into its
    convolution, and every reading convolution accumulates its pieces with the sum post-op."""
    net = _net(seed=3)
    x = _x(2, (1, 3, 64, 128))
    want = net(x).asnumpy()
    monkeypatch.setattr(streams, "PIECES", PIECES)
    monkeypatch.setattr(graphs, "stream_state", lambda: (True, "on"))
    fused = graphs.optimized_block(net)
    assert _rel(want, fused(x).asnumpy()) < 1e-4
    convs = conv_summary(fused.symbol())
    assert {c["op"] for c in convs} == {"_sg_mkldnn_conv"}
    # res4 of ResNet-50: 6 blocks, each writing 2 pieces; in the first block the shortcut
    # writes them too, and of each pair of summed writers one carries the sum
    writers = [tuple(c["post_ops"]) for c in convs
               if "_piece" in c["weight"] and "layer3" in c["weight"]]
    assert sorted(writers) == [()] * 2 + [("sum", "relu")] * 12
    # each reader of a cut stream: two convolutions, one of them accumulating the other (sum)
    readers = {}
    for c in convs:
        m = re.match(r"(.*layer.*)_in\d_weight$", c["weight"])
        if m:
            readers.setdefault(m.group(1), []).append(tuple(c["post_ops"])[:1])
    assert len(readers) == 5 + 2  # res4's blocks 1-5, res5's first block and its shortcut
    assert all(sorted(r) == [(), ("sum",)] for r in readers.values())
    monkeypatch.setattr(graphs, "stream_state", lambda: (False, "off"))
    whole = graphs.optimized_block(net)
    assert not [c for c in conv_summary(whole.symbol()) if "_piece" in c["weight"]]


@pytest.mark.parametrize("flags,environ,expected", [
    (AVX512, {}, True),
    (AVX512, {"DUC_HDC_NO_STREAM_SPLIT": "1"}, False),
    (AVX512, {"DUC_HDC_NO_SPLIT": "1"}, True),  # the head's split and the streams: two switches
    (AVX512, {"DNNL_MAX_CPU_ISA": "AVX2"}, False),
    (["avx2", "fma"], {}, False),
])
def test_streams_are_pieced_where_onednn_runs_avx512_kernels(flags, environ, expected):
    on, why = stream_state(flags=flags, environ=environ)
    assert on is expected
    assert why.startswith("on (") if expected else why.startswith("off (")


def test_a_1x1_convolution_reading_a_stream_is_cut_when_its_width_has_pieces():
    """``res5``'s first convolution (2048 -> 512 in the zoo's network; 256 -> 64 here) reads the
    stream: cut into pieces too, and the 3x3 convolution after its ReLU reads those pieces."""
    net = _net(seed=2)
    sym, args, auxs = inference_graph(net)
    got = split_streams((sym, args, auxs), pieces={64: (32, 32), 256: (192, 64)})
    names = [n["name"] for n in _nodes(got[0]) if n["op"] == "Convolution"]
    first = [n for n in names if "layer4_bottleneck1_conv0" in n]
    assert first == ["duchdc%s_backbone_layer4_bottleneck1_conv0_fwd_piece%d_in%d"
                     % (first[0].split("_")[0][6:], k, j) for k in (0, 1) for j in (0, 1)]
    assert [n for n in names if "layer4_bottleneck1_conv1" in n] == [
        first[0].replace("conv0_fwd_piece0_in0", "conv1_fwd_in%d" % j) for j in (0, 1)]
    x = _x()
    assert _rel(symbol_block(sym, args, auxs)(x).asnumpy(), symbol_block(*got)(x).asnumpy()) < 1e-5


def test_the_head_reads_the_res5_stream_in_one_fused_chain(monkeypatch):
    """With the 2048 (here 256) stream in pieces, the DUC head's five convolutions (centre taps
    merged) read it piece by piece as one chain of fused convolutions, and the input split
    (:mod:`duc_hdc.inference.splitting`) does not cut those pieces again."""
    from duc_hdc.inference import splitting

    net = _net(seed=4)
    x = _x(3, (1, 3, 64, 128))
    want = net(x).asnumpy()
    monkeypatch.setattr(streams, "PIECES", {256: (192, 64)})
    monkeypatch.setattr(graphs, "stream_state", lambda: (True, "on"))
    monkeypatch.setattr(splitting, "SPLIT_CHANNELS", 16)
    monkeypatch.setattr(graphs, "splitting_helps", lambda: True)
    fused = graphs.optimized_block(net)
    assert _rel(want, fused(x).asnumpy()) < 1e-4
    head = [c for c in conv_summary(fused.symbol()) if "head" in c["weight"]]
    assert len(head) == 5 * 2 and {c["op"] for c in head} == {"_sg_mkldnn_conv"}
    assert sorted(tuple(c["post_ops"]) for c in head) == [()] + [("sum",)] * 9
    # nothing outside the fused convolutions: no sum, no join; no slice of the res5 stream (the
    # backbone's 3x3 convolutions wider than 16 channels are still split: by slices)
    nodes = _nodes(fused.symbol())
    assert not [n for n in nodes if n["op"] in ("elemwise_add", "Concat")]
    assert not [n for n in nodes
                if n["op"] == "slice" and "layer4_bottleneck2_activation2" in n["name"]]
    assert [n for n in nodes if n["op"] == "slice"]


def test_a_basic_block_stream_is_left_whole():
    """ResNet-18/34's blocks end in a 3x3 convolution: cutting only the stage's 1x1 shortcut
    would make the residual sum join the pieces again (a concat per stage), so nothing is cut."""
    sym, args, auxs = inference_graph(optimize_net(5, classes=5))  # ResNet-18, width 8
    widths = {int(n["attrs"]["num_filter"]) for n in _nodes(sym) if n["op"] == "Convolution"
              and n["attrs"]["kernel"] == "(1, 1)" and "down" in n["name"]}
    assert 64 in widths  # the 1x1 shortcuts of the stages (layer4's: 64 channels)
    got = split_streams((sym, args, auxs), pieces={w: (w // 2, w // 2) for w in widths})
    assert got[0].tojson() == sym.tojson()
