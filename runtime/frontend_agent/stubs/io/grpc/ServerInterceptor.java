package io.grpc;

/** gRPC's ServerInterceptor, to compile against: the agent only hands the frontend's own on. */
public interface ServerInterceptor {}
