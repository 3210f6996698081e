package com.google.protobuf;

import java.io.IOException;
import java.io.OutputStream;

/** What the agent calls of protobuf's CodedOutputStream, to compile against: the frontend's own protobuf is the one that runs. */
public abstract class CodedOutputStream {
    public static CodedOutputStream newInstance(OutputStream output) {
        throw new UnsupportedOperationException("stub");
    }

    public abstract void writeString(int field, String value) throws IOException;

    public abstract void writeBool(int field, boolean value) throws IOException;

    public abstract void writeByteArray(int field, byte[] value) throws IOException;

    public abstract void flush() throws IOException;
}
