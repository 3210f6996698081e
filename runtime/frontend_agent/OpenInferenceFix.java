package humanserve.agent;

import com.google.gson.JsonElement;
import com.google.gson.JsonParser;
import com.google.protobuf.CodedInputStream;
import com.google.protobuf.CodedOutputStream;
import io.grpc.MethodDescriptor;
import io.grpc.ServerBuilder;
import io.grpc.ServerInterceptors;
import io.grpc.ServerServiceDefinition;
import io.grpc.Status;
import io.grpc.stub.ServerCallStreamObserver;
import io.grpc.stub.ServerCalls;
import io.grpc.stub.StreamObserver;
import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.HttpMethod;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.QueryStringDecoder;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.lang.reflect.Method;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import org.pytorch.serve.archive.model.ModelNotFoundException;
import org.pytorch.serve.archive.model.ModelVersionNotFoundException;
import org.pytorch.serve.grpcimpl.GRPCInterceptor;
import org.pytorch.serve.http.HttpRequestHandlerChain;
import org.pytorch.serve.job.Job;
import org.pytorch.serve.job.RestJob;
import org.pytorch.serve.util.ApiUtils;
import org.pytorch.serve.util.ConfigManager;
import org.pytorch.serve.util.ConnectorType;
import org.pytorch.serve.util.GRPCUtils;
import org.pytorch.serve.util.NettyUtils;
import org.pytorch.serve.util.messages.InputParameter;
import org.pytorch.serve.util.messages.RequestInput;
import org.pytorch.serve.util.messages.WorkerCommands;
import org.pytorch.serve.wlm.Model;
import org.pytorch.serve.wlm.ModelManager;
import org.pytorch.serve.wlm.ModelVersionedRefs;

/**
 * The Open Inference Protocol's routes that TorchServe 0.12 lacks: the gRPC service {@code inference.GRPCInferenceService}
 * as tritonclient and KServe call it, and over REST the metadata and readiness routes beside {@code /v2/models/{name}/infer}
 * (which TorchServe hands to the handler already).
 *
 * <p>TorchServe 0.12's own implementation cannot serve those clients: it registers the service under its
 * proto package's name ({@code org.pytorch.serve.grpc.openinference.GRPCInferenceService}), so they get
 * UNIMPLEMENTED; its {@code ModelInfer} drops {@code raw_input_contents} (tritonclient's default) and every
 * parameter, writes BYTES outputs with JSON quotes, ignores a photo's own status, and a worker's answer that
 * is not a v2 JSON object (an error) throws in the worker's thread and kills the worker. So the call that adds
 * TorchServe's inference service to the gRPC server also adds this service, behind the same interceptor
 * (token check, access log). Its messages stay bytes here: {@code ModelInfer} and {@code ModelMetadata}
 * go to the model's worker as they came, marked by {@link #METHOD_HEADER}, and the handler answers the
 * response message's bytes (handlers/core/v2_grpc.py), or its error: a status and a message, which becomes
 * the call's gRPC status. Health, readiness, server metadata and the repository index are answered here.
 *
 * <p>Over REST, the inference API's handler passes every path it does not know to the next handler of its chain,
 * which answers 404; that call answers first {@code GET /v2}, {@code /v2/health/live|ready},
 * {@code /v2/models/{name}[/versions/{version}]} and its {@code /ready}, and {@code POST /v2/repository/index}. Model metadata comes from the handler
 * (marked by {@link #REST_METHOD_HEADER}) through TorchServe's own REST job; the rest is answered here. Turning on
 * TorchServe's own protocol ({@code ts_open_inference_protocol}) is not needed, and not wanted: its gRPC
 * {@code ModelInfer} kills the worker on a refused photo.
 *
 * <p>Sequences (pose_tracker's videos): a v2 client names one by the request parameter {@code sequence_id}, as
 * tritonclient sends it, where TorchServe reads the {@code ts_request_sequence_id} header. So a ModelInfer call or a
 * REST v2 infer request to a sequence model joins the sequence its {@code sequence_id} names, or without one a new
 * sequence (which the handler ends with that one frame); {@code sequence_end} is the handler's to read.
 */
public final class OpenInferenceFix {
    static final String SERVICE = "inference.GRPCInferenceService";
    /** The request header that tells the handler which of this service's calls a request is (and its body's form). */
    static final String METHOD_HEADER = "humanserve-v2-grpc";
    /** The request header that tells the handler a REST model metadata request (answered in JSON). */
    static final String REST_METHOD_HEADER = "humanserve-v2-rest";
    private static final String INFERENCE_API = "org.pytorch.serve.grpc.inference.InferenceAPIsService";
    private static final String[] EXTENSIONS = {"binary_tensor_data", "parameters"};

    static final Agent.Fix FIX = new Agent.Fix(OpenInferenceFix.class,
            "gRPC clients of the Open Inference Protocol (tritonclient.grpc, KServe) get UNIMPLEMENTED,"
                    + " and its REST metadata and readiness routes answer 404",
            CallPatch.builder().target("org/pytorch/serve/ModelServer")
                    .method("startGRPCServer", "(Lorg/pytorch/serve/util/ConnectorType;)Lio/grpc/Server;")
                    .firstOpcode(CallPatch.NEW).offset(86) // ...addService(ServerInterceptors.intercept(service, interceptor))
                    .call(CallPatch.INVOKEVIRTUAL, "io/grpc/netty/shaded/io/grpc/netty/NettyServerBuilder", "addService",
                            "(Lio/grpc/ServerServiceDefinition;)Lio/grpc/ServerBuilder;")
                    .helper("addServices", "(Lio/grpc/ServerBuilder;Lio/grpc/ServerServiceDefinition;)Lio/grpc/ServerBuilder;")
                    .effect("serves inference.GRPCInferenceService (the Open Inference Protocol) beside TorchServe's inference API"),
            CallPatch.builder().target("org/pytorch/serve/http/api/rest/InferenceRequestHandler")
                    .method("handleRequest", "(Lio/netty/channel/ChannelHandlerContext;Lio/netty/handler/codec/http/FullHttpRequest;"
                            + "Lio/netty/handler/codec/http/QueryStringDecoder;[Ljava/lang/String;)V")
                    .firstOpcode(CallPatch.ALOAD_0).offset(409) // else chain.handleRequest(ctx, req, decoder, segments)
                    .call(CallPatch.INVOKEVIRTUAL, "org/pytorch/serve/http/HttpRequestHandlerChain", "handleRequest",
                            "(Lio/netty/channel/ChannelHandlerContext;Lio/netty/handler/codec/http/FullHttpRequest;"
                                    + "Lio/netty/handler/codec/http/QueryStringDecoder;[Ljava/lang/String;)V")
                    .helper("restRoutes", "(Lorg/pytorch/serve/http/HttpRequestHandlerChain;Lio/netty/channel/ChannelHandlerContext;"
                            + "Lio/netty/handler/codec/http/FullHttpRequest;Lio/netty/handler/codec/http/QueryStringDecoder;[Ljava/lang/String;)V")
                    .effect("answers the v2 metadata, health and readiness routes"),
            CallPatch.builder().target("org/pytorch/serve/http/api/rest/InferenceRequestHandler")
                    .method("predict", "(Lio/netty/channel/ChannelHandlerContext;Lio/netty/handler/codec/http/FullHttpRequest;"
                            + "Lio/netty/handler/codec/http/QueryStringDecoder;Ljava/lang/String;Ljava/lang/String;)V")
                    .firstOpcode(CallPatch.ALOAD_1).offset(3) // RequestInput input = parseRequest(ctx, req, decoder)
                    .call(CallPatch.INVOKESTATIC, "org/pytorch/serve/http/api/rest/InferenceRequestHandler", "parseRequest",
                            "(Lio/netty/channel/ChannelHandlerContext;Lio/netty/handler/codec/http/FullHttpRequest;"
                                    + "Lio/netty/handler/codec/http/QueryStringDecoder;)Lorg/pytorch/serve/util/messages/RequestInput;")
                    .helper("parseRequest", "(Lio/netty/channel/ChannelHandlerContext;Lio/netty/handler/codec/http/FullHttpRequest;"
                            + "Lio/netty/handler/codec/http/QueryStringDecoder;)Lorg/pytorch/serve/util/messages/RequestInput;")
                    .effect("takes a v2 request's sequence from its sequence_id parameter"));

    private static final MethodDescriptor.Marshaller<byte[]> MESSAGE_BYTES = new MethodDescriptor.Marshaller<byte[]>() {
        @Override
        public InputStream stream(byte[] message) {
            return new ByteArrayInputStream(message);
        }

        @Override
        public byte[] parse(InputStream stream) {
            try {
                return stream.readAllBytes();
            } catch (IOException failed) {
                throw new UncheckedIOException(failed);
            }
        }
    };

    private OpenInferenceFix() {}

    /** What {@code startGRPCServer} calls instead of {@code addService}: adds the service, and beside the inference API ours. */
    public static ServerBuilder<?> addServices(ServerBuilder<?> builder, ServerServiceDefinition service) {
        builder.addService(service);
        if (INFERENCE_API.equals(service.getServiceDescriptor().getName())) {
            builder.addService(ServerInterceptors.intercept(definition(), new GRPCInterceptor(ConnectorType.INFERENCE_CONNECTOR)));
        }
        return builder;
    }

    /**
     * What the inference API's handler calls instead of passing a path it does not know on: the v2 routes of a GET
     * ({@code segments} is the path split at "/", an empty string first), else the next handler as before.
     */
    public static void restRoutes(
            HttpRequestHandlerChain next, ChannelHandlerContext ctx, FullHttpRequest request, QueryStringDecoder decoder,
            String[] segments) throws Exception {
        int length = segments.length;
        boolean v2 = HttpMethod.GET.equals(request.method()) && length >= 2 && "v2".equals(segments[1]);
        if (v2 && length == 2) {
            Map<String, Object> metadata = new LinkedHashMap<>();
            metadata.put("name", "torchserve");
            metadata.put("version", ConfigManager.getInstance().getVersion());
            metadata.put("extensions", EXTENSIONS);
            NettyUtils.sendJsonResponse(ctx, metadata, HttpResponseStatus.OK);
        } else if (v2 && length == 4 && "health".equals(segments[2]) && "live".equals(segments[3])) {
            NettyUtils.sendJsonResponse(ctx, Map.of("live", true), HttpResponseStatus.OK);
        } else if (v2 && length == 4 && "health".equals(segments[2]) && "ready".equals(segments[3])) {
            boolean ready = ApiUtils.isModelHealthy();
            NettyUtils.sendJsonResponse(ctx, Map.of("ready", ready), ready ? HttpResponseStatus.OK : HttpResponseStatus.SERVICE_UNAVAILABLE);
        } else if (v2 && length >= 4 && "models".equals(segments[2]) && modelPath(segments) != null) {
            String[] model = modelPath(segments);
            if ("ready".equals(segments[length - 1])) {
                Model found = ModelManager.getInstance().getModel(model[0], model[1]);
                if (found == null) {
                    throw new ModelNotFoundException("Model not found: " + model[0]);
                }
                boolean ready = ready(found);
                NettyUtils.sendJsonResponse(ctx, Map.of("name", model[0], "ready", ready),
                        ready ? HttpResponseStatus.OK : HttpResponseStatus.BAD_REQUEST);
                return;
            }
            RequestInput input = new RequestInput(UUID.randomUUID().toString());
            input.updateHeaders(REST_METHOD_HEADER, "ModelMetadata");
            inSequence(input, ModelManager.getInstance().getModel(model[0], model[1]), null);
            if (!ModelManager.getInstance().addJob(new RestJob(ctx, model[0], model[1], WorkerCommands.PREDICT, input))) {
                NettyUtils.sendJsonResponse(ctx, Map.of("error", ApiUtils.getStreamingInferenceErrorResponseMessage(model[0], model[1])),
                        HttpResponseStatus.SERVICE_UNAVAILABLE);
            }
        } else if (HttpMethod.POST.equals(request.method()) && length == 4 && "v2".equals(segments[1])
                && "repository".equals(segments[2]) && "index".equals(segments[3])) {
            Boolean readyOnly = readyOnly(request);
            if (readyOnly == null) {
                NettyUtils.sendJsonResponse(ctx, Map.of("error", "a repository index request's body is empty or a JSON"
                        + " object whose \"ready\" is true or false"), HttpResponseStatus.BAD_REQUEST);
                return;
            }
            List<Map<String, String>> models = repositoryIndex(readyOnly);
            models.forEach(model -> model.remove("reason", ""));  // as Triton: no reason when there is none
            NettyUtils.sendJsonResponse(ctx, models, HttpResponseStatus.OK);
        } else {
            next.handleRequest(ctx, request, decoder, segments);
        }
    }

    /**
     * A repository index request's {@code "ready"}: false for an empty body (tritonclient's) or none given, null (refused)
     * for a body that is not a JSON object or whose {@code ready} is not a boolean, as Triton refuses them.
     */
    static Boolean readyOnly(FullHttpRequest request) {
        ByteBuf body = request.content();
        String text = body.toString(body.readerIndex(), body.readableBytes(), StandardCharsets.UTF_8);
        if (text.isBlank()) {
            return false;
        }
        try {
            JsonElement json = JsonParser.parseString(text);
            if (!json.isJsonObject()) {
                return null;
            }
            JsonElement ready = json.getAsJsonObject().get("ready");
            if (ready == null) {
                return false;
            }
            return ready.isJsonPrimitive() && ready.getAsJsonPrimitive().isBoolean() ? ready.getAsBoolean() : null;
        } catch (RuntimeException unreadable) {
            return null;
        }
    }

    /** The model and version (null: the default) of {@code /v2/models/{name}[/versions/{version}][/ready]}; null for other paths. */
    static String[] modelPath(String[] segments) {
        int length = segments.length - ("ready".equals(segments[segments.length - 1]) ? 1 : 0);
        if (length == 4) {
            return new String[] {segments[3], null};
        }
        if (length == 6 && "versions".equals(segments[4])) {
            return new String[] {segments[3], segments[5]};
        }
        return null;
    }

    /** Ready: a worker answers, and as many as the model keeps at least. */
    static boolean ready(Model model) {
        return notReady(model) == null;
    }

    /** Why {@code model} is not {@link #ready}, or null when it is. */
    static String notReady(Model model) {
        int healthy = ModelManager.getInstance().getNumHealthyWorkers(model.getModelVersionName());
        if (healthy == 0) {
            return "no worker up";
        }
        return healthy < model.getMinWorkers() ? healthy + " of " + model.getMinWorkers() + " workers up" : null;
    }

    static ServerServiceDefinition definition() {
        return ServerServiceDefinition.builder(SERVICE)
                .addMethod(method("ServerLive"), ServerCalls.asyncUnaryCall((request, answer) -> send(answer, flag(true))))
                .addMethod(method("ServerReady"),
                        ServerCalls.asyncUnaryCall((request, answer) -> send(answer, flag(ApiUtils.isModelHealthy()))))
                .addMethod(method("ModelReady"), ServerCalls.asyncUnaryCall(OpenInferenceFix::modelReady))
                .addMethod(method("ServerMetadata"), ServerCalls.asyncUnaryCall(OpenInferenceFix::serverMetadata))
                .addMethod(method("RepositoryIndex"), ServerCalls.asyncUnaryCall(OpenInferenceFix::repositoryIndexCall))
                .addMethod(method("ModelMetadata"),
                        ServerCalls.asyncUnaryCall((request, answer) -> toWorker("ModelMetadata", request, answer)))
                .addMethod(method("ModelInfer"),
                        ServerCalls.asyncUnaryCall((request, answer) -> toWorker("ModelInfer", request, answer)))
                .build();
    }

    private static MethodDescriptor<byte[], byte[]> method(String name) {
        return MethodDescriptor.newBuilder(MESSAGE_BYTES, MESSAGE_BYTES)
                .setType(MethodDescriptor.MethodType.UNARY)
                .setFullMethodName(MethodDescriptor.generateFullMethodName(SERVICE, name))
                .build();
    }

    /** ModelInfer and ModelMetadata: the request, as it came, to a worker of the model it names. */
    static void toWorker(String method, byte[] request, StreamObserver<byte[]> answer) {
        String[] model;
        try {
            model = fieldsOf(request);
        } catch (IOException unreadable) {
            fail(answer, Status.INVALID_ARGUMENT, "not a " + method + "Request message: " + unreadable.getMessage());
            return;
        }
        if (model[0].isEmpty()) {
            fail(answer, Status.INVALID_ARGUMENT, "the request names no model (" + ("ModelInfer".equals(method) ? "model_name" : "name") + ")");
            return;
        }
        RequestInput input = new RequestInput(UUID.randomUUID().toString());
        input.updateHeaders(METHOD_HEADER, method);
        input.addParameter(new InputParameter("body", request, "application/x-protobuf"));
        try {
            inSequence(input, ModelManager.getInstance().getModel(model[0], model[1].isEmpty() ? null : model[1]), model[2]);
            if (!ModelManager.getInstance().addJob(new WorkerJob(model[0], model[1], input, answer))) {
                // why, where a sequence was refused
                fail(answer, Status.UNAVAILABLE, IdleSequenceFix.refusalMessage(model[0], model[1].isEmpty() ? null : model[1]));
            }
        } catch (ModelNotFoundException | ModelVersionNotFoundException unknown) {
            fail(answer, Status.NOT_FOUND, unknown.getMessage());
        }
    }

    /**
     * A request to a sequence model joins the sequence {@code named}, or a new one (the handler ends a metadata
     * request's, and an infer request's that named none, with its answer); TorchServe routes it by that header.
     */
    static void inSequence(RequestInput input, Model model, String named) {
        if (model != null && model.isSequenceBatching()) {
            String sequence = named != null ? named : "ts-seq-" + UUID.randomUUID();
            input.updateHeaders(ConfigManager.getInstance().getTsHeaderKeySequenceId(), sequence);
        }
    }

    /**
     * The model a request names, its fields 1 and 2 (ModelInferRequest's model_name and model_version, the others' name
     * and version), and its sequence: ModelInferRequest's parameter {@code sequence_id} (field 4, a map of
     * InferParameter: int64 2, string 3 or uint64 5), or null.
     */
    static String[] fieldsOf(byte[] request) throws IOException {
        CodedInputStream in = CodedInputStream.newInstance(request);
        String[] fields = {"", "", null};
        for (int tag = in.readTag(); tag != 0; tag = in.readTag()) {
            if (tag == (1 << 3 | 2) || tag == (2 << 3 | 2)) {
                fields[(tag >>> 3) - 1] = in.readStringRequireUtf8();
            } else if (tag == (4 << 3 | 2)) {
                String[] parameter = parameter(in);
                if ("sequence_id".equals(parameter[0])) {
                    fields[2] = parameter[1];
                }
            } else {
                in.skipField(tag);
            }
        }
        return fields;
    }

    /** One entry of a parameters map: its key and its value as text (null for a bool or double, never an ID). */
    private static String[] parameter(CodedInputStream in) throws IOException {
        int limit = in.pushLimit(in.readRawVarint32());
        String[] entry = {null, null};
        for (int tag = in.readTag(); tag != 0; tag = in.readTag()) {
            if (tag == (1 << 3 | 2)) {
                entry[0] = in.readStringRequireUtf8();
            } else if (tag == (2 << 3 | 2)) {
                int value = in.pushLimit(in.readRawVarint32());
                for (int choice = in.readTag(); choice != 0; choice = in.readTag()) {
                    if (choice == (2 << 3)) {
                        entry[1] = Long.toString(in.readInt64());
                    } else if (choice == (3 << 3 | 2)) {
                        entry[1] = in.readStringRequireUtf8();
                    } else if (choice == (5 << 3)) {
                        entry[1] = Long.toUnsignedString(in.readUInt64());
                    } else {
                        in.skipField(choice);
                    }
                }
                in.popLimit(value);
            } else {
                in.skipField(tag);
            }
        }
        in.popLimit(limit);
        return entry;
    }

    /**
     * What the REST {@code predict} calls instead of {@code parseRequest}: the request as TorchServe reads it, and for a
     * v2 infer request to a sequence model the sequence its {@code sequence_id} parameter names (the JSON object's, or
     * the binary extension's JSON before the data). Other requests pay nothing more; a body that is no JSON object is
     * left to the handler, which says what is wrong with it.
     */
    public static RequestInput parseRequest(ChannelHandlerContext ctx, FullHttpRequest request, QueryStringDecoder decoder) {
        RequestInput input = Reflection.invoke(TorchServeParse.METHOD, null, ctx, request, decoder);
        String[] path = request.uri().split("[/?]");
        if (path.length < 5 || !"v2".equals(path[1]) || !"models".equals(path[2]) || !"infer".equals(path[4])) {
            return input;
        }
        try {
            Model model = ModelManager.getInstance().getModel(path[3], null);
            if (model == null || !model.isSequenceBatching()) {
                return input;
            }
            String length = request.headers().get("Inference-Header-Content-Length");
            ByteBuf body = request.content();
            int size = length == null ? body.readableBytes() : Math.min(Integer.parseInt(length.trim()), body.readableBytes());
            JsonElement json = JsonParser.parseString(body.toString(body.readerIndex(), size, StandardCharsets.UTF_8));
            JsonElement parameters = json.isJsonObject() ? json.getAsJsonObject().get("parameters") : null;
            JsonElement sequence = parameters != null && parameters.isJsonObject() ? parameters.getAsJsonObject().get("sequence_id") : null;
            if (sequence != null && sequence.isJsonPrimitive()) {
                input.updateHeaders(ConfigManager.getInstance().getTsHeaderKeySequenceId(), sequence.getAsString());
            }
        } catch (ModelVersionNotFoundException | RuntimeException unreadable) {
            // not ours to refuse: TorchServe answers an unknown model, the handler a malformed request
        }
        return input;
    }

    static void modelReady(byte[] request, StreamObserver<byte[]> answer) {
        try {
            String[] named = fieldsOf(request);
            Model model = ModelManager.getInstance().getModel(named[0], named[1].isEmpty() ? null : named[1]);
            if (model == null) {
                fail(answer, Status.NOT_FOUND, "Model not found: " + named[0]);
                return;
            }
            send(answer, flag(ready(model)));
        } catch (IOException unreadable) {
            fail(answer, Status.INVALID_ARGUMENT, "not a ModelReadyRequest message: " + unreadable.getMessage());
        } catch (ModelVersionNotFoundException unknown) {
            fail(answer, Status.NOT_FOUND, unknown.getMessage());
        }
    }

    static void serverMetadata(byte[] request, StreamObserver<byte[]> answer) {
        send(answer, message(out -> {
            out.writeString(1, "torchserve");
            String version = ConfigManager.getInstance().getVersion();
            if (version != null) {
                out.writeString(2, version);
            }
            for (String extension : EXTENSIONS) {
                out.writeString(3, extension);
            }
        }));
    }

    /** RepositoryIndex: {@link #repositoryIndex}, as a RepositoryIndexResponse (a ModelIndex message per version). */
    static void repositoryIndexCall(byte[] request, StreamObserver<byte[]> answer) {
        boolean readyOnly = false;
        try {
            CodedInputStream in = CodedInputStream.newInstance(request);
            for (int tag = in.readTag(); tag != 0; tag = in.readTag()) {
                if (tag == (2 << 3)) {
                    readyOnly = in.readRawVarint32() != 0;
                } else {
                    in.skipField(tag);
                }
            }
        } catch (IOException unreadable) {
            fail(answer, Status.INVALID_ARGUMENT, "not a RepositoryIndexRequest message: " + unreadable.getMessage());
            return;
        }
        List<Map<String, String>> models = repositoryIndex(readyOnly);
        send(answer, message(out -> {
            for (Map<String, String> model : models) {
                out.writeByteArray(1, message(index -> {
                    index.writeString(1, model.get("name"));
                    index.writeString(2, model.get("version"));
                    index.writeString(3, model.get("state"));
                    if (!model.get("reason").isEmpty()) {
                        index.writeString(4, model.get("reason"));
                    }
                }));
            }
        }));
    }

    /**
     * The Open Inference Protocol's model repository index (Triton's extension, which tritonclient and the playground
     * read): every version of every registered model, by name and version, with its state, {@code READY} (as
     * {@code /ready} says) or {@code UNAVAILABLE} and why; only the ready ones when {@code readyOnly}.
     */
    static List<Map<String, String>> repositoryIndex(boolean readyOnly) {
        List<Map<String, String>> models = new ArrayList<>();
        for (Map.Entry<String, ModelVersionedRefs> named : ModelManager.getInstance().getAllModels()) {
            for (Map.Entry<String, Model> version : named.getValue().getAllVersions()) {
                String notReady = notReady(version.getValue());
                if (notReady == null || !readyOnly) {
                    Map<String, String> model = new LinkedHashMap<>();
                    model.put("name", named.getKey());
                    model.put("version", version.getKey());
                    model.put("state", notReady == null ? "READY" : "UNAVAILABLE");
                    model.put("reason", notReady == null ? "" : notReady);
                    models.add(model);
                }
            }
        }
        models.sort(Comparator.comparing((Map<String, String> model) -> model.get("name")).thenComparing(model -> model.get("version")));
        return models;
    }

    /** What a message's fields are: written, in field order, to a protobuf stream. */
    interface Fields {
        void write(CodedOutputStream out) throws IOException;
    }

    /** A message's bytes, from what writes its {@code fields}. */
    static byte[] message(Fields fields) {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        CodedOutputStream out = CodedOutputStream.newInstance(bytes);
        try {
            fields.write(out);
            out.flush();
        } catch (IOException unexpected) {
            throw new UncheckedIOException(unexpected);
        }
        return bytes.toByteArray();
    }

    /** A response whose only field, field 1, is the bool {@code value} (ServerLive, ServerReady, ModelReady). */
    static byte[] flag(boolean value) {
        return message(out -> out.writeBool(1, value));
    }

    private static void send(StreamObserver<byte[]> answer, byte[] message) {
        answer.onNext(message);
        answer.onCompleted();
    }

    private static void fail(StreamObserver<byte[]> answer, Status status, String message) {
        answer.onError(status.withDescription(message).asRuntimeException());
    }

    /** TorchServe's own {@code InferenceRequestHandler.parseRequest}, found once, when the first REST request is read. */
    private static final class TorchServeParse {
        static final Method METHOD;

        static {
            try {
                METHOD = Reflection.method(Class.forName("org.pytorch.serve.http.api.rest.InferenceRequestHandler"), "parseRequest", 3);
            } catch (ClassNotFoundException unexpected) {
                throw new IllegalStateException(unexpected);
            }
        }
    }

    /** A call of this service in the model's batch: the worker's answer becomes the call's response, or its status. */
    static final class WorkerJob extends Job {
        private final StreamObserver<byte[]> answer;

        WorkerJob(String model, String version, RequestInput input, StreamObserver<byte[]> answer) {
            super(model, version.isEmpty() ? null : version, WorkerCommands.PREDICT, input);
            this.answer = answer;
        }

        /** The handler's answer: the response message (200), or the error's message with its HTTP status. */
        @Override
        public void response(byte[] body, CharSequence contentType, int status, String phrase, Map<String, String> headers) {
            if (status == 200) {
                answerWith(() -> send(answer, body));
            } else {
                sendError(status, new String(body, StandardCharsets.UTF_8));
            }
        }

        @Override
        public void sendError(int status, String message) {
            answerWith(() -> fail(answer, GRPCUtils.getGRPCStatusCode(status), message));
        }

        @Override
        public boolean isOpen() {
            return !((ServerCallStreamObserver<byte[]>) answer).isCancelled();
        }

        /** An answer to a call the client cancelled is dropped: sending it would throw in the worker's thread. */
        private void answerWith(Runnable sending) {
            if (!isOpen()) {
                System.err.println("humanserve agent: " + SERVICE + " call cancelled by its client before its answer; answer dropped");
                return;
            }
            try {
                sending.run();
            } catch (IllegalStateException closed) {
                System.err.println("humanserve agent: " + SERVICE + " call closed before its answer (" + closed.getMessage() + "); answer dropped");
            }
        }
    }
}
