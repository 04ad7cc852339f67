"""What a run is built from: devices, the network as the recipe initializes it, the transform."""
import logging
import os

from .. import runtime
from ..config import ConfigError, model_overrides
from ..devices import contexts
from ..fileio import read_params
from ..models.duc import merging_enabled
from ..models.network import get_model
from .checkpoints import non_finite_arrays

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------- devices
def parse_devices(gpus=None, cpu_devices=1):
    """``--gpus 0,1`` -> [gpu(0), gpu(1)] (refused, naming the option, where this MXNet sees
    no such GPU); otherwise ``cpu_devices`` CPU contexts (:func:`duc_hdc.devices.contexts`).

    Several CPU contexts (``mx.cpu(0)``, ``mx.cpu(1)``) exercise the multi-device code path on
    machines without GPUs.
    """
    return contexts(gpus if gpus is not None and str(gpus).strip() else None, cpu_devices)


# -------------------------------------------------------------------------- initialization
def _load_backbone(net, model_cfg, ctx, backbone_weights=None):
    """ImageNet weights for the backbone: a GluonCV store name (through ``backbone_weights``,
    see :func:`duc_hdc.training.trainer.train`, else GluonCV's store) or a local params file."""
    path = model_cfg["backbone_params"]
    name = model_cfg["backbone_pretrained"]
    if path is None and name and backbone_weights is not None:
        path = backbone_weights(name)
    if path is None and name:
        from gluoncv.model_zoo.model_store import get_model_file

        path = get_model_file(name, root=os.path.join(os.path.expanduser("~"), ".mxnet",
                                                      "models"))
    if path is None:
        return
    if not os.path.exists(path):
        raise ConfigError("model.backbone_params: %s not found" % path)
    # GluonCV's ResNetV1b names match our backbone's (see resnet_hdc); its classifier is extra
    net.backbone.load_parameters(path, ctx=ctx, ignore_extra=True)
    log.info("backbone initialized from %s", path)


def training_merge(cfg, ctx):
    """Whether training computes the head's shared centre tap once (``head_merge``): on for
    fp32 training on CPUs, unless ``DUC_HDC_NO_MERGE=1``.

    Measured, the head's forward and backward pass on the 64 x 64 map of a 512 x 512 crop
    (AMD EPYC Zen 4, 2 cores; ``bench/train_step.py --head-only``): 0.93-0.96 of the plain
    head's time in fp32, but 1.04-1.06 in bf16 AMP, where oneDNN 2.4 runs the wide middle-row
    convolution on its slower gemm kernels and MXNet's own ops that cut and join the merged
    weights cost more than the taps saved. GPUs are unmeasured: off there."""
    ctx = ctx if isinstance(ctx, (list, tuple)) else [ctx]
    return (merging_enabled() and all(c.device_type == "cpu" for c in ctx)
            and amp_target_dtype(cfg["train"]["amp"], ctx) is None)


def _load_init_params(net, path, ctx):
    """``model.init_params``: start from trained weights (fine-tuning). The backbone must fit;
    a head of other classes or cell width is left as initialized, with a warning (fine-tuning
    to another dataset), as mmsegmentation's ``load_from`` skips size mismatches. Anything else
    raises one ConfigError naming the file, the parameter and both shapes."""
    key = "model.init_params: %s" % path
    if os.path.isdir(path):
        raise ConfigError("%s is a folder; give a .params file (a run's final.params or best."
                          "params, or a checkpoint's ckpt-N.params)" % key)
    if not os.path.exists(path):
        raise ConfigError("%s not found" % key)
    try:
        loaded = read_params(path)
    except ValueError as e:
        raise ConfigError("model.init_params: %s" % e) from None
    params = net._collect_params_with_prefix()
    missing = [name for name in params if name not in loaded]
    extra = [name for name in loaded if name not in params]
    if missing or extra:
        raise ConfigError("%s does not fit the network: %s (another depth, variant or head? "
                          "%d missing, %d extra)" % (
                              key, ("parameter %s is not in the file" % missing[0]) if missing
                              else ("the file's %s is no parameter of it" % extra[0]),
                              len(missing), len(extra)))
    differ = [(name, tuple(loaded[name].shape), tuple(param.shape))
              for name, param in params.items() if tuple(loaded[name].shape) != param.shape]
    body = [d for d in differ if not d[0].startswith("head.")]
    if body:
        name, saved, want = body[0]
        raise ConfigError("%s does not fit the network: %s has shape %s in the file, the network "
                          "needs %s (another base_width or depth?)" % (key, name, saved, want))
    anew = {name for name, _, _ in differ}
    for name, param in params.items():
        if name not in anew:
            param.set_data(loaded[name])  # on every device the parameter lives on
    bad = non_finite_arrays(net)  # the head left as initialized is finite
    if bad:
        raise ConfigError("%s holds non-finite values (NaN or inf) in %s (%d arrays): the "
                          "weights are damaged; not training from them" % (key, bad[0], len(bad)))
    if differ:
        name, saved, want = differ[0]
        log.warning("%s: the head starts anew (%d arrays of other shapes, e.g. %s: %s in the "
                    "file, %s here: other classes or cell_width); the backbone is loaded: "
                    "fine-tuning", key, len(differ), name, saved, want)


def build_network(cfg, ctx, backbone_weights=None):
    """The network of ``cfg['model']``, initialized as the recipe says (``backbone_weights``:
    see :func:`duc_hdc.training.trainer.train`)."""
    model_cfg = cfg["model"]
    # the head's channel padding speeds up oneDNN inference kernels only (see DUCHDC)
    net = get_model(model_cfg["name"], ctx=ctx, head_padding=False,
                    head_merge=training_merge(cfg, ctx), **model_overrides(cfg))
    if model_cfg["init_params"]:
        _load_init_params(net, model_cfg["init_params"], ctx)
        log.info("network initialized from %s", model_cfg["init_params"])
    else:
        _load_backbone(net, model_cfg, ctx, backbone_weights)
    return net


def build_transform(cfg, net):
    from ..data.transforms import TrainTransform

    data = cfg["data"]
    return TrainTransform(crop_size=data["crop_size"], scales=data["scales"],
                          mean=net.normalization["mean"], std=net.normalization["std"],
                          cell_width=net.cell_width, anchor_jitter=data["anchor_jitter"],
                          mirror=data["mirror"], ignore_label=data["ignore_label"])


def amp_target_dtype(amp, ctx, flags=None):
    """``train.amp`` -> the AMP target dtype for devices ``ctx`` (None = float32).

    true picks the devices' own: float16 on GPUs, bfloat16 on CPUs (oneDNN; fast with AMX or
    AVX512_BF16). float16 needs GPUs; bfloat16 runs on CPUs only in mxnet 1.9, and only on
    CPUs with AMX_BF16 or AVX512_BF16 (``flags``: the CPU's, default /proc/cpuinfo's): elsewhere
    oneDNN 2.4 fails in the middle of the first step ("could not create a primitive descriptor
    iterator"), so it is refused before anything is built.
    """
    if not amp:
        return None
    gpu = all(c.device_type == "gpu" for c in ctx)
    cpu = all(c.device_type == "cpu" for c in ctx)
    if not (gpu or cpu):
        raise ConfigError("train.amp: devices %s mix CPUs and GPUs" % ",".join(map(str, ctx)))
    dtype = amp if isinstance(amp, str) else ("float16" if gpu else "bfloat16")
    if dtype == "float16" and not gpu:
        raise ConfigError("train.amp: float16 mixed precision needs GPUs (pass --gpus); on CPU "
                          "use --set train.amp=bfloat16, or train.amp=false")
    if dtype == "bfloat16" and not cpu:
        raise ConfigError("train.amp: bfloat16 mixed precision runs on CPUs in mxnet 1.9; on "
                          "GPUs use --set train.amp=float16")
    if dtype == "bfloat16" and runtime.bf16_support(flags) is None:
        raise ConfigError("train.amp: %s; use --set train.amp=false"
                          % runtime.no_bf16_reason(flags=flags))
    return dtype
