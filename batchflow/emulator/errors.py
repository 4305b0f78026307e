"""Errors in the Gemini API's envelope: {"error": {"code", "message", "status"}}."""

from __future__ import annotations

_STATUS = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


class ApiError(Exception):
    def __init__(
        self, code: int, message: str, status: str | None = None, *, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds, sent as the Retry-After header
        self.code = code
        self.message = message
        self.status = status or _STATUS.get(code, "UNKNOWN")

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}
