"""Starting a parameter-server job (``dist_sync``, ``dist_device_sync``, ``dist_async``).

``duc-hdc launch -n WORKERS -s SERVERS [--launcher local|ssh|mpi] [--hostfile FILE] -- duc-hdc
train ...`` starts one scheduler (always on this machine, as mxnet's own ``tools/launch.py``
does), the servers and the workers with the ``DMLC_*`` environment ps-lite reads. Servers and the
scheduler are plain ``python -c "import mxnet"`` processes: importing mxnet with
``DMLC_ROLE=server`` or ``scheduler`` runs that role.

mxnet 1.9.1 installs its launcher (``mxnet/tools/launch.py``) and the ``dmlc_tracker`` package
(local, ssh, mpi, sge, yarn submitters). This module follows its submitters' conventions: the
same hostfile syntax (``host``, ``host:port``, ``host slots=N``; so one hostfile serves both),
the same placement (servers first, then workers, round-robin over the hosts), the ssh command
(``cd`` to this directory, export the environment, run the command), the mpi command
(``mpirun -n N``, the environment as ``-x``/``-env`` flags for Open MPI / MPICH, told apart by
``mpirun --version`` as ``dmlc_tracker.mpi.get_mpi_env`` does) and it uses
``dmlc_tracker.tracker.get_host_ip`` (the scheduler's address). It does not call
``dmlc_tracker``'s ``submit`` functions: they run every process in a daemon thread through
``subprocess.check_call`` (no handle to stop the others when one fails; a failing thread only
raises in itself), wait with ``Thread.isAlive`` (removed in Python 3.9: they fail on 3.11),
and their ssh command is not quoted and leaves the remote process running when ssh dies.

The watchdog: every process is owned here. When any of them (worker, server, scheduler, an ssh
or mpirun client) exits with an error, the others would wait forever in a kvstore barrier, so
the launcher stops them all (SIGTERM, then SIGKILL after ``grace`` s) and returns the failed
process's exit code (128 + N for a signal N), within ``poll + 2 * grace`` seconds. Over ssh each
remote command runs under a small guard that stops it when its ssh connection ends, so
stopping the local ssh client stops the remote process too. The launcher itself stopped by
SIGINT (Ctrl-C), SIGTERM (``timeout``, batch schedulers, ``kill``) or SIGHUP (the terminal
closed) stops the job the same way and returns 128 + N: every process runs in its own session,
so no signal meant for the launcher reaches them, and none is left running unsupervised.
"""
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

log = logging.getLogger(__name__)

LAUNCHERS = ("local", "ssh", "mpi")

#: signals that stop the launcher: it stops the job first, then returns 128 + N
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

#: environment passed to remote processes (ssh, mpi) besides the DMLC_* role variables
_FORWARD_PREFIXES = ("DMLC_", "PS_", "OMP_", "KMP_", "MXNET_", "DUC_HDC_")
_FORWARD_KEYS = ("PYTHONPATH", "LD_LIBRARY_PATH", "VIRTUAL_ENV")

#: runs ``argv[1:]`` on the remote host; stops it when stdin (the ssh connection) closes, and
#: exits with its code (128 + N for signal N, as a shell reports it)
_REMOTE_GUARD = (
    "import os,signal,subprocess,sys,threading,time\n"
    "p=subprocess.Popen(sys.argv[1:],stdin=subprocess.DEVNULL,start_new_session=True)\n"
    "def watch():\n"
    "    try:\n"
    "        while os.read(0,65536): pass\n"
    "    except OSError: pass\n"
    "    for s in (signal.SIGTERM,signal.SIGKILL):\n"
    "        try: os.killpg(p.pid,s)\n"
    "        except OSError: return\n"
    "        time.sleep(3)\n"
    "threading.Thread(target=watch,daemon=True).start()\n"
    "rc=p.wait()\n"
    "sys.exit(rc if rc>=0 else 128-rc)\n")


class LaunchError(ValueError):
    """The launch options are inconsistent; the message names the option."""


def free_port(host="127.0.0.1"):
    """A TCP port free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def read_hostfile(path):
    """``[(host, port or None), ...]`` from a dmlc_tracker hostfile.

    One host a line: ``host``, ``host:port`` (ssh port) or ``host slots=N`` (the mpi form; the
    slots are mpirun's business); ``#`` comments and blank lines are ignored.
    """
    try:
        with open(path) as f:
            lines = [line.split("#")[0].strip() for line in f]
    except OSError as e:
        raise LaunchError("--hostfile %s: %s" % (path, e.strerror)) from e
    hosts = []
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        line = line.split("slots=")[0].strip()
        host, _, port = line.partition(":")
        if not host or (port and not port.isdigit()) or " " in host:
            raise LaunchError("--hostfile %s line %d: %r is not host, host:port or host slots=N"
                              % (path, number, line))
        hosts.append((host, int(port) if port else None))
    if not hosts:
        raise LaunchError("--hostfile %s lists no hosts" % path)
    return hosts


def _is_loopback(host):
    try:
        return socket.gethostbyname(host).startswith("127.")
    except OSError:
        return False


def scheduler_address(launcher, hosts, host_ip=None):
    """The address the scheduler listens on and every process connects to."""
    if host_ip:
        return host_ip
    if launcher == "local" or (hosts and all(_is_loopback(h) for h, _ in hosts)):
        return "127.0.0.1"
    from dmlc_tracker.tracker import get_host_ip

    return get_host_ip("auto")


def _forwarded(env):
    return {k: v for k, v in sorted(env.items())
            if k.startswith(_FORWARD_PREFIXES) or k in _FORWARD_KEYS}


def ssh_command(host, port, command, env, ssh_options=(), cwd=None):
    """The ssh client's argv running ``command`` on ``host`` under the remote guard.

    ``env`` is exported on the remote side (DMLC_*, PS_*, OMP_*, MXNET_*, DUC_HDC_*,
    PYTHONPATH, ...); the remote command starts in ``cwd`` (default: this directory), which
    must exist there (a shared filesystem, or the same layout on every host).
    """
    exports = " ".join("%s=%s" % (k, shlex.quote(str(v))) for k, v in _forwarded(env).items())
    guard = [sys.executable, "-c", _REMOTE_GUARD]
    remote = "cd %s && exec env %s %s" % (shlex.quote(cwd or os.getcwd()), exports,
                                          " ".join(shlex.quote(c) for c in guard + command))
    argv = ["ssh", "-o", "StrictHostKeyChecking=no", "-o", "BatchMode=yes"] + list(ssh_options)
    if port:
        argv += ["-p", str(port)]
    return argv + [host, remote]


def mpi_flavour():
    """``'openmpi'`` or ``'mpich'``, from ``mpirun --version`` (dmlc_tracker's test)."""
    try:
        out = subprocess.run(["mpirun", "--version"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LaunchError("--launcher mpi: `mpirun --version` failed (%s)" % e) from e
    if b"Open MPI" in out:
        return "openmpi"
    if b"mpich" in out.lower() or b"HYDRA" in out:
        return "mpich"
    first = out.decode("utf-8", "replace").strip().splitlines()[:1]
    raise LaunchError("--launcher mpi: `mpirun --version` says %r; Open MPI or MPICH needed"
                      % (first[0] if first else ""))


def _check_open_mpi_root(env):
    """Open MPI's mpirun refuses root unless both of its variables are set: say so first, in
    one line, instead of its page of text (containers often run as root)."""
    allowed = all(env.get(k) == "1" for k in ("OMPI_ALLOW_RUN_AS_ROOT",
                                              "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"))
    if os.geteuid() == 0 and not allowed:
        raise LaunchError("--launcher mpi: Open MPI's mpirun refuses to run as root; run as "
                          "another user, or set OMPI_ALLOW_RUN_AS_ROOT=1 and "
                          "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 (e.g. in a container)")


def mpi_command(count, command, env, hostfile=None, flavour="openmpi"):
    """``mpirun -n COUNT [--hostfile F] <env flags> command``, as dmlc_tracker's mpi submitter
    builds it: the environment as ``-x K=V`` (Open MPI) or ``-env K V`` (MPICH).

    Written here, not with ``dmlc_tracker.mpi.get_mpi_env``: that returns one unquoted string,
    which breaks on a value with a space. Without a hostfile (every process on this machine)
    Open MPI gets ``--oversubscribe``: more processes than cores, as the local launcher runs.
    """
    argv = ["mpirun", "-n", str(count)]
    if hostfile:
        argv += ["--hostfile", hostfile]
    elif flavour == "openmpi":
        argv.append("--oversubscribe")
    for key, value in _forwarded(env).items():
        argv += (["-x", "%s=%s" % (key, value)] if flavour == "openmpi"
                 else ["-env", key, str(value)])
    return argv + list(command)


class _Proc:
    def __init__(self, role, index, popen, where="local"):
        self.role, self.index, self.popen, self.where = role, index, popen, where

    @property
    def name(self):
        return "%s %d (pid %d, %s)" % (self.role, self.index, self.popen.pid, self.where)


def _start(role, index, argv, env, where="local"):
    # own session: stopping the job signals the whole process group (the command's children)
    popen = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE if where != "local" else None,
                             start_new_session=True)
    return _Proc(role, index, popen, where)


def _stop(procs, grace):
    for p in procs:
        if p.popen.poll() is None:
            try:
                os.killpg(p.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.time() + grace
    for p in procs:
        while p.popen.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        if p.popen.poll() is None:
            try:
                os.killpg(p.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.popen.wait()
        if p.popen.stdin:
            p.popen.stdin.close()


class _StopSignals:
    """While active, SIGINT/SIGTERM/SIGHUP are recorded in ``received`` instead of ending the
    launcher (whose job would then run on unsupervised): the caller checks it between steps
    and stops the job. Outside the main thread no handler can be set and the signals keep
    their behaviour (an exception reaching :func:`launch` still stops the job)."""

    def __init__(self):
        self.received, self.previous = [], {}

    def _record(self, signum, frame):
        self.received.append(signum)

    def __enter__(self):
        try:
            for signum in STOP_SIGNALS:
                self.previous[signum] = signal.signal(signum, self._record)
        except ValueError:  # not the main thread
            self.__exit__()
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self.previous = {}

    @property
    def code(self):
        """128 + N for the first signal received, else None."""
        return exit_code(-self.received[0]) if self.received else None


def exit_code(returncode):
    """A process's exit status as a shell reports it: 128 + N for a signal N."""
    return returncode if returncode >= 0 else 128 - returncode


def launch(command, num_workers, num_servers=1, launcher=None, hostfile=None, timeout=None,
           poll=0.2, grace=5.0, env=None, ssh_options=(), host_ip=None):
    """Run ``command`` as the ``num_workers`` workers of a parameter-server job; returns an exit
    code (0, the first failed process's code, 124 on ``timeout``, 128 + N when the launcher gets
    signal N: 130 on Ctrl-C, 143 on SIGTERM, 129 on SIGHUP; the job is stopped first).

    Parameters
    ----------
    command : list of str
        The worker command, e.g. ``[sys.executable, '-m', 'duc_hdc.cli', 'train', '--config',
        'x.yaml', '--kvstore', 'dist_sync']``.
    num_workers, num_servers : int
    launcher : {'local', 'ssh', 'mpi'}, optional
        Default: ``ssh`` with a hostfile, else ``local`` (every process on 127.0.0.1).
    hostfile : str, optional
        dmlc_tracker hostfile (:func:`read_hostfile`); needed by ``ssh``, passed to mpirun.
    timeout : float, optional
        Stop everything and fail (124) after this many seconds.
    poll, grace : float
        Seconds between checks; seconds a stopped process gets before SIGKILL.
    env : dict, optional
        Extra environment for every process (forwarded over ssh / mpi when its name starts
        with DMLC_, PS_, OMP_, KMP_, MXNET_ or DUC_HDC_).
    ssh_options : list of str
        Extra ssh client arguments, e.g. ``['-i', KEY, '-F', CONFIG]``.
    host_ip : str, optional
        The scheduler's address as the other hosts reach it (default: found by dmlc_tracker).
    """
    if num_workers < 1 or num_servers < 1:
        raise LaunchError("-n/--num-workers and -s/--num-servers: need at least one worker and "
                          "one server, got -n %d -s %d" % (num_workers, num_servers))
    if not command:
        raise LaunchError("no worker command given (put it after --)")
    launcher = launcher or ("ssh" if hostfile else "local")
    if launcher not in LAUNCHERS:
        raise LaunchError("--launcher %s: expected one of %s" % (launcher, ", ".join(LAUNCHERS)))
    if launcher == "ssh" and not hostfile:
        raise LaunchError("--launcher ssh needs --hostfile (one host or host:port a line)")
    if launcher == "local" and hostfile:
        raise LaunchError("--launcher local runs every process here; drop --hostfile or use "
                          "--launcher ssh")
    if launcher == "mpi" and not shutil.which("mpirun"):
        raise LaunchError("--launcher mpi: mpirun not found on PATH (install Open MPI or MPICH, "
                          "or use --launcher ssh)")
    base = dict(os.environ)
    base.update({k: str(v) for k, v in (env or {}).items()})
    flavour = mpi_flavour() if launcher == "mpi" else None
    if flavour == "openmpi":
        _check_open_mpi_root(base)
    hosts = read_hostfile(hostfile) if hostfile else None
    root = scheduler_address(launcher, hosts, host_ip)
    base.update(DMLC_PS_ROOT_URI=root, DMLC_PS_ROOT_PORT=str(free_port(
        "127.0.0.1" if root.startswith("127.") else "")),
        DMLC_NUM_SERVER=str(num_servers), DMLC_NUM_WORKER=str(num_workers))
    role_cmd = [sys.executable, "-c", "import mxnet"]
    procs = []
    sessions = None
    if flavour == "openmpi" and not hostfile and "OMPI_MCA_orte_tmpdir_base" not in base:
        # each mpirun its own session folder: the servers' and the workers' mpirun, started
        # together, share Open MPI's /tmp/ompi.<host>.<uid>, which one creates and removes as
        # the other starts (CI: "ORTE_ERROR_LOG: Error in file ../orte/util/session_dir.c",
        # "File exists", mpirun exit 1). Only for jobs on this machine: a remote orted would
        # be told a folder of this one.
        sessions = tempfile.mkdtemp(prefix="duc-hdc-mpirun-")
    try:
        return _launch(procs, launcher, command, role_cmd, base, root, hosts, hostfile, flavour,
                       num_servers, num_workers, ssh_options, timeout, poll, grace, sessions)
    finally:
        if sessions:
            shutil.rmtree(sessions, ignore_errors=True)


def _launch(procs, launcher, command, role_cmd, base, root, hosts, hostfile, flavour,
            num_servers, num_workers, ssh_options, timeout, poll, grace, sessions):
    with _StopSignals() as stop:
        try:
            _start_all(procs, stop, launcher, command, role_cmd, base, root, hosts, hostfile,
                       flavour, num_servers, num_workers, ssh_options, sessions)
            if stop.code is None:
                workers = [p for p in procs if p.role.startswith("worker")]
                log.info("launched (%s) scheduler on %s:%s, %d server(s), %d worker(s)",
                         launcher, root, base["DMLC_PS_ROOT_PORT"], num_servers, num_workers)
                code = _watch(procs, workers, timeout, poll, grace, num_workers, stop)
                if code is not None:
                    return code
        except OSError as e:
            _stop(procs, grace)
            raise LaunchError("--launcher %s: cannot start %s (%s)"
                              % (launcher, e.filename, e.strerror)) from e
        except BaseException:  # e.g. KeyboardInterrupt when no handler could be set
            _stop(procs, grace)
            raise
        log.error("launcher stopped by %s; stopping the job",
                  signal.Signals(stop.received[0]).name)
        _stop(procs, grace)
        return stop.code


def _start_all(procs, stop, launcher, command, role_cmd, base, root, hosts, hostfile, flavour,
               num_servers, num_workers, ssh_options, sessions=None):
    """Start the scheduler, servers and workers into ``procs``; stop starting on a signal.
    ``sessions``: a folder in which each mpirun gets its own Open MPI session folder."""
    procs.append(_start("scheduler", 0, role_cmd,
                        dict(base, DMLC_ROLE="scheduler", DMLC_NODE_HOST=root)))
    if launcher == "mpi":
        for role, count, cmd in (("server", num_servers, role_cmd),
                                 ("worker", num_workers, list(command))):
            if stop.code is not None:
                return
            role_env = dict(base, DMLC_ROLE=role)
            if sessions:
                role_env["OMPI_MCA_orte_tmpdir_base"] = os.path.join(sessions, role)
                os.makedirs(role_env["OMPI_MCA_orte_tmpdir_base"])
            argv = mpi_command(count, cmd, role_env, hostfile, flavour)
            procs.append(_start(role + "s", 0, argv, role_env, "mpirun"))
        return
    # dmlc_tracker's order: servers first, then workers, round-robin over the hosts
    for i in range(num_servers + num_workers):
        if stop.code is not None:
            return
        role, index = ("server", i) if i < num_servers else ("worker", i - num_servers)
        cmd = role_cmd if role == "server" else list(command)
        if hosts:
            host, port = hosts[i % len(hosts)]
            role_env = dict(base, DMLC_ROLE=role, DMLC_NODE_HOST=host)
            where = "ssh %s%s" % (host, ":%d" % port if port else "")
            procs.append(_start(role, index, ssh_command(host, port, cmd, role_env, ssh_options),
                                role_env, where))
        else:
            procs.append(_start(role, index, cmd,
                                dict(base, DMLC_ROLE=role, DMLC_NODE_HOST=root)))


def _watch(procs, workers, timeout, poll, grace, num_workers, stop):
    """The job's exit code, or None when a stop signal arrived (``stop.received``)."""
    # ``workers``: the processes to wait for (one mpirun holds all of them with --launcher mpi)
    start = time.time()
    while stop.code is None:
        failed = [p for p in procs if p.popen.poll() not in (None, 0)]
        if failed and not any(p in workers for p in failed):
            # a server or the scheduler: ps-lite can abort one as the job shuts down ("Check
            # failed: msg->meta.app_id != Meta::kEmpty", seen in CI after both workers had
            # finished); workers that then exit 0 have finished the run (their last pull is
            # done), so wait for them, ``grace`` seconds at most
            deadline = time.time() + grace
            while (time.time() < deadline and stop.code is None
                   and any(w.popen.poll() is None for w in workers)):
                time.sleep(min(poll, 0.05))
            if stop.code is not None:
                continue  # a stop signal meanwhile: stopped as such
            failed = ([] if all(w.popen.poll() == 0 for w in workers) else
                      [p for p in procs if p.popen.poll() not in (None, 0)])
        if failed:
            failed.sort(key=lambda p: p not in workers)  # a worker's code first
            p = failed[0]
            code = exit_code(p.popen.returncode)
            log.error("%s exited with code %d; stopping the job", p.name, code)
            _stop(procs, grace)
            return code
        if all(w.popen.poll() == 0 for w in workers):
            # the workers finished; servers and scheduler leave once told, else stop them
            deadline = time.time() + max(grace, 10.0)
            while any(p.popen.poll() is None for p in procs) and time.time() < deadline:
                time.sleep(poll)
            _stop(procs, grace)
            for p in procs:
                if p not in workers and p.popen.returncode not in (0, None, -signal.SIGTERM,
                                                                   -signal.SIGKILL):
                    log.warning("%s exited with code %d after the workers had finished the "
                                "run (ps-lite's shutdown); the run is complete", p.name,
                                exit_code(p.popen.returncode))
            log.info("all %d workers finished", num_workers)
            return 0
        if timeout and time.time() - start > timeout:
            log.error("job still running after %.0f s (--timeout); stopping it", timeout)
            _stop(procs, grace)
            return 124
        time.sleep(poll)
    return None
