package humanserve.agent;

import java.io.IOException;
import java.lang.invoke.MethodType;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Checks every fix against a TorchServe frontend jar without starting a server:
 * {@code java -cp humanserve-agent.jar:model-server.jar humanserve.agent.PatchCheck}.
 *
 * <p>What the agent does when the frontend starts, on the classes the class path holds: each patch of
 * each fix of {@link Agent#FIXES} is applied to its class as found there ({@link Agent#fits}: the
 * bytecode it expects is there). Then each class that the fitting fixes patch is rewritten as
 * {@link Agent#transform} rewrites it while loading (every patch of it in turn), defined in a class
 * loader of its own and linked, so that the JVM's verifier checks each helper call against the stack the
 * code leaves there (a helper taking the wrong types would otherwise fail only in the running frontend).
 *
 * <p>Prints one line per fix, {@code NAME: ok} or {@code NAME: FAILED}, each followed by a line per
 * patch and per class verified; the exit status is 1 when any fix failed, 2 without a frontend to check.
 */
public final class PatchCheck {
    private PatchCheck() {}

    public static void main(String[] arguments) {
        // The helpers' classes link against the frontend's (BadRequestException, Model): without it nothing can be checked.
        if (ClassLoader.getSystemResource("org/pytorch/serve/ModelServer.class") == null) {
            System.err.println("PatchCheck: no TorchServe frontend on the class path: java -cp humanserve-agent.jar:model-server.jar "
                    + PatchCheck.class.getName());
            System.exit(2);
        }
        Map<Agent.Fix, List<String>> notes = new LinkedHashMap<>();
        Map<Agent.Fix, Boolean> fitting = new LinkedHashMap<>();
        List<Agent.Fix> fits = new ArrayList<>();
        for (Agent.Fix fix : Agent.FIXES) {
            List<String> lines = new ArrayList<>();
            boolean whole = true;
            for (CallPatch patch : fix.patches) {
                String where = patch.target + "." + patch.method + patch.methodType + " at " + patch.offset + ": ";
                try {
                    patch.apply(Agent.original(patch.target));
                    String missing = helperMissing(patch);
                    if (missing == null) {
                        lines.add(where + patch.owner + "." + patch.name + patch.type + " becomes " + patch.helperName);
                    } else {
                        lines.add(where + "no helper: " + missing);
                        whole = false;
                    }
                } catch (RuntimeException | IOException error) {
                    lines.add(where + "not applied: " + error.getMessage());
                    whole = false;
                }
            }
            notes.put(fix, lines);
            fitting.put(fix, whole);
            if (whole) {
                fits.add(fix);
            }
        }
        // The classes as the agent would hand them to the JVM, with only the fixes that fit, as it takes them.
        Agent agent = new Agent(fits.toArray(new Agent.Fix[0]));
        Map<String, List<Agent.Fix>> classes = new LinkedHashMap<>();
        for (Agent.Fix fix : fits) {
            for (CallPatch patch : fix.patches) {
                List<Agent.Fix> patching = classes.computeIfAbsent(patch.target, target -> new ArrayList<>());
                if (!patching.contains(fix)) {
                    patching.add(fix);
                }
            }
        }
        for (Map.Entry<String, List<Agent.Fix>> entry : classes.entrySet()) {
            String verdict = verify(agent, entry.getKey());
            for (Agent.Fix fix : entry.getValue()) {
                notes.get(fix).add(entry.getKey() + (verdict == null ? " patched: verifies" : " patched: does not verify: " + verdict));
                if (verdict != null) {
                    fitting.put(fix, false);
                }
            }
        }
        boolean all = true;
        for (Agent.Fix fix : Agent.FIXES) {
            boolean ok = fitting.get(fix);
            all &= ok;
            System.out.println(fix.name + ": " + (ok ? "ok" : "FAILED"));
            for (String line : notes.get(fix)) {
                System.out.println("  " + line);
            }
        }
        System.exit(all ? 0 : 1);
    }

    /**
     * Why the helper a patch calls is not there as a public static method of its descriptor, or null when it is:
     * the JVM resolves the call only when it first runs, in the serving frontend.
     */
    private static String helperMissing(CallPatch patch) {
        try {
            for (Method method : Class.forName(patch.helper.replace('/', '.')).getDeclaredMethods()) {
                String descriptor = MethodType.methodType(method.getReturnType(), method.getParameterTypes()).toMethodDescriptorString();
                if (method.getName().equals(patch.helperName) && descriptor.equals(patch.helperType)
                        && Modifier.isStatic(method.getModifiers()) && Modifier.isPublic(method.getModifiers())) {
                    return null;
                }
            }
            return "no public static " + patch.helper + "." + patch.helperName + patch.helperType;
        } catch (ClassNotFoundException | LinkageError error) {
            return oneLine(error);
        }
    }

    /** Why {@code target} as the agent patches it does not define and verify, or null when it does. */
    private static String verify(Agent agent, String target) {
        try {
            byte[] patched = agent.transform(null, target, null, null, Agent.original(target));
            if (patched == null) {
                return "the agent left it as it is";
            }
            Class<?> defined = new OneClassLoader(target.replace('/', '.'), patched).loadClass(target.replace('/', '.'));
            defined.getDeclaredMethods(); // links the class: HotSpot verifies its bytecode here, not at loading
            return null;
        } catch (IOException | ClassNotFoundException | LinkageError error) {
            return oneLine(error);
        }
    }

    /** An error and its details (a VerifyError's reason, its bytecode dump) on one line, the dump cut short. */
    private static String oneLine(Throwable error) {
        String text = error.toString().replaceAll("\\s*\\n\\s*", " | ");
        return text.length() > 400 ? text.substring(0, 400) + " ..." : text;
    }

    /** Defines one class from the bytes given, and leaves every other to the class path (the frontend's jar). */
    private static final class OneClassLoader extends ClassLoader {
        private final String name;
        private final byte[] bytes;

        OneClassLoader(String name, byte[] bytes) {
            super(PatchCheck.class.getClassLoader());
            this.name = name;
            this.bytes = bytes;
        }

        @Override
        protected Class<?> loadClass(String className, boolean resolve) throws ClassNotFoundException {
            if (!className.equals(name)) {
                return super.loadClass(className, resolve);
            }
            synchronized (getClassLoadingLock(className)) {
                Class<?> loaded = findLoadedClass(className);
                return loaded != null ? loaded : defineClass(className, bytes, 0, bytes.length);
            }
        }
    }
}
