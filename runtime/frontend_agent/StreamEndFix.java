package humanserve.agent;

import io.grpc.stub.StreamObserver;
import java.lang.reflect.Method;
import java.util.Collections;
import java.util.Map;
import java.util.WeakHashMap;

/**
 * A {@code StreamPredictions2} call ends once every request sent on it is answered, not when the client closes its side.
 *
 * <p>TorchServe 0.12 completes the answer stream as soon as the client half-closes it, which a plain
 * gRPC client does right after its last request. The answers still on their way are lost, and the
 * next one throws {@code IllegalStateException} in the worker's thread, which drops the worker (and
 * the state of every sequence it held). Six calls are rewritten: the two by which the stream's
 * {@code onNext} hands a request on (to be answered, or refused at once) count it as pending; the
 * three that send an answer on the stream (the job's answer, the job's error, a refusal) count it
 * answered; the client's half-close completes the stream only when nothing is pending, else the last
 * answer does. An answer that finds its call closed anyway (a handler streaming several answers per
 * request, which this count does not follow) is dropped with a warning rather than killing the worker;
 * a cancelled call is not answered at all (TorchServe's own cancel check comes first).
 */
public final class StreamEndFix {
    private static final String SERVICE = "org/pytorch/serve/grpcimpl/InferenceImpl";
    private static final String REQUESTS = SERVICE + "$1";
    private static final String JOB = "org/pytorch/serve/job/GRPCJob";
    private static final String OBSERVER = "io/grpc/stub/StreamObserver";
    private static final String SERVER_OBSERVER = "io/grpc/stub/ServerCallStreamObserver";
    private static final String REQUEST_TYPE = "(Lorg/pytorch/serve/grpc/inference/PredictionsRequest;)V";

    static final Agent.Fix FIX = new Agent.Fix(StreamEndFix.class,
            "a gRPC client that closes its side of StreamPredictions2 before its last answer"
                    + " loses the answers still on their way, and the next one kills the worker",
            CallPatch.builder().target(REQUESTS).method("onNext", REQUEST_TYPE)
                    .firstOpcode(CallPatch.LDC).offset(96) // prediction(request, observer, command)
                    .call(CallPatch.INVOKESTATIC, SERVICE, "access$200", "(L" + SERVICE
                            + ";Lorg/pytorch/serve/grpc/inference/PredictionsRequest;L" + OBSERVER
                            + ";Lorg/pytorch/serve/util/messages/WorkerCommands;)V")
                    .helper("predict", "(Ljava/lang/Object;Ljava/lang/Object;L" + OBSERVER + ";Ljava/lang/Object;)V")
                    .effect("counts each request sent on a stream"),
            CallPatch.builder().target(REQUESTS).method("onNext", REQUEST_TYPE)
                    .firstOpcode(CallPatch.LDC).offset(78) // sendErrorResponse(observer, ...): no sequence ID
                    .call(CallPatch.INVOKESTATIC, SERVICE, "access$100", "(L" + SERVICE + ";L" + OBSERVER
                            + ";Lio/grpc/Status;Ljava/lang/Exception;Ljava/lang/String;Lorg/pytorch/serve/util/messages/WorkerCommands;)V")
                    .helper("refuse", "(Ljava/lang/Object;L" + OBSERVER + ";Ljava/lang/Object;Ljava/lang/Object;"
                            + "Ljava/lang/Object;Ljava/lang/Object;)V")
                    .effect("counts each request refused on a stream"),
            CallPatch.builder().target(REQUESTS).method("onCompleted", "()V")
                    .firstOpcode(CallPatch.ALOAD_0).offset(28)
                    .call(CallPatch.INVOKEINTERFACE, OBSERVER, "onCompleted", "()V")
                    .helper("halfClosed", "(L" + OBSERVER + ";)V")
                    .effect("completes a stream's answers once all are sent"),
            sendsAnswer(CallPatch.INVOKEINTERFACE, OBSERVER).target(SERVICE)
                    .method("sendErrorResponse", "(L" + OBSERVER + ";Lio/grpc/Status;Ljava/lang/Exception;Ljava/lang/String;"
                            + "Lorg/pytorch/serve/util/messages/WorkerCommands;)V")
                    .firstOpcode(CallPatch.ALOAD).offset(81) // aload 5; ...; observer.onNext(refusal)
                    .effect("counts a refusal as a stream's answer"),
            sendsAnswer(CallPatch.INVOKEVIRTUAL, SERVER_OBSERVER)
                    .target(JOB).method("response", "([BLjava/lang/CharSequence;ILjava/lang/String;Ljava/util/Map;)V")
                    .firstOpcode(CallPatch.ALOAD_1).offset(92)
                    .effect("counts a job's answer as a stream's answer"),
            sendsAnswer(CallPatch.INVOKEVIRTUAL, SERVER_OBSERVER).target(JOB).method("sendError", "(ILjava/lang/String;)V")
                    .firstOpcode(CallPatch.ILOAD_1).offset(178)
                    .effect("counts a job's error as a stream's answer"));

    /**
     * A patch of a call that sends an answer on a stream, {@code observer.onNext(answer)} (an interface call, or a
     * virtual one on a {@code ServerCallStreamObserver}), which {@link #answer} makes instead and counts; the three
     * such calls differ only in where they sit, which each patch names after this.
     */
    private static CallPatch.Builder sendsAnswer(int opcode, String observer) {
        return CallPatch.builder()
                .call(opcode, observer, "onNext", "(Ljava/lang/Object;)V")
                .helper("answer", "(L" + OBSERVER + ";Ljava/lang/Object;)V");
    }

    /** Requests sent on a stream and not yet answered, and whether the client has closed its side. */
    private static final class Stream {
        int pending;
        boolean halfClosed;
    }

    /** The open streams by their answer observer (weakly: a cancelled stream is never completed here). */
    private static final Map<Object, Stream> STREAMS = Collections.synchronizedMap(new WeakHashMap<>());

    private static volatile Method prediction, sendErrorResponse;

    private StreamEndFix() {}

    /** What the stream's {@code onNext} calls instead of {@code prediction}: the request counts as pending first. */
    public static void predict(Object service, Object request, StreamObserver<?> observer, Object command) {
        if (prediction == null) {
            prediction = Reflection.method(service.getClass(), "prediction", 3);
        }
        handOn(prediction, observer, service, request, observer, command);
    }

    /** What the stream's {@code onNext} calls instead of {@code sendErrorResponse} (a request without a sequence ID). */
    public static void refuse(Object service, StreamObserver<?> observer, Object status, Object error, Object message,
            Object command) {
        if (sendErrorResponse == null) {
            sendErrorResponse = Reflection.method(service.getClass(), "sendErrorResponse", 5);
        }
        handOn(sendErrorResponse, observer, service, observer, status, error, message, command);
    }

    /** What the stream's {@code onCompleted} calls: the answer stream completes now if nothing is pending, else after its last answer. */
    public static void halfClosed(StreamObserver<?> observer) {
        Stream stream = STREAMS.get(observer);
        if (stream == null) {
            observer.onCompleted();
            return;
        }
        synchronized (stream) {
            stream.halfClosed = true;
            completeIfAnswered(observer, stream);
        }
    }

    /** What sends an answer on a gRPC call: as before, then for a counted stream one request less pending. */
    public static <V> void answer(StreamObserver<V> observer, V answer) {
        Stream stream = STREAMS.get(observer);
        if (stream == null) {
            observer.onNext(answer);
            return;
        }
        synchronized (stream) {
            try {
                observer.onNext(answer);
            } catch (IllegalStateException closed) {
                System.err.println("humanserve agent: an answer for a closed StreamPredictions2 call was dropped: " + closed);
            }
            stream.pending--;
            completeIfAnswered(observer, stream);
        }
    }

    private static void completeIfAnswered(StreamObserver<?> observer, Stream stream) {
        if (stream.halfClosed && stream.pending <= 0) {
            STREAMS.remove(observer);
            try {
                observer.onCompleted();
            } catch (IllegalStateException closed) {
                System.err.println("humanserve agent: a StreamPredictions2 call was already closed: " + closed);
            }
        }
    }

    private static void handOn(Method method, StreamObserver<?> observer, Object service, Object... arguments) {
        Stream stream = STREAMS.computeIfAbsent(observer, key -> new Stream());
        synchronized (stream) {
            stream.pending++;
        }
        try {
            Reflection.invoke(method, service, arguments);
        } catch (RuntimeException failed) {
            synchronized (stream) {
                stream.pending--; // never handed on: no answer will come for it
            }
            throw failed;
        }
    }
}
