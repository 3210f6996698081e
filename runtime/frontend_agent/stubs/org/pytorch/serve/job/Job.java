package org.pytorch.serve.job;

/** What the agent calls of TorchServe's Job, to compile against: the frontend's own class is the one that runs. */
public abstract class Job {
    public abstract String getGroupId();
}
