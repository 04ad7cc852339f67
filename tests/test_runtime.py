"""Process set-up before mxnet loads: OMP threads, the AMX decision, the oneDNN ISA report."""
import json
import os
import subprocess
import sys

import pytest

from duc_hdc import runtime

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AMX_FLAGS = {"avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}


class Permission(object):
    """A stand-in for arch_prctl: records whether it was asked."""

    def __init__(self, granted):
        self.granted, self.calls = granted, 0

    def __call__(self):
        self.calls += 1
        return self.granted


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in runtime.ISA_VARS + (runtime.OPT_OUT, "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = REPO
    env.update(extra)
    return env


# ------------------------------------------------------------------------------ the decision
@pytest.mark.parametrize("flags, environ, granted, want, reason, asked, updates", [
    (AMX_FLAGS, {}, True, True, "AMX enabled", 1, {"DNNL_MAX_CPU_ISA": "AVX512_CORE_AMX"}),
    (AMX_FLAGS - {"amx_tile"}, {}, True, False, "AMX not available", 0, {}),
    (AMX_FLAGS, {"DNNL_MAX_CPU_ISA": "AVX512_CORE"}, True, False,
     "chosen by the user: DNNL_MAX_CPU_ISA=AVX512_CORE", 0, {}),
    (AMX_FLAGS, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, True, False,
     "chosen by the user: ONEDNN_MAX_CPU_ISA=AVX2", 0, {}),
    (AMX_FLAGS, {}, False, False, "refused the tile permission", 1, {}),
    (AMX_FLAGS, {"DUC_HDC_NO_AMX": "1"}, True, False, "AMX off: DUC_HDC_NO_AMX=1", 0, {}),
    (AMX_FLAGS, {"DUC_HDC_NO_AMX": "0"}, True, True, "AMX enabled", 1,
     {"DNNL_MAX_CPU_ISA": "AVX512_CORE_AMX"}),
    (set(), {}, True, False, "AMX not available", 0, {}),
    # an AMX ISA set by the user, or inherited from a parent duc_hdc process: the permission
    # is per process (not inherited across exec), so it is asked for again ...
    (AMX_FLAGS, {"DNNL_MAX_CPU_ISA": "AVX512_CORE_AMX"}, True, True, "AMX enabled", 1, {}),
    # ... and where it is refused the ISA is lowered rather than left to end in SIGILL
    (AMX_FLAGS, {"DNNL_MAX_CPU_ISA": "AVX512_CORE_AMX"}, False, False, "lowered", 1,
     {"DNNL_MAX_CPU_ISA": "AVX512_CORE_BF16"}),
    (AMX_FLAGS, {"DNNL_MAX_CPU_ISA": "AVX512_CORE_AMX", "DUC_HDC_NO_AMX": "1"}, True, False,
     "AMX off", 0, {"DNNL_MAX_CPU_ISA": "AVX512_CORE_BF16"}),
    (AMX_FLAGS - {"amx_tile"}, {"ONEDNN_MAX_CPU_ISA": "ALL"}, True, False,
     "AMX not available", 0, {}),
], ids=["amx", "no-amx-flag", "user-dnnl-isa", "user-onednn-isa", "refused", "opt-out",
        "opt-out-0", "no-flags", "inherited-amx-isa", "inherited-amx-isa-refused",
        "inherited-amx-isa-opt-out", "user-all-no-amx"])
def test_amx_decision(flags, environ, granted, want, reason, asked, updates):
    permission = Permission(granted)
    enable, why, changes = runtime.amx_decision(flags, environ, permission)
    assert enable is want and reason in why and changes == updates
    # the permission is asked for only when it would be used
    assert permission.calls == asked


def test_setup_process_sets_the_isa_only_when_granted():
    env = {}
    runtime.setup_process(env, flags=AMX_FLAGS, request_permission=Permission(True))
    assert env["DNNL_MAX_CPU_ISA"] == "AVX512_CORE_AMX"
    assert env["OMP_NUM_THREADS"] == str(os.cpu_count())
    for flags, granted, env in [(AMX_FLAGS, False, {}), (set(), True, {}),
                                (AMX_FLAGS, True, {"DUC_HDC_NO_AMX": "yes"})]:
        runtime.setup_process(env, flags=flags, request_permission=Permission(granted))
        assert "DNNL_MAX_CPU_ISA" not in env
    env = {"DNNL_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1"}
    runtime.setup_process(env, flags=AMX_FLAGS, request_permission=Permission(True))
    assert env["DNNL_MAX_CPU_ISA"] == "AVX2" and env["OMP_NUM_THREADS"] == "1"  # the user's
    assert "ONEDNN_MAX_CPU_ISA" not in env


def test_isa_cap_is_what_onednn_reads():
    assert runtime.isa_cap({"DNNL_MAX_CPU_ISA": "AVX2"}) == "AVX2"
    for environ in ({}, {"DNNL_MAX_CPU_ISA": "ALL"}, {"DNNL_MAX_CPU_ISA": "avx2"},
                    {"DNNL_MAX_CPU_ISA": "FOO"}, {"ONEDNN_MAX_CPU_ISA": "AVX2"}):
        assert runtime.isa_cap(environ) is None, environ
    assert runtime.isa_below("AVX512_CORE", {"DNNL_MAX_CPU_ISA": "AVX2"}) == \
        "DNNL_MAX_CPU_ISA=AVX2"
    assert runtime.isa_below("AVX512_CORE", {"DNNL_MAX_CPU_ISA": "AVX512_MIC"})
    assert runtime.isa_below("AVX512_CORE", {"DNNL_MAX_CPU_ISA": "AVX512_CORE"}) is None
    assert runtime.isa_below("AVX512_CORE_BF16", {"DNNL_MAX_CPU_ISA": "AVX512_CORE_VNNI"})
    assert "ignored by oneDNN 2.4" in runtime.isa_setting({"DNNL_MAX_CPU_ISA": "avx2"})
    assert "reads only DNNL_MAX_CPU_ISA" in runtime.isa_setting({"ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert runtime.isa_setting({"DNNL_MAX_CPU_ISA": "AVX2"}) == "AVX2"


def test_onednn_ignores_the_values_isa_cap_ignores(monkeypatch):
    """The real oneDNN of this mxnet: ``AVX2`` caps it, ``avx2`` and ``ONEDNN_MAX_CPU_ISA``
    do not (every machine of the project has AVX2, most have more)."""
    seen = {}
    for key, environ in (("unset", {}), ("AVX2", {"DNNL_MAX_CPU_ISA": "AVX2"}),
                         ("avx2", {"DNNL_MAX_CPU_ISA": "avx2"}),
                         ("ONEDNN", {"ONEDNN_MAX_CPU_ISA": "AVX2"})):
        for var in runtime.ISA_VARS:
            monkeypatch.delenv(var, raising=False)
        for var, value in environ.items():
            monkeypatch.setenv(var, value)
        seen[key] = runtime.onednn_isa(refresh=True)
    assert seen["AVX2"] == "Intel AVX2", seen
    assert seen["avx2"] == seen["ONEDNN"] == seen["unset"], seen


def test_bf16_support_per_cpu():
    assert runtime.bf16_support(AMX_FLAGS, {"DNNL_MAX_CPU_ISA": "AVX512_CORE_AMX"}) == "amx"
    # values oneDNN 2.4 ignores do not enable AMX (the same reading as isa_cap)
    for ignored in ({"DNNL_MAX_CPU_ISA": "avx512_core_amx"},
                    {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}):
        assert runtime.bf16_support(AMX_FLAGS, ignored) == "avx512_bf16", ignored
    # AMX present but not enabled (refused, opted out): the AVX512_BF16 kernels
    assert runtime.bf16_support(AMX_FLAGS, {}) == "avx512_bf16"
    assert runtime.bf16_support({"avx512f", "avx512_bf16"}, {}) == "avx512_bf16"
    assert runtime.bf16_support({"avx2", "avx512f"}, {}) is None  # e.g. AMD EPYC (Zen 2/3)
    # oneDNN capped below AVX512_CORE has no bf16 convolution (MXNetError before: refused now)
    bf16_cpu = {"avx512f", "avx512_bf16"}
    assert runtime.bf16_support(bf16_cpu, {"DNNL_MAX_CPU_ISA": "AVX2"}) is None
    assert "DNNL_MAX_CPU_ISA=AVX2" in runtime.no_bf16_reason({"DNNL_MAX_CPU_ISA": "AVX2"})
    assert runtime.bf16_support(bf16_cpu, {"DNNL_MAX_CPU_ISA": "avx2"}) == "avx512_bf16"
    assert runtime.bf16_support(bf16_cpu, {"DNNL_MAX_CPU_ISA": "AVX512_CORE"}) == "avx512_bf16"


def test_parse_isa_reads_onednn_verbose():
    text = ("dnnl_verbose,info,oneDNN v2.4.4 (commit abc)\n"
            "dnnl_verbose,info,cpu,runtime:OpenMP\n"
            "dnnl_verbose,info,cpu,isa:Intel AVX-512 with Intel DL Boost and bfloat16 support "
            "and Intel AMX with bfloat16 and 8-bit integer support\n"
            "dnnl_verbose,exec,cpu,convolution,...\n")
    assert runtime.parse_isa(text).endswith("Intel AMX with bfloat16 and 8-bit integer support")
    assert runtime.parse_isa("mkldnn_verbose,info,cpu,isa:Intel AVX2\n") == "Intel AVX2"
    assert runtime.parse_isa("nothing here\n") is None


# ------------------------------------------------------------------------------ this machine
def _decision_here(environ):
    """What import duc_hdc must decide on this machine, decided independently of it: the CPU
    flags read here, and the permission asked here (a process asks for itself)."""
    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return runtime.amx_decision(flags, environ, runtime.request_amx_permission)[0]


_CHILD = r"""
import json, sys
import duc_hdc, os
from duc_hdc import runtime
state = runtime.amx_state()
print("STATE " + json.dumps(dict(state, isa=os.environ.get("DNNL_MAX_CPU_ISA"),
                                 omp=os.environ.get("OMP_NUM_THREADS"))), flush=True)
import mxnet as mx, numpy as np
from duc_hdc import get_model
from duc_hdc.inference.graphs import quantize_net, inference_runner, count_quantized_ops
mx.random.seed(0)
net = get_model("duc_hdc_resnet18", classes=5, base_width=8)
calib = np.random.RandomState(0).normal(0, 50, (1, 3, 32, 64)).astype(np.float32)
q = quantize_net(net, calib)
x = mx.nd.array(np.random.RandomState(1).normal(0, 50, (1, 3, 32, 64)))
out = q(x).asnumpy()
assert np.isfinite(out).all() and count_quantized_ops(q)["int8_conv"] == 28  # head merged
print("INT8 OK", flush=True)
try:
    b = inference_runner(net, "bf16")
except ValueError as err:
    print("BF16 REFUSED " + str(err), flush=True)
else:
    assert np.isfinite(b(x).asnumpy()).all()
    print("BF16 OK", flush=True)
"""


def _run_child(**env):
    proc = subprocess.run([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True,
                          env=_clean_env(DNNL_VERBOSE="1", MKLDNN_VERBOSE="1", **env),
                          timeout=300)
    lines = proc.stdout.splitlines()
    state = [json.loads(ln[6:]) for ln in lines if ln.startswith("STATE ")]
    convs = [ln for ln in lines if ",exec,cpu,convolution," in ln]
    return proc, state[0] if state else None, convs


@pytest.mark.slow
def test_import_decides_and_int8_convolution_runs():
    """``import duc_hdc`` in a fresh process makes this machine's decision; the INT8 (and
    bf16, where the CPU has it) convolutions then run (no SIGILL), on AMX when it is on."""
    proc, state, convs = _run_child()
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "INT8 OK" in proc.stdout
    enabled = _decision_here({})
    assert state["enabled"] is enabled
    assert state["isa"] == ("AVX512_CORE_AMX" if enabled else None)
    assert state["omp"] == str(os.cpu_count())
    int8 = [c for c in convs if "src_u8" in c or "src_s8" in c]
    assert int8, "no int8 convolution in the oneDNN log"
    amx = [c for c in int8 if "amx" in c]
    if enabled:
        assert amx, int8[:3]  # oneDNN dispatched int8 convolutions to the AMX tiles
    else:
        assert not amx
    bf16 = runtime.bf16_support(environ={"DNNL_MAX_CPU_ISA": state["isa"] or ""})
    if bf16 is None:
        assert "BF16 REFUSED" in proc.stdout and "neither AMX" in proc.stdout
    else:
        assert "BF16 OK" in proc.stdout
        bf16_convs = [c for c in convs if "src_bf16" in c]
        assert bf16_convs and (not enabled or any("amx_bf16" in c for c in bf16_convs))


@pytest.mark.slow
def test_opt_out_leaves_amx_off():
    proc, state, convs = _run_child(DUC_HDC_NO_AMX="1")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert state["enabled"] is False and state["isa"] is None
    assert "DUC_HDC_NO_AMX" in state["reason"]
    assert convs and not any("amx" in c for c in convs)


@pytest.mark.slow
def test_onednn_isa_reports_what_runs():
    isa = runtime.onednn_isa()
    assert isa, "the oneDNN probe printed no ISA line"
    assert ("AMX" in isa) is runtime.amx_state()["enabled"]
    assert runtime.onednn_isa() is isa  # cached
    rows = dict(runtime.environment_report())
    assert rows["oneDNN ISA"] == isa and rows["amx"] == runtime.amx_state()["reason"]
    assert rows["cpu"].startswith(runtime.cpu_model())
    text = runtime.format_environment(runtime.environment_report())
    assert "oneDNN ISA" in text and "OMP_NUM_THREADS" in text


@pytest.mark.slow
def test_child_inheriting_the_amx_isa_asks_again():
    """A process started by a duc_hdc process inherits DNNL_MAX_CPU_ISA=AVX512_CORE_AMX but not
    the tile permission (Linux keeps it per process, not across exec): its bf16 / int8
    convolutions died with SIGILL (exit -4) until ``import duc_hdc`` asked again."""
    proc, state, convs = _run_child(DNNL_MAX_CPU_ISA="AVX512_CORE_AMX")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "INT8 OK" in proc.stdout
    enabled = _decision_here({"DNNL_MAX_CPU_ISA": "AVX512_CORE_AMX"})
    assert state["enabled"] is enabled
    if enabled:
        assert any("amx" in c for c in convs)


# ------------------------------------------------------------------------------ glibc malloc
@pytest.mark.parametrize("environ, libc, want, reason", [
    ({}, "glibc", True, "one arena, no mmap for large blocks, no trimming"),
    ({"DUC_HDC_NO_MALLOC_TUNING": "1"}, "glibc", False, "DUC_HDC_NO_MALLOC_TUNING=1"),
    ({"MALLOC_ARENA_MAX": "4"}, "glibc", False, "chosen by the user (MALLOC_ARENA_MAX)"),
    ({"MALLOC_MMAP_THRESHOLD_": "1"}, "glibc", False, "(MALLOC_MMAP_THRESHOLD_)"),
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, "glibc", False, "(GLIBC_TUNABLES)"),
    ({"GLIBC_TUNABLES": "glibc.cpu.x86_ibt=on"}, "glibc", True, "one arena"),
    ({"LD_PRELOAD": "libjemalloc.so.2"}, "glibc", False, "(LD_PRELOAD)"),
    ({}, "", False, "not glibc"),
])
def test_malloc_decision(environ, libc, want, reason):
    tune, why = runtime.malloc_decision(environ, libc)
    assert tune is want and reason in why


class Mallopt(object):
    """A stand-in for glibc's mallopt: records the calls, answers ``rc``."""

    def __init__(self, rc=1):
        self.rc, self.calls = rc, []

    def __call__(self, param, value):
        self.calls.append((param.value, value.value))
        return self.rc


def test_setup_process_tunes_malloc_unless_told_not_to():
    mallopt = Mallopt()
    runtime.setup_process({}, flags=set(), request_permission=Permission(False),
                          mallopt=mallopt)
    assert mallopt.calls == [(-8, 1), (-4, 0), (-1, 2 ** 31 - 1)]  # glibc (Debian)
    mallopt = Mallopt()
    runtime.setup_process({"DUC_HDC_NO_MALLOC_TUNING": "1"}, flags=set(),
                          request_permission=Permission(False), mallopt=mallopt)
    assert mallopt.calls == []
    assert runtime.tune_malloc(Mallopt(rc=0)) is False  # a refused setting is reported


_FAULTS = r"""
import ctypes, resource, sys
import duc_hdc
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
n = 40 << 20  # above glibc's largest mmap threshold (32 MB)
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(ctypes.c_size_t(n))
    ctypes.memset(p, 1, n)
    libc.free(ctypes.c_void_p(p))
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(duc_hdc.runtime.malloc_state()["tuned"], max(faults[1:]))
"""


def test_import_keeps_large_blocks_mapped():
    """After ``import duc_hdc`` a 40 MB block freed and allocated again is not page-faulted in
    again (a training step did it for 369 MB a step); with the opt-out it is, every time."""
    env = _clean_env()
    env.pop("DUC_HDC_NO_MALLOC_TUNING", None)
    for key in [k for k in env if k.startswith("MALLOC_") or k in ("GLIBC_TUNABLES",
                                                                 "LD_PRELOAD")]:
        env.pop(key)
    runs = {}
    for opt_out in ("", "1"):
        env["DUC_HDC_NO_MALLOC_TUNING"] = opt_out
        out = subprocess.run([sys.executable, "-c", _FAULTS], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, universal_newlines=True, timeout=300)
        assert out.returncode == 0, out.stdout[-2000:]
        tuned, faults = out.stdout.split()[-2:]
        runs[opt_out] = (tuned, int(faults))
    assert runs[""][0] == "True" and runs["1"][0] == "False"
    pages = (40 << 20) // 4096
    assert runs[""][1] < pages // 100, runs      # reused: (almost) no faults
    assert runs["1"][1] > pages // 2, runs       # a fresh mmap each time


# ------------------------------------------------------------------------------ MXNet's log
_FUSE = r"""
import duc_hdc, mxnet as mx
x = mx.sym.var("data")
y = mx.sym.Activation(mx.sym.Convolution(x, kernel=(3, 3), pad=(1, 1), num_filter=4,
                                         name="conv"), act_type="relu")
# an executor bound with a subgraph backend: export's check, INT8 calibration, the original graph
y.simple_bind(mx.cpu(), data=(1, 3, 8, 8), grad_req="null").forward()[0].wait_to_read()
print("bound")
"""


def test_setup_process_quiets_mxnets_subgraph_log_unless_the_user_set_it():
    env = {}
    runtime.setup_process(env, flags=set(), request_permission=Permission(False),
                          mallopt=Mallopt())
    assert env["MXNET_SUBGRAPH_VERBOSE"] == "0"
    env = {"MXNET_SUBGRAPH_VERBOSE": "1"}
    runtime.setup_process(env, flags=set(), request_permission=Permission(False),
                          mallopt=Mallopt())
    assert env["MXNET_SUBGRAPH_VERBOSE"] == "1"
    # a real MKLDNN-partitioned bind: quiet by default, MXNet's line when asked for
    for user, logged in ((None, False), ("1", True)):
        env = _clean_env(MXNET_SUBGRAPH_BACKEND="MKLDNN")
        env.pop("MXNET_SUBGRAPH_VERBOSE", None)
        if user is not None:
            env["MXNET_SUBGRAPH_VERBOSE"] = user
        out = subprocess.run([sys.executable, "-c", _FUSE], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, universal_newlines=True, timeout=300)
        assert out.returncode == 0 and "bound" in out.stdout, out.stdout
        assert ("Subgraph backend MKLDNN is activated" in out.stdout) is logged, out.stdout


def test_a_bad_omp_num_threads_is_replaced_not_fatal():
    """mxnet aborts on OMP_NUM_THREADS=abc (dmlc::ParamError, exit 134): duc_hdc warns and uses
    the core count instead; a valid value of the user's is kept."""
    for bad in ("abc", "2,1", "0", ""):
        env = {"OMP_NUM_THREADS": bad}
        runtime.setup_process(env, flags=set(), request_permission=Permission(False),
                              mallopt=Mallopt())
        assert env["OMP_NUM_THREADS"] == str(os.cpu_count() or 1), bad
    env = {"OMP_NUM_THREADS": "1"}
    runtime.setup_process(env, flags=set(), request_permission=Permission(False),
                          mallopt=Mallopt())
    assert env["OMP_NUM_THREADS"] == "1"
    out = subprocess.run([sys.executable, "-c", "import duc_hdc, mxnet as mx; "
                          "print('sum', mx.nd.ones((2, 2)).sum().asscalar())"],
                         env=_clean_env(OMP_NUM_THREADS="abc"), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, universal_newlines=True, timeout=300)
    assert out.returncode == 0 and "sum 4.0" in out.stdout, out.stdout
    assert "OMP_NUM_THREADS='abc' is not a positive integer" in out.stdout
