package com.google.gson;

/** What the agent calls of Gson's JsonElement, to compile against: the frontend's own Gson is the one that runs. */
public abstract class JsonElement {
    public boolean isJsonObject() {
        throw new UnsupportedOperationException("stub");
    }

    public boolean isJsonPrimitive() {
        throw new UnsupportedOperationException("stub");
    }

    public JsonObject getAsJsonObject() {
        throw new UnsupportedOperationException("stub");
    }

    public JsonPrimitive getAsJsonPrimitive() {
        throw new UnsupportedOperationException("stub");
    }

    public boolean getAsBoolean() {
        throw new UnsupportedOperationException("stub");
    }

    public String getAsString() {
        throw new UnsupportedOperationException("stub");
    }
}
