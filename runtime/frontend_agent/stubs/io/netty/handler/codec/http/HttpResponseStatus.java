package io.netty.handler.codec.http;

/** What the agent uses of Netty's HttpResponseStatus, to compile against: the frontend's own Netty is the one that runs. */
public class HttpResponseStatus {
    public static final HttpResponseStatus OK = null;
    public static final HttpResponseStatus BAD_REQUEST = null;
    public static final HttpResponseStatus SERVICE_UNAVAILABLE = null;
}
