"""Verified downloads: inter-process lock, read timeout, retries, resume, sha256, atomic rename.

:func:`download` streams a URL into ``FILE.part`` beside the target, checks the byte count and the
sha256, then renames the part onto ``FILE``. The part's name is fixed, so an interrupted
transfer is picked up by the next attempt (or the next call): with an HTTP ``Range`` request
when the server accepts them (``Accept-Ranges: bytes`` / ``206 Partial Content``), from the
start otherwise. A part that cannot be resumed (the server has no Range support, the bytes do
not verify) is removed; nothing else is ever left beside the target.

Concurrent downloads of one file are serialized by :func:`file_lock` (``portalocker``, i.e.
``flock`` on ``FILE.lock``); the lock file is removed by its holder before it lets go, and a
waiter that finds its lock file gone takes the lock anew, so no ``.lock`` files pile up.
"""
import contextlib
import hashlib
import http.client
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.request


from ..fileio import release_lock, sha256sum, try_lock
from .errors import ChecksumError, DownloadError, IncompleteDownloadError, LockTimeoutError

__all__ = ["download", "file_lock", "part_path", "DEFAULT_TIMEOUT", "ENV_LOCK_TIMEOUT"]

logger = logging.getLogger(__name__)

ENV_LOCK_TIMEOUT = "DUC_HDC_LOCK_TIMEOUT"
#: seconds without a byte (connecting, waiting for headers, or mid-transfer) before giving up
DEFAULT_TIMEOUT = 60.0
_CHUNK = 1 << 16
# HTTP statuses worth retrying; anything else (404, 403, ...) fails at once
_TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")


# ---------------------------------------------------------------------------------- locking
@contextlib.contextmanager
def file_lock(path, timeout=None, remove=True):
    """Exclusive inter-process lock for ``path`` (``portalocker`` on ``path + '.lock'``).

    Waits at most ``timeout`` seconds (default ``$DUC_HDC_LOCK_TIMEOUT`` or 3600). With
    ``remove`` the lock file is deleted while still held, and a process that locked a file
    which is no longer at that path (deleted by the previous holder) retries on the new one,
    so removal never lets two holders in. ``remove=False`` is for lock files shared with
    programs that do not follow that protocol (GluonCV's model store).
    """
    lock_path = path + ".lock"
    if timeout is None:
        timeout = float(os.environ.get(ENV_LOCK_TIMEOUT, 3600))
    deadline = time.monotonic() + timeout
    waited = False
    while True:
        handle = try_lock(lock_path)
        if handle is not None:
            break
        if not waited:
            logger.info("waiting for another process holding %s", lock_path)
            waited = True
        if time.monotonic() > deadline:
            raise LockTimeoutError(
                "gave up after {:.0f} s waiting for the lock {} (held by another "
                "download?); delete it if no other process is running, or raise ${}".format(
                    timeout, lock_path, ENV_LOCK_TIMEOUT)) from None
        time.sleep(0.05)
    try:
        yield
    finally:
        release_lock(handle, lock_path, remove)


def part_path(path):
    """Where the bytes of ``path`` collect while it downloads (fixed, so it can be resumed)."""
    return path + ".part"


# ---------------------------------------------------------------------------------- one attempt
def _check_timeout(timeout):
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError("timeout must be a number of seconds > 0, got {!r}".format(timeout))
    return float(timeout)


def _resume_offset(headers, offset, total_hint):
    """Offset the 206 response's Content-Range starts at (None if it is not ours)."""
    m = _CONTENT_RANGE.match(headers.get("Content-Range") or "")
    if not m or int(m.group(1)) != offset:
        return None
    return int(m.group(3)) if m.group(3) != "*" else total_hint


def _digest_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest


def _finish(part, path, url, sha256, received, digest, resumed):
    """Verify the complete part and rename it onto ``path``."""
    actual = digest.hexdigest()
    if sha256 is not None and actual != sha256.lower():
        os.remove(part)
        if resumed:
            return False  # resumed onto bytes that were not this file's: fetch it whole
        raise ChecksumError(
            "sha256 mismatch for {} ({} bytes): expected {}, got {}; file deleted. The server "
            "or mirror holds a different file".format(url, received, sha256, actual), url=url)
    if sha256 is None:
        logger.warning("%s was not verified (no sha256 given); its sha256 is %s", url, actual)
    os.replace(part, path)
    logger.info("downloaded %s -> %s (%d bytes)", url, path, received)
    return True


def _download_once(url, path, sha256, progress, timeout, size):
    """One attempt: stream ``url`` into ``FILE.part`` (resuming it when the server allows),
    verify, rename. Raises :class:`DownloadError` with ``resumable`` telling whether the part
    was kept."""
    part = part_path(path)
    if sha256 is None and os.path.exists(part):
        # without a hash a resumed file could not be told from a spliced one: start over
        os.remove(part)
    for _ in range(2):  # a second pass only after a resume that could not be used
        offset = os.path.getsize(part) if os.path.exists(part) else 0
        done = _transfer(url, path, part, offset, sha256, progress, timeout, size)
        if done:
            return path
        logger.warning("the %d bytes of %s resumed from %s did not verify; downloading it whole",
                       offset, os.path.basename(path), part)
    raise AssertionError("unreachable")  # pragma: no cover


def _transfer(url, path, part, offset, sha256, progress, timeout, size):
    from tqdm import tqdm

    headers = {"User-Agent": "duc-hdc"}
    if offset:
        headers["Range"] = "bytes={}-".format(offset)
    resumable = False
    try:
        request = urllib.request.Request(url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset:  # the part already holds the whole file (or more)
                e.close()
                digest = _digest_of(part)
                if sha256 is not None and digest.hexdigest() == sha256.lower():
                    return _finish(part, path, url, sha256, offset, digest, resumed=True)
                os.remove(part)
                return False
            raise
        with response:
            status = getattr(response, "status", None)
            # a part is worth keeping only if the server resumes and the result can be verified
            resumable = sha256 is not None and (
                response.headers.get("Accept-Ranges") or "").strip().lower() == "bytes"
            length = response.headers.get("Content-Length")
            length = int(length) if length is not None and length.strip().isdigit() else None
            if offset and status == 206:
                total = _resume_offset(response.headers, offset, size)
                if total is None:
                    raise DownloadError("{} answered the request for bytes {}- with Content-Range "
                                        "{!r}".format(url, offset,
                                                      response.headers.get("Content-Range")),
                                        url=url, transient=True)
                resumable, mode, digest = sha256 is not None, "ab", _digest_of(part)
                expected = total if total is not None else (
                    offset + length if length is not None else None)
                logger.info("resuming %s at byte %d", url, offset)
            else:
                if offset:
                    logger.info("%s does not resume transfers: downloading it from the start", url)
                offset, mode, digest = 0, "wb", hashlib.sha256()
                expected = length
            received = offset
            read = getattr(response, "read1", response.read)
            with open(part, mode) as f, tqdm(
                    total=expected if expected is not None else size, initial=offset, unit="B",
                    unit_scale=True, unit_divisor=1024, desc=os.path.basename(path),
                    disable=not progress, leave=False) as bar:
                while True:
                    chunk = read(_CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    f.flush()  # what arrived is on disk, to resume from if the process dies
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                f.flush()
                os.fsync(f.fileno())
        if expected is not None and received != expected:
            raise IncompleteDownloadError(
                "truncated transfer from {}: received {} of {} bytes (Content-Length)".format(
                    url, received, expected), url=url, transient=True)
        return _finish(part, path, url, sha256, received, digest, resumed=mode == "ab")
    except DownloadError as e:
        raise _kept_or_removed(e, part, resumable)
    except urllib.error.HTTPError as e:
        raise _kept_or_removed(DownloadError("HTTP {} {} for {}".format(e.code, e.reason, url),
                                             url=url, transient=e.code in _TRANSIENT_HTTP),
                               part, resumable) from e
    except urllib.error.URLError as e:
        if isinstance(e.reason, (socket.timeout, TimeoutError)):
            raise _kept_or_removed(_stalled(url, timeout, "connecting"), part, resumable) from e
        missing = isinstance(e.reason, (FileNotFoundError, IsADirectoryError, PermissionError))
        raise _kept_or_removed(DownloadError("cannot open {}: {}".format(url, _reason(e.reason)),
                                             url=url, transient=not missing),
                               part, resumable) from e
    except (socket.timeout, TimeoutError) as e:
        raise _kept_or_removed(_stalled(url, timeout, "transferring"), part, resumable) from e
    except http.client.IncompleteRead as e:
        raise _kept_or_removed(IncompleteDownloadError(
            "truncated transfer from {}: connection closed with {} bytes still expected".format(
                url, e.expected), url=url, transient=True), part, resumable) from e
    except (http.client.HTTPException, ConnectionError) as e:
        raise _kept_or_removed(DownloadError("network error while downloading {}: {!r}".format(
            url, e), url=url, transient=True), part, resumable) from e
    except OSError as e:  # writing the part (a full disk, permissions)
        raise _kept_or_removed(DownloadError("cannot write {}: {}".format(part, e), url=url),
                               part, resumable) from e
    except BaseException:  # KeyboardInterrupt: keep only what can be resumed
        if not resumable and os.path.exists(part):
            os.remove(part)
        raise


def _reason(reason):
    """Why a URL could not be opened, in words (not ``[Errno -2] ...``)."""
    if isinstance(reason, socket.gaierror):
        return "cannot resolve its host name (no network, or a wrong address)"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (nothing listens at that address and port)"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror[:1].lower() + reason.strerror[1:]
    return str(reason)


def _stalled(url, timeout, stage):
    return DownloadError("no data from {} for {:g} s while {} (the timeout; raise it with "
                         "timeout= or duc-hdc download --timeout)".format(url, timeout, stage),
                         url=url, transient=True)


def _kept_or_removed(error, part, resumable):
    """Keep a resumable part (and say so) or delete it; return ``error`` with that noted."""
    exists = os.path.exists(part)
    keep = resumable and error.transient and exists and os.path.getsize(part) > 0
    if exists and not keep:
        os.remove(part)
    note = ("; the {} bytes received are kept in {} and the next attempt resumes from "
            "there".format(os.path.getsize(part), part) if keep else
            "; partial file deleted" if exists else "")
    return type(error)(str(error) + note, url=error.url, transient=error.transient,
                       resumable=keep)


# ---------------------------------------------------------------------------------- public
def download(url, path, sha256=None, progress=True, retries=2, timeout=DEFAULT_TIMEOUT,
             retry_delay=1.0, size=None):
    """Download ``url`` to ``path`` safely: locked, streamed, resumable, verified, atomic.

    Parameters
    ----------
    url : str
        ``http://``, ``https://`` or ``file://``.
    path : str
        Destination. If it already exists with the expected ``sha256`` nothing is fetched; if
        its hash differs it is deleted and downloaded again.
    sha256 : str, optional
        Expected hex digest. Without it an existing file is reused as is.
    progress : bool
        Show a tqdm bar.
    retries : int
        Extra attempts after a transient failure (connection error, stall, truncation, HTTP
        5xx/429); each resumes the part when the server allows. A wrong hash or HTTP 4xx
        fails at once.
    timeout : float
        Seconds without any byte arriving, on connecting and on every read of the transfer
        (a server that stalls after the headers), before the attempt gives up.
    retry_delay : float
        Seconds before the first retry, doubled for each further one.
    size : int, optional
        Expected size, for the progress bar when the server sends no Content-Length.

    Returns
    -------
    str
        ``path`` (absolute).

    Raises
    ------
    ValueError
        ``timeout`` is not a positive number.
    ChecksumError, IncompleteDownloadError, DownloadError
        The message names the URL, the expected vs actual hash or byte count, or the timeout,
        and whether the partial file was kept for resuming (``FILE.part``) or deleted.
    """
    timeout = _check_timeout(timeout)
    path = os.path.abspath(os.path.expanduser(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with file_lock(path):
        if os.path.exists(path):
            if sha256 is None:
                logger.info("%s exists and no sha256 was given; not downloading again", path)
                return path
            actual = sha256sum(path)
            if actual == sha256.lower():
                return path
            logger.warning("cached %s has sha256 %s, expected %s: deleting it and downloading %s "
                           "again", path, actual, sha256, url)
            os.remove(path)
        attempts = int(retries) + 1
        for attempt in range(attempts):
            try:
                return _download_once(url, path, sha256, progress, timeout, size)
            except DownloadError as e:
                if not e.transient:
                    raise
                if attempt + 1 == attempts:
                    raise type(e)("{} (gave up after {} attempt{})".format(
                        e, attempts, "s" if attempts > 1 else ""), url=url, transient=True,
                        resumable=e.resumable) from e
                delay = retry_delay * 2 ** attempt
                logger.warning("%s; retry %d of %d in %.1f s", e, attempt + 1, retries, delay)
                time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
