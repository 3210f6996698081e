package org.pytorch.serve.util;

import io.grpc.Status;

/** What the agent calls of TorchServe's GRPCUtils, to compile against: the frontend's own class is the one that runs. */
public final class GRPCUtils {
    public static Status getGRPCStatusCode(int httpStatusCode) {
        throw new UnsupportedOperationException("stub");
    }
}
