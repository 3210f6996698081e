package io.netty.handler.codec.http;

/** What the agent uses of Netty's HttpMethod, to compile against: the frontend's own Netty is the one that runs. */
public class HttpMethod {
    public static final HttpMethod GET = null;
    public static final HttpMethod POST = null;
}
