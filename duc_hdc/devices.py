"""Devices: --gpus / --cpu -> MXNet contexts, checked before any work starts (no duc_hdc imports).

GPU paths (several GPUs, float16 AMP, cuDNN autotuning) are built to MXNet's documented APIs and
exercised on CPU contexts here; they are untested on a GPU.
"""
import os


class DeviceError(ValueError):
    """A device option this machine cannot honour; the message names the option."""


def parse_ids(text, flag="--gpus"):
    """``"0,1"`` -> [0, 1]; a clear error naming ``flag`` otherwise."""
    try:
        ids = [int(g) for g in str(text).split(",") if g.strip()]
    except ValueError:
        ids = []
    if not ids or min(ids) < 0:
        raise DeviceError("%s: expected GPU ids like 0 or 0,1,2, got %r" % (flag, text))
    return ids


def gpu_options(gpus=None, fp16=False, cudnn_autotune=None, flag="--gpus"):
    """The GPU options given (their names), of ``--gpus``, ``--fp16`` and ``--cudnn-autotune``."""
    return [name for name, on in ((flag, gpus is not None), ("--fp16", fp16),
                                  ("--cudnn-autotune", cudnn_autotune is not None)) if on]


def contexts(gpus=None, cpu_devices=1, fp16=False, cudnn_autotune=None, flag="--gpus"):
    """The contexts to run on: ``gpus`` ("0,1") -> GPUs, else ``cpu_devices`` CPU contexts.

    Several CPU contexts (``mx.cpu(0)``, ``mx.cpu(1)``) exercise the multi-device code on machines
    without GPUs. ``fp16`` and ``cudnn_autotune`` need GPUs: refused on CPU, naming the option.
    """
    import mxnet as mx

    if gpus is not None:
        parse_ids(gpus, flag)  # "abc" is named as no id list first, GPU or not
    wanted = gpu_options(gpus, fp16, cudnn_autotune, flag)
    if not wanted:
        if int(cpu_devices) < 1:
            raise DeviceError("--cpu-devices must be >= 1, got %r" % (cpu_devices,))
        return [mx.cpu(i) for i in range(int(cpu_devices))]
    count = mx.context.num_gpus()
    if count == 0:
        raise DeviceError("%s need(s) a GPU, and this MXNet sees none (CPU-only build or no "
                          "device); drop the option to run on the CPU" % " and ".join(wanted))
    if gpus is None:
        raise DeviceError("%s need(s) --gpus LIST" % " and ".join(wanted))
    ids = parse_ids(gpus, flag)
    bad = [g for g in ids if g >= count]
    if bad:
        raise DeviceError("%s %s: this machine has %d GPU(s) (ids 0..%d)"
                          % (flag, gpus, count, count - 1))
    set_cudnn_autotune(cudnn_autotune)
    return [mx.gpu(i) for i in ids]


def set_cudnn_autotune(level):
    """``MXNET_CUDNN_AUTOTUNE_DEFAULT`` = ``level`` (0, 1, 2); None leaves it as it is.

    Read by the convolution operators when they are created, so call it before the first run.
    """
    if level is not None:
        os.environ["MXNET_CUDNN_AUTOTUNE_DEFAULT"] = str(int(level))
