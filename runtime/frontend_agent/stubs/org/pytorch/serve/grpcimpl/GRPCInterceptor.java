package org.pytorch.serve.grpcimpl;

import io.grpc.ServerInterceptor;
import org.pytorch.serve.util.ConnectorType;

/** TorchServe's gRPC interceptor (token check, access log), to compile against: the frontend's own class is the one that runs. */
public class GRPCInterceptor implements ServerInterceptor {
    public GRPCInterceptor(ConnectorType connectorType) {
        throw new UnsupportedOperationException("stub");
    }
}
