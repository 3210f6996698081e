package io.grpc;

/** What the agent calls of gRPC's ServiceDescriptor, to compile against: the frontend's own gRPC is the one that runs. */
public final class ServiceDescriptor {
    public String getName() {
        throw new UnsupportedOperationException("stub");
    }
}
