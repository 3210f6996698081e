package io.netty.channel;

/** Netty's ChannelHandlerContext, to compile against: the agent only hands the frontend's own on. */
public interface ChannelHandlerContext {}
