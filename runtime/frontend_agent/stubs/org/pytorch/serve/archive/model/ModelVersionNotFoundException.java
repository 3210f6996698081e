package org.pytorch.serve.archive.model;

/** TorchServe's ModelVersionNotFoundException, to compile against: the frontend's own class is the one that runs. */
public class ModelVersionNotFoundException extends Exception {
    public ModelVersionNotFoundException(String message) {
        super(message);
    }
}
