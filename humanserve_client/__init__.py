"""Python client and command line for humanserve's TorchServe, over REST or gRPC (``humanserve --help``)."""

from .client import Answer, Client, GrpcClient, HandlerError, RestClient, ServerError

__all__ = ["Answer", "Client", "GrpcClient", "HandlerError", "RestClient", "ServerError"]
