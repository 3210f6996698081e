package org.pytorch.serve.wlm;

import org.pytorch.serve.job.JobGroup;

/** What the agent calls of TorchServe's Model, to compile against: the frontend's own class is the one that runs. */
public class Model {
    public String getModelName() {
        throw new UnsupportedOperationException("stub");
    }

    public int getMaxNumSequence() {
        throw new UnsupportedOperationException("stub");
    }

    public long getSequenceMaxIdleMSec() {
        throw new UnsupportedOperationException("stub");
    }

    public boolean isSequenceBatching() {
        throw new UnsupportedOperationException("stub");
    }

    public int getMinWorkers() {
        throw new UnsupportedOperationException("stub");
    }

    public ModelVersionName getModelVersionName() {
        throw new UnsupportedOperationException("stub");
    }

    public JobGroup getJobGroup(String groupId) {
        throw new UnsupportedOperationException("stub");
    }
}
