package humanserve.agent;

import java.io.ByteArrayOutputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * One call in one method of a class, rewritten into a call of a static helper with the same stack effect.
 *
 * <p>The class file is parsed here (no bytecode library): the call must sit at {@code offset} of the
 * method's code, be {@code opcode owner.name type}, and the code must start with {@code firstOpcode}
 * (and be {@code codeLength} bytes long, where that is given). Only the call's bytes change, to an
 * {@code invokestatic} of a method reference added to the constant pool (and two {@code nop}s where
 * the call was an {@code invokeinterface}), so no offset, stack map or exception table moves. An
 * {@code invokespecial} of a private method becomes a static call taking the receiver first. A class
 * of another shape (another TorchServe version) is refused.
 */
final class CallPatch {
    static final int INVOKEVIRTUAL = 0xb6, INVOKESPECIAL = 0xb7, INVOKESTATIC = 0xb8, INVOKEINTERFACE = 0xb9;
    static final int LDC = 0x12, ILOAD_1 = 0x1b, ALOAD = 0x19, ALOAD_0 = 0x2a, ALOAD_1 = 0x2b, ALOAD_2 = 0x2c, ALOAD_3 = 0x2d;
    static final int NEW = 0xbb;

    final String target, method, methodType;
    final int firstOpcode, codeLength, offset, opcode;
    final String owner, name, type;
    final String helper, helperName, helperType;
    final String effect, risk; // what the log says when patched, and what goes wrong when not

    private CallPatch(Builder parts) {
        this.target = parts.require(parts.target, "target");
        this.method = parts.require(parts.method, "method"); this.methodType = parts.require(parts.methodType, "method");
        this.firstOpcode = parts.firstOpcode; this.codeLength = parts.codeLength; this.offset = parts.offset;
        this.opcode = parts.opcode;
        this.owner = parts.require(parts.owner, "call"); this.name = parts.require(parts.name, "call");
        this.type = parts.require(parts.type, "call");
        this.helper = parts.require(parts.helper, "helper"); this.helperName = parts.require(parts.helperName, "helper");
        this.helperType = parts.require(parts.helperType, "helper");
        this.effect = parts.require(parts.effect, "effect"); this.risk = parts.require(parts.risk, "risk");
    }

    /**
     * A patch named part by part, in the order {@code javap -c} shows them: the class, the method, how its code
     * starts (and how long it is), the offset of the call and the call, then the helper that replaces it and
     * what the log says. Every part but {@code codeLength} (unchecked when not given) must be named. Its fix
     * ({@link Agent.Fix}) builds it: the helper is a method of the fix's class, and the risk is the fix's.
     */
    static Builder builder() {
        return new Builder();
    }

    static final class Builder {
        private String target, method, methodType;
        private int firstOpcode = -1, codeLength = -1, offset = -1, opcode = -1;
        private String owner, name, type;
        private String helper, helperName, helperType;
        private String effect, risk;

        private Builder() {}

        /** The class patched, in internal form ({@code org/pytorch/serve/wlm/Model}). */
        Builder target(String internalName) {
            this.target = internalName;
            return this;
        }

        /** The method patched in it, by name and descriptor. */
        Builder method(String name, String descriptor) {
            this.method = name;
            this.methodType = descriptor;
            return this;
        }

        /** The opcode the method's code starts with: a cheap sign that it is the code the offset was taken from. */
        Builder firstOpcode(int opcode) {
            this.firstOpcode = opcode;
            return this;
        }

        /** The length of the method's code in bytes, where it is known exactly. */
        Builder codeLength(int bytes) {
            this.codeLength = bytes;
            return this;
        }

        /** Where the call sits in the method's code (as {@code javap -c} numbers it). */
        Builder offset(int offset) {
            this.offset = offset;
            return this;
        }

        /** The call found there: its opcode and the method it calls. */
        Builder call(int opcode, String owner, String name, String descriptor) {
            this.opcode = opcode;
            this.owner = owner;
            this.name = name;
            this.type = descriptor;
            return this;
        }

        /** The static method of the fix's class called instead, with the call's stack effect (the receiver first, if any). */
        Builder helper(String name, String descriptor) {
            this.helperName = name;
            this.helperType = descriptor;
            return this;
        }

        /** What the log says when the class was patched. */
        Builder effect(String effect) {
            this.effect = effect;
            return this;
        }

        /**
         * The patch, its helper a method of {@code helpers}, {@code risk} what goes wrong when it cannot be applied
         * (another TorchServe version): both its fix's, as the fix is taken whole or not at all.
         */
        CallPatch build(Class<?> helpers, String risk) {
            this.helper = helpers.getName().replace('.', '/');
            this.risk = risk;
            if (firstOpcode < 0 || offset < 0 || opcode < 0) {
                throw new IllegalStateException("a patch of " + target + "." + method + " needs its firstOpcode, offset and call");
            }
            return new CallPatch(this);
        }

        private <T> T require(T part, String what) {
            if (part == null) {
                throw new IllegalStateException("a patch of " + target + "." + method + " needs its " + what);
            }
            return part;
        }
    }

    /** The class with the call replaced by one of the helper. */
    byte[] apply(byte[] bytes) throws IOException {
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
        int[] code = findCode(in, pool); // {start, length}
        int call = code[0] + offset;
        int callLength = opcode == INVOKEINTERFACE ? 5 : 3;
        if ((codeLength >= 0 && code[1] != codeLength) || offset + callLength > code[1]
                || (bytes[code[0]] & 0xff) != firstOpcode || (bytes[call] & 0xff) != opcode
                || !isMethod(pool, ((bytes[call + 1] & 0xff) << 8) | (bytes[call + 2] & 0xff), opcode == INVOKEINTERFACE ? 11 : 10,
                        owner, name, type)) {
            throw new IllegalArgumentException(method + " does not call " + owner + "." + name + type + " where expected");
        }
        ByteArrayOutputStream out = new ByteArrayOutputStream(bytes.length + 128);
        DataOutputStream data = new DataOutputStream(out);
        data.write(bytes, 0, 8);
        data.writeShort(count + 6);
        data.write(bytes, 10, poolEnd - 10);
        data.writeByte(1); data.writeUTF(helper);                            // count
        data.writeByte(7); data.writeShort(count);                           // count + 1
        data.writeByte(1); data.writeUTF(helperName);                        // count + 2
        data.writeByte(1); data.writeUTF(helperType);                        // count + 3
        data.writeByte(12); data.writeShort(count + 2); data.writeShort(count + 3); // count + 4
        data.writeByte(10); data.writeShort(count + 1); data.writeShort(count + 4); // count + 5
        byte[] rest = Arrays.copyOfRange(bytes, poolEnd, bytes.length);
        int at = call - poolEnd;
        rest[at] = (byte) INVOKESTATIC;
        rest[at + 1] = (byte) ((count + 5) >> 8);
        rest[at + 2] = (byte) (count + 5);
        Arrays.fill(rest, at + 3, at + callLength, (byte) 0); // nop
        data.write(rest);
        return out.toByteArray();
    }

    /** Where the target method's bytecode starts in the class file, and its length. */
    int[] findCode(ByteBuffer in, List<Object> pool) {
        in.position(in.position() + 6); // access flags, this class, super class
        int interfaces = in.getShort() & 0xffff;
        in.position(in.position() + 2 * interfaces);
        skipMembers(in); // fields
        int methods = in.getShort() & 0xffff;
        for (int m = 0; m < methods; m++) {
            in.getShort(); // access flags
            Object memberName = pool.get(in.getShort() & 0xffff);
            Object memberType = pool.get(in.getShort() & 0xffff);
            int attributes = in.getShort() & 0xffff;
            for (int a = 0; a < attributes; a++) {
                Object attribute = pool.get(in.getShort() & 0xffff);
                int length = in.getInt();
                int start = in.position();
                if (method.equals(memberName) && methodType.equals(memberType) && "Code".equals(attribute)) {
                    in.getShort(); // max stack
                    in.getShort(); // max locals
                    int bytecodes = in.getInt();
                    return new int[] {in.position(), bytecodes};
                }
                in.position(start + length);
            }
        }
        throw new IllegalArgumentException("no method " + method + methodType);
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

    /** Whether constant {@code index} is a method reference of {@code tag} (10 of a class, 11 of an interface) to {@code owner.name type}. */
    static boolean isMethod(List<Object> pool, int index, int tag, String owner, String name, String type) {
        if (!(pool.get(index) instanceof int[]) || ((int[]) pool.get(index))[0] != tag) {
            return false;
        }
        int[] method = (int[]) pool.get(index);
        int[] ownerClass = (int[]) pool.get(method[1]);
        int[] nameAndType = (int[]) pool.get(method[2]);
        return owner.equals(pool.get(ownerClass[1])) && name.equals(pool.get(nameAndType[1])) && type.equals(pool.get(nameAndType[2]));
    }
}
