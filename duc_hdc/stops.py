"""Ctrl-C and SIGTERM, taken where long work can stop cleanly (no duc_hdc imports).

Python's default SIGINT handler raises ``KeyboardInterrupt`` wherever the main thread is. When
that is a finalizer (MXNet's ``NDArrayBase.__del__``, run by the ``gc.collect()`` of gluon's
DataLoader at every epoch) Python prints "Exception ignored in ..." and training goes on: a user
measured 3 of 8 Ctrl-Cs lost. SIGTERM (``timeout``, batch schedulers, ``kill``) has no Python
handler at all: the process died without the line saying how to resume, and left the temporary
file of a checkpoint being written.

:func:`deferred_stops` records the signal instead and the training loop calls its check at safe
points (every step, every epoch end), which raises :class:`Stopped`, a ``KeyboardInterrupt``
carrying the signal. A second signal raises at once (a hung step can still be stopped). Written
by hand: neither MXNet nor the standard library defers signals to chosen points.
"""
import contextlib
import logging
import os
import signal
import threading

__all__ = ["Stopped", "deferred_stops", "raised_stops", "quiet_worker", "launched_worker",
           "STOP_SIGNALS"]

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """Training stopped by signal ``signum`` (the command exits ``128 + signum``)."""

    def __init__(self, signum, message=""):
        super().__init__(message)
        self.signum = signum


def launched_worker(environ=None):
    """True in a process of a ``duc-hdc launch`` job (``DMLC_ROLE`` set), which its launcher
    stops by signal and whose run folder its workers share: no handlers, no run lock."""
    return bool((os.environ if environ is None else environ).get("DMLC_ROLE"))


@contextlib.contextmanager
def deferred_stops():
    """``with deferred_stops() as check:`` SIGINT and SIGTERM are recorded; ``check()`` raises
    :class:`Stopped` once one arrived. Where handlers cannot be set (not the main thread) or
    should not be (a distributed worker, which its launcher stops: ``DMLC_ROLE`` set), the
    signals keep their handlers and ``check()`` does nothing."""
    received = []

    def check():
        if received:
            raise Stopped(received[0])

    if threading.current_thread() is not threading.main_thread() or launched_worker():
        yield check
        return

    def record(signum, frame):
        if received:  # the second one: at once
            raise Stopped(signum)
        received.append(signum)
        log.warning("%s: stopping after this step (send it again to stop at once)",
                    signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, record) for signum in STOP_SIGNALS}
    try:
        yield check
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


@contextlib.contextmanager
def raised_stops():
    """``with raised_stops():`` SIGTERM raises :class:`Stopped` in the main thread, as Ctrl-C
    raises ``KeyboardInterrupt``, so that the block's cleanup runs (a conversion removes its
    ``.part`` files, stops its worker processes) instead of the process dying with them left
    behind. Main thread only; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Stopped(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def quiet_worker():
    """Initializer of a worker process of a pool: Ctrl-C, which the terminal sends to the whole
    process group, is left to the parent (which stops the pool), so that the workers print no
    traceback of their own and are never killed while holding the pool's queue locks, which
    hung ``Pool.terminate`` (2 of 5 Ctrl-Cs of a 2-worker conversion); SIGTERM, the pool's
    own way to stop them, ends them at once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
