"""Exceptions raised by :mod:`strrnn.data` (one place, so callers can catch them precisely)."""

from __future__ import annotations


class DataError(Exception):
    """Base class of every data error raised by strrnn."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """The dataset root does not exist; the message says how to obtain the data."""


class LayoutError(DataError, FileNotFoundError):
    """The dataset root exists but is missing part of its expected layout (named in the message)."""


class EmptyClassError(DataError, ValueError):
    """A requested class has no examples."""


class EmptySplitError(DataError, ValueError):
    """A train/val/test split holds no examples (raised before training starts; the message says how to fix it)."""


class CorruptAudioError(DataError, RuntimeError):
    """Unreadable audio under ``strict=True`` (otherwise such files are skipped and reported)."""


class ChecksumError(DataError, ValueError):
    """A downloaded file does not match its recorded SHA-256 digest or size; it has been deleted."""


class UnsafeArchiveError(DataError, ValueError):
    """An archive member would escape the extraction folder (absolute path, ``..``, outside link)."""


class MissingToolError(DataError, RuntimeError):
    """An external program (espeak-ng) is not installed; the message gives the install command."""


class ArchiveTooLargeError(UnsafeArchiveError):
    """An archive unpacks to more bytes or members than the caller's limits allow (an archive bomb?)."""


class CorruptArchiveError(DataError, ValueError):
    """An archive is truncated or corrupt and cannot be read; the message names it and says what to do."""


class UnsupportedPythonError(DataError, RuntimeError):
    """This Python lacks a safety feature strrnn relies on (tarfile's extraction filters); upgrade it."""


class DownloadError(DataError, OSError):
    """A download failed (HTTP error, unreachable host, interrupted transfer); the message names the URL."""
