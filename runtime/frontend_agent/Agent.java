package humanserve.agent;

import java.io.IOException;
import java.io.InputStream;
import java.lang.instrument.ClassFileTransformer;
import java.lang.instrument.Instrumentation;
import java.security.ProtectionDomain;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * A Java agent for TorchServe 0.12's frontend: each fix rewrites calls in its classes as they load.
 *
 * <p>A fix whose calls span several places is taken whole or not at all: before any class loads, each
 * of its patches is tried on the class as the frontend's jar holds it. A fix that does not fit (another
 * TorchServe version) is left out, with a warning that says what then goes wrong.
 */
public final class Agent implements ClassFileTransformer {
    /** A fix: the calls it rewrites, taken whole or not at all, named by the class that holds its helpers. */
    static final class Fix {
        final String name;
        final CallPatch[] patches;

        /** Each patch calls a helper of {@code helpers}; {@code risk}, what goes wrong where the fix is left out, ends the warning. */
        Fix(Class<?> helpers, String risk, CallPatch.Builder... patches) {
            this.name = helpers.getSimpleName();
            this.patches = Arrays.stream(patches).map(patch -> patch.build(helpers, risk)).toArray(CallPatch[]::new);
        }
    }

    /**
     * Every fix, in the order a class patched by several (SequenceBatching, InferenceImpl) takes them; each
     * patch leaves the code's offsets where they were, so the order changes only the constant pool's indices.
     */
    static final Fix[] FIXES = {
        SequenceRetryFix.FIX,
        ResponseDecoderFix.FIX,
        StreamEndFix.FIX,
        SequenceHeaderFix.FIX,
        IdleSequenceFix.FIX,
        OpenInferenceFix.FIX,
    };

    private final Map<String, List<CallPatch>> patches = new HashMap<>();

    Agent(Fix... fixes) {
        for (Fix fix : fixes) {
            if (fits(fix.patches)) {
                for (CallPatch patch : fix.patches) {
                    patches.computeIfAbsent(patch.target, target -> new ArrayList<>()).add(patch);
                }
            }
        }
    }

    public static void premain(String arguments, Instrumentation instrumentation) {
        instrumentation.addTransformer(new Agent(FIXES));
    }

    /** Whether every patch of {@code fix} applies to its class as found on the class path (the frontend's jar). */
    static boolean fits(CallPatch[] fix) {
        for (CallPatch patch : fix) {
            try {
                patch.apply(original(patch.target));
            } catch (RuntimeException | IOException error) {
                warn(patch, error);
                return false;
            }
        }
        return true;
    }

    /** The class file of {@code target} (internal name) as the class path holds it. */
    static byte[] original(String target) throws IOException {
        try (InputStream in = ClassLoader.getSystemResourceAsStream(target + ".class")) {
            if (in == null) {
                throw new IOException("no such class");
            }
            return in.readAllBytes();
        }
    }

    @Override
    public byte[] transform(
            ClassLoader loader, String name, Class<?> redefined, ProtectionDomain domain, byte[] bytes) {
        List<CallPatch> fixes = patches.get(name);
        if (fixes == null) {
            return null;
        }
        byte[] patched = bytes;
        for (CallPatch patch : fixes) {
            try {
                patched = patch.apply(patched);
                System.err.println("humanserve agent: " + patch.target + "." + patch.method + " " + patch.effect);
            } catch (RuntimeException | IOException error) {
                warn(patch, error);
                return null;
            }
        }
        return patched;
    }

    private static void warn(CallPatch patch, Exception error) {
        System.err.println("humanserve agent: WARNING " + patch.target + " left as it is (" + error.getMessage() + "): " + patch.risk);
    }
}
