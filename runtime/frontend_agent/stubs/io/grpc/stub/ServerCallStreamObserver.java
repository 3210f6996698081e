package io.grpc.stub;

/** What the agent calls of gRPC's ServerCallStreamObserver, to compile against: the frontend's own gRPC is the one that runs. */
public abstract class ServerCallStreamObserver<V> implements StreamObserver<V> {
    public abstract boolean isCancelled();
}
