"""The Kubernetes manifests (k8s/), rendered as `kubectl apply -k` renders them: schemas and policies."""

from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from runtime import pod
from runtime.torchserve import PRODUCTION_CONFIG, named_files, read_properties
from tests.manifests import K8S, OVERLAYS, render, render_overlay, render_with_component

# The oldest Kubernetes minor we support (still in the big clouds' standard support) and the newest
# kubectl here knows; every rendered object must be valid for both.
KUBERNETES_VERSIONS = ("1.33.0", "1.37.0")
GPU = "nvidia.com/gpu"


@pytest.fixture(params=OVERLAYS)
def rendered(request):
    return render_overlay(request.param)


def containers(rendered, init: bool = True) -> list[dict]:
    spec = rendered.pod["spec"]
    return spec["containers"] + (spec.get("initContainers", []) if init else [])


def port_of(address: str) -> int:
    return urlsplit(address).port


def container_port(rendered, name: str) -> int:
    (port,) = [
        p["containerPort"] for c in containers(rendered, init=False) for p in c.get("ports", []) if p["name"] == name
    ]
    return port


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_objects_validate_against_the_kubernetes_schemas(overlay, version):
    rendered = render_overlay(overlay)
    assert {o["kind"] for o in rendered.objects} == {
        "ConfigMap",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    }
    for resource in rendered.objects:
        # strict: a misspelt or misplaced field fails instead of being dropped by the API server.
        kubernetes_validate.validate(resource, version, strict=True)


def test_models_from_pvc_component_validates_and_mounts_the_claim(tmp_path):
    rendered = render_with_component("gpu", "models-from-pvc", tmp_path)
    for resource in rendered.objects:
        kubernetes_validate.validate(resource, KUBERNETES_VERSIONS[0], strict=True)
    source = rendered.config_map("humanserve-models")["data"]["source"]
    mounts = {m["mountPath"]: m["name"] for m in rendered.container("fetch-models")["volumeMounts"]}
    volumes = {v["name"]: v for v in rendered.pod["spec"]["volumes"]}
    claim_volume = volumes[mounts[pod.rclone_source(source)]]
    assert claim_volume["persistentVolumeClaim"]["readOnly"] is True


def test_every_container_has_probes_and_resources(rendered):
    for container in containers(rendered, init=False):
        assert "readinessProbe" in container and "livenessProbe" in container, container["name"]
    for container in containers(rendered):
        resources = container["resources"]
        for kind in ("cpu", "memory"):
            assert kind in resources["requests"] and kind in resources["limits"], (container["name"], kind)
    # Loading models is slow: a startup probe keeps liveness from killing a pod that is still loading.
    assert (
        rendered.container("torchserve")["startupProbe"]["failureThreshold"]
        * rendered.container("torchserve")["startupProbe"]["periodSeconds"]
        >= 300
    )


def test_probes_ask_ping(rendered):
    torchserve, proxy = rendered.container("torchserve"), rendered.container("auth-proxy")
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        # runtime.pod ping: /ping with the inference key TorchServe generated (see test_pod.py).
        assert torchserve[kind]["exec"]["command"] == ["python", "-m", "runtime.pod", "ping"]
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/ping", "port": "http"}


def test_pod_runs_as_non_root_with_a_read_only_root_filesystem(rendered):
    spec = rendered.pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] > 0
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    for container in containers(rendered):
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        # Whatever must be written goes to a volume, never to the image.
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts, container["name"]
    torchserve = {m["mountPath"]: m for m in rendered.container("torchserve")["volumeMounts"]}
    assert torchserve[str(pod.RUN_DIR)].get("readOnly") is not True  # key_file.json, logs, unpacked archives
    assert torchserve[str(pod.MODEL_STORE)]["readOnly"] is True


def test_gpu_overlay_requests_one_gpu_on_gpu_nodes_and_cpu_overlay_none():
    gpu = render_overlay("gpu")
    resources = gpu.container("torchserve")["resources"]
    assert resources["limits"][GPU] == 1 and resources["requests"][GPU] == 1
    spec = gpu.pod["spec"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert gpu.one("Deployment")["spec"]["template"]["spec"]["containers"][0]["image"].endswith("-gpu")

    cpu = render_overlay("cpu")
    assert not any(GPU in c["resources"]["limits"] for c in containers(cpu))
    assert "nodeSelector" not in cpu.pod["spec"] and "tolerations" not in cpu.pod["spec"]
    assert cpu.container("torchserve")["image"].endswith("-cpu")
    # GPU archives (make export-gpu) and CPU archives live apart.
    assert (
        gpu.config_map("humanserve-models")["data"]["source"] != cpu.config_map("humanserve-models")["data"]["source"]
    )


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_gpu_export_job_compiles_on_the_gpu_nodes_into_the_gpu_overlays_source(version):
    job_objects = render(K8S / "jobs" / "export-gpu")
    for resource in job_objects.objects:
        kubernetes_validate.validate(resource, version, strict=True)
    spec = job_objects.one("Job")["spec"]["template"]["spec"]
    gpu_spec = render_overlay("gpu").pod["spec"]
    assert spec["nodeSelector"] == gpu_spec["nodeSelector"] and spec["tolerations"] == gpu_spec["tolerations"]
    (container,) = spec["containers"]
    assert container["resources"]["limits"][GPU] == 1 and container["image"].endswith("-gpu-export")
    assert "export-models --device cuda" in " ".join(container["args"])
    assert container["securityContext"]["readOnlyRootFilesystem"] and spec["securityContext"]["runAsNonRoot"]
    # Where it writes is where the gpu pods fetch from, with make export-gpu's serving settings.
    data = job_objects.config_map("humanserve-export-gpu")["data"]
    assert data["destination"] == render_overlay("gpu").config_map("humanserve-models")["data"]["source"]
    makefile = (K8S.parent / "Makefile").read_text()
    assert f"GPU_SERVING := {data['serving']} --device cuda" in makefile


def test_images_are_pinned_and_the_same_for_every_container(rendered):
    images = {c["image"] for c in containers(rendered)}
    (image,) = images  # one image: fetcher, TorchServe and proxy are the versions the tests ran
    assert ":" in image and not image.endswith(":latest")


def test_config_map_carries_the_production_config_and_the_pod_layer(rendered):
    assert rendered.config_file("config.properties") == PRODUCTION_CONFIG.read_text()
    mounts = {m["name"]: m["mountPath"] for m in rendered.container("torchserve")["volumeMounts"]}
    assert mounts["config"] == str(pod.CONFIG_DIR)
    # runtime.pod's defaults are the files of this ConfigMap, and the files beside config.properties
    # that it names (metrics declaration, log configuration): the same files make serve and the tests use.
    named = named_files(read_properties(PRODUCTION_CONFIG))
    files = {p.name for p in pod.CONFIG_LAYERS} | {pod.CADDYFILE.name} | {path.name for path in named}
    assert files == set(rendered.config_map("humanserve-config")["data"])
    for path in named:
        assert rendered.config_file(path.name) == path.read_text()
    assert rendered.container("torchserve")["args"] == ["serve"] and rendered.container("auth-proxy")["args"] == [
        "proxy"
    ]


def test_ports_and_paths_agree_with_config_properties(rendered):
    production = rendered.properties("config.properties")
    in_pod = {**production, **rendered.properties("pod.properties")}
    service = {p["name"]: p for p in rendered.one("Service")["spec"]["ports"]}

    # The auth proxy takes the production inference addresses (runtime.pod proxy), the Service the same ports.
    assert container_port(rendered, "http") == service["http"]["port"] == port_of(production["inference_address"])
    assert container_port(rendered, "grpc") == service["grpc"]["port"] == int(production["grpc_inference_port"])
    proxy_ports = {p["name"] for p in rendered.container("auth-proxy")["ports"]}
    assert proxy_ports == {"http", "grpc"}

    # In the pod, TorchServe's inference and management answer on loopback only, on other ports.
    for key in ("inference_address", "management_address"):
        assert urlsplit(in_pod[key]).hostname == "127.0.0.1", key
    assert in_pod["grpc_inference_address"] == in_pod["grpc_management_address"] == "127.0.0.1"
    assert port_of(in_pod["inference_address"]) != port_of(production["inference_address"])
    assert in_pod["grpc_inference_port"] != production["grpc_inference_port"]

    # Metrics: bound for Prometheus on the port the Service, the container and the annotations name.
    assert urlsplit(in_pod["metrics_address"]).hostname == "0.0.0.0"
    metrics = port_of(in_pod["metrics_address"])
    assert container_port(rendered, "metrics") == service["metrics"]["port"] == metrics
    annotations = rendered.pod["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(metrics) and annotations["prometheus.io/path"] == "/metrics"
    assert in_pod["metrics_mode"] == "prometheus"
    for port in service.values():
        assert port["targetPort"] == port["name"]

    # Security settings of the production config hold in the pod.
    assert in_pod["disable_token_authorization"] == "false"
    assert in_pod["enable_model_api"] == "false"
    # The model store path in the pod matches the allowed_urls pattern of config.properties.
    assert "/model_store/" in production["allowed_urls"] and pod.MODEL_STORE.name == "model_store"


def test_service_and_disruption_budget_select_the_pods(rendered):
    labels = rendered.pod["metadata"]["labels"]
    selectors = {
        "Service": rendered.one("Service")["spec"]["selector"],
        "PodDisruptionBudget": rendered.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        "Deployment": rendered.one("Deployment")["spec"]["selector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        # An empty selector would pick every pod of the namespace (PodDisruptionBudget) or none.
        assert selector and selector.items() <= labels.items(), kind
    assert (
        rendered.one("PodDisruptionBudget")["spec"]["maxUnavailable"]
        < rendered.one("HorizontalPodAutoscaler")["spec"]["minReplicas"]
    )


def test_autoscaler_targets_a_per_second_rate_served_by_the_adapter_rule(rendered):
    hpa = rendered.one("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": rendered.one("Deployment")["metadata"]["name"],
    }
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["target"]["type"] == "AverageValue"
    (rule,) = [
        r
        for r in yaml.safe_load((K8S / "prometheus" / "adapter-rules.yaml").read_text())
        if r["name"]["as"] == metric["pods"]["metric"]["name"]
    ]
    # A rate of TorchServe's queue-latency counter: the raw counter only grows and cannot be a target.
    assert "ts_queue_latency_microseconds" in rule["seriesQuery"]
    assert rule["metricsQuery"].startswith("sum(rate(<<.Series>>{<<.LabelMatchers>>}[")
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}


def test_scrape_config_keeps_the_pods_and_labels_them_for_the_adapter(rendered):
    (job,) = yaml.safe_load((K8S / "prometheus" / "scrape-config.yaml").read_text())
    keeps = {tuple(r["source_labels"]): r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
    assert (
        keeps[("__meta_kubernetes_pod_label_app_kubernetes_io_name",)]
        == rendered.pod["metadata"]["labels"]["app.kubernetes.io/name"]
    )
    assert keeps[("__meta_kubernetes_pod_container_port_name",)] == "metrics"
    assert (
        keeps[("__meta_kubernetes_pod_annotation_prometheus_io_scrape",)]
        == rendered.pod["metadata"]["annotations"]["prometheus.io/scrape"]
    )
    targets = {r["target_label"] for r in job["relabel_configs"] if "target_label" in r}
    assert {"namespace", "pod"} <= targets  # the adapter rule's resource overrides


def test_api_key_comes_from_a_secret_that_the_manifests_never_hold(rendered):
    assert not [o for o in rendered.objects if o["kind"] == "Secret"]
    env = {e["name"]: e for e in rendered.container("auth-proxy")["env"]}
    reference = env[pod.API_KEY_ENV]["valueFrom"]["secretKeyRef"]
    assert reference == {"name": "humanserve-api-key", "key": "api-key"}  # README: kubectl create secret
    assert reference.get("optional") is not True  # no Secret, no pod: never a proxy without a key
    for container in containers(rendered):
        for variable in container.get("env", []):
            if any(word in variable["name"] for word in ("KEY", "TOKEN", "SECRET", "PASSWORD")):
                assert "value" not in variable, f"{container['name']}: {variable['name']} is inlined"


def test_production_config_keeps_management_and_metrics_on_loopback():
    production = read_properties(PRODUCTION_CONFIG)
    for key in ("management_address", "metrics_address"):
        assert urlsplit(production[key]).hostname == "127.0.0.1", key
    assert production["grpc_management_address"] == "127.0.0.1"
    assert production["disable_token_authorization"] == "false" and production["enable_model_api"] == "false"
    assert int(production["max_request_size"]) > 0 and int(production["max_response_size"]) > 0


def test_the_pods_frontend_heap_is_taken_from_the_memory_limit_and_the_rest_of_vmargs_from_production(rendered):
    def split(vmargs: str) -> tuple[list[str], list[str]]:
        words = vmargs.split()
        heap = [word for word in words if word.startswith(("-Xmx", "-XX:MaxRAMPercentage="))]
        return heap, [word for word in words if word not in heap]

    (production_heap,), production_rest = split(rendered.properties("config.properties")["vmargs"])
    (pod_heap,), pod_rest = split(rendered.properties("pod.properties")["vmargs"])
    assert pod_rest == production_rest  # the pod changes only how the heap is sized
    units = {"m": 2**20, "g": 2**30}
    assert production_heap.startswith("-Xmx") and pod_heap.startswith("-XX:MaxRAMPercentage=")
    limit = rendered.container("torchserve")["resources"]["limits"]["memory"]
    assert limit.endswith("Gi")
    in_pod = int(limit[:-2]) * 2**30 * float(pod_heap.split("=")[1]) / 100

    def size(word: str) -> int:
        return int(word[4:-1]) * units[word[-1].lower()]

    assert in_pod >= size(production_heap)  # as much as make serve's, or more on bigger pods
    (initial,) = [word for word in pod_rest if word.startswith("-Xms")]
    assert in_pod >= size(
        initial
    )  # else the JVM refuses to start: the heap it claims at start must fit the limit's share
