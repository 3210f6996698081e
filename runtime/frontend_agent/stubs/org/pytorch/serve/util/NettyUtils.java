package org.pytorch.serve.util;

import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.http.HttpResponseStatus;

/** What the agent calls of TorchServe's NettyUtils, to compile against: the frontend's own class is the one that runs. */
public final class NettyUtils {
    public static void sendJsonResponse(ChannelHandlerContext ctx, Object json, HttpResponseStatus status) {
        throw new UnsupportedOperationException("stub");
    }
}
