package io.grpc.stub;

/** What the agent calls of gRPC's StreamObserver, to compile against: the frontend's own gRPC is the one that runs. */
public interface StreamObserver<V> {
    void onNext(V value);

    void onError(Throwable error);

    void onCompleted();
}
