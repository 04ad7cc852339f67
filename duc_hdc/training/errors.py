"""Errors of the training layer (here so that trainer and distributed share them, no cycle)."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message says where and what is kept."""
