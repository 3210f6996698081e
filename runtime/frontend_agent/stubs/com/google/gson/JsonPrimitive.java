package com.google.gson;

/** What the agent calls of Gson's JsonPrimitive, to compile against: the frontend's own Gson is the one that runs. */
public final class JsonPrimitive extends JsonElement {
    public boolean isBoolean() {
        throw new UnsupportedOperationException("stub");
    }
}
