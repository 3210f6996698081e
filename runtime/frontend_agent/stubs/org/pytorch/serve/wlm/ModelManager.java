package org.pytorch.serve.wlm;

import java.util.Map;
import java.util.Set;
import org.pytorch.serve.archive.model.ModelNotFoundException;
import org.pytorch.serve.archive.model.ModelVersionNotFoundException;
import org.pytorch.serve.job.Job;

/** What the agent calls of TorchServe's ModelManager, to compile against: the frontend's own class is the one that runs. */
public abstract class ModelManager {
    public static ModelManager getInstance() {
        throw new UnsupportedOperationException("stub");
    }

    public abstract boolean addJob(Job job) throws ModelNotFoundException, ModelVersionNotFoundException;

    public abstract Model getModel(String modelName, String version) throws ModelVersionNotFoundException;

    public abstract int getNumHealthyWorkers(ModelVersionName model);

    public abstract Set<Map.Entry<String, ModelVersionedRefs>> getAllModels();
}
