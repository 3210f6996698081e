package org.pytorch.serve.http;

import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.QueryStringDecoder;
import org.pytorch.serve.archive.model.ModelNotFoundException;

/** What the agent calls of TorchServe's HttpRequestHandlerChain, to compile against: the frontend's own class is the one that runs. */
public abstract class HttpRequestHandlerChain {
    public abstract void handleRequest(ChannelHandlerContext ctx, FullHttpRequest req, QueryStringDecoder decoder, String[] segments)
            throws ModelNotFoundException, Exception;
}
