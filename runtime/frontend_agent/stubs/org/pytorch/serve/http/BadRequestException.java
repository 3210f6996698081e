package org.pytorch.serve.http;

/** TorchServe's 400 answer, to compile against: the frontend's own class is the one that runs. */
public class BadRequestException extends IllegalArgumentException {
    public BadRequestException(String message) {
        super(message);
    }
}
