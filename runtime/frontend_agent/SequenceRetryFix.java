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
    static final Agent.Fix FIX = new Agent.Fix(SequenceRetryFix.class, "a dead worker of a sequence model will not be restarted",
            CallPatch.builder()
                    .target("org/pytorch/serve/wlm/SequenceBatching").method("startEventDispatcher", "()V")
                    .firstOpcode(CallPatch.ALOAD_0).codeLength(8) // aload_0; getfield; invokevirtual Thread.start; return
                    .offset(4).call(CallPatch.INVOKEVIRTUAL, "java/lang/Thread", "start", "()V")
                    .helper("startIfNew", "(Ljava/lang/Thread;)V")
                    .effect("no longer restarts a running dispatcher"));

    private SequenceRetryFix() {}

    /** What {@code startEventDispatcher()} calls instead of {@code Thread.start()}. */
    public static void startIfNew(Thread dispatcher) {
        if (dispatcher.getState() == Thread.State.NEW) {
            dispatcher.start();
        }
    }
}
