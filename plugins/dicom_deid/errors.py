"""Every error dicom-deid raises on purpose: one base class, one subclass per kind.

Messages are PHI-free by contract: they name paths of the de-identified side, tags,
keywords, counts and configuration fields, never a value read from a DICOM file. The
command line maps them to exit codes; the Airflow tasks let them fail the task.
"""

from __future__ import annotations

__all__ = [
    "BadInput",
    "CohortError",
    "ConfigError",
    "ConfigNotSupported",
    "DicomDeidError",
    "FilterFileError",
    "KeyConfigError",
    "LeakError",
    "RuleFileError",
    "StorageError",
    "VerificationError",
    "WarehouseError",
]


class DicomDeidError(Exception):
    """Base class: catch this to handle anything the package reports on purpose."""


class BadInput(DicomDeidError):
    """An input file that cannot be de-identified or exported.

    ``kind`` is a short code (``zero-byte``, ``not-dicom``, ``truncated``, ``unreadable``,
    ``bad-charset``, ``pixel-decode``...) used for counts and the errors file; ``reason``
    says what is wrong, naming at most a tag.
    """

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class ConfigError(DicomDeidError):
    """A configuration is invalid: checked before any file is touched."""


class ConfigNotSupported(ConfigError):
    """A valid configuration asks for something this engine does not do."""


class RuleFileError(ConfigError):
    """A known-region pixel rule file (CTP ``DicomPixelAnonymizer.script``) is invalid."""


class FilterFileError(ConfigError):
    """A filter file line (``/studies/UID[/series/UID[/instances/UID]]``) is invalid.

    ``reason`` is the problem, ``line`` its 1-based line number when read from a file.
    """

    def __init__(self, reason: str, line: int | None = None) -> None:
        self.reason = reason
        self.line = line
        super().__init__(f"line {line}: {reason}" if line is not None else reason)


class CohortError(ConfigError):
    """A cohort SQL file or its parameters are invalid."""


class KeyConfigError(DicomDeidError):
    """A key (pseudonym, vault or restricted) is missing, unreadable, too short or wrong."""


class WarehouseError(DicomDeidError):
    """A warehouse operation was misused or failed in a way the caller can act on."""


class StorageError(DicomDeidError):
    """A storage backend cannot do what was asked (a bad URL, a conflicting publish)."""


class VerificationError(DicomDeidError):
    """De-identified outputs did not pass verification: nothing may be published."""


class LeakError(VerificationError):
    """An original identifying value was found in a de-identified output.

    Raised only for leaks; other verification failures are :class:`VerificationError`.
    """
