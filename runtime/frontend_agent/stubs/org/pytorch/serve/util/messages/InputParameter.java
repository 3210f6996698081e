package org.pytorch.serve.util.messages;

/** What the agent calls of TorchServe's InputParameter, to compile against: the frontend's own class is the one that runs. */
public class InputParameter {
    public InputParameter(String name, byte[] data, CharSequence contentType) {
        throw new UnsupportedOperationException("stub");
    }
}
