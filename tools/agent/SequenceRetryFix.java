package humanserve.agent;

import java.io.ByteArrayOutputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.lang.instrument.ClassFileTransformer;
import java.lang.instrument.Instrumentation;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.security.ProtectionDomain;
import java.util.ArrayList;
import java.util.List;

/**
 * A Java agent for TorchServe 0.12's frontend: a dead worker of a sequence-batching model is restarted.
 *
 * <p>When a worker dies, {@code WorkerThread.retry()} calls {@code startEventDispatcher()} on its
 * aggregator before it schedules the restart. {@code SequenceBatching} starts its dispatcher thread
 * in its constructor already, so that second {@code Thread.start()} throws and the restart is never
 * scheduled: the model answers nothing until the server restarts. This agent rewrites that one call
 * into {@link #startIfNew}, which starts the thread only if it never ran. A class whose method does
 * not have the expected shape (another TorchServe version) is left as it is, with a warning.
 */
public final class SequenceRetryFix implements ClassFileTransformer {
    static final String TARGET = "org/pytorch/serve/wlm/SequenceBatching";
    static final String METHOD = "startEventDispatcher";
    static final String HELPER = "humanserve/agent/SequenceRetryFix";
    static final String HELPER_NAME = "startIfNew";
    static final String HELPER_TYPE = "(Ljava/lang/Thread;)V";
    // aload_0; getfield #F; invokevirtual #M (Thread.start); return
    static final int ALOAD_0 = 0x2a, GETFIELD = 0xb4, INVOKEVIRTUAL = 0xb6, INVOKESTATIC = 0xb8, RETURN = 0xb1;

    public static void premain(String arguments, Instrumentation instrumentation) {
        instrumentation.addTransformer(new SequenceRetryFix());
    }

    /** What {@code startEventDispatcher()} calls instead of {@code Thread.start()}. */
    public static void startIfNew(Thread dispatcher) {
        if (dispatcher.getState() == Thread.State.NEW) {
            dispatcher.start();
        }
    }

    @Override
    public byte[] transform(
            ClassLoader loader, String name, Class<?> redefined, ProtectionDomain domain, byte[] bytes) {
        if (!TARGET.equals(name)) {
            return null;
        }
        try {
            byte[] patched = patch(bytes);
            System.err.println("humanserve agent: " + TARGET + "." + METHOD + " no longer restarts a running dispatcher");
            return patched;
        } catch (RuntimeException | IOException error) {
            System.err.println("humanserve agent: WARNING " + TARGET + " left as it is (" + error.getMessage()
                    + "): a dead worker of a sequence model will not be restarted");
            return null;
        }
    }

    /** The class with the method's {@code Thread.start()} call replaced by {@link #startIfNew}. */
    static byte[] patch(byte[] bytes) throws IOException {
        ByteBuffer in = ByteBuffer.wrap(bytes);
        if (in.getInt() != 0xCAFEBABE) {
            throw new IllegalArgumentException("not a class file");
        }
        in.getShort(); // minor
        in.getShort(); // major
        int count = in.getShort() & 0xffff;
        List<Object> pool = new ArrayList<>(); // index -> String (Utf8) or int[] {tag, a, b}
        pool.add(null);
        for (int index = 1; index < count; index++) {
            int tag = in.get() & 0xff;
            switch (tag) {
                case 1: {
                    byte[] text = new byte[in.getShort() & 0xffff];
                    in.get(text);
                    pool.add(new String(text, StandardCharsets.UTF_8)); // modified UTF-8 is equal for our names
                    break;
                }
                case 3: case 4: pool.add(new int[] {tag, in.getInt(), 0}); break;
                case 5: case 6: in.getLong(); pool.add(new int[] {tag, 0, 0}); pool.add(null); index++; break;
                case 7: case 8: case 16: case 19: case 20: pool.add(new int[] {tag, in.getShort() & 0xffff, 0}); break;
                case 15: pool.add(new int[] {tag, in.get() & 0xff, in.getShort() & 0xffff}); break;
                case 9: case 10: case 11: case 12: case 17: case 18:
                    pool.add(new int[] {tag, in.getShort() & 0xffff, in.getShort() & 0xffff});
                    break;
                default: throw new IllegalArgumentException("unknown constant pool tag " + tag);
            }
        }
        int poolEnd = in.position();
        int code = findCode(in, pool);
        // The expected code, byte for byte, and the call being Thread.start()V.
        if ((bytes[code] & 0xff) != ALOAD_0 || (bytes[code + 1] & 0xff) != GETFIELD
                || (bytes[code + 4] & 0xff) != INVOKEVIRTUAL || (bytes[code + 7] & 0xff) != RETURN
                || !isMethod(pool, ((bytes[code + 5] & 0xff) << 8) | (bytes[code + 6] & 0xff), "java/lang/Thread", "start", "()V")) {
            throw new IllegalArgumentException(METHOD + " is not 'dispatcher.start()'");
        }
        ByteArrayOutputStream out = new ByteArrayOutputStream(bytes.length + 128);
        DataOutputStream data = new DataOutputStream(out);
        data.write(bytes, 0, 8);
        data.writeShort(count + 6);
        data.write(bytes, 10, poolEnd - 10);
        data.writeByte(1); data.writeUTF(HELPER);                            // count
        data.writeByte(7); data.writeShort(count);                           // count + 1
        data.writeByte(1); data.writeUTF(HELPER_NAME);                       // count + 2
        data.writeByte(1); data.writeUTF(HELPER_TYPE);                       // count + 3
        data.writeByte(12); data.writeShort(count + 2); data.writeShort(count + 3); // count + 4
        data.writeByte(10); data.writeShort(count + 1); data.writeShort(count + 4); // count + 5
        byte[] rest = java.util.Arrays.copyOfRange(bytes, poolEnd, bytes.length);
        int call = code + 4 - poolEnd;
        rest[call] = (byte) INVOKESTATIC;
        rest[call + 1] = (byte) ((count + 5) >> 8);
        rest[call + 2] = (byte) (count + 5);
        data.write(rest);
        return out.toByteArray();
    }

    /** The offset in the class file of the target method's bytecode (its Code attribute's code, 8 bytes long). */
    static int findCode(ByteBuffer in, List<Object> pool) {
        in.position(in.position() + 6); // access flags, this class, super class
        int interfaces = in.getShort() & 0xffff;
        in.position(in.position() + 2 * interfaces);
        skipMembers(in); // fields
        int methods = in.getShort() & 0xffff;
        for (int m = 0; m < methods; m++) {
            in.getShort(); // access flags
            Object name = pool.get(in.getShort() & 0xffff);
            Object type = pool.get(in.getShort() & 0xffff);
            int attributes = in.getShort() & 0xffff;
            for (int a = 0; a < attributes; a++) {
                Object attribute = pool.get(in.getShort() & 0xffff);
                int length = in.getInt();
                int start = in.position();
                if (METHOD.equals(name) && "()V".equals(type) && "Code".equals(attribute)) {
                    in.getShort(); // max stack
                    in.getShort(); // max locals
                    if (in.getInt() != 8) {
                        throw new IllegalArgumentException(METHOD + " is not 8 bytes of code");
                    }
                    return in.position();
                }
                in.position(start + length);
            }
        }
        throw new IllegalArgumentException("no method " + METHOD + "()V");
    }

    static void skipMembers(ByteBuffer in) {
        int members = in.getShort() & 0xffff;
        for (int m = 0; m < members; m++) {
            in.position(in.position() + 6);
            int attributes = in.getShort() & 0xffff;
            for (int a = 0; a < attributes; a++) {
                in.getShort();
                int length = in.getInt();
                in.position(in.position() + length);
            }
        }
    }

    static boolean isMethod(List<Object> pool, int index, String owner, String name, String type) {
        if (!(pool.get(index) instanceof int[]) || ((int[]) pool.get(index))[0] != 10) {
            return false;
        }
        int[] method = (int[]) pool.get(index);
        int[] ownerClass = (int[]) pool.get(method[1]);
        int[] nameAndType = (int[]) pool.get(method[2]);
        return owner.equals(pool.get(ownerClass[1])) && name.equals(pool.get(nameAndType[1])) && type.equals(pool.get(nameAndType[2]));
    }
}
