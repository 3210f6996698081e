package io.netty.buffer;

/** What the agent calls of Netty's ByteBuf, to compile against: the frontend's own Netty is the one that runs. */
public abstract class ByteBuf {
    public abstract int readerIndex();

    public abstract int writerIndex();

    public abstract int getInt(int index);

    public abstract int readableBytes();

    public abstract String toString(int index, int length, java.nio.charset.Charset charset);
}
