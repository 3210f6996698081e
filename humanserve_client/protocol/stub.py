"""A client stub of a gRPC service, made from the service's descriptor in its generated message module.

What grpcio-tools' ``--grpc_python_out`` would write for a client follows from that descriptor alone (each method's
path, whether each side streams, the message classes), so it is made here at run time rather than generated and
committed; tests/test_client_install.py checks that it makes what grpcio-tools writes.
"""

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor


class ServiceStub:
    """A callable attribute per method of ``service``, on ``channel``, as the ``<Service>Stub`` grpcio-tools writes
    has: ``ServiceStub(channel, inference_pb2.DESCRIPTOR.services_by_name["InferenceAPIsService"]).Predictions``."""

    def __init__(self, channel: grpc.Channel, service: ServiceDescriptor):
        for method in service.methods:
            sends = "stream" if method.client_streaming else "unary"
            answers = "stream" if method.server_streaming else "unary"
            request = message_factory.GetMessageClass(method.input_type)
            response = message_factory.GetMessageClass(method.output_type)
            multicallable = getattr(channel, f"{sends}_{answers}")(
                f"/{service.full_name}/{method.name}",
                request_serializer=request.SerializeToString,
                response_deserializer=response.FromString,
                # As in grpcio-tools' stubs: the channel registers the method once, rather than naming it on each call.
                _registered_method=True,
            )
            setattr(self, method.name, multicallable)
