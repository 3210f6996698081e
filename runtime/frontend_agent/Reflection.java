package humanserve.agent;

import java.lang.reflect.Field;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;

/**
 * The frontend's private fields and methods, found by name and made accessible: the helpers stand in for
 * calls inside TorchServe's classes, so they reach what those classes keep to themselves.
 */
final class Reflection {
    private Reflection() {}

    /** The field {@code name} of {@code type} or the nearest class above it that declares one, made readable. */
    static Field field(Class<?> type, String name) {
        for (Class<?> owner = type; owner != null; owner = owner.getSuperclass()) {
            try {
                Field found = owner.getDeclaredField(name);
                found.setAccessible(true);
                return found;
            } catch (NoSuchFieldException notHere) {
                // look further up
            }
        }
        throw new IllegalStateException(type.getName() + " has no field " + name);
    }

    static Object read(Field field, Object owner) {
        try {
            return field.get(owner);
        } catch (IllegalAccessException unexpected) {
            throw new IllegalStateException(unexpected);
        }
    }

    /** The method {@code name} of {@code parameters} parameters that {@code type} declares, made callable. */
    static Method method(Class<?> type, String name, int parameters) {
        for (Method candidate : type.getDeclaredMethods()) {
            if (candidate.getName().equals(name) && candidate.getParameterCount() == parameters) {
                candidate.setAccessible(true);
                return candidate;
            }
        }
        throw new IllegalStateException(type.getName() + " has no method " + name);
    }

    /** What {@code method} returns; what it throws is thrown on as it is (a checked exception in an IllegalStateException). */
    @SuppressWarnings("unchecked")
    static <T> T invoke(Method method, Object target, Object... arguments) {
        try {
            return (T) method.invoke(target, arguments);
        } catch (InvocationTargetException failed) {
            Throwable cause = failed.getCause();
            throw cause instanceof RuntimeException ? (RuntimeException) cause : new IllegalStateException(cause);
        } catch (IllegalAccessException unexpected) {
            throw new IllegalStateException(unexpected);
        }
    }
}
