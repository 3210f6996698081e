package org.pytorch.serve.wlm;

import java.util.Map;
import java.util.Set;

/** What the agent calls of TorchServe's ModelVersionedRefs, to compile against: the frontend's own class is the one that runs. */
public final class ModelVersionedRefs {
    public Set<Map.Entry<String, Model>> getAllVersions() {
        throw new UnsupportedOperationException("stub");
    }
}
