package io.netty.handler.codec.http;

/** What the agent calls of Netty's HttpHeaders, to compile against: the frontend's own Netty is the one that runs. */
public abstract class HttpHeaders {
    public abstract String get(String name);
}
