package humanserve.agent;

import java.util.Map;
import org.pytorch.serve.http.BadRequestException;
import org.pytorch.serve.util.ConfigManager;

/**
 * A REST request names its sequence by {@code X-Sequence-Id} or by {@code ts_request_sequence_id}, in any case.
 *
 * <p>TorchServe 0.12 looks the sequence header up by its exact name ({@code ts_request_sequence_id},
 * or {@code ts_header_key_sequence_id}'s), although HTTP header names are case-insensitive: Python's
 * urllib sends {@code Ts_request_sequence_id}, and each of its frames opened a new sequence. And a name
 * with underscores does not get through common proxies at all (Caddy drops it, ingress-nginx by
 * default). {@code RequestInput.updateHeaders} stores each request header in the request's map; its
 * {@code Map.put} becomes {@link #putHeader}, which stores either name, in any case, under the name
 * TorchServe looks up, so that the sequence, the worker and the handler all see it. A request that
 * names two different sequences is refused (400).
 */
public final class SequenceHeaderFix {
    /** The header that names a sequence and that proxies pass (no underscore); the answer carries it too. */
    public static final String SEQUENCE_HEADER = "X-Sequence-Id";

    static final Agent.Fix FIX = new Agent.Fix(SequenceHeaderFix.class,
            "REST sequences are named only by ts_request_sequence_id spelled exactly so, which urllib and proxies do not send",
            CallPatch.builder()
                    .target("org/pytorch/serve/util/messages/RequestInput")
                    .method("updateHeaders", "(Ljava/lang/String;Ljava/lang/String;)V")
                    .firstOpcode(CallPatch.ALOAD_0).codeLength(31) // aload_0; getfield headers; aload_1; aload_2; invokeinterface Map.put
                    .offset(6)
                    .call(CallPatch.INVOKEINTERFACE, "java/util/Map", "put", "(Ljava/lang/Object;Ljava/lang/Object;)Ljava/lang/Object;")
                    .helper("putHeader", "(Ljava/util/Map;Ljava/lang/Object;Ljava/lang/Object;)Ljava/lang/Object;")
                    .effect("takes a sequence from " + SEQUENCE_HEADER + " or ts_request_sequence_id in any case"));

    private SequenceHeaderFix() {}

    /** What {@code updateHeaders} calls instead of {@code headers.put(name, value)}. */
    public static Object putHeader(Map<Object, Object> headers, Object name, Object value) {
        String sequenceKey = ConfigManager.getInstance().getTsHeaderKeySequenceId();
        if (!(name instanceof String) || !(((String) name).equalsIgnoreCase(sequenceKey) || ((String) name).equalsIgnoreCase(SEQUENCE_HEADER))) {
            return headers.put(name, value);
        }
        Object earlier = headers.get(sequenceKey);
        boolean named = earlier != null && !"".equals(earlier);
        if (named && "".equals(value)) {
            return earlier; // an empty header beside a named sequence
        }
        if (named && !earlier.equals(value)) {
            throw new BadRequestException("the request names two sequences, \"" + earlier + "\" and \"" + value
                    + "\": send one of " + SEQUENCE_HEADER + " and " + sequenceKey + ", or both with the same ID");
        }
        return headers.put(sequenceKey, value);
    }
}
