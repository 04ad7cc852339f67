"""Pretrained-weight zoo: verified, locked, atomic downloads against a local HTTP server."""
import collections
import dataclasses
import hashlib
import http.server
import json
import logging
import multiprocessing
import os
import re
import sys
import threading
import time
import types
import zipfile

import numpy as np
import pytest

from duc_hdc.hub import zoo

PAYLOAD = bytes(range(256)) * 1024          # 256 KiB
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
WRONG_SHA256 = "0" * 64


class _Handler(http.server.BaseHTTPRequestHandler):
    """Routes /good/F, /slow/F (waits for ``server.release``), /truncated/F, /flaky/F (503 twice
    first), /stall/F (headers and half the body, then silence), /range/F (honours Range; the
    first plain request is cut off after half the body), /hold/F (honours Range; a plain request
    gets half the body, then silence), /norange/F (ignores Range; cut off the first time); else
    404. Every Range header received is recorded in ``server.ranges``."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        server = self.server
        with server.lock:
            server.hits[self.path] += 1
            hits = server.hits[self.path]
            if self.headers.get("Range"):
                server.ranges[self.path].append(self.headers["Range"])
        parts = self.path.strip("/").split("/")
        body = server.files.get(parts[-1]) if len(parts) == 2 else None
        route = parts[0]
        if body is None or route not in ("good", "slow", "truncated", "flaky", "stall", "range",
                                         "norange", "hold"):
            self.send_error(404, "Not Found")
            return
        if route == "flaky" and hits <= 2:
            self.send_error(503, "Service Unavailable")
            return
        half = len(body) // 2
        wanted = self.headers.get("Range")
        if route in ("range", "hold") and wanted:
            start = int(re.match(r"bytes=(\d+)-$", wanted).group(1))
            if start >= len(body):
                self.send_error(416, "Range Not Satisfiable")
                return
            self.send_response(206)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Range", "bytes {}-{}/{}".format(start, len(body) - 1,
                                                                     len(body)))
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            self.wfile.write(body[start:])
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if route in ("range", "hold"):
            self.send_header("Accept-Ranges", "bytes")
        declared = len(body) + 1000 if route == "truncated" else len(body)
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        if route == "slow":
            self.wfile.write(body[:half])
            self.wfile.flush()
            server.release.wait(timeout=30)
            self.wfile.write(body[half:])
        elif route in ("stall", "hold"):
            self.wfile.write(body[:half])
            self.wfile.flush()
            server.release.wait(timeout=30)  # silence until the test ends
        elif route in ("range", "norange") and hits == 1:
            self.wfile.write(body[:half])  # then the connection drops
        else:
            self.wfile.write(body)
        # HTTP/1.0: the connection closes here, 1000 bytes short on /truncated/


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.hits = collections.Counter()
    httpd.ranges = collections.defaultdict(list)
    httpd.release = threading.Event()
    httpd.lock = threading.Lock()
    httpd.files = {"weights.params": PAYLOAD, "model.onnx": PAYLOAD[::-1]}
    thread = threading.Thread(target=httpd.serve_forever, kwargs=dict(poll_interval=0.05),
                              daemon=True)
    thread.start()
    httpd.url = "http://127.0.0.1:{}".format(httpd.server_address[1])
    yield httpd
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def home(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("DUC_HDC_HOME", str(path))
    monkeypatch.delenv("DUC_HDC_BASE_URL", raising=False)
    monkeypatch.delenv("MXNET_HOME", raising=False)
    return path


def _entry(name="test_weights", **changes):
    fields = dict(name=name, kind="params", source="url", file_name="weights.params",
                  urls=("http://127.0.0.1:9/unused/weights.params",), sha256=PAYLOAD_SHA256,
                  model="duc_hdc_test_model", classes=3, cell_width=2, mean=(1.0, 2.0, 3.0),
                  std=(1.0, 1.0, 1.0), dataset="synthetic",
                  metric=dict(name="mIoU", value=None, split="none", protocol="test"))
    fields.update(changes)
    return zoo.ZooEntry(**fields)


def _add(monkeypatch, entry):
    monkeypatch.setitem(zoo.MODELS, entry.name, entry)
    return entry


def _leftovers(directory):
    """Partial downloads, temporary files and lock files left in ``directory``."""
    return sorted(p for p in os.listdir(directory)
                  if p.endswith((".part", ".lock")) or ".tmp" in p)


# ---------------------------------------------------------------------------------- download
def test_download_good_file(server, tmp_path):
    path = zoo.download(server.url + "/good/weights.params", str(tmp_path / "w.params"),
                        sha256=PAYLOAD_SHA256, progress=False)
    assert open(path, "rb").read() == PAYLOAD
    # cached and verified: no second request
    assert zoo.download(server.url + "/good/weights.params", path, sha256=PAYLOAD_SHA256,
                        progress=False) == path
    assert server.hits["/good/weights.params"] == 1
    assert _leftovers(tmp_path) == []


def test_wrong_hash_deletes_file_and_names_both_hashes(server, tmp_path):
    url = server.url + "/good/weights.params"
    target = tmp_path / "w.params"
    with pytest.raises(zoo.ChecksumError) as info:
        zoo.download(url, str(target), sha256=WRONG_SHA256, progress=False, retry_delay=0)
    message = str(info.value)
    assert url in message and WRONG_SHA256 in message and PAYLOAD_SHA256 in message
    assert not target.exists() and _leftovers(tmp_path) == []
    assert server.hits["/good/weights.params"] == 1  # a wrong hash is not retried


def test_truncated_transfer_is_retried_then_reported(server, tmp_path):
    url = server.url + "/truncated/weights.params"
    target = tmp_path / "w.params"
    with pytest.raises(zoo.IncompleteDownloadError) as info:
        zoo.download(url, str(target), sha256=PAYLOAD_SHA256, progress=False, retries=2,
                     retry_delay=0)
    message = str(info.value)
    assert url in message
    assert "received {} of {} bytes".format(len(PAYLOAD), len(PAYLOAD) + 1000) in message
    assert "3 attempts" in message
    assert server.hits["/truncated/weights.params"] == 3
    assert not target.exists() and _leftovers(tmp_path) == []


def test_http_404_is_reported_at_once(server, tmp_path):
    url = server.url + "/good/absent.params"
    with pytest.raises(zoo.DownloadError) as info:
        zoo.download(url, str(tmp_path / "absent.params"), sha256=PAYLOAD_SHA256,
                     progress=False, retry_delay=0)
    assert "HTTP 404" in str(info.value) and url in str(info.value)
    assert server.hits["/good/absent.params"] == 1
    assert not (tmp_path / "absent.params").exists() and _leftovers(tmp_path) == []


def test_transient_errors_are_retried(server, tmp_path):
    path = zoo.download(server.url + "/flaky/weights.params", str(tmp_path / "w.params"),
                        sha256=PAYLOAD_SHA256, progress=False, retries=2, retry_delay=0)
    assert open(path, "rb").read() == PAYLOAD
    assert server.hits["/flaky/weights.params"] == 3
    with pytest.raises(zoo.DownloadError, match="HTTP 503"):
        zoo.download(server.url + "/flaky/model.onnx", str(tmp_path / "m.onnx"),
                     progress=False, retries=1, retry_delay=0)


class _QueueHandler(logging.Handler):
    """Forwards the zoo's log messages of a child process to the parent."""

    def __init__(self, queue):
        super().__init__()
        self.queue = queue

    def emit(self, record):
        self.queue.put(("log", record.getMessage()))


def _child_get_weights(entry, home, base_url, barrier, queue):
    os.environ["DUC_HDC_HOME"] = home
    hub_log = logging.getLogger("duc_hdc.hub")
    hub_log.setLevel(logging.INFO)
    hub_log.addHandler(_QueueHandler(queue))
    zoo.MODELS[entry.name] = entry
    barrier.wait(timeout=60)
    try:
        path = zoo.get_weights(entry.name, base_url=base_url, progress=False)
        queue.put(("ok", path))
    except Exception as e:  # reported to the parent, which fails the test
        queue.put(("error", repr(e)))


@pytest.mark.slow
def test_two_processes_download_one_file(server, home):
    """Two processes ask for one file at once: one downloads, the other waits for its lock and
    then finds the file verified. The server holds the first transfer half-way until the second
    process reports that it is waiting, so the two calls are known to overlap."""
    entry = _entry()
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_child_get_weights,
                         args=(entry, str(home), server.url + "/slow", barrier, queue))
             for _ in range(2)]
    for p in procs:
        p.start()
    results, logs = [], []
    while len(results) < 2:
        kind, text = queue.get(timeout=60)
        if kind == "log":
            logs.append(text)
            if text.startswith("waiting for another process"):
                server.release.set()  # the second one is blocked on the lock: finish the first
        else:
            results.append((kind, text))
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert [r[0] for r in results] == ["ok", "ok"], results
    assert results[0][1] == results[1][1] == str(home / "weights.params")
    assert sum(t.startswith("waiting for another process") for t in logs) == 1, logs
    assert server.hits["/slow/weights.params"] == 1  # the second waited, then found it verified
    assert open(results[0][1], "rb").read() == PAYLOAD
    assert _leftovers(home) == []


# ---------------------------------------------------------------------------------- edges
def test_stalled_transfer_gives_up_naming_url_and_timeout(server, tmp_path):
    """Headers and half the body arrive, then nothing: the read timeout ends the download."""
    url = server.url + "/stall/weights.params"
    target = tmp_path / "w.params"
    outcome = {}

    def run():
        try:
            zoo.download(url, str(target), sha256=PAYLOAD_SHA256, progress=False, retries=1,
                         timeout=0.5, retry_delay=0)
        except Exception as e:
            outcome["error"] = e

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=60)  # only a guard against hanging the suite
    assert not worker.is_alive(), "download() did not give up on a stalled transfer"
    error = outcome.get("error")
    assert isinstance(error, zoo.DownloadError), repr(error)
    message = str(error)
    assert url in message and "0.5 s" in message and "2 attempts" in message, message
    assert server.hits["/stall/weights.params"] == 2
    # the server offers no Range requests: nothing to resume, so nothing is kept
    assert not target.exists() and _leftovers(tmp_path) == []


def test_lock_excludes_and_leaves_no_file(tmp_path):
    """Four threads (each its own open file, as separate processes have) take one lock in
    turn; the lock file is removed by every holder, and the next one still excludes the rest."""
    target = str(tmp_path / "w.params")
    state = dict(inside=0, most=0, turns=0)
    guard = threading.Lock()

    def work():
        for _ in range(10):
            with zoo.file_lock(target, timeout=60):
                with guard:
                    state["inside"] += 1
                    state["most"] = max(state["most"], state["inside"])
                time.sleep(0.001)
                with guard:
                    state["inside"] -= 1
                    state["turns"] += 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert state == dict(inside=0, most=1, turns=40)
    assert _leftovers(tmp_path) == []


def test_timeout_must_be_positive(tmp_path):
    for bad in (0, -1, "soon"):
        with pytest.raises(ValueError, match="timeout"):
            zoo.download("http://127.0.0.1:9/x", str(tmp_path / "x"), timeout=bad)


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    url = server.url + "/range/weights.params"
    target = tmp_path / "w.params"
    with pytest.raises(zoo.IncompleteDownloadError, match="resum") as info:
        zoo.download(url, str(target), sha256=PAYLOAD_SHA256, progress=False, retries=0)
    assert url in str(info.value)
    part = tmp_path / "w.params.part"  # deterministic: the next call finds it
    assert part.read_bytes() == PAYLOAD[:len(PAYLOAD) // 2]
    assert not target.exists()
    path = zoo.download(url, str(target), sha256=PAYLOAD_SHA256, progress=False, retries=0)
    assert server.ranges["/range/weights.params"] == ["bytes={}-".format(len(PAYLOAD) // 2)]
    assert hashlib.sha256(open(path, "rb").read()).hexdigest() == PAYLOAD_SHA256
    assert _leftovers(tmp_path) == []


def test_interrupted_download_is_resumed_by_the_retry(server, tmp_path):
    url = server.url + "/range/weights.params"
    path = zoo.download(url, str(tmp_path / "w.params"), sha256=PAYLOAD_SHA256, progress=False,
                        retries=1, retry_delay=0)
    assert open(path, "rb").read() == PAYLOAD
    assert server.hits["/range/weights.params"] == 2
    assert server.ranges["/range/weights.params"] == ["bytes={}-".format(len(PAYLOAD) // 2)]
    assert _leftovers(tmp_path) == []


def test_server_without_range_support_restarts(server, tmp_path):
    url = server.url + "/norange/weights.params"
    target = tmp_path / "w.params"
    with pytest.raises(zoo.IncompleteDownloadError, match="deleted"):
        zoo.download(url, str(target), sha256=PAYLOAD_SHA256, progress=False, retries=0)
    assert _leftovers(tmp_path) == []  # not resumable here: the partial file is removed
    # a partial file from an older run (e.g. a killed process): asked for, ignored, replaced
    (tmp_path / "w.params.part").write_bytes(PAYLOAD[:1000])
    path = zoo.download(url, str(target), sha256=PAYLOAD_SHA256, progress=False, retries=0)
    assert server.ranges["/norange/weights.params"] == ["bytes=1000-"]
    assert open(path, "rb").read() == PAYLOAD
    assert _leftovers(tmp_path) == []


def test_resumed_bytes_that_do_not_verify_are_fetched_again(server, tmp_path):
    url = server.url + "/range/weights.params"
    server.hits[url[len(server.url):]] = 1  # no cut-off: serve whole files from now on
    (tmp_path / "w.params.part").write_bytes(b"\xff" * 1000)  # not the file's first bytes
    path = zoo.download(url, str(tmp_path / "w.params"), sha256=PAYLOAD_SHA256, progress=False,
                        retries=0)
    assert open(path, "rb").read() == PAYLOAD
    assert server.ranges["/range/weights.params"] == ["bytes=1000-"]
    assert server.hits["/range/weights.params"] == 3  # the resume, then a fresh transfer
    assert _leftovers(tmp_path) == []


def test_finished_part_is_not_requested_past_its_end(server, tmp_path):
    url = server.url + "/range/weights.params"
    server.hits[url[len(server.url):]] = 1
    (tmp_path / "w.params.part").write_bytes(PAYLOAD)  # killed between the last byte and rename
    path = zoo.download(url, str(tmp_path / "w.params"), sha256=PAYLOAD_SHA256, progress=False,
                        retries=0)
    assert open(path, "rb").read() == PAYLOAD
    assert server.ranges["/range/weights.params"] == ["bytes={}-".format(len(PAYLOAD))]
    assert server.hits["/range/weights.params"] == 2  # answered 416; the part verified as is
    assert _leftovers(tmp_path) == []


def _child_download(url, path, queue):
    queue.put("started")
    zoo.download(url, path, sha256=PAYLOAD_SHA256, progress=False, retries=0, timeout=120)


@pytest.mark.slow
def test_killed_download_is_resumed_and_cleaned_up(server, tmp_path):
    """A process killed mid-transfer leaves FILE.part (and its FILE.lock): the next call takes
    the lock, resumes the part with a Range request and leaves neither behind."""
    url = server.url + "/hold/weights.params"
    target = tmp_path / "w.params"
    part = tmp_path / "w.params.part"
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_download, args=(url, str(target), queue))
    child.start()
    assert queue.get(timeout=60) == "started"
    for _ in range(1200):  # until half the file has arrived (bounded only to avoid a hang)
        if part.exists() and part.stat().st_size == len(PAYLOAD) // 2:
            break
        time.sleep(0.05)
    assert part.stat().st_size == len(PAYLOAD) // 2
    child.kill()
    child.join(timeout=30)
    assert child.exitcode is not None and child.exitcode < 0  # killed, not finished
    assert sorted(os.listdir(tmp_path)) == ["w.params.lock", "w.params.part"]
    path = zoo.download(url, str(target), sha256=PAYLOAD_SHA256, progress=False, retries=0)
    assert open(path, "rb").read() == PAYLOAD
    assert server.ranges["/hold/weights.params"] == ["bytes={}-".format(len(PAYLOAD) // 2)]
    assert server.hits["/hold/weights.params"] == 2
    assert sorted(os.listdir(tmp_path)) == ["w.params"]


def test_unverifiable_download_is_not_resumed(server, tmp_path):
    """Without a sha256 a resumed file could not be checked: an old part is discarded."""
    url = server.url + "/range/weights.params"
    server.hits["/range/weights.params"] = 1  # serve whole files
    (tmp_path / "w.params.part").write_bytes(b"\xff" * 1000)
    path = zoo.download(url, str(tmp_path / "w.params"), progress=False, retries=0)
    assert open(path, "rb").read() == PAYLOAD
    assert server.ranges["/range/weights.params"] == []
    assert _leftovers(tmp_path) == []


def test_zoo_normalization_is_the_networks(monkeypatch):
    """Each entry describes the normalization its network applies (one definition, in
    duc_hdc.models.network.NORMALIZATION; no copy of the numbers in the hub)."""
    import glob

    from duc_hdc.models.network import DUCHDC, NORMALIZATION

    onnx_entry = zoo.get_entry("duc_hdc_resnet101_cityscapes_onnx")
    net = DUCHDC(depth=18, classes=19, variant="tusimple", base_width=8)
    assert net.normalization == dict(mean=onnx_entry.mean, std=onnx_entry.std)
    backbone = zoo.get_entry("resnet101_v1s")
    net = DUCHDC(depth=18, classes=19, variant="v1s", base_width=8)
    assert net.normalization == dict(mean=backbone.mean, std=backbone.std)
    hub = os.path.join(os.path.dirname(zoo.__file__), "*.py")
    for path in glob.glob(hub):
        text = open(path).read()
        for values in NORMALIZATION.values():
            for v in (values["mean"] or ()) + (values["std"] or ()):
                assert repr(v) not in text, (path, v)


def test_get_weights_passes_the_timeout(server, home, monkeypatch):
    _add(monkeypatch, _entry(urls=(server.url + "/stall/weights.params",)))
    with pytest.raises(zoo.DownloadError, match=r"0\.5 s"):
        zoo.get_weights("test_weights", progress=False, retries=0, timeout=0.5)
    assert _leftovers(home) == []


# ---------------------------------------------------------------------------------- get_weights
def test_file_base_url_and_env_override(tmp_path, home, monkeypatch):
    _add(monkeypatch, _entry())
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "weights.params").write_bytes(PAYLOAD)
    path = zoo.get_weights("test_weights", base_url="file://" + str(mirror), progress=False)
    assert path == str(home / "weights.params") and open(path, "rb").read() == PAYLOAD

    other = tmp_path / "other_cache"
    monkeypatch.setenv("DUC_HDC_BASE_URL", "file://{}/".format(mirror))
    path = zoo.get_weights("test_weights", root=str(other), progress=False)
    assert path == str(other / "weights.params") and open(path, "rb").read() == PAYLOAD
    assert zoo.resolve_urls("test_weights") == ["file://{}/weights.params".format(mirror)]

    monkeypatch.delenv("DUC_HDC_BASE_URL")
    with pytest.raises(zoo.DownloadError, match="nowhere"):
        zoo.get_weights("test_weights", root=str(tmp_path / "third"),
                        base_url="file://" + str(tmp_path / "nowhere"), progress=False)


def test_corrupted_cache_is_downloaded_again(server, home, monkeypatch):
    _add(monkeypatch, _entry(urls=(server.url + "/good/weights.params",)))
    path = zoo.get_weights("test_weights", progress=False)
    with open(path, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00garbage\x00")
    assert zoo.get_weights("test_weights", progress=False) == path
    assert open(path, "rb").read() == PAYLOAD
    assert server.hits["/good/weights.params"] == 2


def test_mirror_list_falls_through_to_a_working_url(server, home, monkeypatch):
    _add(monkeypatch, _entry(urls=(server.url + "/good/missing.params",
                                   server.url + "/good/weights.params")))
    path = zoo.get_weights("test_weights", progress=False)
    assert open(path, "rb").read() == PAYLOAD


def test_unknown_name_lists_known_names(home):
    with pytest.raises(zoo.UnknownModelError) as info:
        zoo.get_weights("duc_hdc_resnet9000")
    message = str(info.value)
    assert "duc_hdc_resnet9000" in message
    for name in zoo.list_models():
        assert name in message
    with pytest.raises(zoo.UnknownModelError, match="duc_hdc_resnet101_cityscapes"):
        zoo.weights_for_model("duc_hdc_resnet9000")


def test_entry_without_hash_needs_trust(server, home, monkeypatch):
    _add(monkeypatch, _entry(sha256=None, urls=(server.url + "/good/weights.params",)))
    with pytest.raises(zoo.WeightsNotAvailableError, match="--trust"):
        zoo.get_weights("test_weights", progress=False)
    assert server.hits["/good/weights.params"] == 0
    path = zoo.get_weights("test_weights", allow_unverified=True, progress=False)
    assert open(path, "rb").read() == PAYLOAD


def test_onnx_entry_is_converted_once(server, home, monkeypatch):
    onnx_bytes = PAYLOAD[::-1]
    entry = _add(monkeypatch, _entry(
        name="test_onnx", kind="onnx", file_name="model.onnx",
        urls=(server.url + "/good/model.onnx",), sha256=hashlib.sha256(onnx_bytes).hexdigest(),
        params_file="test_onnx-converted.params"))
    calls = []

    def convert_onnx(onnx_path, classes, out_params):
        calls.append((onnx_path, classes, out_params))
        with open(onnx_path, "rb") as src, open(out_params, "wb") as out:
            out.write(b"converted:" + src.read()[:64])

    monkeypatch.setitem(sys.modules, "duc_hdc.hub.convert",
                        types.SimpleNamespace(convert_onnx=convert_onnx))
    path = zoo.get_weights("test_onnx", progress=False)
    assert path == str(home / "test_onnx-converted.params")
    assert calls == [(str(home / "model.onnx"), 3, path)]
    assert open(path, "rb").read() == b"converted:" + onnx_bytes[:64]
    record = json.load(open(path + zoo.HASH_SIDECAR_SUFFIX))
    assert record["source_sha256"] == entry.sha256
    assert record["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()

    assert zoo.get_weights("test_onnx", progress=False) == path
    assert len(calls) == 1 and server.hits["/good/model.onnx"] == 1
    with open(path, "ab") as f:
        f.write(b"corruption")
    assert zoo.get_weights("test_onnx", progress=False) == path
    assert len(calls) == 2 and server.hits["/good/model.onnx"] == 1  # cached ONNX reused
    assert open(path, "rb").read() == b"converted:" + onnx_bytes[:64]
    assert _leftovers(home) == []


def test_local_tusimple_entry(tmp_path, home):
    name = "duc_hdc_resnet101_cityscapes_tusimple"
    with pytest.raises(zoo.WeightsNotAvailableError) as info:
        zoo.get_weights(name)
    message = str(info.value)
    assert "duc-hdc convert tusimple --prefix" in message and "--classes 19" in message
    assert str(home / "duc_hdc_resnet101_cityscapes_tusimple.params") in message

    converted = tmp_path / "converted.params"
    converted.write_bytes(PAYLOAD)
    (tmp_path / "converted.json").write_text('{"model": {"classes": 19}}')
    path = zoo.register_local(name, str(converted))
    assert path == str(home / "duc_hdc_resnet101_cityscapes_tusimple.params")
    assert open(path, "rb").read() == PAYLOAD
    assert json.load(open(path + zoo.HASH_SIDECAR_SUFFIX))["sha256"] == PAYLOAD_SHA256
    assert json.load(open(str(home / "duc_hdc_resnet101_cityscapes_tusimple.json"))) == {
        "model": {"classes": 19}}
    assert zoo.get_weights(name) == path
    entry, found = zoo.weights_for_model("duc_hdc_resnet101_cityscapes")
    assert entry.name == name and found == path  # the registered original wins over ONNX

    with open(path, "r+b") as f:
        f.write(b"XX")
    with pytest.raises(zoo.WeightsNotAvailableError, match="corrupted"):
        zoo.get_weights(name)
    assert _leftovers(home) == []


def test_file_converted_straight_into_the_cache_is_registered(home):
    name = "duc_hdc_resnet101_cityscapes_tusimple"
    target = home / "duc_hdc_resnet101_cityscapes_tusimple.params"
    home.mkdir(parents=True, exist_ok=True)
    target.write_bytes(PAYLOAD)  # what `duc-hdc convert tusimple --out $DUC_HDC_HOME/...` does
    assert zoo.get_weights(name) == str(target)
    assert json.load(open(str(target) + zoo.HASH_SIDECAR_SUFFIX))["sha256"] == PAYLOAD_SHA256


def test_register_local_checks_known_hash(tmp_path, home, monkeypatch):
    _add(monkeypatch, _entry())
    bad = tmp_path / "bad.params"
    bad.write_bytes(b"not the weights")
    with pytest.raises(zoo.ChecksumError, match=PAYLOAD_SHA256):
        zoo.register_local("test_weights", str(bad))
    good = tmp_path / "good.params"
    good.write_bytes(PAYLOAD)
    path = zoo.register_local("test_weights", str(good), link=True)
    # now usable offline: the cached file verifies, no URL is contacted
    assert zoo.get_weights("test_weights", progress=False) == path
    assert _leftovers(home) == []


def _gluoncv_mirror(monkeypatch, folder, name, payload):
    """A mirror of GluonCV's archives in ``folder`` holding ``payload`` as backbone ``name``
    (GluonCV's and the zoo's SHA-1 set to the payload's); returns the archive's stem."""
    from gluoncv.model_zoo import model_store

    sha1 = hashlib.sha1(payload).hexdigest()
    monkeypatch.setitem(model_store._model_sha1, name, sha1)
    monkeypatch.setitem(zoo.MODELS, name, dataclasses.replace(
        zoo.MODELS[name], sha1=sha1, file_name="{}-{}.params".format(name, sha1[:8])))
    stem = "{}-{}".format(name, sha1[:8])
    folder.mkdir()
    with zipfile.ZipFile(folder / (stem + ".zip"), "w") as zf:
        zf.writestr(stem + ".params", payload)
    return stem


def test_gluoncv_backbone_from_a_file_mirror(tmp_path, home, monkeypatch):
    fake = b"fake resnet101_v1s parameters" * 100
    mirror = tmp_path / "mirror"
    stem = _gluoncv_mirror(monkeypatch, mirror, "resnet101_v1s", fake)
    assert not zoo.is_cached("resnet101_v1s")
    path = zoo.get_weights("resnet101_v1s", base_url="file://" + str(mirror), progress=False)
    assert path == str(home / (stem + ".params")) and open(path, "rb").read() == fake
    assert zoo.is_cached("resnet101_v1s")
    # cached: GluonCV's own get_model_file finds and verifies it, no network
    assert zoo.get_weights("resnet101_v1s") == path
    entry, found = zoo.weights_for_model("resnet101_v1s")
    assert entry.name == "resnet101_v1s" and found == path


# ---------------------------------------------------------------------------------- the table
def test_builtin_entries():
    from gluoncv.model_zoo import model_store

    names = zoo.list_models()
    for name in ("resnet50_v1s", "resnet101_v1s", "resnet152_v1s",
                 "duc_hdc_resnet101_cityscapes_onnx", "duc_hdc_resnet101_cityscapes_tusimple"):
        assert name in names
        text = zoo.describe(name)
        assert name in text and "mean" in text
        json.dumps(zoo.get_entry(name).to_dict())
    for name in ("resnet50_v1s", "resnet101_v1s", "resnet152_v1s"):
        assert zoo.get_entry(name).sha1 == model_store._model_sha1[name]
    onnx_entry = zoo.get_entry("duc_hdc_resnet101_cityscapes_onnx")
    # from the Git LFS pointer of ResNet101-DUC-12.onnx in github.com/onnx/models
    assert onnx_entry.sha256 == "11ebd46b66706e8bb45e74f67a616f0f61029014e99bd8ea7e55deb74a61e9b6"
    assert onnx_entry.size == 260671144
    assert onnx_entry.model == "duc_hdc_resnet101_cityscapes"
    assert (onnx_entry.classes, onnx_entry.cell_width) == (19, 2)
    assert onnx_entry.mean == (122.675, 116.669, 104.008)
    assert all(u.endswith("/ResNet101-DUC-12.onnx") for u in onnx_entry.urls)
    assert zoo.resolve_urls(onnx_entry, "https://mirror.example/duc/") == [
        "https://mirror.example/duc/ResNet101-DUC-12.onnx"]
    assert zoo.get_entry("duc_hdc_resnet101_cityscapes_tusimple").urls == ()
    with pytest.raises(ValueError, match="sha256"):
        _entry(sha256="abc")


@pytest.mark.parametrize("where", ["404", "closed port"])
def test_gluoncv_backbone_download_failure_is_one_line_leaving_only_the_lock(
        server, home, monkeypatch, capsys, where):
    from duc_hdc import cli

    repo = server.url + "/good/" if where == "404" else "http://127.0.0.1:9/"
    monkeypatch.setenv("MXNET_GLUON_REPO", repo)  # GluonCV's own setting for its store's URL
    stem = zoo.get_entry("resnet50_v1s").file_name[:-len(".params")]
    url = repo + "gluon/models/" + stem + ".zip"
    with pytest.raises(zoo.DownloadError) as info:
        zoo.get_weights("resnet50_v1s", progress=False, retries=0, timeout=2)
    message = str(info.value)
    assert "resnet50_v1s" in message and url in message, message
    assert ("HTTP 404" if where == "404" else "connection refused") in message, message
    assert "\n" not in message and "[Errno" not in message and "Pool" not in message
    left = [os.path.relpath(os.path.join(d, f), str(home)) for d, _, fs in os.walk(str(home))
            for f in fs]
    # no part, no zip; only GluonCV's shared lock file, which stays by design (gluoncv.py)
    assert [f for f in left if not f.endswith(stem + ".lock")] == [], left
    if where == "404":  # the command: one line, rc 2 (404 is not retried)
        rc = cli.main(["download", "resnet50_v1s", "--timeout", "2", "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("error: ") == 1 and url in err, err
        assert [f for d, _, fs in os.walk(str(home)) for f in fs
                if not f.endswith(".lock")] == []


def test_training_takes_a_gluoncv_backbone_from_where_download_put_it(tiny_recs, tmp_path,
                                                                      home, monkeypatch,
                                                                      caplog):
    """`duc-hdc download resnet50_v1s` caches the backbone in $DUC_HDC_HOME; training fetched
    its backbone_pretrained through GluonCV into ~/.mxnet/models instead: downloaded again,
    and offline not found at all. Training now takes the zoo's file."""
    from gluoncv.model_zoo import model_store

    import duc_hdc
    from duc_hdc.config import load_config
    from run_helpers import tiny_sets

    sets = tiny_sets(tiny_recs, str(tmp_path / "run"), "model.name=duc_hdc_resnet50",
                     "model.backbone_pretrained=resnet50_v1s", "train.max_iters=1")
    cfg = load_config("synthetic", sets)
    # GluonCV-style weights of this (narrow) backbone, as a mirror of GluonCV's archives
    donor = duc_hdc.get_model("duc_hdc_resnet50", classes=19, base_width=4, cell_width=4)
    saved = str(tmp_path / "backbone.params")
    donor.backbone.save_parameters(saved)
    mirror = tmp_path / "mirror"
    stem = _gluoncv_mirror(monkeypatch, mirror, "resnet50_v1s", open(saved, "rb").read())
    # the user's download step
    cached = zoo.get_weights("resnet50_v1s", base_url="file://" + str(mirror), progress=False)
    assert cached == str(home / (stem + ".params"))

    def no_network(*args, **kwargs):
        raise AssertionError("GluonCV's store was asked for %r" % (args,))

    monkeypatch.setattr(model_store, "get_model_file", no_network)
    with caplog.at_level("INFO", logger="duc_hdc"):
        duc_hdc.train(cfg, progress=False)
    assert "backbone initialized from %s" % cached in caplog.text


def test_weights_converted_again_into_the_cache_are_registered_again(home):
    """A second `duc-hdc convert ... --out $DUC_HDC_HOME/...` replaces the file: its old hash
    record must go with it, or the new weights are refused as corrupted."""
    from duc_hdc.hub.release import save_params

    name = "duc_hdc_resnet101_cityscapes_tusimple"
    target = home / "duc_hdc_resnet101_cityscapes_tusimple.params"
    home.mkdir(parents=True, exist_ok=True)
    config = dict(depth=18, classes=5)
    save_params({"w": np.zeros((2, 2))}, str(target), config)
    assert zoo.get_weights(name) == str(target)  # registered
    first = json.load(open(str(target) + zoo.HASH_SIDECAR_SUFFIX))["sha256"]
    save_params({"w": np.ones((2, 2))}, str(target), config)  # converted again
    assert zoo.get_weights(name) == str(target)
    assert json.load(open(str(target) + zoo.HASH_SIDECAR_SUFFIX))["sha256"] != first


def test_a_narrower_model_in_the_cache_under_a_zoo_name_is_refused(home):
    """A ResNet-18 copied into the cache under the ResNet-101 release's name was used silently
    as "the release's model"."""
    import duc_hdc
    from duc_hdc.models.sidecar import write_sidecar

    home.mkdir(parents=True, exist_ok=True)
    target = str(home / "duc_hdc_resnet101_cityscapes_tusimple.params")
    net = duc_hdc.get_model("duc_hdc_resnet18", classes=19, base_width=8)
    net.save_parameters(target)
    write_sidecar(target, net.config)
    with pytest.raises(ValueError) as e:
        duc_hdc.load("duc_hdc_resnet101_cityscapes_tusimple")
    assert "depth=101" in str(e.value) and "depth=18" in str(e.value), str(e.value)
