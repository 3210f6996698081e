package io.grpc;

/** gRPC's StatusRuntimeException, to compile against: the frontend's own gRPC is the one that runs. */
public class StatusRuntimeException extends RuntimeException {}
