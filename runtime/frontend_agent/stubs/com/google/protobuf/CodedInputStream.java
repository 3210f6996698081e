package com.google.protobuf;

import java.io.IOException;

/** What the agent calls of protobuf's CodedInputStream, to compile against: the frontend's own protobuf is the one that runs. */
public abstract class CodedInputStream {
    public static CodedInputStream newInstance(byte[] buffer) {
        throw new UnsupportedOperationException("stub");
    }

    public abstract int readTag() throws IOException;

    public abstract String readStringRequireUtf8() throws IOException;

    public abstract boolean skipField(int tag) throws IOException;

    public abstract int readRawVarint32() throws IOException;

    public abstract int pushLimit(int byteLimit) throws IOException;

    public abstract void popLimit(int oldLimit);

    public abstract long readInt64() throws IOException;

    public abstract long readUInt64() throws IOException;
}
