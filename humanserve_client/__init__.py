"""Python client and command line for humanserve's TorchServe, over REST or gRPC (``humanserve --help``)."""

from .client import Answer, AuthenticationError, Client, GrpcClient, HandlerError, RestClient, ServerError

__all__ = ["Answer", "AuthenticationError", "Client", "GrpcClient", "HandlerError", "RestClient", "ServerError"]
