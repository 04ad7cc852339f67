"""Parameter-server jobs on 127.0.0.1: dist_sync and dist_async train; the ssh launcher runs for
real against a throw-away OpenSSH server; a dying worker, server or scheduler ends the job with
its code and the run resumes from its last checkpoint; the start-up checks compare every rank's
checkpoint and parameters through the kvstore. Every job is bounded by a timeout."""
import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import mxnet as mx
import numpy as np
import pytest

import duc_hdc
from duc_hdc.config import ConfigError, load_config
from duc_hdc.devices import DeviceError
from duc_hdc.training import distributed as dist
from duc_hdc.training import launcher as launcher_mod
from duc_hdc.training.distributed import LaunchError, launch, read_hostfile
from duc_hdc.training.trainer import learning_rate, params_checksum, parse_devices, train

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ENV = {"PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "OMP_NUM_THREADS": "1"}


def train_command(recs, run_dir, kvstore="dist_sync", *extra):
    command = [sys.executable, "-m", "duc_hdc.cli", "train", "--config", "synthetic",
               "--no-progress", "--kvstore", kvstore]
    for kv in ["data.train_rec=%s" % recs["train"], "data.val_rec=null",
               "train.out_dir=%s" % run_dir, "data.crop_size=[48,96]",
               "data.scales=[1.0]", "data.num_workers=0", "model.base_width=4",
               "model.aspp_rates=[1,2]", "train.batch_size_per_device=2",
               "train.optimizer=sgd", "train.lr=0.01", "train.log_every_iters=1"] + list(extra):
        command += ["--set", kv]
    return command


def resume_command(run_dir, *extra):
    # no --config: a resumed run continues under its saved recipe (extending keys only)
    command = [sys.executable, "-m", "duc_hdc.cli", "train", "--no-progress", "--resume",
               str(run_dir)]
    for kv in extra:
        command += ["--set", kv]
    return command


def checksums(text):
    return re.findall(r"(?<!start )params checksum: ([0-9a-f]{64})", text)


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


# --------------------------------------------------------------------------- start checks
def test_dist_kvstore_without_launch_names_the_option(tiny_recs, tmp_path, monkeypatch):  # noqa: E501
    for key in ("DMLC_ROLE", "DMLC_NUM_WORKER", "DMLC_PS_ROOT_URI"):
        monkeypatch.delenv(key, raising=False)
    for name in dist.DIST_KVSTORES:
        with pytest.raises(ConfigError, match=r"--kvstore/train.kvstore=%s .*duc-hdc launch"
                           % name):
            dist.check_launch_env(name)
    dist.check_launch_env("device")  # single-process modes need nothing
    cfg = load_config("synthetic", ["data.train_rec=%s" % tiny_recs["train"],
                                    "train.out_dir=%s" % (tmp_path / "run"),
                                    "train.kvstore=dist_sync"])
    with pytest.raises(ConfigError, match="DMLC_ROLE/DMLC_NUM_WORKER/DMLC_PS_ROOT_URI are not set"):
        train(cfg, progress=False)


def test_gpus_without_a_gpu_names_the_option():
    assert mx.context.num_gpus() == 0  # this machine: CPU only
    with pytest.raises(DeviceError, match=r"^--gpus need\(s\) a GPU, and this MXNet sees none"):
        parse_devices("0")
    assert parse_devices(None, cpu_devices=2) == [mx.cpu(0), mx.cpu(1)]


def test_launch_argument_errors(tmp_path):
    with pytest.raises(LaunchError, match="no worker command"):
        launch([], num_workers=2)
    with pytest.raises(LaunchError, match="at least one worker"):
        launch(["true"], num_workers=0)
    with pytest.raises(LaunchError, match="--launcher ssh needs --hostfile"):
        launch(["true"], num_workers=1, launcher="ssh")
    with pytest.raises(LaunchError, match="--launcher pbs: expected one of local, ssh, mpi"):
        launch(["true"], num_workers=1, launcher="pbs")
    empty = tmp_path / "hosts"
    empty.write_text("# nothing\n\n")
    with pytest.raises(LaunchError, match="lists no hosts"):
        read_hostfile(str(empty))
    hosts = tmp_path / "hosts2"
    hosts.write_text("node1\nnode2:2222  # ssh port\nnode3 slots=4\n")
    assert read_hostfile(str(hosts)) == [("node1", None), ("node2", 2222), ("node3", None)]
    hosts.write_text("node1:ssh\n")
    with pytest.raises(LaunchError, match="line 1: 'node1:ssh' is not host, host:port"):
        read_hostfile(str(hosts))


def test_server_schedule_is_the_loops_schedule_on_the_servers():
    """dist_async: the servers' optimizer (pickled as mxnet sends it) gives the loop's lr."""
    cfg = load_config("synthetic", ["train.lr=0.1", "train.warmup_iters=3",
                                    "train.lr_schedule=poly"])["train"]
    sched = dist.ServerSchedule(cfg, 5, 20, num_workers=2)
    opt = mx.optimizer.create("sgd", learning_rate=0.1, lr_scheduler=sched, begin_num_update=0)
    opt = pickle.loads(pickle.dumps(opt, 0))  # as KVStore.set_optimizer sends it
    for iteration in range(20):
        for _ in range(2):  # one update per worker and parameter
            opt._update_count(0)
        assert opt._get_lr(0) == pytest.approx(learning_rate(iteration, cfg, 5, 20), rel=1e-12)


# ------------------------------------------------------------------ jobs on this machine
def _job_script(body):
    return ("import logging, sys, mxnet as mx\n"
            "logging.basicConfig(level=logging.INFO)\n"
            "from duc_hdc.training import distributed as dist\n" + body)


@pytest.mark.slow
@pytest.mark.parametrize("kvstore", ["dist_sync", "dist_async"])
def test_start_check_compares_checkpoints_through_the_kvstore(kvstore, tmp_path, capfd):
    """Each rank digests the checkpoint it would resume; rank 1 reading another file (a run
    directory not shared between machines) stops the job, naming the shared filesystem."""
    for name, content in (("a", b"weights"), ("b", b"other weights")):
        for ext in (".params", ".states", ".json"):
            (tmp_path / (name + ext)).write_bytes(content)
    script = _job_script(
        "kv, rank, n = dist.make_kvstore(%r)\n"
        "dist.check_same_checkpoint(kv, rank, n, %r, 'RUN')\n"  # same file: passes
        "stem = %r if rank == 0 else sys.argv[1]\n"
        "dist.check_same_checkpoint(kv, rank, n, stem, 'RUN')\n"
        % (kvstore, str(tmp_path / "a"), str(tmp_path / "a")))
    rc = launch([sys.executable, "-c", script, str(tmp_path / "a")], 2, 1, timeout=60, env=ENV)
    assert rc == 0, capfd.readouterr().err[-2000:]
    rc = launch([sys.executable, "-c", script, str(tmp_path / "b")], 2, 1, timeout=60, env=ENV)
    err = capfd.readouterr().err
    assert rc != 0
    assert "the 2 workers see different checkpoints in RUN" in err
    assert "the run directory must be on a filesystem every machine shares" in err


@pytest.mark.slow
def test_resume_refuses_a_run_directory_the_ranks_see_differently(tiny_recs, tmp_path, capfd):  # noqa: E501
    """Two "machines" that do not share the run directory: the second worker to start sees,
    in its own mount namespace, a stale copy (its latest.json one checkpoint behind). Resume
    stops at the start check instead of training ranks from different checkpoints."""
    run, stale = tmp_path / "run", tmp_path / "stale"
    rc = launch(train_command(tiny_recs, run, "dist_sync", "train.epochs=2", "train.max_iters=2",
                              "train.checkpoint_every_iters=1"), 2, 1, timeout=120, env=ENV)
    assert rc == 0, "".join(capfd.readouterr())[-3000:]
    shutil.copytree(run, stale)
    pointer = stale / "checkpoints" / "latest.json"
    doc = json.load(open(pointer))
    doc["checkpoint"] = doc["checkpoint"].replace("ckpt-00000002", "ckpt-00000001")
    pointer.write_text(json.dumps(doc))
    capfd.readouterr()
    view = ('if ! mkdir "$0.first" 2>/dev/null; then mount --bind "$1" "$0"; fi; '
            'shift; exec "$@"')
    command = ["unshare", "-m", "sh", "-c", view, str(run), str(stale)] + resume_command(
        run, "train.epochs=2", "train.max_iters=4")
    rc = launch(command, 2, 1, timeout=120, env=ENV)
    err = capfd.readouterr().err
    assert rc != 0
    # the run's path as it is (a temporary folder may hold spaces: not \S+)
    assert re.search(r"the 2 workers see different checkpoints in %s \(rank 0: [0-9a-f]{16}; "
                     r"rank 1: [0-9a-f]{16}\); the run directory must be on a filesystem every "
                     r"machine shares" % re.escape(str(run)), err), err[-3000:]
    assert [r["iteration"] for r in metrics(run) if r["kind"] == "train"] == [1, 2]


@pytest.mark.slow
@pytest.mark.parametrize("differ", [False, True])
def test_start_check_compares_the_workers_parameters(differ, capfd, tmp_path):
    """synchronize_start gives every worker rank 0's parameters (initialized with other seeds
    here) and compares their checksums through the kvstore; a differing checksum stops it."""
    script = _job_script(
        "from mxnet import gluon\n"
        "from duc_hdc import get_model\n"
        "from duc_hdc.training.trainer import params_checksum\n"
        "kv, rank, n = dist.make_kvstore('dist_sync')\n"
        "mx.random.seed(rank)\n"
        "net = get_model('duc_hdc_resnet18', classes=3, base_width=4)\n"
        "trainer = dist.build_trainer(net, 'dist_sync', kv, 'sgd', {'learning_rate': 0.1}, 1, n)\n"
        "check = (lambda net: '%%064x' %% rank) if %r else params_checksum\n"
        "dist.synchronize_start(net, trainer, kv, n, check)\n"
        # each worker writes its checksum to a file of its own (not a shared stdout)
        "open(sys.argv[1] + '/rank%%d' %% rank, 'w').write(params_checksum(net))\n" % differ)
    rc = launch([sys.executable, "-c", script, str(tmp_path)], 2, 1, timeout=60, env=ENV)
    out = capfd.readouterr()
    if differ:
        assert rc != 0
        assert "the 2 workers hold different parameters" in out.err
    else:
        assert rc == 0, out.err[-2000:]
        sums = [(tmp_path / ("rank%d" % r)).read_text() for r in (0, 1)]
        assert len(sums[0]) == 64 and sums[0] == sums[1], (sums, out.err[-2000:])


@pytest.mark.slow
def test_dist_sync_two_workers_identical_checksums_and_a_log_per_rank(tiny_recs, tmp_path,  # noqa: E501
                                                                     capfd):
    run = tmp_path / "run"
    rc = launch(train_command(tiny_recs, run, "dist_sync", "train.epochs=2",
                              "train.checkpoint_every_iters=2"), 2, 1, timeout=120, env=ENV)
    text = "".join(capfd.readouterr())
    assert rc == 0, text[-3000:]
    sums = checksums(text)
    assert len(sums) == 2 and sums[0] == sums[1], text[-3000:]
    # each worker ran its own shard: 8 images / 2 workers / batch 2 = 2 iterations per epoch
    assert "4 iterations (2 per epoch), batch 2 per worker, 2 worker(s)" in text
    logs = sorted(f for f in os.listdir(run) if f.endswith(".log"))
    assert logs == ["train.log", "train.rank1.log"]
    for name in logs:
        assert checksums((run / name).read_text()) == sums[:1]


@pytest.mark.slow
def test_dist_device_sync_two_workers_two_devices_each(tiny_recs, tmp_path, capfd):  # noqa: F811
    run = tmp_path / "run"
    command = train_command(tiny_recs, run, "dist_device_sync", "train.epochs=2",
                            "train.batch_size_per_device=1") + ["--cpu-devices", "2"]
    rc = launch(command, 2, 1, timeout=120, env=ENV)
    text = "".join(capfd.readouterr())
    assert rc == 0, text[-3000:]
    assert "on cpu(0),cpu(1): 4 iterations (2 per epoch), batch 2 per worker, 2 worker(s)" in text
    sums = checksums(text)
    assert len(sums) == 2 and sums[0] == sums[1], text[-3000:]


@pytest.mark.slow
def test_dist_async_trains_and_resumes_without_optimizer_state(tiny_recs, tmp_path, capfd):  # noqa: E501
    run = tmp_path / "run"
    rc = launch(train_command(tiny_recs, run, "dist_async", "train.epochs=2",
                              "train.max_iters=2", "train.momentum=0.9",
                              "train.checkpoint_every_iters=1"), 2, 1, timeout=120, env=ENV)
    text = "".join(capfd.readouterr())
    assert rc == 0, text[-3000:]
    assert "kvstore dist_async" in text
    final = duc_hdc.load(str(run / "final.params"))
    values = [p.data().asnumpy() for p in final.collect_params().values()]
    assert all(np.isfinite(v).all() for v in values)
    stem = json.load(open(run / "checkpoints" / "latest.json"))["checkpoint"]
    assert stem.endswith("ckpt-00000002")
    assert open(stem + ".states", "rb").read().startswith(b"duc-hdc dist_async checkpoint")
    rows = [r["iteration"] for r in metrics(run) if r["kind"] == "train"]
    assert rows == [1, 2]
    # rank 0 wrote final.params right after that checkpoint (no step in between)
    expected = params_checksum(final, trainable_only=True)  # what the workers log
    saved = duc_hdc.load(str(run / "final.params"))
    saved.load_parameters(stem + ".params")
    assert params_checksum(saved, trainable_only=True) == expected

    rc = launch(resume_command(run, "train.epochs=2", "train.max_iters=4"), 2, 1, timeout=120,
                env=ENV)
    text = "".join(capfd.readouterr())
    assert rc == 0, text[-3000:]
    assert "no optimizer state (it lived on the servers)" in text
    # every worker started from the checkpoint's parameters (the servers were set from them)
    start = re.findall(r"start params checksum: ([0-9a-f]{64})", text)
    assert start == [expected] * 2
    rows = [r["iteration"] for r in metrics(run) if r["kind"] == "train"]
    assert rows == [1, 2, 3, 4]


# ----------------------------------------------------------------------------- faults
def _processes(job, role=None):
    """pids of this job's ``role`` processes (None: any process of the job, the remote guards
    and workers included), found by their environment."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % pid, "rb") as f:
                env = f.read().split(b"\0")
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if (b"DUC_HDC_TEST_JOB=" + job.encode()) not in env or int(pid) == os.getpid():
            continue
        if role is None or ((b"DMLC_ROLE=" + role.encode()) in env and
                            argv[1:3] == [b"-c", b"import mxnet"]):
            found.append(int(pid))
    return found


def _kill_after_checkpoint(run, job, role, result):
    """Once a checkpoint exists, kill -9 the job's ``role`` process."""
    pointer = run / "checkpoints" / "latest.json"
    deadline = time.time() + 100
    while time.time() < deadline and not pointer.exists():
        time.sleep(0.2)
    pids = _processes(job, role)
    result["killed"] = pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


def _run_and_kill(command, role, run, **kwargs):
    job = uuid.uuid4().hex
    result = {}
    killer = threading.Thread(target=_kill_after_checkpoint, args=(run, job, role, result))
    killer.start()
    env = dict(ENV, DUC_HDC_TEST_JOB=job)
    rc = launch(command, 2, 1, timeout=150, grace=3.0, env=env, **kwargs)
    killer.join()
    assert len(result["killed"]) == 1, result
    # nothing of the job is left running, here or on the "remote" host
    deadline = time.time() + 15
    while time.time() < deadline and _processes(job):
        time.sleep(0.2)
    assert not _processes(job)
    return rc


def _check_resume(run, capfd, **kwargs):
    """The killed run resumes from its newest checkpoint and runs 2 more iterations."""
    stem = json.load(open(run / "checkpoints" / "latest.json"))["checkpoint"]
    last = int(stem[-8:])
    assert last >= 2
    rc = launch(resume_command(run, "train.epochs=50", "train.max_iters=%d" % (last + 2)),
                2, 1, timeout=120, env=ENV, **kwargs)
    text = "".join(capfd.readouterr())
    assert rc == 0, text[-3000:]
    assert os.path.basename(stem) in text  # the checkpoint it resumed
    # rows the killed job logged after its checkpoint were dropped at resume: every iteration
    # once, the resumed ones last
    logged = [r["iteration"] for r in metrics(run) if r["kind"] == "train"]
    assert logged == sorted(set(logged)), logged
    assert [i for i in logged if i > last] == [last + 1, last + 2]
    sums = checksums(text)
    assert len(sums) == 2 and sums[0] == sums[1]
    assert len(re.findall(r"every rank resumes %s" % os.path.basename(stem), text)) == 2


@pytest.mark.slow
def test_killed_scheduler_ends_the_job_and_the_run_resumes(tiny_recs, tmp_path, capfd):  # noqa: E501
    run = tmp_path / "run"
    rc = _run_and_kill(train_command(tiny_recs, run, "dist_sync", "train.epochs=50",
                                              "train.checkpoint_every_iters=2"),
                                "scheduler", run)
    capfd.readouterr()
    assert rc == 128 + signal.SIGKILL  # the scheduler's own death is what the launcher reports
    # (not the --timeout's 124: the job ended on the kill, not on the clock)
    _check_resume(run, capfd)


#: worker 1 exits with code 3; worker 0's push then waits forever for the dead worker's
_DYING_WORKER = (
    "import os, mxnet as mx\n"
    "kv = mx.kv.create('dist_sync')\n"
    "if kv.rank == 1:\n"
    "    os._exit(3)\n"
    "kv.init(0, mx.nd.zeros((4,)))\n"
    "kv.push(0, mx.nd.ones((4,)))\n"
    "out = mx.nd.zeros((4,))\n"
    "kv.pull(0, out=out)\n"
    "out.wait_to_read()\n"
)


@pytest.mark.slow
def test_a_dying_worker_stops_the_job(tmp_path):
    rc = launch([sys.executable, "-c", _DYING_WORKER], num_workers=2, num_servers=1, timeout=120,
                grace=2.0)
    assert rc == 3  # the dead worker's code, not the --timeout's 124: the job was stopped


# ------------------------------------------------------------------------ ssh, for real
@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """An OpenSSH server on a free port of 127.0.0.1 with throw-away host and user keys."""
    exe = shutil.which("sshd") or "/usr/sbin/sshd"
    assert os.path.exists(exe), "openssh-server is not installed (.ci/run installs it)"
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "user_key"):
        subprocess.check_call(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                               str(d / key)])
    shutil.copy(d / "user_key.pub", d / "authorized_keys")
    port = dist.free_port()
    # paths double-quoted: sshd splits an unquoted value at spaces (TMPDIR may hold some)
    (d / "sshd_config").write_text("\n".join([
        "Port %d" % port, "ListenAddress 127.0.0.1", 'HostKey "%s"' % (d / "host_key"),
        'AuthorizedKeysFile "%s"' % (d / "authorized_keys"), "StrictModes no",
        "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "PermitRootLogin yes",
        'PidFile "%s"' % (d / "sshd.pid"), "LogLevel ERROR", ""]))
    os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory
    proc = subprocess.Popen([exe, "-D", "-e", "-f", str(d / "sshd_config")])
    deadline = time.time() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.time() < deadline, "sshd did not start"
            time.sleep(0.1)
    (d / "hosts").write_text("127.0.0.1:%d\n" % port)
    options = ["-i", str(d / "user_key"), "-o", "UserKnownHostsFile=/dev/null",
               "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR"]
    yield dict(hostfile=str(d / "hosts"), ssh_options=options, port=port)
    proc.terminate()
    proc.wait(10)


@pytest.mark.slow
def test_ssh_two_workers_one_server_identical_checksums(sshd, tiny_recs, tmp_path, capfd):  # noqa: E501
    run = tmp_path / "run"
    rc = launch(train_command(tiny_recs, run, "dist_sync", "train.epochs=1",
                              "train.checkpoint_every_iters=1"), 2, 1, launcher="ssh",
                hostfile=sshd["hostfile"], ssh_options=sshd["ssh_options"], timeout=120,
                env=ENV)
    text = "".join(capfd.readouterr())
    assert rc == 0, text[-3000:]
    sums = checksums(text)
    assert len(sums) == 2 and sums[0] == sums[1], text[-3000:]
    assert sorted(f for f in os.listdir(run) if f.endswith(".log")) == ["train.log",
                                                                        "train.rank1.log"]


@pytest.mark.slow
def test_ssh_killed_server_ends_the_job_and_the_run_resumes(sshd, tiny_recs, tmp_path, capfd):  # noqa: E501
    run = tmp_path / "run"
    ssh = dict(launcher="ssh", hostfile=sshd["hostfile"], ssh_options=sshd["ssh_options"])
    rc = _run_and_kill(train_command(tiny_recs, run, "dist_sync", "train.epochs=50",
                                              "train.checkpoint_every_iters=2"),
                                "server", run, **ssh)
    capfd.readouterr()
    assert rc == 128 + signal.SIGKILL  # passed back through the remote guard and ssh
    # (not the --timeout's 124: the job ended on the kill, not on the clock)
    _check_resume(run, capfd, **ssh)


def test_mpi_launcher_needs_mpirun(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no mpirun on it
    with pytest.raises(LaunchError, match="--launcher mpi: mpirun not found on PATH"):
        launch(["true"], 1, launcher="mpi")


# ------------------------------------------------------------------------ mpi, for real
#: Open MPI refuses root without both variables; CI runs as root (a container)
MPI_ENV = dict(ENV, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def _fake_mpirun(tmp_path, version):
    """An ``mpirun`` on PATH that only answers ``--version`` with ``version``."""
    exe = tmp_path / "mpirun"
    exe.write_text("#!/bin/sh\necho '%s'\n" % version)
    exe.chmod(0o755)
    return str(tmp_path)


def test_mpi_as_root_is_refused_in_one_line_naming_open_mpis_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _fake_mpirun(tmp_path, "mpirun (Open MPI) 4.1.4"))
    monkeypatch.delenv("OMPI_ALLOW_RUN_AS_ROOT", raising=False)
    monkeypatch.delenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(LaunchError, match="refuses to run as root.*OMPI_ALLOW_RUN_AS_ROOT=1 and "
                                          "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"):
        launch(["true"], 1, launcher="mpi")
    # one of the two is not enough (Open MPI wants both)
    with pytest.raises(LaunchError, match="refuses to run as root"):
        launch(["true"], 1, launcher="mpi", env={"OMPI_ALLOW_RUN_AS_ROOT": "1"})


def test_mpi_unknown_flavour_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _fake_mpirun(tmp_path, "SomeMPI 1.0"))
    with pytest.raises(LaunchError, match="says 'SomeMPI 1.0'; Open MPI or MPICH needed"):
        launch(["true"], 1, launcher="mpi")


def test_mpi_command_keeps_each_value_one_argument(tmp_path, monkeypatch):
    env = {"DMLC_ROLE": "worker", "PYTHONPATH": "/a dir/with space", "HOME": "/root"}
    ompi = launcher_mod.mpi_command(2, ["python", "-c", "pass"], env, flavour="openmpi")
    assert ompi == ["mpirun", "-n", "2", "--oversubscribe", "-x", "DMLC_ROLE=worker",
                    "-x", "PYTHONPATH=/a dir/with space", "python", "-c", "pass"]
    mpich = launcher_mod.mpi_command(1, ["w"], env, hostfile="hosts", flavour="mpich")
    assert mpich == ["mpirun", "-n", "1", "--hostfile", "hosts", "-env", "DMLC_ROLE", "worker",
                     "-env", "PYTHONPATH", "/a dir/with space", "w"]
    monkeypatch.setenv("PATH", _fake_mpirun(tmp_path, "HYDRA build details: Version 4.0.2 mpich"))
    assert launcher_mod.mpi_flavour() == "mpich"


@pytest.mark.slow
def test_mpi_two_workers_one_server_identical_checksums(tiny_recs, tmp_path, capfd):
    """Open MPI's mpirun (.ci/run installs Debian's openmpi-bin) starts the server and the
    workers on this machine; they train in dist_sync to the same parameters."""
    assert shutil.which("mpirun"), "openmpi-bin is not installed (.ci/run installs it)"
    run = tmp_path / "run"
    rc = launch(train_command(tiny_recs, run, "dist_sync", "train.epochs=1",
                              "train.checkpoint_every_iters=1"), 2, 1, launcher="mpi",
                timeout=180, env=MPI_ENV)
    text = "".join(capfd.readouterr())
    assert rc == 0, text[-3000:]
    sums = checksums(text)
    assert len(sums) == 2 and sums[0] == sums[1], text[-3000:]
    assert "batch 2 per worker, 2 worker(s)" in text
    assert sorted(f for f in os.listdir(run) if f.endswith(".log")) == ["train.log",
                                                                        "train.rank1.log"]


@pytest.mark.slow
def test_mpi_dying_worker_stops_the_job(tmp_path):
    """A worker that dies under mpirun ends mpirun, and the launcher stops the rest."""
    assert shutil.which("mpirun"), "openmpi-bin is not installed (.ci/run installs it)"
    rc = launch([sys.executable, "-c", _DYING_WORKER], 2, 1, launcher="mpi", timeout=120, grace=2.0,
                env=MPI_ENV)
    assert rc == 3  # the dead worker's code, not the --timeout's 124: the job was stopped


@pytest.mark.slow
def test_ssh_connection_failure_ends_the_job(sshd, tmp_path):
    """A host ssh cannot log into (no key): ssh's 255 ends the whole job, nothing hangs."""
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1:%d\n" % sshd["port"])
    rc = launch(["true"], 1, 1, launcher="ssh", hostfile=str(hosts), timeout=60, grace=2.0,
                ssh_options=["-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes",
                             "-i", "/nonexistent", "-o", "LogLevel=QUIET"])
    assert rc == 255


def test_a_run_stopping_before_its_rank_is_known_still_writes_its_log(tmp_path):
    """Records logged before the kvstore exists (e.g. a refused resume) land in train.log."""
    import logging

    handler = dist.rank_log_handler(str(tmp_path))
    logging.getLogger("duc_hdc").warning("refused before the rank was known")
    logging.getLogger("duc_hdc").removeHandler(handler)
    handler.close()
    assert "refused before the rank was known" in (tmp_path / "train.log").read_text()


@pytest.mark.slow
def test_each_mpirun_gets_its_own_open_mpi_session_folder(tmp_path, monkeypatch):
    """The servers' and the workers' mpirun, started together, shared Open MPI's
    /tmp/ompi.<host>.<uid>: in CI one failed with "session_dir.c ... File exists" (exit 1)
    as the other created or removed it. Each gets its own folder now, removed after."""
    from duc_hdc.training import launcher as launcher_mod

    assert shutil.which("mpirun"), "openmpi-bin is not installed (.ci/run installs it)"
    started = []
    real_start = launcher_mod._start

    def start(role, index, argv, env, where="local"):
        if where == "mpirun":
            folder = env.get("OMPI_MCA_orte_tmpdir_base")
            started.append((role, folder, folder is not None and os.path.isdir(folder)))
        return real_start(role, index, argv, env, where)

    monkeypatch.setattr(launcher_mod, "_start", start)
    rc = launch([sys.executable, "-c", "pass"], 2, 1, launcher="mpi", timeout=120, grace=2.0,
                env=MPI_ENV)
    assert rc == 0
    assert [role for role, _, _ in started] == ["servers", "workers"]
    folders = [folder for _, folder, _ in started]
    assert all(exists for _, _, exists in started) and len(set(folders)) == 2, started
    assert os.path.dirname(folders[0]) == os.path.dirname(folders[1])
    assert not os.path.exists(os.path.dirname(folders[0]))  # removed with the job
