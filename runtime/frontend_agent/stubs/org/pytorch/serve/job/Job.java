package org.pytorch.serve.job;

import java.util.Map;
import org.pytorch.serve.util.messages.RequestInput;
import org.pytorch.serve.util.messages.WorkerCommands;

/** What the agent calls and implements of TorchServe's Job, to compile against: the frontend's own class is the one that runs. */
public abstract class Job {
    public Job(String modelName, String version, WorkerCommands command, RequestInput input) {
        throw new UnsupportedOperationException("stub");
    }

    public String getGroupId() {
        throw new UnsupportedOperationException("stub");
    }

    public abstract void response(
            byte[] body, CharSequence contentType, int statusCode, String statusPhrase, Map<String, String> responseHeaders);

    public abstract void sendError(int status, String error);

    public abstract boolean isOpen();
}
