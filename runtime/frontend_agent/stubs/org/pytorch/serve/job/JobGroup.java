package org.pytorch.serve.job;

/** What the agent calls of TorchServe's JobGroup (a sequence), to compile against: the frontend's own class is the one that runs. */
public class JobGroup {
    public String getGroupId() {
        throw new UnsupportedOperationException("stub");
    }

    public Job pollJob(long timeout) {
        throw new UnsupportedOperationException("stub");
    }

    public void setFinished(boolean finished) {
        throw new UnsupportedOperationException("stub");
    }

    public boolean isFinished() {
        throw new UnsupportedOperationException("stub");
    }
}
