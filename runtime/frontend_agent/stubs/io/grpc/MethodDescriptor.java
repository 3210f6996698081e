package io.grpc;

import java.io.InputStream;

/** What the agent calls of gRPC's MethodDescriptor, to compile against: the frontend's own gRPC is the one that runs. */
public final class MethodDescriptor<ReqT, RespT> {
    public static <ReqT, RespT> Builder<ReqT, RespT> newBuilder(Marshaller<ReqT> request, Marshaller<RespT> response) {
        throw new UnsupportedOperationException("stub");
    }

    public static String generateFullMethodName(String service, String method) {
        throw new UnsupportedOperationException("stub");
    }

    public interface Marshaller<T> {
        InputStream stream(T value);

        T parse(InputStream stream);
    }

    public enum MethodType { UNARY }

    public static final class Builder<ReqT, RespT> {
        public Builder<ReqT, RespT> setType(MethodType type) {
            throw new UnsupportedOperationException("stub");
        }

        public Builder<ReqT, RespT> setFullMethodName(String name) {
            throw new UnsupportedOperationException("stub");
        }

        public MethodDescriptor<ReqT, RespT> build() {
            throw new UnsupportedOperationException("stub");
        }
    }
}
