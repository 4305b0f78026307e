"""One small hierarchy of errors; the CLI turns each into one line and exit code 1."""

from __future__ import annotations


class BatchflowError(Exception):
    """Base of every error batchflow raises on purpose."""

    #: Whether running the same command again may succeed without a change.
    transient = False


class SpecError(BatchflowError):
    """A problem in a pipeline spec, located at file:line:column and a dotted field."""

    def __init__(
        self,
        message: str,
        *,
        file: str,
        line: int | None = None,
        column: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.field = field
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class SpecErrors(BatchflowError):
    """Several spec problems found at once (validate reports all of them)."""

    def __init__(self, errors: list[SpecError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class SourceError(BatchflowError):
    """A record in a source cannot be read or rendered."""

    def __init__(self, message: str, *, uri: str, line: int | None = None) -> None:
        self.message = message
        self.uri = uri
        self.line = line
        where = f"{uri}:{line}" if line is not None else uri
        super().__init__(f"{where}: {message}")


class OutputError(BatchflowError):
    """An output or errors destination cannot be written."""


class StateError(BatchflowError):
    """The state store is unreadable or inconsistent."""


class LockedError(StateError):
    """Another apply holds the pipeline's lock."""

    transient = True


class BudgetError(BatchflowError):
    """The requests an apply would send are estimated to cost more than its budget."""


class PolicyError(BatchflowError):
    """More requests failed for good than a pipeline's errors policy tolerates (`apply` exits 3)."""


class RemoteError(BatchflowError):
    """The Gemini API (or the emulator) refused or failed a call."""

    def __init__(self, message: str, *, code: int | None = None, transient: bool = False) -> None:
        self.code = code
        self.transient = transient
        super().__init__(message)
