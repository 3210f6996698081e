package io.grpc;

/** What the agent calls of gRPC's ServerServiceDefinition, to compile against: the frontend's own gRPC is the one that runs. */
public final class ServerServiceDefinition {
    public static Builder builder(String serviceName) {
        throw new UnsupportedOperationException("stub");
    }

    public ServiceDescriptor getServiceDescriptor() {
        throw new UnsupportedOperationException("stub");
    }

    public static final class Builder {
        public <ReqT, RespT> Builder addMethod(MethodDescriptor<ReqT, RespT> method, ServerCallHandler<ReqT, RespT> handler) {
            throw new UnsupportedOperationException("stub");
        }

        public ServerServiceDefinition build() {
            throw new UnsupportedOperationException("stub");
        }
    }
}
