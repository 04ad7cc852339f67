"""Process set-up before mxnet loads, and what the CPU's oneDNN actually runs.

Imported by ``duc_hdc/__init__.py`` before anything imports mxnet; must never import mxnet
itself (the variables it sets are read once, when oneDNN / OpenMP initialize).

``OMP_NUM_THREADS``
    MXNet's OpenMP pool defaults to half the cores (measured 2x slower on 2 cores): set to all
    cores unless the user set it.
glibc malloc (:func:`malloc_decision`, :func:`tune_malloc`)
    A training step hands glibc blocks of 32 MB and more (e.g. the bf16 -> fp32 copies of the
    2048-channel feature map), which it serves with fresh ``mmap`` calls and returns at
    ``free``: every step page-faults them in again. Measured on ResNet-101-DUC-HDC, 512 x 512,
    bf16 AMP: 90,000 page faults (369 MB) per step, the largest copies taking 60 ms instead of
    1.4 ms. :func:`setup_process` tells glibc (``mallopt``) to use one arena, no ``mmap`` for
    large blocks and no trimming, so the memory is reused from step to step (0 faults a step).
    Not done where the user chose an allocator or glibc's settings (``MALLOC_*``,
    ``GLIBC_TUNABLES``, ``LD_PRELOAD``) or set ``DUC_HDC_NO_MALLOC_TUNING=1``.
AMX (Intel Advanced Matrix Extensions)
    MXNet 1.9.1 bundles oneDNN 2.4, whose AMX kernels (bf16 and int8 matrix tiles) are off
    unless ``DNNL_MAX_CPU_ISA=AVX512_CORE_AMX``. Setting the variable alone ends in SIGILL:
    Linux lets a process use the tile registers only after it asked with
    ``arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)``, which oneDNN 2.4 does not do.
    :func:`setup_process` asks when ``/proc/cpuinfo`` reports ``amx_tile`` and the user set
    neither ``DNNL_MAX_CPU_ISA`` nor ``ONEDNN_MAX_CPU_ISA``, and sets the ISA only when the
    kernel granted it (:func:`amx_decision` is the pure decision). ``DUC_HDC_NO_AMX=1`` opts
    out. The permission is per process and not inherited across ``exec`` while the variable
    is: a child process that uses mxnet must ``import duc_hdc`` first (which asks again).

:func:`onednn_isa` reports the ISA oneDNN dispatches to (from one convolution run with
``DNNL_VERBOSE`` in a child process), :func:`environment_report` the lines of ``duc-hdc env``.
"""
import ctypes
import ctypes.util
import logging
import os
import platform
import re
import subprocess
import sys

__all__ = ["setup_process", "amx_decision", "request_amx_permission", "cpu_flags", "cpu_model",
           "amx_state", "onednn_isa", "parse_isa", "bf16_support", "no_bf16_reason",
           "environment_report", "format_environment",
           "malloc_decision", "tune_malloc", "malloc_state",
           "OPT_OUT", "ISA_VARS", "AMX_ISA", "MALLOC_OPT_OUT", "ISA_LEVELS", "isa_cap",
           "isa_below", "isa_setting"]

log = logging.getLogger(__name__)

#: set to 1 (or true/yes) to leave AMX off
OPT_OUT = "DUC_HDC_NO_AMX"
#: the variables through which a user chooses oneDNN's ISA (both spellings of oneDNN 2.x)
ISA_VARS = ("DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA")
AMX_ISA = "AVX512_CORE_AMX"

ARCH_REQ_XCOMP_PERM = 0x1023
XFEATURE_XTILEDATA = 18
SYS_ARCH_PRCTL_X86_64 = 158

#: set to 1 (or true/yes) to leave glibc's malloc settings alone
MALLOC_OPT_OUT = "DUC_HDC_NO_MALLOC_TUNING"
#: mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
#: the settings :func:`tune_malloc` makes: (parameter, value, what)
MALLOC_SETTINGS = ((M_ARENA_MAX, 1, "one arena"), (M_MMAP_MAX, 0, "no mmap for large blocks"),
                   (M_TRIM_THRESHOLD, 2 ** 31 - 1, "no trimming"))

#: MXNet's switch for its subgraph log lines (quiet unless the user set it)
SUBGRAPH_VERBOSE = "MXNET_SUBGRAPH_VERBOSE"

#: what setup_process decided and why (read by amx_state)
_STATE = {}
#: the malloc decision (read by malloc_state)
_MALLOC = {}


def cpu_flags(path="/proc/cpuinfo"):
    """The CPU feature flags of ``/proc/cpuinfo`` (a set; empty where there is none)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model(path="/proc/cpuinfo"):
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: oneDNN 2.4's names for ``DNNL_MAX_CPU_ISA``, lowest first. MXNet 1.9.1's oneDNN reads only
#: ``DNNL_MAX_CPU_ISA`` (not ``ONEDNN_MAX_CPU_ISA``), matches these names exactly (upper case)
#: and ignores any other value: checked with ``duc-hdc env``'s ISA probe (``AVX2`` -> "Intel
#: AVX2"; ``avx2``, ``FOO`` or ``ONEDNN_MAX_CPU_ISA=AVX2`` -> AVX-512 as unset).
ISA_LEVELS = ("SSE41", "AVX", "AVX2", "AVX512_MIC", "AVX512_MIC_4OPS", "AVX512_CORE",
              "AVX512_CORE_VNNI", "AVX512_CORE_BF16", "AVX512_CORE_AMX", "ALL")


def isa_cap(environ=None):
    """The cap on oneDNN's ISA in effect: ``DNNL_MAX_CPU_ISA`` where oneDNN 2.4 accepts its
    value (one of :data:`ISA_LEVELS` but ``ALL``), else None (no cap)."""
    environ = os.environ if environ is None else environ
    value = environ.get(ISA_VARS[0], "")
    return value if value in ISA_LEVELS[:-1] else None


def isa_below(level, environ=None):
    """``DNNL_MAX_CPU_ISA=VALUE`` (a str) where it keeps oneDNN below ``level`` (a name of
    :data:`ISA_LEVELS`, e.g. ``'AVX512_CORE'``), else None."""
    cap = isa_cap(environ)
    if cap is not None and ISA_LEVELS.index(cap) < ISA_LEVELS.index(level):
        return "%s=%s" % (ISA_VARS[0], cap)
    return None


def isa_setting(environ=None):
    """What the ``DNNL_MAX_CPU_ISA`` / ``ONEDNN_MAX_CPU_ISA`` settings do here, for
    ``duc-hdc env`` (a value oneDNN 2.4 ignores is said to be ignored)."""
    environ = os.environ if environ is None else environ
    value = environ.get(ISA_VARS[0])
    if value is None:
        words = "(unset)"
    elif value in ISA_LEVELS:
        words = value
    else:
        words = "%s (ignored by oneDNN 2.4: not one of %s)" % (value, ", ".join(ISA_LEVELS))
    if environ.get(ISA_VARS[1]):
        words += "; %s=%s ignored (MXNet 1.9.1's oneDNN 2.4 reads only %s)" % (
            ISA_VARS[1], environ[ISA_VARS[1]], ISA_VARS[0])
    return words


def _positive_int(value):
    try:
        return int(str(value).strip()) > 0
    except ValueError:
        return False


def _truthy(value):
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _allows_amx(value):
    """True when a ``DNNL_MAX_CPU_ISA`` value may let oneDNN use AMX (``AVX512_CORE_AMX``,
    ``ALL``). Deliberately broader than :func:`isa_cap` (any case, either variable): it decides
    where the tile permission is asked for or the ISA lowered, and asking costs nothing where a
    wrong "no" ends in SIGILL."""
    value = str(value).strip().upper()
    return "AMX" in value or value == "ALL"


def amx_decision(flags, environ, request_permission):
    """Whether oneDNN will use AMX in this process: ``(enabled, reason, updates)``.

    Pure: ``request_permission`` (a zero-argument callable returning True when the kernel
    granted the tile permission) is called only where AMX would be used, and ``updates`` (the
    environment variables to set) is returned, not applied.

    - ``DUC_HDC_NO_AMX`` set: AMX off (an inherited AMX ISA is lowered to ``AVX512_CORE_BF16``).
    - ``DNNL_MAX_CPU_ISA`` / ``ONEDNN_MAX_CPU_ISA`` set: the user's (or the parent process's)
      choice stands; where it allows AMX on an AMX CPU the permission is still requested,
      because it is per process (a child started with ``exec`` does not inherit it: setting
      the ISA alone kills it with SIGILL, measured), and if refused the ISA is lowered to
      ``AVX512_CORE_BF16``.
    - Neither set: AMX on when the CPU reports ``amx_tile`` and the kernel grants the
      permission (``DNNL_MAX_CPU_ISA=AVX512_CORE_AMX``); off otherwise.

    Parameters
    ----------
    flags : set of str
        CPU flags (:func:`cpu_flags`).
    environ : mapping
        The environment (``os.environ``).
    request_permission : callable
        E.g. :func:`request_amx_permission`.

    Returns
    -------
    (bool, str, dict)
    """
    user = [(var, environ[var]) for var in ISA_VARS if environ.get(var)]
    lower = {var: "AVX512_CORE_BF16" for var, value in user if _allows_amx(value)}
    if _truthy(environ.get(OPT_OUT, "")):
        return False, "AMX off: %s=%s" % (OPT_OUT, environ.get(OPT_OUT)), lower
    if user:
        chosen = ", ".join("%s=%s" % kv for kv in user)
        if not lower:
            return False, "oneDNN ISA chosen by the user: %s" % chosen, {}
        if "amx_tile" not in flags:
            return False, ("oneDNN ISA chosen by the user: %s; AMX not available (the CPU does "
                           "not report amx_tile)" % chosen), {}
        if request_permission():
            return True, ("AMX enabled (oneDNN ISA chosen by the user or the parent process: "
                          "%s; tile permission granted)" % chosen), {}
        return False, ("AMX not enabled: the kernel refused the tile permission (arch_prctl "
                       "ARCH_REQ_XCOMP_PERM); %s lowered to AVX512_CORE_BF16 (else SIGILL)"
                       % chosen), lower
    if "amx_tile" not in flags:
        return False, "AMX not available (the CPU does not report amx_tile)", {}
    if not request_permission():
        return False, ("AMX not enabled: the kernel refused the tile permission "
                       "(arch_prctl ARCH_REQ_XCOMP_PERM)"), {}
    return (True, "AMX enabled (%s=%s, tile permission granted)" % (ISA_VARS[0], AMX_ISA),
            {ISA_VARS[0]: AMX_ISA})


def request_amx_permission():
    """Ask Linux for the AMX tile data permission (``arch_prctl(ARCH_REQ_XCOMP_PERM,
    XFEATURE_XTILEDATA)``); True when granted. False on any other OS or architecture, or
    where the call fails (kernels before 5.16 do not know it)."""
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        rc = libc.syscall(ctypes.c_long(SYS_ARCH_PRCTL_X86_64),
                          ctypes.c_long(ARCH_REQ_XCOMP_PERM),
                          ctypes.c_ulong(XFEATURE_XTILEDATA))
    except (OSError, AttributeError):
        return False
    if rc != 0:
        log.debug("arch_prctl(ARCH_REQ_XCOMP_PERM) failed: errno %d", ctypes.get_errno())
    return rc == 0


def malloc_decision(environ, libc=None):
    """``(tune, reason)``: whether :func:`tune_malloc` should run in this process.

    ``libc`` is ``platform.libc_ver()[0]`` (``'glibc'`` on Debian / Ubuntu; the settings are
    glibc's). Left alone where the user opted out or chose the allocator's settings."""
    libc = platform.libc_ver()[0] if libc is None else libc
    if _truthy(environ.get(MALLOC_OPT_OUT, "")):
        return False, "malloc left alone: %s=%s" % (MALLOC_OPT_OUT, environ[MALLOC_OPT_OUT])
    if libc != "glibc":
        return False, "malloc left alone: not glibc (%s)" % (libc or "unknown C library")
    chosen = sorted(k for k in environ if k.startswith("MALLOC_"))
    if "malloc" in environ.get("GLIBC_TUNABLES", ""):
        chosen.append("GLIBC_TUNABLES")
    if environ.get("LD_PRELOAD"):
        chosen.append("LD_PRELOAD")
    if chosen:
        return False, "malloc left alone: chosen by the user (%s)" % ", ".join(chosen)
    return True, "glibc malloc: %s (no page faults from step to step)" % ", ".join(
        what for _, _, what in MALLOC_SETTINGS)


def tune_malloc(mallopt=None):
    """Apply :data:`MALLOC_SETTINGS` with glibc's ``mallopt``; True when every call succeeded.

    Written with ctypes: neither Python nor mxnet exposes ``mallopt``. Looked up in the
    running process (``CDLL(None)``, which has libc loaded), not with ``find_library``, which
    searches the disk at every ``import duc_hdc``."""
    if mallopt is None:
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):
            return False
    return all([mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1
                for param, value, _ in MALLOC_SETTINGS])


def malloc_state():
    """dict(tuned=bool, reason=str): what :func:`setup_process` did to malloc here."""
    return dict(_MALLOC) if _MALLOC else dict(tuned=False, reason="setup_process not run")


def setup_process(environ=None, flags=None, request_permission=request_amx_permission,
                  mallopt=None):
    """The process set-up ``import duc_hdc`` does before mxnet loads.

    Sets ``OMP_NUM_THREADS`` (all cores) unless set to a positive integer (mxnet aborts on
    anything else) and ``MXNET_SUBGRAPH_VERBOSE=0`` unless set, tunes
    glibc's malloc where :func:`malloc_decision` says so, and enables AMX where
    :func:`amx_decision` says so.
    Returns the AMX decision's reason (also kept for :func:`amx_state`). Has no effect on
    oneDNN once mxnet has been imported.
    """
    environ = os.environ if environ is None else environ
    threads = environ.get("OMP_NUM_THREADS")
    if threads is not None and not _positive_int(threads):
        # mxnet aborts the process (dmlc::ParamError, exit 134) on a value that is not an
        # integer, e.g. "abc" or "2,1"; libgomp rejects 0
        log.warning("OMP_NUM_THREADS=%r is not a positive integer; using %d (the cores here)",
                    threads, os.cpu_count() or 1)
        threads = None
    if threads is None:
        environ["OMP_NUM_THREADS"] = str(os.cpu_count() or 1)
    # MXNet logs "Subgraph backend MKLDNN is activated." at every bind of a fused graph (the
    # peers benchmark printed it 40 times, predict once per run); duc-hdc says what it fused
    # itself. MXNet reads the variable at each bind, so setting it here is enough.
    environ.setdefault(SUBGRAPH_VERBOSE, "0")
    tune, why = malloc_decision(environ)
    if tune and not tune_malloc(mallopt):
        tune, why = False, "malloc left alone: mallopt failed"
    if environ is os.environ:
        _MALLOC.update(tuned=tune, reason=why)
    if environ is os.environ and "mxnet" in sys.modules:
        log.debug("mxnet was imported before duc_hdc: the oneDNN ISA is already fixed")
    enable, reason, updates = amx_decision(cpu_flags() if flags is None else flags, environ,
                                           request_permission)
    environ.update(updates)
    if updates and not enable:
        log.warning("%s", reason)
    if environ is os.environ:
        _STATE.update(enabled=enable, reason=reason)
    return reason


def amx_state():
    """dict(enabled=bool, reason=str): what :func:`setup_process` decided in this process."""
    return dict(_STATE) if _STATE else dict(enabled=False, reason="setup_process not run")


def bf16_support(flags=None, environ=None):
    """How this CPU runs bfloat16: ``'amx'``, ``'avx512_bf16'`` (no AMX kernels: slower) or
    None (cannot run it).

    AMX counts only where it is enabled in this process (the tile permission granted and
    ``DNNL_MAX_CPU_ISA`` allowing it).
    """
    flags = cpu_flags() if flags is None else flags
    environ = os.environ if environ is None else environ
    if isa_below("AVX512_CORE", environ):
        return None  # oneDNN has no bfloat16 convolution below AVX512_CORE
    if "amx_bf16" in flags and "amx_tile" in flags and isa_cap(environ) == AMX_ISA:
        return "amx"
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return "avx512_bf16"
    return None


def no_bf16_reason(environ=None, flags=None):
    """The words for a CPU :func:`bf16_support` finds without bfloat16 (the refusals of
    ``--precision bf16`` and ``train.amp: bfloat16`` say the same): the CPU's own lack
    first, else the ``DNNL_MAX_CPU_ISA`` that holds oneDNN below it."""
    flags = cpu_flags() if flags is None else flags
    if not ({"avx512_bf16", "amx_bf16"} & set(flags)):
        return ("this CPU (%s) has neither AMX (amx_bf16) nor AVX512_BF16 (avx512_bf16 in "
                "/proc/cpuinfo), which oneDNN needs for bfloat16" % cpu_model())
    capped = isa_below("AVX512_CORE", environ)
    return ("%s keeps oneDNN below AVX512_CORE, where it has no bfloat16 convolution "
            "(unset it, or set AVX512_CORE_BF16 or higher)" % capped)


# ------------------------------------------------------------------------------ oneDNN ISA
_PROBE = r"""
import duc_hdc, mxnet as mx
x = mx.nd.ones((1, 16, 16, 16))
w = mx.nd.ones((16, 16, 3, 3))
mx.nd.Convolution(x, w, kernel=(3, 3), pad=(1, 1), num_filter=16, no_bias=True).wait_to_read()
"""
_ISA_CACHE = {}


def parse_isa(verbose_text):
    """The ISA line of oneDNN's verbose output (``dnnl_verbose,info,cpu,isa:...``), or None."""
    for line in verbose_text.splitlines():
        m = re.match(r"^(?:dnnl|mkldnn|onednn)_verbose,info,cpu,isa:(.*)$", line.strip())
        if m:
            return m.group(1).strip()
    return None


def onednn_isa(refresh=False, timeout=120):
    """The CPU ISA oneDNN dispatches to in a process set up as this one (e.g. "Intel AVX-512
    with AVX512BW, AVX512VL, and AVX512DQ extensions" or "... with Intel AMX"): one convolution
    run in a child process with ``DNNL_VERBOSE=1``; cached per process. None when the child
    fails or prints no ISA line.
    """
    key = tuple(os.environ.get(v, "") for v in ISA_VARS + (OPT_OUT,))
    if key in _ISA_CACHE and not refresh:
        return _ISA_CACHE[key]
    env = dict(os.environ, DNNL_VERBOSE="1", MKLDNN_VERBOSE="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True, env=env,
                              timeout=timeout)
        isa = parse_isa(proc.stdout) if proc.returncode == 0 else None
        if proc.returncode:
            log.warning("oneDNN ISA probe exited with status %d", proc.returncode)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.warning("oneDNN ISA probe failed: %s", err)
        isa = None
    _ISA_CACHE[key] = isa
    return isa


def environment_report(probe=True):
    """What ``duc-hdc env`` prints: CPU, matrix engines, AMX decision, oneDNN ISA, threads.

    Returns a list of ``(key, value)`` pairs (strings); the versions of mxnet and numpy are
    read from package metadata, without importing them.
    """
    from importlib import metadata

    def version(dist):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    flags = cpu_flags()
    engines = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile",
                           "amx_bf16", "amx_int8") if f in flags]
    state = amx_state()
    bf16 = bf16_support(flags)
    rows = [("cpu", "%s, %d cores" % (cpu_model(), os.cpu_count() or 1)),
            ("cpu flags", " ".join(engines) or "none of avx2/avx512/amx"),
            ("amx", state["reason"]),
            ("bf16", {"amx": "AMX (fast)", "avx512_bf16": "AVX512_BF16 without AMX (slow)",
                      None: "not supported: %s" % no_bf16_reason(flags=flags)}[bf16]),
            ("DNNL_MAX_CPU_ISA", isa_setting()),
            ("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "(unset)")),
            ("malloc", malloc_state()["reason"]),
            ("python", platform.python_version()),
            ("mxnet", version("mxnet")), ("numpy", version("numpy"))]
    if probe:
        rows.append(("oneDNN ISA", onednn_isa() or "unknown (probe failed)"))
    return rows


def format_environment(rows):
    """``environment_report`` rows as aligned text lines."""
    width = max(len(k) for k, _ in rows)
    return "\n".join("%-*s  %s" % (width, k, v) for k, v in rows)

