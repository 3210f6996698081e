package humanserve.agent;

/**
 * A dead worker of a sequence-batching model is restarted.
 *
 * <p>When a worker dies, {@code WorkerThread.retry()} calls {@code startEventDispatcher()} on its
 * aggregator before it schedules the restart. {@code SequenceBatching} starts its dispatcher thread
 * in its constructor already, so that second {@code Thread.start()} throws and the restart is never
 * scheduled: the model answers nothing until the server restarts. That one call becomes
 * {@link #startIfNew}, which starts the thread only if it never ran.
 */
public final class SequenceRetryFix {
    static final CallPatch PATCH = new CallPatch(
            "org/pytorch/serve/wlm/SequenceBatching", "startEventDispatcher", "()V",
            CallPatch.ALOAD_0, 8, 4, // aload_0; getfield; invokevirtual Thread.start; return
            CallPatch.INVOKEVIRTUAL, "java/lang/Thread", "start", "()V",
            "humanserve/agent/SequenceRetryFix", "startIfNew", "(Ljava/lang/Thread;)V",
            "no longer restarts a running dispatcher",
            "a dead worker of a sequence model will not be restarted");

    private SequenceRetryFix() {}

    /** What {@code startEventDispatcher()} calls instead of {@code Thread.start()}. */
    public static void startIfNew(Thread dispatcher) {
        if (dispatcher.getState() == Thread.State.NEW) {
            dispatcher.start();
        }
    }
}
