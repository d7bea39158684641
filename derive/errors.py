"""The errors the tool reports to its user: a bad spec or data (exit 2) and a failed check (exit 1)."""

from __future__ import annotations

__all__ = ["SpecError", "CheckFailed", "DataError"]


class SpecError(Exception):
    """A spec that cannot be used, located by file, line and dotted field path.

    ``str()`` gives one readable block::

        net.yaml:7: layers[1].activation: unknown activation 'rleu' (expected one of: ...)
          hint: did you mean 'relu'?
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str = "", hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line  # 1-based
        self.field = field  # e.g. "layers[1].activation.alpha"; "" for the whole file
        self.hint = hint

    @property
    def location(self) -> str:
        """``file:line``, ``file``, ``line N`` or ``""``, whichever is known."""
        if self.file and self.line is not None:
            return f"{self.file}:{self.line}"
        if self.file:
            return self.file
        return f"line {self.line}" if self.line is not None else ""

    def __str__(self) -> str:
        head = ": ".join(part for part in (self.location, self.field, self.message) if part)
        return f"{head}\n  hint: {self.hint}" if self.hint else head

    def __reduce__(self):
        return _rebuild_spec_error, (self.message, self.file, self.line, self.field, self.hint)


def _rebuild_spec_error(message, file, line, field, hint) -> SpecError:
    return SpecError(message, file=file, line=line, field=field, hint=hint)


class CheckFailed(Exception):
    """A proof or numerical check of a derivation or of generated code did not pass."""


class DataError(Exception):
    """Training data that cannot be used (a missing or damaged file, a bad value, sizes that do
    not fit the spec); the message names the file and says what was expected.

    ``location`` (``net.yaml:12: data.features[1]``) is set when a field of the spec is the
    cause, such as a column the table does not have; ``hint`` says what to do.
    """

    def __init__(self, message: str, *, location: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message, self.location, self.hint = message, location, hint

    def __str__(self) -> str:
        head = f"{self.location}: {self.message}" if self.location else self.message
        return f"{head}\n  hint: {self.hint}" if self.hint else head

    def __reduce__(self):
        return _rebuild_data_error, (self.message, self.location, self.hint)


def _rebuild_data_error(message, location, hint) -> DataError:
    return DataError(message, location=location, hint=hint)
