package humanserve.agent;

import java.io.IOException;
import java.lang.instrument.ClassFileTransformer;
import java.lang.instrument.Instrumentation;
import java.security.ProtectionDomain;
import java.util.HashMap;
import java.util.Map;

/**
 * A Java agent for TorchServe 0.12's frontend: each fix rewrites one call in one of its classes as that class loads.
 *
 * <p>A class that does not have the expected shape (another TorchServe version) is left as it is, with a
 * warning that says what then goes wrong.
 */
public final class Agent implements ClassFileTransformer {
    private final Map<String, CallPatch> patches = new HashMap<>();

    Agent(CallPatch... fixes) {
        for (CallPatch fix : fixes) {
            patches.put(fix.target, fix);
        }
    }

    public static void premain(String arguments, Instrumentation instrumentation) {
        instrumentation.addTransformer(new Agent(SequenceRetryFix.PATCH, ResponseDecoderFix.PATCH));
    }

    @Override
    public byte[] transform(
            ClassLoader loader, String name, Class<?> redefined, ProtectionDomain domain, byte[] bytes) {
        CallPatch patch = patches.get(name);
        if (patch == null) {
            return null;
        }
        try {
            byte[] patched = patch.apply(bytes);
            System.err.println("humanserve agent: " + patch.target + "." + patch.method + " " + patch.effect);
            return patched;
        } catch (RuntimeException | IOException error) {
            System.err.println("humanserve agent: WARNING " + patch.target + " left as it is (" + error.getMessage()
                    + "): " + patch.risk);
            return null;
        }
    }
}
