package io.netty.handler.codec.http;

/** Netty's QueryStringDecoder, to compile against: the agent only hands the frontend's own on. */
public class QueryStringDecoder {}
