"""Export a network for deployment: MXNet symbol JSON + params, and ONNX; reload checks.

Files written for ``prefix``:

- ``prefix-symbol.json`` / ``prefix-0000.params``: the hybridized graph (input ``data``,
  (N, 3, H, W) float32 normalized as ``prefix.json`` says; output logits
  (N, classes, H / cell_width, W / cell_width)); loads with ``gluon.SymbolBlock.imports`` and
  ``mx.mod.Module``; one graph for every H, W that are multiples of 8;
- ``prefix.json``: the model settings (classes, cell width, normalization, ...);
- ``prefix.onnx`` (optional): the same graph with dynamic batch, height and width; input
  ``data``, output ``logits``.

``out`` (``duc-hdc export --out``) is a prefix (``models/duc_hdc`` -> ``models/duc_hdc-symbol.json``
...) or a folder (a path ending with ``/`` or an existing folder -> ``FOLDER/<model name>``);
:func:`export_prefix` decides and the result says which. Exporting a network whose weights are
not trained (``weights=None``) logs a warning.
"""
import logging
import os
import shutil
import warnings

import mxnet as mx
import numpy as np

from ..fileio import atomic_path, temp_path, write_errors_named
from ..models.sidecar import retire_artifact, write_sidecar

log = logging.getLogger(__name__)

#: ``kind`` of an fp32 export's sidecar (INT8 models: ``duc-hdc-int8``)
EXPORT_KIND = "duc-hdc-export"

#: the ONNX export's output (its input is ``data``)
ONNX_OUTPUT = "logits"
#: the opset of MXNet 1.9.1's ONNX translations (registered for opsets 12 and 13, the newest
#: used): the default of ``export --onnx``; ``--opset`` converts up from it
ONNX_OPSET = 13


def check_opset(opset):
    """``opset`` (int) if :func:`export_onnx` can write it: from :data:`ONNX_OPSET` to the
    installed onnx's newest; else ValueError in one line."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if not ONNX_OPSET <= int(opset) <= newest:
        raise ValueError("--opset %s: MXNet's ONNX translations are opset %d nodes; give %d to "
                         "%d (the installed onnx %s's newest)"
                         % (opset, ONNX_OPSET, ONNX_OPSET, newest, onnx.__version__))
    return int(opset)

_SHAPE_RULE = "N,3,H,W with N >= 1 and H, W positive multiples of 8"


class ShapeError(ValueError):
    """A bad ``--shape``; the message names the option, the rule and the value."""


def parse_shape(shape):
    """``"N,3,H,W"`` or a sequence of 4 ints -> a tuple, checked.

    Raises
    ------
    ShapeError
        ``--shape: expected N,3,H,W with N >= 1 and H, W positive multiples of 8, got 0,3,64,64``
    """
    text = shape if isinstance(shape, str) else ",".join(str(v) for v in shape)
    try:
        values = tuple(int(v) for v in text.split(","))
    except (TypeError, ValueError):
        values = ()
    if (len(values) != 4 or values[0] < 1 or values[1] != 3
            or any(v < 1 or v % 8 for v in values[2:])):
        raise ShapeError("--shape: expected %s, got %s" % (_SHAPE_RULE, text))
    return values


def default_name(net):
    """The file name an export into a folder gets: ``duc_hdc_resnet<depth>``."""
    config = getattr(net, "config", None) or {}
    name = "duc_hdc_resnet%s" % config.get("depth", "")
    return name + ("_bilinear" if config.get("head") == "bilinear" else "")


def export_prefix(out, name):
    """Where ``--out`` puts the export: ``(prefix, 'prefix' or 'folder')``.

    A path ending with ``/`` or naming an existing folder is a folder: ``out/name``. Otherwise
    ``out`` is the prefix itself (a trailing ``-symbol.json`` / ``-0000.params`` is cut off).
    A prefix where ``PREFIX.params`` exists is refused: ``PREFIX.json`` is those weights'
    settings file (a run folder's ``final``).
    """
    out = str(out)
    if not out.strip():
        raise ValueError("--out: give a prefix (DIR/NAME) or a folder (DIR/), got %r" % out)
    if out.endswith(("/", os.sep)) or os.path.isdir(out):
        prefix, out_is = os.path.join(out, name), "folder"
    else:
        prefix, out_is = out, "prefix"
        for suffix in ("-symbol.json", "-0000.params", ".onnx"):
            if out.endswith(suffix):
                prefix = out[:-len(suffix)]
                break
    if os.path.isfile(prefix + ".params"):  # training's final/best, a checkpoint, converted
        raise ValueError(  # weights: PREFIX.json is their settings file, the export's would
            # replace it and leave the weights unloadable
            "--out %s: %s.json is the settings file of %s.params (trained weights), which the "
            "export's own %s.json would replace; give another prefix or folder (e.g. --out "
            "%s_export)" % (out, prefix, prefix, os.path.basename(prefix), prefix))
    return prefix, out_is


def _random_input(shape, seed=0):
    return mx.nd.array(np.random.RandomState(seed).normal(0, 1, shape).astype(np.float32))


def _rel_diff(a, b):
    """max |a - b| / max |a| (0 when both are 0)."""
    scale = float(np.abs(a).max())
    return float(np.abs(a - b).max()) / (scale if scale > 0 else 1.0)


def export_symbol(net, prefix, shape, weights=None):
    """Hybridize ``net``, trace it at ``shape`` and write ``prefix-symbol.json``/``-0000.params``.

    Files are written under a hidden temporary prefix and renamed, so an interrupted export
    leaves no half-written pair behind; the files of an earlier export at ``prefix`` stay whole
    until the new ones are complete, and its sidecar goes first (:func:`retire_artifact`).
    """
    out_dir = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(out_dir, exist_ok=True)
    net.hybridize(static_alloc=True, static_shape=True)
    x = _random_input(shape)
    net(x).wait_to_read()
    tmp = temp_path(prefix)
    suffixes = ("-symbol.json", "-0000.params")
    try:
        try:
            net.export(tmp, epoch=0)
        except Exception:  # a failed write (a full disk) names the file: the params once begun
            failed = suffixes[os.path.exists(tmp + suffixes[1])]
            with write_errors_named(prefix + failed, tmp + failed):
                raise
        retire_artifact(prefix)
        for suffix in suffixes:
            os.replace(tmp + suffix, prefix + suffix)
    finally:
        for suffix in suffixes:
            if os.path.exists(tmp + suffix):
                os.remove(tmp + suffix)
    write_sidecar(prefix + "-0000.params", net.config, path=prefix + ".json", kind=EXPORT_KIND,
                  weights=None if weights is None else str(weights))
    return prefix + "-symbol.json", prefix + "-0000.params"


def check_symbol(net, prefix, shapes):
    """Reload the export with SymbolBlock and Module; max relative differences per shape."""
    with warnings.catch_warnings():  # MXNet's "Cannot decide type ... data: None" (it is float32)
        warnings.filterwarnings("ignore", "Cannot decide type", UserWarning)
        block = mx.gluon.SymbolBlock.imports(prefix + "-symbol.json", ["data"],
                                             prefix + "-0000.params")
    sym, args, auxs = mx.model.load_checkpoint(prefix, 0)
    diffs = {}
    for shape in shapes:
        x = _random_input(shape, seed=1)
        want = net(x).asnumpy()
        got_block = block(x).asnumpy()
        mod = mx.mod.Module(sym, data_names=["data"], label_names=None, context=mx.cpu())
        mod.bind(data_shapes=[("data", tuple(shape))], for_training=False)
        mod.set_params(args, auxs)
        mod.forward(mx.io.DataBatch([x]), is_train=False)
        got_mod = mod.get_outputs()[0].asnumpy()
        diffs[tuple(shape)] = dict(symbolblock=_rel_diff(want, got_block),
                                   module=_rel_diff(want, got_mod))
    return diffs


def export_onnx(prefix, shape, onnx_path=None, opset=ONNX_OPSET):
    """Convert ``prefix-symbol.json`` to ONNX with dynamic batch, height and width, at
    ``opset`` (:func:`check_opset`).

    MXNet writes opset-13 nodes but declares the installed onnx's newest opset (it has no
    option for it): the file is labelled 13, what its nodes are, and converted up to
    ``opset`` by onnx's own version converter."""
    import onnx
    from onnx import version_converter

    opset = check_opset(opset)

    onnx_path = onnx_path or prefix + ".onnx"
    with atomic_path(onnx_path) as tmp:  # no .onnx until it is complete and checked
        previous = logging.root.manager.disable
        # mxnet's exporter logs on the root logger at INFO ("Converting json and weight file
        # ...", "Exported ONNX file .X.onnx.tmpN saved to disk": our temporary name); export
        # prints what it wrote itself
        logging.disable(logging.INFO)
        try:
            mx.onnx.export_model(prefix + "-symbol.json", prefix + "-0000.params",
                                 [tuple(shape)], [np.float32], tmp, dynamic=True,
                                 dynamic_input_shapes=[(None, 3, None, None)])
        finally:
            logging.disable(previous)
        # mxnet's exporter lists the weights as graph inputs too; runtimes then cannot fold
        # them as constants (onnxruntime warns per weight). Keep only the real input.
        model = onnx.load(tmp)
        inits = {t.name for t in model.graph.initializer}
        keep = [i for i in model.graph.input if i.name not in inits]
        del model.graph.input[:]
        model.graph.input.extend(keep)
        # the output is named after the Gluon block (duchdc<N>_head_..., N counting the
        # networks the process built before): give it a name a deployment can rely on
        _rename_output(model, ONNX_OUTPUT)
        for entry in model.opset_import:
            if entry.domain in ("", "ai.onnx"):
                entry.version = ONNX_OPSET
        onnx.checker.check_model(model, full_check=True)
        if opset != ONNX_OPSET:
            model = version_converter.convert_version(model, opset)
            onnx.checker.check_model(model, full_check=True)
        onnx.save(model, tmp)
    return onnx_path


def _rename_output(model, name):
    """Rename the single graph output of an ONNX ``model`` (and what produces it) to ``name``."""
    (output,) = model.graph.output
    old = output.name
    for node in model.graph.node:
        node.output[:] = [name if o == old else o for o in node.output]
        node.input[:] = [name if i == old else i for i in node.input]
    output.name = name


def check_onnx(net, onnx_path, shapes):
    """Run the ONNX file with onnxruntime; max relative difference to ``net`` per shape."""
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    diffs = {}
    for shape in shapes:
        x = _random_input(shape, seed=2)
        got = sess.run(None, {name: x.asnumpy()})[0]
        diffs[tuple(shape)] = _rel_diff(net(x).asnumpy(), got)
    return diffs


def second_shape(shape):
    """Another valid input size (to show one export serves several sizes)."""
    n, c, h, w = shape
    return (n, c, max(8, h // 2 // 8 * 8), max(8, (w // 2 + 8) // 8 * 8))


def export_model(net, out, shape, onnx=False, check=True, weights=None, name=None,
                 opset=ONNX_OPSET):
    """Export ``net`` (symbol + params, optionally ONNX) and verify the files.

    Parameters
    ----------
    net : DUCHDC
    out : str
        Output prefix (``DIR/NAME`` -> ``DIR/NAME-symbol.json`` ...) or folder (``DIR/`` or an
        existing folder -> ``DIR/<name>-symbol.json`` ...), see :func:`export_prefix`.
    shape : str or tuple of 4 int
        (N, 3, H, W) used to trace the graph; N >= 1, H and W positive multiples of 8
        (:func:`parse_shape`).
    onnx : bool
        Also write ``prefix.onnx``.
    check : bool
        Reload the files and compare with ``net`` at ``shape`` and a second size.
    weights : str, optional
        Where the network's trained weights came from (a file or zoo name), recorded in the
        sidecar. None: the weights are not trained (random initialization); a warning is
        logged.
    name : str, optional
        File name inside a folder ``out``; default :func:`default_name`.
    opset : int
        The ONNX file's opset (:func:`check_opset`; default :data:`ONNX_OPSET`).

    Returns
    -------
    dict
        ``prefix`` used, ``out_is`` (``'prefix'`` or ``'folder'``), ``trained``, ``files``
        written and, with ``check``, the relative differences.

    Raises
    ------
    ShapeError
        A bad ``shape``, before anything is built or written.
    ValueError
        An ``opset`` out of range (with ``onnx``), before anything is written.
    """
    shape = parse_shape(shape)
    if onnx:
        opset = check_opset(opset)
    prefix, out_is = export_prefix(out, name or default_name(net))
    log.info("exporting to prefix %s (--out %s is a %s)", prefix, out, out_is)
    if weights is None:
        log.warning("exporting untrained weights (random initialization): %s will not segment "
                    "anything; pass the trained weights (--params FILE or a zoo --model)",
                    prefix)
    sym_path, params_path = export_symbol(net, prefix, shape, weights=weights)
    result = dict(prefix=prefix, out_is=out_is, trained=weights is not None,
                  files=[sym_path, params_path, prefix + ".json"])
    shapes = [shape, second_shape(shape)]
    if check:
        result["symbol_diff"] = check_symbol(net, prefix, shapes)
    if onnx:
        onnx_path = export_onnx(prefix, shape, opset=opset)
        result["files"].append(onnx_path)
        if check:
            result["onnx_diff"] = check_onnx(net, onnx_path, shapes)
    return result


#: ``kind`` of a bf16 export's sidecar
BF16_EXPORT_KIND = "duc-hdc-bf16"


def export_compiled(net, out, precision, calib_images=None, weights=None, name=None,
                    shape=None, check=True, reload=None):
    """``export --precision bf16|int8``: the compiled graph, as ``PREFIX-symbol.json``,
    ``PREFIX-0000.params`` and ``PREFIX.json`` (the one loader takes it back as ``PREFIX``).

    bf16: BatchNorm folded, converted by AMP (:func:`duc_hdc.inference.graphs.precision_graph`);
    MXNet with oneDNN runs it (ONNX has no use for it). int8: quantized on ``calib_images``
    (what ``duc-hdc quantize`` writes). Shape-free graphs: one export serves every input size.
    With ``check``, ``shape`` and ``reload`` (``reload(prefix)`` -> a runner,
    :func:`duc_hdc.load`), the written graph is loaded back and compared with the fp32 network
    on a random input of that shape (int8: on the first calibration image): ``symbol_diff``
    holds the relative difference and the argmax agreement.
    """
    from .graphs import precision_graph, quantize_net, save_quantized

    prefix, out_is = export_prefix(out, name or default_name(net))
    log.info("exporting %s to prefix %s (--out %s is a %s)", precision, prefix, out, out_is)
    if weights is None:
        log.warning("exporting untrained weights (random initialization): %s will not segment "
                    "anything", prefix)
    if precision == "int8":
        if calib_images is None:
            raise ValueError("export --precision int8 needs --calib-rec REC (calibration "
                             "images)")
        files = save_quantized(quantize_net(net, calib_images), prefix, weights=weights)
    elif precision == "bf16":
        sym, args, auxs = precision_graph(net, "bf16")
        arrays = {"arg:%s" % k: v.copyto(mx.cpu()) for k, v in args.items()}
        arrays.update({"aux:%s" % k: v.copyto(mx.cpu()) for k, v in auxs.items()})
        sym_path, params_path = prefix + "-symbol.json", prefix + "-0000.params"
        with atomic_path(sym_path) as tmp_sym:
            sym.save(tmp_sym, remove_amp_cast=False)  # the default drops AMP's casts: unloadable
            with atomic_path(params_path) as tmp_params:
                mx.nd.save(tmp_params, arrays)
                retire_artifact(prefix)  # both complete: the earlier export's sidecar goes first
        files = [sym_path, params_path,
                 write_sidecar(params_path, net.config, path=prefix + ".json",
                               kind=BF16_EXPORT_KIND, weights=weights)]
    else:
        raise ValueError("--precision %r: export_compiled writes bf16 or int8" % (precision,))
    result = dict(prefix=prefix, out_is=out_is, trained=weights is not None, files=files)
    if check and shape is not None and reload is not None:
        # int8: on a calibration image (a random input lies outside the calibrated ranges:
        # agreement 0.90 there against 0.99 on images, demo model)
        x = (mx.nd.array(calib_images[:1]) if calib_images is not None
             else _random_input(parse_shape(shape), seed=1))
        want, got = net(x).asnumpy(), reload(prefix)(x).asnumpy()
        result["symbol_diff"] = {tuple(x.shape): dict(
            fp32=_rel_diff(want, got),
            argmax_agreement=round(float((want.argmax(1) == got.argmax(1)).mean()), 4))}
    return result


def export_as_compiled(net, source, out, shape=None, check=True, name=None, reload=None):
    """``export --model PREFIX`` of a compiled graph (a bf16 / int8 ``PREFIX``): the graph as it
    is (``PREFIX-symbol.json``, ``-0000.params`` and its ``.json`` with the quantization
    settings and measurements), written under the prefix ``out`` names (:func:`export_prefix`),
    each file atomically; it was compiled once, from the network's weights, and another
    precision or ONNX needs those weights.

    Parameters
    ----------
    net : InferenceNet
        The compiled graph, as loaded from ``source``.
    source : str
        Its prefix.
    out, name
        As for :func:`export_model`; ``name`` defaults to the source's file name.
    shape : tuple, optional
        With ``check``: reload the written files and compare with ``net`` at this size.
    reload : callable, optional
        ``reload(prefix)`` -> a runner of the written graph, for ``check``
        (:func:`duc_hdc.load`; passed in, as the loader imports this module).
    """
    prefix, out_is = export_prefix(out, name or os.path.basename(source))
    if os.path.abspath(prefix) == os.path.abspath(source):
        raise ValueError("--out %s: that is the prefix of the model itself (%s); give another "
                         "prefix or folder" % (out, source))
    log.info("writing the compiled %s graph %s to prefix %s (--out %s is a %s)", net.kind,
             source, prefix, out, out_is)
    files = []
    retire_artifact(prefix)
    for suffix in ("-symbol.json", "-0000.params", ".json"):  # the sidecar last
        with atomic_path(prefix + suffix) as tmp:
            shutil.copyfile(source + suffix, tmp)
        files.append(prefix + suffix)
    result = dict(prefix=prefix, out_is=out_is, files=files)
    if check and shape is not None and reload is not None:
        x = _random_input(parse_shape(shape), seed=1)
        got = reload(prefix)(x).asnumpy()
        result["symbol_diff"] = {tuple(x.shape): dict(reload=_rel_diff(net(x).asnumpy(), got))}
    return result
