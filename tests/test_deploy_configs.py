"""The TF Serving deployment files: each config parses with TF Serving's own message types, and
the Dockerfiles, compose file and Kubernetes manifests agree on the image layout (model base
path, config paths, ports 8500/8501, model name, metrics path)."""

import json
import pathlib
import shlex

import pytest
import yaml
from google.protobuf import text_format

from dnet_tf.config import InferenceConfig
from dnet_tf.serving import config_files
from dnet_tf.serving.versions import VersionPolicy

REPO = pathlib.Path(__file__).resolve().parents[1]
SERVING = REPO / "serving"
DOCKER = REPO / "docker"
GRPC_PORT, REST_PORT = 8500, 8501

# BatchingParameters fields as documented in TF Serving's session_bundle_config.proto.
DOCUMENTED_BATCHING_FIELDS = {
    "max_batch_size",
    "batch_timeout_micros",
    "max_enqueued_batches",
    "num_batch_threads",
    "thread_pool_name",
    "allowed_batch_sizes",
    "pad_variable_length_inputs",
}


def _model_config():
    return config_files.read_model_server_config(SERVING / "models.config")


def _the_model():
    (mc,) = _model_config().model_config_list.config
    return mc


def _monitoring():
    return config_files.read_monitoring_config(SERVING / "monitoring.config")


def test_models_config_parses_as_model_server_config():
    mc = _the_model()
    assert (
        mc.name == "dnet" and mc.base_path == "/models/dnet" and mc.model_platform == "tensorflow"
    )
    assert mc.model_version_policy.WhichOneof("policy_choice") == "latest"
    assert mc.model_version_policy.latest.num_versions == 2
    assert dict(mc.version_labels) == {"stable": 1}
    (source,) = config_files.model_sources_from_config(_model_config())
    assert source.policy == VersionPolicy("latest", num_versions=2) and source.label_map == {
        "stable": 1
    }


def test_batching_parameters_use_documented_fields():
    params = config_files.read_batching_parameters(SERVING / "batching_parameters.txt")
    assert {f.name for f in params.DESCRIPTOR.fields} >= DOCUMENTED_BATCHING_FIELDS
    set_fields = {f.name for f, _ in params.ListFields()}
    assert {
        "max_batch_size",
        "batch_timeout_micros",
        "max_enqueued_batches",
        "num_batch_threads",
    } <= set_fields
    assert params.max_batch_size.value >= 1 and params.num_batch_threads.value >= 1
    assert 0 < params.batch_timeout_micros.value <= 100_000  # at most 0.1 s of added latency
    assert params.pad_variable_length_inputs is False
    # a full batch of the largest images fits the graph's request budget (it pads them together)
    budget = InferenceConfig()
    assert (
        params.max_batch_size.value * budget.max_image_side**2 <= budget.max_request_pixels
        and params.max_batch_size.value <= budget.max_images_per_request
    )
    text = (SERVING / "batching_parameters.txt").read_text()
    # the choice is written down, not left to the default
    assert "pad_variable_length_inputs: false" in text and "DT_STRING" in text
    # the schema is real: a misspelt field is rejected as tensorflow_model_server would reject it
    with pytest.raises(text_format.ParseError):
        text_format.Parse("max_batch_sise { value: 8 }", config_files.BatchingParameters())


def test_monitoring_config_enables_prometheus():
    cfg = _monitoring()
    assert [f.name for f in cfg.DESCRIPTOR.fields] == ["prometheus_config"]
    assert cfg.prometheus_config.enable is True
    assert cfg.prometheus_config.path == "/monitoring/prometheus/metrics"
    with pytest.raises(text_format.ParseError):
        text_format.Parse("prometheus_config { enabled: true }", config_files.MonitoringConfig())


def _dockerfile(path):
    """[(INSTRUCTION, argument text)] with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in path.read_text().splitlines():
        if line.strip().startswith("#") and not current:
            continue
        current += line.rstrip("\\").strip() + " " if line.rstrip().endswith("\\") else line.strip()
        if not line.rstrip().endswith("\\"):
            if current.strip():
                instr, _, rest = current.strip().partition(" ")
                out.append((instr.upper(), rest.strip()))
            current = ""
    return out


@pytest.mark.parametrize(
    "name,base_image",
    [
        ("Dockerfile.cpu", "tensorflow/serving:${TF_SERVING_VERSION}"),
        ("Dockerfile.gpu", "tensorflow/serving:${TF_SERVING_VERSION}-gpu"),
    ],
)
def test_dockerfile_layout_matches_configs(name, base_image):
    steps = _dockerfile(DOCKER / name)
    by = {}
    for instr, arg in steps:
        by.setdefault(instr, []).append(arg)
    assert by["FROM"] == [base_image]
    args = dict(a.split("=", 1) for a in by["ARG"] if "=" in a)
    assert args["MODEL_DIR"] == "models/dnet"
    copies = [shlex.split(c) for c in by["COPY"]]
    # the model base path goes exactly where models.config says TF Serving finds it
    assert ["${MODEL_DIR}", _the_model().base_path] in copies
    config_copy = next(c for c in copies if "serving/models.config" in c)
    dest = config_copy[-1]
    for src in config_copy[:-1]:
        assert (REPO / src).is_file(), src
    assert sorted(int(p) for p in by["EXPOSE"][0].split()) == [GRPC_PORT, REST_PORT]
    entry = json.loads(by["ENTRYPOINT"][0])
    assert entry[0] == "tensorflow_model_server"
    flags = dict(f[2:].split("=", 1) for f in entry[1:])
    assert flags["port"] == str(GRPC_PORT) and flags["rest_api_port"] == str(REST_PORT)
    for flag, file in (
        ("model_config_file", "models.config"),
        ("batching_parameters_file", "batching_parameters.txt"),
        ("monitoring_config_file", "monitoring.config"),
    ):
        assert flags[flag] == dest.rstrip("/") + "/" + file
        assert file in [pathlib.Path(s).name for s in config_copy[:-1]]
    assert flags["enable_batching"] == "true"
    assert (
        flags["allow_version_labels_for_unavailable_models"] == "true"
    )  # models.config has labels


def _yaml_docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_compose_file_builds_the_images_with_the_right_ports():
    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    services = compose["services"]
    for name, dockerfile in (
        ("dnet", "docker/Dockerfile.cpu"),
        ("dnet-gpu", "docker/Dockerfile.gpu"),
    ):
        build = services[name]["build"]
        context = (DOCKER / build["context"]).resolve()
        assert context == REPO and (context / build["dockerfile"]).is_file()
        assert build["dockerfile"] == dockerfile and build["args"]["MODEL_DIR"] == "models/dnet"
        container_ports = sorted(int(p.split(":")[-1]) for p in services[name]["ports"])
        assert container_ports == [GRPC_PORT, REST_PORT]
    assert sorted(services["dnet"]["ports"]) == [
        f"{GRPC_PORT}:{GRPC_PORT}",
        f"{REST_PORT}:{REST_PORT}",
    ]
    volume = services["prometheus"]["volumes"][0].split(":")
    assert (DOCKER / volume[0]).is_file()
    prom = yaml.safe_load((DOCKER / volume[0]).read_text())
    (job,) = prom["scrape_configs"]
    assert job["metrics_path"] == _monitoring().prometheus_config.path
    assert job["static_configs"][0]["targets"] == [f"dnet:{REST_PORT}"]


def test_kubernetes_manifests_agree():
    docs = [d for f in sorted((DOCKER / "k8s").glob("*.yaml")) for d in _yaml_docs(f)]
    kinds = {}
    for d in docs:
        kinds.setdefault(d["kind"], []).append(d)
    (deploy,) = kinds["Deployment"]
    pod = deploy["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": GRPC_PORT, "http": REST_PORT}
    model = _the_model().name
    for probe in ("readinessProbe", "startupProbe"):
        http = container[probe]["httpGet"]
        assert http["path"] == f"/v1/models/{model}" and ports[http["port"]] == REST_PORT
    assert ports[container["livenessProbe"]["tcpSocket"]["port"]] == GRPC_PORT
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == _monitoring().prometheus_config.path
    assert int(annotations["prometheus.io/port"]) == REST_PORT
    assert "cpu" in container["resources"]["requests"]  # the HPA's utilisation is relative to it
    assert pod["spec"]["terminationGracePeriodSeconds"] > 10  # longer than the preStop sleep

    for svc in kinds["Service"]:
        assert svc["spec"]["selector"].items() <= labels.items()
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports and ports[p["targetPort"]] == p["port"]
    (hpa,) = kinds["HorizontalPodAutoscaler"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deploy["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (pdb,) = kinds["PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]  # a drain can always proceed


def _tf_serving_version(dockerfile):
    args = dict(
        a.split("=", 1) for i, a in _dockerfile(DOCKER / dockerfile) if i == "ARG" and "=" in a
    )
    return args["TF_SERVING_VERSION"]


def test_kserve_inference_service_runs_the_same_tf_serving_model():
    (isvc,) = _yaml_docs(DOCKER / "k8s" / "kserve" / "inferenceservice.yaml")
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    model = _the_model()
    # KServe's TensorFlow runtime names the TF Serving model after the InferenceService, so the
    # clients' model_spec.name and /v1/models/<name> stay those of models.config.
    assert isvc["metadata"]["name"] == model.name
    predictor = isvc["spec"]["predictor"]
    tf_spec = predictor["tensorflow"]
    versions = {_tf_serving_version(f) for f in ("Dockerfile.cpu", "Dockerfile.gpu")}
    assert versions == {tf_spec["runtimeVersion"]}  # one TF Serving release everywhere
    assert tuple(int(p) for p in tf_spec["runtimeVersion"].split(".")) >= (2, 13, 0)
    # the storage URI is the model base path (its <version>/ dirs), as base_path in models.config
    uri = tf_spec["storageUri"]
    assert "://" in uri and uri.rstrip("/").split("/")[-1] == pathlib.PurePath(model.base_path).name
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    assert "cpu" in tf_spec["resources"]["requests"]
