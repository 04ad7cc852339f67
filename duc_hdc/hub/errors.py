"""The hub's errors: each message names the URL, file or zoo name and what went wrong."""

__all__ = ["ConversionError", "DownloadError", "ChecksumError", "IncompleteDownloadError",
           "LockTimeoutError",
           "UnknownModelError", "WeightsNotAvailableError"]


class DownloadError(OSError):
    """A download failed; the message names the URL and what went wrong.

    Attributes
    ----------
    url : str
    transient : bool
        Whether retrying may help (connection errors, stalls, truncation, HTTP 5xx).
    resumable : bool
        Whether the bytes received so far were kept in ``FILE.part`` for the next attempt (the
        server accepts Range requests).
    """

    def __init__(self, message, url=None, transient=False, resumable=False):
        super().__init__(message)
        self.url = url
        self.transient = transient
        self.resumable = resumable

    def __str__(self):
        return self.args[0] if self.args else ""


class ChecksumError(DownloadError):
    """The downloaded (or cached) bytes do not have the expected hash."""


class IncompleteDownloadError(DownloadError):
    """The transfer ended before Content-Length bytes arrived."""


class LockTimeoutError(TimeoutError):
    """Another process held a download lock for longer than the lock timeout."""


class UnknownModelError(LookupError):
    """No zoo entry (or no entry for a model) of that name; the message lists the known ones."""


class WeightsNotAvailableError(RuntimeError):
    """The weights cannot be obtained automatically (no URL, no hash, corrupted local copy)."""


class ConversionError(ValueError):
    """A checkpoint does not fit the network (names the offending array, parameter or node)."""
