"""ONNX Runtime / OpenVINO side of bench/peers.py; runs in bench/.venv-peers (numpy 2).

Never imports duc_hdc or mxnet. Reads one JSON request per line on stdin, answers one JSON line
on stdout (logs go to stderr):

  {"cmd": "info"}                                   -> versions, OpenVINO's CPU capabilities
  {"cmd": "load", "name": N, "kind": K, "onnx": P, "input": X.npy, "output": Y.npy,
   "calib": C.npy}                                  -> builds N, runs it once on X, saves Y
  {"cmd": "run", "name": N}                         -> {"s": seconds of one call on its input}
  {"cmd": "unload"}                                 -> drops every model
  {"cmd": "quit"}

kinds: ort_fp32, ov_f32, ov_bf16, ov_int8 (NNCF post-training quantization on C).
"""
import json
import os
import sys
import time
import traceback

import numpy as np

THREADS = os.cpu_count() or 1


def _ort(path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def _ov_model(path, shape):
    import openvino as ov

    core = ov.Core()
    model = core.read_model(path)
    model.reshape({model.inputs[0]: list(shape)})
    return core, model


def _ov(path, shape, precision, calib=None):
    if precision == "int8":
        import nncf

        # calibrated on the calibration images' own size at batch 1, then reshaped to the
        # input's: the FakeQuantize ranges do not depend on the shape. At the input's size NNCF
        # ran out of 24 GiB at 1024x2048 and asked for 28 GB at batch 4.
        data = np.load(calib)  # (K, 3, h, w)
        core, model = _ov_model(path, (1,) + tuple(data.shape[1:]))
        model = nncf.quantize(model, nncf.Dataset([data[i:i + 1] for i in range(len(data))]),
                              subset_size=len(data))
        model.reshape({model.inputs[0]: list(shape)})
    else:
        core, model = _ov_model(path, shape)
    hint = {"f32": "f32", "bf16": "bf16", "int8": "bf16"}[precision]
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                 "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()

    def run(x):
        request.infer({0: x})
        return request.get_output_tensor(0).data.copy()
    return run


def info():
    out = dict(numpy=np.__version__)
    try:
        import onnxruntime as ort
        out["onnxruntime"] = ort.__version__
    except ImportError as err:
        out["onnxruntime"] = "missing (%s)" % err
    try:
        import openvino as ov
        core = ov.Core()
        out["openvino"] = ov.__version__
        out["ov_capabilities"] = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        out["ov_cpu"] = core.get_property("CPU", "FULL_DEVICE_NAME")
    except Exception as err:  # noqa: BLE001 (any failure: report it)
        out["openvino"] = "missing (%s)" % err
    try:
        import nncf
        out["nncf"] = nncf.__version__
    except Exception as err:  # noqa: BLE001
        out["nncf"] = "missing (%s)" % err
    return out


def main():
    # the replies get a private copy of stdout; whatever the libraries print (NNCF does) goes
    # to stderr and cannot break the protocol
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    runners, inputs = {}, {}
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["cmd"] == "quit":
                break
            if req["cmd"] == "info":
                reply = info()
            elif req["cmd"] == "unload":
                runners.clear()
                inputs.clear()
                reply = dict(ok=True)
            elif req["cmd"] == "load":
                x = np.load(req["input"])
                kind = req["kind"]
                start = time.perf_counter()
                if kind == "ort_fp32":
                    run = _ort(req["onnx"])
                else:
                    run = _ov(req["onnx"], x.shape, kind.split("_", 1)[1], req.get("calib"))
                y = run(x)  # first run: plans and primitives
                np.save(req["output"], np.asarray(y, np.float32))
                runners[req["name"]], inputs[req["name"]] = run, x
                reply = dict(ok=True, build_s=time.perf_counter() - start)
            elif req["cmd"] == "run":
                run, x = runners[req["name"]], inputs[req["name"]]
                start = time.perf_counter()
                run(x)
                reply = dict(s=time.perf_counter() - start)
            else:
                reply = dict(error="unknown cmd %r" % req["cmd"])
        except Exception as err:  # noqa: BLE001 (a failing peer is reported, not fatal)
            traceback.print_exc(file=sys.stderr)
            reply = dict(error="%s: %s" % (type(err).__name__, err))
        proto.write(json.dumps(reply) + "\n")
        proto.flush()


if __name__ == "__main__":
    main()
