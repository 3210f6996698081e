package io.grpc;

/** gRPC's ServerCallHandler, to compile against: the agent only hands one from ServerCalls on. */
public interface ServerCallHandler<ReqT, RespT> {}
