package com.google.gson;

/** What the agent calls of Gson's JsonObject, to compile against: the frontend's own Gson is the one that runs. */
public final class JsonObject extends JsonElement {
    public JsonElement get(String member) {
        throw new UnsupportedOperationException("stub");
    }
}
