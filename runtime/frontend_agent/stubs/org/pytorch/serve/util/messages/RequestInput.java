package org.pytorch.serve.util.messages;

/** What the agent calls of TorchServe's RequestInput, to compile against: the frontend's own class is the one that runs. */
public class RequestInput {
    public RequestInput(String requestId) {
        throw new UnsupportedOperationException("stub");
    }

    public void updateHeaders(String key, String value) {
        throw new UnsupportedOperationException("stub");
    }

    public void addParameter(InputParameter parameter) {
        throw new UnsupportedOperationException("stub");
    }
}
