package io.grpc.stub;

import io.grpc.ServerCallHandler;

/** What the agent calls of gRPC's ServerCalls, to compile against: the frontend's own gRPC is the one that runs. */
public final class ServerCalls {
    public static <ReqT, RespT> ServerCallHandler<ReqT, RespT> asyncUnaryCall(UnaryMethod<ReqT, RespT> method) {
        throw new UnsupportedOperationException("stub");
    }

    public interface UnaryMethod<ReqT, RespT> {
        void invoke(ReqT request, StreamObserver<RespT> responseObserver);
    }
}
