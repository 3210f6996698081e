package io.grpc;

/** What the agent uses of gRPC's Status, to compile against: the frontend's own gRPC is the one that runs. */
public final class Status {
    public static final Status UNAVAILABLE = null;
    public static final Status NOT_FOUND = null;
    public static final Status INVALID_ARGUMENT = null;
    public static final Status INTERNAL = null;

    public Status withDescription(String description) {
        throw new UnsupportedOperationException("stub");
    }

    public StatusRuntimeException asRuntimeException() {
        throw new UnsupportedOperationException("stub");
    }
}
