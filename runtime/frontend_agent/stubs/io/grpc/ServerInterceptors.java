package io.grpc;

/** What the agent calls of gRPC's ServerInterceptors, to compile against: the frontend's own gRPC is the one that runs. */
public final class ServerInterceptors {
    public static ServerServiceDefinition intercept(ServerServiceDefinition service, ServerInterceptor... interceptors) {
        throw new UnsupportedOperationException("stub");
    }
}
