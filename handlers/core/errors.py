"""Per-request errors: each carries the HTTP status and a JSON body for one item of a batch."""

import json
from http import HTTPStatus


class RequestError(Exception):
    """A problem with one request, answered with ``code`` and never affecting its batch mates."""

    code = HTTPStatus.BAD_REQUEST

    def __init__(self, message: str, kind: str = "InvalidRequest"):
        super().__init__(message)
        self.message = message
        self.kind = kind

    def body(self) -> bytes:
        """JSON error body: the same contract over REST and gRPC."""
        return json.dumps({"code": int(self.code), "type": self.kind, "message": self.message}).encode()


class PayloadTooLarge(RequestError):
    """The image is over the configured byte or pixel limit."""

    code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class InternalError(RequestError):
    """Our own fault while handling a request: answered 500 for it alone where we can, and logged."""

    code = HTTPStatus.INTERNAL_SERVER_ERROR

    def __init__(self, stage: str, error: BaseException):
        super().__init__(
            f"the server failed while {stage} ({type(error).__name__}); it is logged, please report it", "InternalError"
        )


class UnsupportedMediaType(RequestError):
    """The bytes are an image of a type we do not decode."""

    code = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
