package humanserve.agent;

import io.grpc.Status;
import io.grpc.stub.StreamObserver;
import java.lang.reflect.Field;
import java.lang.reflect.Method;
import java.util.Arrays;
import java.util.Collections;
import java.util.Map;
import java.util.WeakHashMap;
import java.util.concurrent.BlockingDeque;
import java.util.concurrent.ConcurrentMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.SynchronousQueue;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.locks.ReentrantLock;
import org.pytorch.serve.http.ServiceUnavailableException;
import org.pytorch.serve.job.Job;
import org.pytorch.serve.job.JobGroup;
import org.pytorch.serve.metrics.IMetric;
import org.pytorch.serve.metrics.MetricCache;
import org.pytorch.serve.util.ApiUtils;
import org.pytorch.serve.util.ConfigManager;
import org.pytorch.serve.wlm.Model;

/**
 * Sequences that a client opens and never ends cost nothing: they wait on threads of their own, give
 * their place to a new sequence when the model is full, and a refusal says why.
 *
 * <p>TorchServe 0.12 waits for each sequence's next frame on a pool of {@code batchSize + 1} threads
 * per worker, one of which waits for new sequences; a wait lasts until a frame comes or the sequence
 * has been idle for {@code sequenceMaxIdleMSec}. So {@code batchSize} abandoned sequences (a crashed
 * client, a client whose sequence header was not recognised) held every thread for a minute, and every
 * other sequence's frame waited for one: measured 60 s for every fourth frame with a batch size of 4.
 * And at {@code maxNumSequence} open sequences a new one was refused with "has no worker".
 *
 * <p>Ten calls are rewritten:
 * <ul>
 *   <li>the pool becomes {@link #pollThreads}: a thread per waiting sequence, made when needed (at most
 *       one per open sequence, since TorchServe polls a sequence once at a time) and ended after a
 *       minute unused;
 *   <li>a sequence waits for its next frame in {@link #nextFrame}, which notes since when it waits, and
 *       closes it under the model's lock when it idled out, unless a frame came as the wait ended (a
 *       frame TorchServe alone lost); TorchServe's own closing after it becomes {@link #closedAlready},
 *       which would otherwise close a newer sequence of the same ID;
 *   <li>a frame joins its sequence through {@link #addToSequence}: a new sequence finding the model full
 *       takes the place of the sequence idle longest, if that one waited at least
 *       {@code humanserve_sequence_min_idle_ms} (config.properties; 10 s by default), else it is refused;
 *   <li>the refusal says why and what to do ({@link #refusalMessage} over REST, 503;
 *       {@link #refuseOnStream} over gRPC, UNAVAILABLE instead of INTERNAL);
 *   <li>a sequence ended by its handler is counted as closed ({@link #ended}).
 * </ul>
 * The metrics {@code ts_sequences_open} (per model) and {@code ts_sequences_closed_total} (per model and
 * reason: ended, idle, evicted) follow them, where the metrics configuration declares them.
 */
public final class IdleSequenceFix {
    private static final String MODEL = "org/pytorch/serve/wlm/Model";
    private static final String JOB = "org/pytorch/serve/job/Job";
    private static final String JOB_GROUP = "org/pytorch/serve/job/JobGroup";
    private static final String BATCHING = "org/pytorch/serve/wlm/SequenceBatching";
    private static final String DISPATCHER = BATCHING + "$EventDispatcher";
    private static final String CONTINUOUS = "org/pytorch/serve/wlm/SequenceContinuousBatching";
    private static final String SERVICE = "org/pytorch/serve/grpcimpl/InferenceImpl";
    private static final String OBSERVER = "io/grpc/stub/StreamObserver";
    private static final String SEND_ERROR = "(L" + OBSERVER + ";Lio/grpc/Status;Ljava/lang/Exception;Ljava/lang/String;"
            + "Lorg/pytorch/serve/util/messages/WorkerCommands;)V";

    static final Agent.Fix FIX = new Agent.Fix(IdleSequenceFix.class,
            "a sequence model's idle sequences hold its frontend threads: other sequences"
                    + " wait up to sequenceMaxIdleMSec per frame, and a full model refuses new ones with 'has no worker'",
            CallPatch.builder().target(BATCHING).method("<init>", "(L" + MODEL + ";)V")
                    .firstOpcode(CallPatch.ALOAD_0).offset(52)
                    .call(CallPatch.INVOKESTATIC, "java/util/concurrent/Executors", "newFixedThreadPool",
                            "(I)Ljava/util/concurrent/ExecutorService;")
                    .helper("pollThreads", "(I)Ljava/util/concurrent/ExecutorService;")
                    .effect("waits for each sequence's next frame on a thread of its own"),
            CallPatch.builder().target(DISPATCHER).method("pollJobFromJobGroup", "(Ljava/lang/String;)V")
                    .firstOpcode(CallPatch.ALOAD_0).offset(42)
                    .call(CallPatch.INVOKEVIRTUAL, JOB_GROUP, "pollJob", "(J)L" + JOB + ";")
                    .helper("nextFrame", "(L" + JOB_GROUP + ";J)L" + JOB + ";")
                    .effect("notes how long each sequence has waited, and closes one that idled out"),
            CallPatch.builder().target(DISPATCHER).method("pollJobFromJobGroup", "(Ljava/lang/String;)V")
                    .firstOpcode(CallPatch.ALOAD_0).offset(65)
                    .call(CallPatch.INVOKEVIRTUAL, BATCHING, "cleanJobGroup", "(Ljava/lang/String;)V")
                    .helper("closedAlready", "(Ljava/lang/Object;Ljava/lang/String;)V")
                    .effect("leaves a newer sequence of the same ID open"),
            CallPatch.builder().target(CONTINUOUS)
                    .method("setJobGroupFinished", "(Lorg/pytorch/serve/util/messages/Predictions;)V")
                    .firstOpcode(CallPatch.ALOAD_1).offset(89)
                    .call(CallPatch.INVOKEVIRTUAL, CONTINUOUS, "cleanJobGroup", "(Ljava/lang/String;)V")
                    .helper("ended", "(Ljava/lang/Object;Ljava/lang/String;)V")
                    .effect("counts a sequence its handler ended as closed"),
            CallPatch.builder().target(MODEL).method("addJob", "(L" + JOB + ";)Z")
                    .firstOpcode(CallPatch.ALOAD_0).codeLength(66).offset(43)
                    .call(CallPatch.INVOKESPECIAL, MODEL, "addJobInGroup", "(L" + JOB + ";)Z")
                    .helper("addToSequence", "(L" + MODEL + ";L" + JOB + ";)Z")
                    .effect("lets a new sequence take the place of one idle long enough when the model is full"),
            CallPatch.builder().target("org/pytorch/serve/util/ApiUtils")
                    .method("addRESTInferenceJob", "(Lio/netty/channel/ChannelHandlerContext;Ljava/lang/String;Ljava/lang/String;"
                            + "Lorg/pytorch/serve/util/messages/RequestInput;)Lorg/pytorch/serve/job/RestJob;")
                    .firstOpcode(CallPatch.NEW).offset(29)
                    .call(CallPatch.INVOKESTATIC, "org/pytorch/serve/util/ApiUtils", "getStreamingInferenceErrorResponseMessage",
                            "(Ljava/lang/String;Ljava/lang/String;)Ljava/lang/String;")
                    .helper("refusalMessage", "(Ljava/lang/String;Ljava/lang/String;)Ljava/lang/String;")
                    .effect("says why a sequence's frame is refused over REST"),
            CallPatch.builder().target(SERVICE)
                    .method("prediction", "(Lorg/pytorch/serve/grpc/inference/PredictionsRequest;L" + OBSERVER
                            + ";Lorg/pytorch/serve/util/messages/WorkerCommands;)V")
                    .firstOpcode(CallPatch.ALOAD_3).offset(476)
                    .call(CallPatch.INVOKESPECIAL, SERVICE, "sendErrorResponse", SEND_ERROR)
                    .helper("refuseOnStream", "(Ljava/lang/Object;L" + OBSERVER + ";Lio/grpc/Status;Ljava/lang/Exception;"
                            + "Ljava/lang/String;Ljava/lang/Object;)V")
                    .effect("says why a sequence's frame is refused over gRPC"));

    /** Offered to a sequence's queue to end its wait when it gives up its place; only {@link #nextFrame} reads these queues. */
    private static final Object GIVEN_UP = new Object();
    private static final long DEFAULT_MIN_IDLE_MS = 10_000;
    static final String MIN_IDLE_PROPERTY = "humanserve_sequence_min_idle_ms";

    /** An open sequence as the agent follows it. */
    private static final class Sequence {
        final Model model;
        volatile long activeNanos; // its last frame, or the start of its wait for the next one
        volatile boolean waiting; // for its next frame: nothing of it is queued or being answered

        Sequence(Model model) {
            this.model = model;
        }
    }

    /** Why this thread's last frame was refused, for the answer that follows. */
    private static final class Refusal {
        final String model, message;

        Refusal(String model, String message) {
            this.model = model;
            this.message = message;
        }
    }

    /** The sequences opened through {@link #addToSequence}, by TorchServe's own object (weakly: a closed one is forgotten). */
    private static final Map<JobGroup, Sequence> SEQUENCES = Collections.synchronizedMap(new WeakHashMap<>());
    private static final ThreadLocal<Refusal> REFUSAL = new ThreadLocal<>();
    private static final AtomicInteger THREADS = new AtomicInteger();
    private static volatile long minIdleNanos = -1;
    private static volatile Field groups, lock, frames, aggregatorModel;
    private static volatile Method addJobInGroup, sendErrorResponse;

    private IdleSequenceFix() {}

    /** What {@code SequenceBatching}'s constructor calls instead of {@code Executors.newFixedThreadPool(batchSize + 1)}. */
    public static ExecutorService pollThreads(int ignoredBatchSizePlusOne) {
        return new ThreadPoolExecutor(0, Integer.MAX_VALUE, 60, TimeUnit.SECONDS, new SynchronousQueue<>(), task -> {
            Thread thread = new Thread(task, "humanserve-sequence-wait-" + THREADS.incrementAndGet());
            thread.setDaemon(true);
            return thread;
        });
    }

    /** What the dispatcher calls instead of {@code group.pollJob(timeout)}: the sequence's next frame, or null once it is closed. */
    public static Job nextFrame(JobGroup group, long timeoutMs) {
        Sequence sequence = SEQUENCES.get(group);
        if (sequence == null) {
            return group.pollJob(timeoutMs); // every sequence is opened through addToSequence; were one not, as TorchServe does
        }
        if (group.isFinished()) {
            return null;
        }
        BlockingDeque<Object> queue = framesOf(group);
        Object next;
        sequence.activeNanos = System.nanoTime();
        sequence.waiting = true;
        try {
            next = queue.poll(timeoutMs, TimeUnit.MILLISECONDS);
        } catch (InterruptedException stopping) { // the worker's aggregator shuts down
            Thread.currentThread().interrupt();
            return null;
        } finally {
            sequence.waiting = false;
        }
        if (next instanceof Job) {
            return (Job) next;
        }
        if (next == GIVEN_UP) {
            return null; // closed by addToSequence
        }
        ReentrantLock modelLock = lockOf(sequence.model);
        modelLock.lock();
        try {
            Object late = queue.poll(); // a frame that came as the wait ended
            if (late instanceof Job) {
                return (Job) late;
            }
            if (late == null) {
                close(sequence.model, group, "idle");
                System.err.println("humanserve agent: " + sequence.model.getModelName() + ": sequence \"" + group.getGroupId()
                        + "\" closed after " + (System.nanoTime() - sequence.activeNanos) / 1_000_000_000L
                        + " s without a frame (its client never ended it)");
            }
            return null;
        } finally {
            modelLock.unlock();
        }
    }

    /** What the dispatcher calls instead of {@code cleanJobGroup(id)} after a wait that gave no frame: the sequence is closed already. */
    public static void closedAlready(Object batching, String groupId) {
        // nextFrame closed it (or addToSequence, or its handler ended it); removing the ID now could close a newer sequence of that ID.
    }

    /** What continuous batching calls instead of {@code cleanJobGroup(id)} when a handler ends a sequence. */
    public static void ended(Object batching, String groupId) {
        Model model = modelOf(batching);
        ReentrantLock modelLock = lockOf(model);
        modelLock.lock();
        try {
            JobGroup group = model.getJobGroup(groupId);
            if (group != null) {
                close(model, group, "ended");
            }
        } finally {
            modelLock.unlock();
        }
    }

    /** What {@code Model.addJob} calls instead of {@code addJobInGroup(job)}: a frame joins its sequence, which may take an idle one's place. */
    public static boolean addToSequence(Model model, Job job) {
        REFUSAL.remove();
        ReentrantLock modelLock = lockOf(model);
        modelLock.lock();
        try {
            ConcurrentMap<String, JobGroup> open = groupsOf(model);
            String id = job.getGroupId();
            boolean opening = !open.containsKey(id);
            if (opening && open.size() >= model.getMaxNumSequence() && !makeRoom(model, open, id)) {
                long minIdleS = minIdleNanos() / 1_000_000_000L;
                REFUSAL.set(new Refusal(model.getModelName(), "Model \"" + model.getModelName() + "\" has " + open.size()
                        + " open sequences (its maxNumSequence), none idle for " + minIdleS + " s: sequence \"" + id
                        + "\" cannot start now. End each sequence with its last frame (option end), retry this one later"
                        + " (a sequence idle for " + minIdleS + " s gives up its place to a new one, and one idle for "
                        + model.getSequenceMaxIdleMSec() / 1000 + " s is closed), or raise the model's maxNumSequence."));
                return false;
            }
            boolean added;
            JobGroup group;
            // A new sequence is followed before its first wait can begin: nextFrame's lookup waits on this map's lock.
            synchronized (SEQUENCES) {
                added = Reflection.invoke(addJobInGroup(), model, job);
                group = open.get(id);
                if (added && group != null) {
                    SEQUENCES.computeIfAbsent(group, key -> new Sequence(model)).activeNanos = System.nanoTime();
                }
            }
            if (group == null) {
                return added;
            }
            if (added) {
                if (opening) {
                    report(model, null);
                }
            } else {
                REFUSAL.set(new Refusal(model.getModelName(), "Sequence \"" + id + "\" of model \"" + model.getModelName()
                        + "\" already has its most frames waiting (the model's maxSequenceJobQueueSize): send its next frame"
                        + " once an answer has come back."));
            }
            return added;
        } finally {
            modelLock.unlock();
        }
    }

    /** What REST calls instead of TorchServe's "has no worker" message when a frame is refused. */
    public static String refusalMessage(String modelName, String version) {
        Refusal refusal = REFUSAL.get();
        REFUSAL.remove();
        if (refusal != null && refusal.model.equals(modelName)) {
            return refusal.message;
        }
        return ApiUtils.getStreamingInferenceErrorResponseMessage(modelName, version);
    }

    /** What gRPC calls instead of {@code sendErrorResponse(observer, INTERNAL, "has no worker", ...)} when a frame is refused. */
    public static void refuseOnStream(Object service, StreamObserver<?> observer, Status status, Exception error,
            String description, Object command) {
        Refusal refusal = REFUSAL.get();
        REFUSAL.remove();
        if (refusal != null) {
            status = Status.UNAVAILABLE;
            error = new ServiceUnavailableException(refusal.message);
            description = "ServiceUnavailableException.()";
        }
        if (sendErrorResponse == null) {
            sendErrorResponse = Reflection.method(service.getClass(), "sendErrorResponse", 5);
        }
        Reflection.invoke(sendErrorResponse, service, observer, status, error, description, command);
    }

    /** Close the model's sequence idle longest, if it has been idle long enough; whether one was closed. Under the model's lock. */
    private static boolean makeRoom(Model model, ConcurrentMap<String, JobGroup> open, String newcomer) {
        long now = System.nanoTime();
        JobGroup idlest = null;
        long since = now;
        synchronized (SEQUENCES) {
            for (Map.Entry<JobGroup, Sequence> entry : SEQUENCES.entrySet()) {
                Sequence sequence = entry.getValue();
                JobGroup group = entry.getKey();
                if (sequence.model == model && sequence.waiting && sequence.activeNanos - since < 0
                        && open.get(group.getGroupId()) == group) {
                    idlest = group;
                    since = sequence.activeNanos;
                }
            }
        }
        if (idlest == null || now - since < minIdleNanos()) {
            return false;
        }
        close(model, idlest, "evicted");
        framesOf(idlest).offer(GIVEN_UP); // its wait ends now; no frame can join it (the lock is held, it is no longer open)
        System.err.println("humanserve agent: " + model.getModelName() + ": sequence \"" + idlest.getGroupId() + "\", idle for "
                + (now - since) / 1_000_000_000L + " s, gave its place to \"" + newcomer + "\" (maxNumSequence "
                + model.getMaxNumSequence() + " reached)");
        return true;
    }

    /** Close a sequence: no longer open, finished, its closing counted. Under the model's lock. */
    private static void close(Model model, JobGroup group, String reason) {
        if (groupsOf(model).remove(group.getGroupId(), group)) {
            group.setFinished(true);
            SEQUENCES.remove(group);
            report(model, reason);
        }
    }

    /** The metrics: the model's open sequences, and one closed for {@code reason} (none when null). Never fails a request. */
    private static void report(Model model, String reason) {
        try {
            MetricCache metrics = MetricCache.getInstance();
            String host = ConfigManager.getInstance().getHostName();
            IMetric open = metrics.getMetricFrontend("ts_sequences_open");
            if (open != null) {
                open.addOrUpdate(Arrays.asList(model.getModelName(), host), groupsOf(model).size());
            }
            IMetric closed = reason == null ? null : metrics.getMetricFrontend("ts_sequences_closed_total");
            if (closed != null) {
                closed.addOrUpdate(Arrays.asList(model.getModelName(), reason, host), 1);
            }
        } catch (RuntimeException metricsUnavailable) {
            // metrics in log mode, or not initialised: the sequences are what matters
        }
    }

    private static long minIdleNanos() {
        if (minIdleNanos < 0) {
            String value = ConfigManager.getInstance().getProperty(MIN_IDLE_PROPERTY, Long.toString(DEFAULT_MIN_IDLE_MS));
            long millis;
            try {
                millis = Long.parseLong(value.trim());
            } catch (NumberFormatException unreadable) {
                System.err.println("humanserve agent: WARNING " + MIN_IDLE_PROPERTY + "=" + value + " is no number of milliseconds; "
                        + DEFAULT_MIN_IDLE_MS + " it is");
                millis = DEFAULT_MIN_IDLE_MS;
            }
            minIdleNanos = TimeUnit.MILLISECONDS.toNanos(Math.max(0, millis));
        }
        return minIdleNanos;
    }

    @SuppressWarnings("unchecked")
    private static ConcurrentMap<String, JobGroup> groupsOf(Model model) {
        if (groups == null) {
            groups = Reflection.field(model.getClass(), "jobGroups");
        }
        return (ConcurrentMap<String, JobGroup>) Reflection.read(groups, model);
    }

    private static ReentrantLock lockOf(Model model) {
        if (lock == null) {
            lock = Reflection.field(model.getClass(), "jobGroupLock");
        }
        return (ReentrantLock) Reflection.read(lock, model);
    }

    @SuppressWarnings("unchecked")
    private static BlockingDeque<Object> framesOf(JobGroup group) {
        if (frames == null) {
            frames = Reflection.field(group.getClass(), "jobs");
        }
        return (BlockingDeque<Object>) Reflection.read(frames, group);
    }

    private static Model modelOf(Object batching) {
        if (aggregatorModel == null) {
            aggregatorModel = Reflection.field(batching.getClass(), "model");
        }
        return (Model) Reflection.read(aggregatorModel, batching);
    }

    private static Method addJobInGroup() {
        if (addJobInGroup == null) {
            addJobInGroup = Reflection.method(Model.class, "addJobInGroup", 1);
        }
        return addJobInGroup;
    }
}
