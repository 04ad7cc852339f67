"""Launching data-parallel jobs on MXNet's parameter-server kvstore (``dist_sync``).

``duc-hdc launch -n WORKERS -s SERVERS [--hostfile FILE] -- duc-hdc train ...`` starts one
scheduler, the servers and the workers with the ``DMLC_*`` environment ps-lite reads. Without a
hostfile every process runs on this machine over 127.0.0.1; with one, servers and workers go
round-robin to its hosts over ssh (the scheduler stays here). Servers and the scheduler are plain
``python -c "import mxnet"`` processes: importing mxnet with ``DMLC_ROLE=server`` or
``scheduler`` runs that role.

The launcher watches every process: when a worker (or a server / the scheduler) dies with an
error, the others would wait forever in a kvstore barrier, so it stops them all and exits with
the failed process's code within ``poll + grace`` seconds. mxnet's own ``tools/launch.py`` is
not shipped in the wheel, hence this small launcher.
"""
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time

log = logging.getLogger(__name__)


def free_port(host="127.0.0.1"):
    """A TCP port free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def read_hostfile(path):
    """Hosts, one per line (``#`` comments and blank lines ignored)."""
    try:
        with open(path) as f:
            hosts = [line.split("#")[0].strip() for line in f]
    except OSError as e:
        raise ValueError("--hostfile %s: %s" % (path, e.strerror)) from e
    hosts = [h for h in hosts if h]
    if not hosts:
        raise ValueError("--hostfile %s lists no hosts" % path)
    return hosts


def _local_ip():
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


class _Proc:
    def __init__(self, role, index, popen):
        self.role, self.index, self.popen = role, index, popen

    @property
    def name(self):
        return "%s %d (pid %d)" % (self.role, self.index, self.popen.pid)


def _spawn(role, index, command, env, host=None):
    if host is None:
        popen = subprocess.Popen(command, env=env, start_new_session=True)
    else:
        exports = " ".join("%s=%s" % (k, shlex.quote(v)) for k, v in sorted(env.items())
                           if k.startswith(("DMLC_", "PS_", "OMP_", "MXNET_")))
        remote = "cd %s && env %s %s" % (shlex.quote(os.getcwd()), exports,
                                         " ".join(shlex.quote(c) for c in command))
        popen = subprocess.Popen(["ssh", "-o", "StrictHostKeyChecking=no", "-o",
                                  "BatchMode=yes", host, remote], start_new_session=True)
    return _Proc(role, index, popen)


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


def launch(command, num_workers, num_servers=1, hostfile=None, timeout=None, poll=0.2,
           grace=5.0, env=None):
    """Run ``command`` as ``num_workers`` workers of a ``dist_sync`` job; returns an exit code.

    Parameters
    ----------
    command : list of str
        The worker command, e.g. ``['duc-hdc', 'train', '--config', 'x.yaml', '--set',
        'train.kvstore=dist_sync']``.
    num_workers, num_servers : int
    hostfile : str, optional
        Hosts for servers and workers (ssh); none = all local on 127.0.0.1.
    timeout : float, optional
        Stop everything and fail after this many seconds.
    poll, grace : float
        Seconds between checks; seconds a stopped process gets before SIGKILL.
    env : dict, optional
        Extra environment for every process.
    """
    if num_workers < 1 or num_servers < 1:
        raise ValueError("need at least one worker and one server, got -n %d -s %d"
                         % (num_workers, num_servers))
    if not command:
        raise ValueError("no worker command given (put it after --)")
    hosts = read_hostfile(hostfile) if hostfile else None
    root = _local_ip() if hosts else "127.0.0.1"
    base = dict(os.environ)
    base.update(env or {})
    base.update(DMLC_PS_ROOT_URI=root, DMLC_PS_ROOT_PORT=str(free_port(root if hosts else
                                                                        "127.0.0.1")),
                DMLC_NUM_SERVER=str(num_servers), DMLC_NUM_WORKER=str(num_workers))
    if not hosts:
        base["DMLC_NODE_HOST"] = "127.0.0.1"
    role_cmd = [sys.executable, "-c", "import mxnet"]
    procs = [_spawn("scheduler", 0, role_cmd, dict(base, DMLC_ROLE="scheduler"))]
    for i in range(num_servers):
        procs.append(_spawn("server", i, role_cmd, dict(base, DMLC_ROLE="server"),
                            hosts[i % len(hosts)] if hosts else None))
    workers = []
    for i in range(num_workers):
        w = _spawn("worker", i, list(command), dict(base, DMLC_ROLE="worker"),
                   hosts[i % len(hosts)] if hosts else None)
        workers.append(w)
        procs.append(w)
    log.info("launched scheduler on %s:%s, %d server(s), %d worker(s)", root,
             base["DMLC_PS_ROOT_PORT"], num_servers, num_workers)
    start = time.time()
    try:
        while True:
            failed = [p for p in procs if p.popen.poll() not in (None, 0)]
            if failed:
                p = failed[0]
                log.error("%s exited with code %d; stopping the job", p.name, p.popen.returncode)
                _stop(procs, grace)
                return p.popen.returncode if p.popen.returncode > 0 else 1
            if all(w.popen.poll() == 0 for w in workers):
                # the workers finished; servers and scheduler leave once told, else stop them
                deadline = time.time() + max(grace, 10.0)
                while any(p.popen.poll() is None for p in procs) and time.time() < deadline:
                    time.sleep(poll)
                _stop(procs, grace)
                log.info("all %d workers finished", num_workers)
                return 0
            if timeout and time.time() - start > timeout:
                log.error("job still running after %.0f s (--timeout); stopping it", timeout)
                _stop(procs, grace)
                return 124
            time.sleep(poll)
    except KeyboardInterrupt:
        _stop(procs, grace)
        return 130
