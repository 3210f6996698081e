package io.grpc;

/** What the agent calls of gRPC's ServerBuilder, to compile against: the frontend's own gRPC is the one that runs. */
public abstract class ServerBuilder<T extends ServerBuilder<T>> {
    public abstract T addService(ServerServiceDefinition service);
}
