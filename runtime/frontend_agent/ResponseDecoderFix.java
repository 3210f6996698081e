package humanserve.agent;

import io.netty.buffer.ByteBuf;

/**
 * A worker's answer is decoded once, when all of it has arrived, instead of once per chunk read from its socket.
 *
 * <p>TorchServe 0.12's {@code ModelResponseDecoder.decode} parses a batch's answer from the start each
 * time Netty reads a chunk (at most 64 KB) from the worker's socket: it copies every answer already
 * complete into a new array and throws an exception at the first one that is not, then starts again
 * with the next chunk. A batch of four 3 MB answers arrives in about 200 chunks, so its first answers
 * are copied about 200 times (measured: 1 MB answers cost the frontend 11-15 core-ms, 4 MB 160). The
 * decoder's first call, {@code in.readableBytes()}, becomes {@link #wholeMessageBytes}, which walks the
 * message's length fields without copying and answers 0 (the decoder's "too short, wait") until the
 * whole message is there.
 */
public final class ResponseDecoderFix {
    static final Agent.Fix FIX = new Agent.Fix(ResponseDecoderFix.class,
            "large answers cost the frontend time that grows with the square of their size",
            CallPatch.builder()
                    .target("org/pytorch/serve/util/codec/ModelResponseDecoder")
                    .method("decode", "(Lio/netty/channel/ChannelHandlerContext;Lio/netty/buffer/ByteBuf;Ljava/util/List;)V")
                    .firstOpcode(CallPatch.ALOAD_2) // aload_2 (in); invokevirtual ByteBuf.readableBytes
                    .offset(1).call(CallPatch.INVOKEVIRTUAL, "io/netty/buffer/ByteBuf", "readableBytes", "()I")
                    .helper("wholeMessageBytes", "(Lio/netty/buffer/ByteBuf;)I")
                    .effect("waits for a worker's whole answer before decoding it"));

    private ResponseDecoderFix() {}

    /**
     * The readable bytes of {@code in} once a whole worker response is in it, else 0.
     *
     * <p>The response: status code, message, then per answer its request ID, content type, status
     * code, reason phrase, headers and body, ending at a length of -1. A length the decoder would
     * refuse (negative) lets it run, so that it reports the problem itself; one over
     * {@code max_response_size} it refuses once the bytes announced are there, as the worker sends them.
     */
    public static int wholeMessageBytes(ByteBuf in) {
        Cursor message = new Cursor(in);
        message.nextInt(); // status code
        message.skipField(); // message
        while (message.readable()) {
            int length = message.nextInt();
            if (length == -1) {
                break; // the end mark: all of it is here
            }
            message.skip(length); // request ID
            message.skipField(); // content type
            message.nextInt(); // status code
            message.skipField(); // reason phrase
            for (long fields = 2L * message.nextInt(); fields > 0 && message.readable(); fields--) {
                message.skipField(); // header names and values
            }
            message.skipField(); // body
        }
        return message.incomplete ? 0 : in.writerIndex() - in.readerIndex();
    }

    /** A walk over length fields from the reader index, without moving it; it stops at the first field not all there. */
    static final class Cursor {
        final ByteBuf in;
        final long end;
        long at;
        boolean incomplete, unreadable;

        Cursor(ByteBuf in) {
            this.in = in;
            this.at = in.readerIndex();
            this.end = in.writerIndex();
        }

        boolean readable() {
            return !incomplete && !unreadable;
        }

        int nextInt() {
            if (!readable() || at + 4 > end) {
                incomplete |= readable();
                return 0;
            }
            int value = in.getInt((int) at);
            at += 4;
            return value;
        }

        void skip(long length) {
            if (!readable()) {
                return;
            }
            if (length < 0) {
                unreadable = true;
            } else if (at + length > end) {
                incomplete = true;
            } else {
                at += length;
            }
        }

        void skipField() {
            int length = nextInt();
            skip(length);
        }
    }
}
