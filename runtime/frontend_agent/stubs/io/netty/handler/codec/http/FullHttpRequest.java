package io.netty.handler.codec.http;

import io.netty.buffer.ByteBuf;

/** What the agent calls of Netty's FullHttpRequest, to compile against: the frontend's own Netty is the one that runs. */
public interface FullHttpRequest {
    HttpMethod method();

    String uri();

    HttpHeaders headers();

    ByteBuf content();
}
