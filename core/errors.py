"""Exceptions that carry a message meant for a person (the CLI prints them without a traceback)."""


class InfoscopeError(Exception):
    """Base class: a problem the user can fix, described in plain words."""


class DataError(InfoscopeError):
    """Bad input data: an unreadable image, an unknown label, an empty class, mixed channel counts..."""


class RunStoreError(InfoscopeError):
    """A run directory that is missing, half-written, failed, or of an unknown schema."""


class ScoreError(InfoscopeError):
    """A score cannot be computed on this input (too few samples, NaNs, singular system...)."""


class ExportError(InfoscopeError):
    """An export that would write outside its folder, or has nothing to write."""


class QueryError(InfoscopeError, ValueError):
    """A ``--where`` predicate that is not one SQL expression over the samples columns."""
