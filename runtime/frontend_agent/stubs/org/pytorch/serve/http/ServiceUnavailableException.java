package org.pytorch.serve.http;

/** TorchServe's 503 answer, to compile against: the frontend's own class is the one that runs. */
public class ServiceUnavailableException extends RuntimeException {
    public ServiceUnavailableException(String message) {
        super(message);
    }
}
