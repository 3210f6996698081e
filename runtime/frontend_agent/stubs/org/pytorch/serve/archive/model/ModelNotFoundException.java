package org.pytorch.serve.archive.model;

/** TorchServe's ModelNotFoundException, to compile against: the frontend's own class is the one that runs. */
public class ModelNotFoundException extends Exception {
    public ModelNotFoundException(String message) {
        super(message);
    }
}
