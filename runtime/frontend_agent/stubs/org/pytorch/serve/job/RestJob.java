package org.pytorch.serve.job;

import io.netty.channel.ChannelHandlerContext;
import java.util.Map;
import org.pytorch.serve.util.messages.RequestInput;
import org.pytorch.serve.util.messages.WorkerCommands;

/** What the agent calls of TorchServe's RestJob (a REST request's job), to compile against: the frontend's own class is the one that runs. */
public class RestJob extends Job {
    public RestJob(ChannelHandlerContext ctx, String modelName, String version, WorkerCommands command, RequestInput input) {
        super(modelName, version, command, input);
    }

    @Override
    public void response(byte[] body, CharSequence contentType, int status, String phrase, Map<String, String> headers) {
        throw new UnsupportedOperationException("stub");
    }

    @Override
    public void sendError(int status, String error) {
        throw new UnsupportedOperationException("stub");
    }

    @Override
    public boolean isOpen() {
        throw new UnsupportedOperationException("stub");
    }
}
