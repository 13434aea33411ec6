"""The KubeRay manifests, checked offline as the API server and Serve would check them.

No cluster is reachable from CI, so each manifest is validated against the
`openAPIV3Schema` of KubeRay's own CRD (a copy under ../shared/kuberay), read the
way the API server reads it, and the RayService's `serveConfigV2` against Serve's
schema and our settings. The negative tests prove the validator can fail.
"""

from __future__ import annotations

import copy
import functools
import re
import runpy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from jsonschema import Draft7Validator
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from deployments.app import ingress_memory_bytes
from deployments.settings import ServiceSettings
from tests.support.shared import KUBERAY as KUBERAY_CRDS

ROOT = Path(__file__).resolve().parents[2]
CRDS = {
    "RayService": KUBERAY_CRDS / "ray.io_rayservices.yaml",
    "RayJob": KUBERAY_CRDS / "ray.io_rayjobs.yaml",
}
KUBERAY = ROOT / "configs" / "kuberay"
RAYSERVICE = KUBERAY / "rayservice.yaml"
RAYJOB = KUBERAY / "rayjob.yaml"
MODELS_PVC = KUBERAY / "models-pvc.yaml"
MANIFESTS = [RAYSERVICE, RAYJOB]
MAKE_KUBERAY = ROOT / "scripts" / "make_kuberay.py"

MODELS_MOUNT = "/models"
#: Where the model caches go; names as the service and its libraries read them.
CACHE_VARS = {
    "HF_HOME",
    "U2NET_HOME",
    "BG_REMOVAL_RMBG_CACHE_DIR",
    "BG_REMOVAL_U2NET_TUNING_CACHE_DIR",
}
SERVE_PORT = 8000
GPU = "nvidia.com/gpu"
#: What `kubectl` and KubeRay accept as a resource name (RFC 1035 label).
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def k8s_schema(node: dict[str, Any]) -> dict[str, Any]:
    """A CRD schema as the API server applies it, for a plain JSON-schema validator.

    `x-kubernetes-int-or-string` becomes `type: [integer, string]` (the validator
    treats the extension as an annotation), and an object schema with `properties`
    rejects other fields, as `kubectl apply`'s default strict field validation does:
    a misspelt optional field is an error, not silently pruned.
    """
    out = dict(node)
    if out.get("x-kubernetes-int-or-string"):
        out.pop("anyOf", None)
        out["type"] = ["integer", "string"]
    if "properties" in out:
        out["properties"] = {name: k8s_schema(sub) for name, sub in out["properties"].items()}
        if not out.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = k8s_schema(out["additionalProperties"])
    if isinstance(out.get("items"), dict):
        out["items"] = k8s_schema(out["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [k8s_schema(sub) for sub in out[key]]
    return out


@functools.cache
def crd_validator(kind: str, api_version: str) -> Draft7Validator:
    """The validator of one CRD version (parsing a CRD takes seconds: once per session)."""
    crd = yaml.load(CRDS[kind].read_text(), Loader=yaml.CSafeLoader)
    group, version = api_version.split("/")
    assert crd["spec"]["group"] == group
    assert crd["spec"]["names"]["kind"] == kind
    versions = {v["name"]: v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"]}
    return Draft7Validator(k8s_schema(versions[version]))


def crd_errors(manifest: dict[str, Any]) -> list[str]:
    """Every schema violation of a manifest, as `path: message` lines."""
    validator = crd_validator(manifest["kind"], manifest["apiVersion"])
    return sorted(
        f"{'.'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(manifest)
    )


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def cluster_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    spec = manifest["spec"]
    return spec["rayClusterConfig"] if manifest["kind"] == "RayService" else spec["rayClusterSpec"]


def groups(manifest: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, group spec) of the head ("head") and of each worker group."""
    cluster = cluster_spec(manifest)
    yield "head", cluster["headGroupSpec"]
    for group in cluster.get("workerGroupSpecs", []):
        yield group["groupName"], group


def containers(manifest: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(group name, container) of every container of every Ray pod."""
    for name, group in groups(manifest):
        for container in group["template"]["spec"]["containers"]:
            yield name, container


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


@pytest.fixture(scope="module")
def make_kuberay() -> dict[str, Any]:
    """scripts/make_kuberay.py's functions, loaded without putting scripts/ on sys.path."""
    return runpy.run_path(str(MAKE_KUBERAY), run_name="make_kuberay")


def serve_config_of(manifest: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(manifest["spec"]["serveConfigV2"])


def service_settings(manifest: dict[str, Any]) -> ServiceSettings:
    [app] = serve_config_of(manifest)["applications"]
    return ServiceSettings(**app["args"])


# --- the CRD schemas --------------------------------------------------------------------


@pytest.mark.usefixtures("shared_data")
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_for_its_crd(path: Path) -> None:
    manifest = load(path)
    assert manifest["apiVersion"] == "ray.io/v1"
    assert DNS1035.match(manifest["metadata"]["name"])
    assert crd_errors(manifest) == []


def _rename(mapping: dict[str, Any], old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


def _cpu_limits(manifest: dict[str, Any]) -> dict[str, Any]:
    _, group = list(groups(manifest))[1]
    return group["template"]["spec"]["containers"][0]["resources"]["limits"]


#: (manifest, what breaks it, a word the error must name)
BROKEN: dict[str, tuple[Path, Callable[[dict[str, Any]], None], str]] = {
    "misspelt required cluster": (
        RAYSERVICE,
        lambda m: _rename(m["spec"], "rayClusterConfig", "rayClusterConfg"),
        "rayClusterConfig",
    ),
    "misspelt required group name": (
        RAYJOB,
        lambda m: _rename(cluster_spec(m)["workerGroupSpecs"][0], "groupName", "groupname"),
        "groupName",
    ),
    "missing pod template": (
        RAYSERVICE,
        lambda m: cluster_spec(m)["headGroupSpec"].pop("template"),
        "template",
    ),
    "misspelt optional field": (
        RAYSERVICE,
        lambda m: _rename(cluster_spec(m), "enableInTreeAutoscaling", "enableInTreeAutoScaling"),
        "enableInTreeAutoScaling",
    ),
    "replicas as a word": (
        RAYSERVICE,
        lambda m: cluster_spec(m)["workerGroupSpecs"][1].update(minReplicas="one"),
        "minReplicas",
    ),
    "ttl as a string": (RAYJOB, lambda m: m["spec"].update(ttlSecondsAfterFinished="600"), "ttl"),
    "serve config as a mapping": (
        RAYSERVICE,
        lambda m: m["spec"].update(serveConfigV2=yaml.safe_load(m["spec"]["serveConfigV2"])),
        "serveConfigV2",
    ),
    "unknown upscaling mode": (
        RAYJOB,
        lambda m: cluster_spec(m)["autoscalerOptions"].update(upscalingMode="Fast"),
        "upscalingMode",
    ),
    "quantity not a quantity": (RAYSERVICE, lambda m: _cpu_limits(m).update(cpu="eight"), "cpu"),
    "quantity neither int nor string": (
        RAYJOB,
        lambda m: _cpu_limits(m).update(memory=True),
        "memory",
    ),
    "env var with a misspelt secret ref": (
        RAYSERVICE,
        lambda m: _rename(
            env_of(cluster_spec(m)["headGroupSpec"]["template"]["spec"]["containers"][0])[
                "HF_TOKEN"
            ]["valueFrom"],
            "secretKeyRef",
            "secretRef",
        ),
        "secretRef",
    ),
    "misspelt GCS fault tolerance field": (
        RAYSERVICE,
        lambda m: _rename(
            cluster_spec(m)["gcsFaultToleranceOptions"], "redisAddress", "redisAdress"
        ),
        "redisAdress",
    ),
    "unknown GCS fault tolerance backend": (
        RAYSERVICE,
        lambda m: cluster_spec(m)["gcsFaultToleranceOptions"].update(backend="etcd"),
        "backend",
    ),
}


@pytest.mark.usefixtures("shared_data")
@pytest.mark.parametrize("case", BROKEN)
def test_validator_rejects_a_broken_manifest(case: str) -> None:
    path, breaks, word = BROKEN[case]
    manifest = copy.deepcopy(load(path))
    breaks(manifest)
    errors = crd_errors(manifest)
    assert errors, f"{case}: accepted"
    assert any(word in error for error in errors), errors


@pytest.mark.usefixtures("shared_data")
def test_int_or_string_takes_both() -> None:
    """Quantities and ports are `x-kubernetes-int-or-string`: 1 and "1" are both valid."""
    manifest = copy.deepcopy(load(RAYSERVICE))
    limits = _cpu_limits(manifest)
    limits.update(cpu=8, memory="32Gi")
    _, gpu = list(groups(manifest))[2]
    gpu["template"]["spec"]["containers"][0]["resources"]["limits"][GPU] = "1"
    assert crd_errors(manifest) == []


# --- serveConfigV2 ----------------------------------------------------------------------


def test_serve_config_v2_is_generated_from_serve_config(make_kuberay: dict[str, Any]) -> None:
    manifest = load(RAYSERVICE)
    assert manifest["spec"]["serveConfigV2"] == make_kuberay["serve_config_v2"]()
    assert make_kuberay["main"](["--check"]) == 0
    # the same config as `serve deploy serve_config.yaml`, comments aside
    assert serve_config_of(manifest) == load(ROOT / "serve_config.yaml")


def test_check_finds_a_stale_manifest_and_the_script_fixes_it(
    make_kuberay: dict[str, Any], tmp_path: Path
) -> None:
    current = RAYSERVICE.read_text()
    stale = current.replace("batch_wait_timeout_s: 0.01", "batch_wait_timeout_s: 0.5", 1)
    assert stale != current
    copy_path = tmp_path / "rayservice.yaml"
    copy_path.write_text(stale)
    assert make_kuberay["main"](["--check", "--manifest", str(copy_path)]) == 1
    assert copy_path.read_text() == stale, "--check must not write"
    assert make_kuberay["main"](["--manifest", str(copy_path)]) == 0
    assert copy_path.read_text() == current, "only the generated block may change"


def test_generator_refuses_a_port_the_manifest_does_not_serve(
    make_kuberay: dict[str, Any], tmp_path: Path
) -> None:
    config = load(ROOT / "serve_config.yaml")
    config["http_options"]["port"] = 9000
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="port"):
        make_kuberay["serve_config_v2"](path)


def test_serve_config_v2_is_valid_for_serve_and_the_service(
    clean_env: pytest.MonkeyPatch,
) -> None:
    config = serve_config_of(load(RAYSERVICE))
    schema = ServeDeploySchema.model_validate(config)
    assert schema.http_options.host == "0.0.0.0"
    assert schema.http_options.port == SERVE_PORT
    [app] = schema.applications
    assert app.import_path == "deployments.app:build_app"
    settings = ServiceSettings(**app.args)
    assert settings.deploys_rmbg
    assert settings.rmbg_num_gpus


def test_serve_schema_rejects_a_broken_serve_config() -> None:
    config = serve_config_of(load(RAYSERVICE))
    del config["applications"][0]["import_path"]
    with pytest.raises(ValidationError, match="import_path"):
        ServeDeploySchema.model_validate(config)


# --- what the service needs from the pods -----------------------------------------------


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_gpu_group_requests_a_gpu_and_only_it(path: Path) -> None:
    manifest = load(path)
    gpu_groups = []
    for name, group in groups(manifest):
        pod = group["template"]["spec"]
        resources = pod["containers"][0]["resources"]
        if GPU in resources.get("limits", {}):
            gpu_groups.append(name)
            assert int(resources["limits"][GPU]) == 1
            assert any(t["key"] == GPU for t in pod.get("tolerations", []))
        else:
            assert GPU not in resources.get("requests", {})
    assert gpu_groups == ["gpu"]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_head_runs_no_work_and_the_cluster_autoscales(path: Path) -> None:
    manifest = load(path)
    cluster = cluster_spec(manifest)
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert cluster["enableInTreeAutoscaling"] is True
    names = [name for name, _ in groups(manifest)]
    assert len(names) == len(set(names)) and set(names) == {"head", "cpu", "gpu"}
    for group in cluster["workerGroupSpecs"]:
        assert DNS1035.match(group["groupName"])
        assert 0 <= group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
        # KubeRay refuses a group that sets resources both ways
        assert not (group.get("resources") and group.get("rayStartParams"))


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_hf_token_comes_from_an_optional_secret(path: Path) -> None:
    """U2-Net alone must still start where no Hugging Face token was given."""
    seen = 0
    for name, container in containers(load(path)):
        env = env_of(container)
        if name == "gpu":
            assert "HF_TOKEN" in env
        if "HF_TOKEN" in env:
            seen += 1
            assert "value" not in env["HF_TOKEN"]
            ref = env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]
            assert ref["optional"] is True and ref["name"] and ref["key"]
    assert seen


def test_service_gcs_is_fault_tolerant_with_redis_from_a_secret() -> None:
    """A head restart must not take the workers' replicas with it: the GCS keeps its state
    in Redis, whose password comes from a Secret, never from the manifest."""
    cluster = cluster_spec(load(RAYSERVICE))
    options = cluster["gcsFaultToleranceOptions"]
    host, _, port = options["redisAddress"].rpartition(":")
    assert DNS1035.match(host) and port.isdigit(), options["redisAddress"]
    assert options.get("backend", "redis") == "redis"
    password = options["redisPassword"]
    assert "value" not in password, "the Redis password must not be written into the manifest"
    ref = password["valueFrom"]["secretKeyRef"]
    assert ref["name"] and ref["key"] and not ref.get("optional", False)
    # KubeRay refuses a password given both here and as a ray start parameter
    for _, group in groups(load(RAYSERVICE)):
        assert "redis-password" not in group.get("rayStartParams", {})


def test_api_keys_come_from_a_secret_on_every_pod() -> None:
    """Serve builds the app on any node: every pod needs the same settings."""
    for _, container in containers(load(RAYSERVICE)):
        ref = env_of(container)["BG_REMOVAL_API_KEYS"]["valueFrom"]["secretKeyRef"]
        assert ref["optional"] is True


def test_batch_job_gets_s3_credentials_from_a_secret() -> None:
    for _, container in containers(load(RAYJOB)):
        env = env_of(container)
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
            assert "value" not in env[var], f"{var} must not be written into the manifest"
            ref = env[var]["valueFrom"]["secretKeyRef"]
            # the keys are required; the endpoint only for S3-compatible stores
            assert ref.get("optional", False) is (var == "AWS_ENDPOINT_URL")


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_model_caches_are_on_the_shared_volume(path: Path, clean_env: pytest.MonkeyPatch) -> None:
    pvc = load(MODELS_PVC)
    assert pvc["kind"] == "PersistentVolumeClaim"
    assert "ReadWriteMany" in pvc["spec"]["accessModes"], "pods on many nodes mount it"
    manifest = load(path)
    for name, group in groups(manifest):
        pod = group["template"]["spec"]
        container = pod["containers"][0]
        env = env_of(container)
        assert set(env) >= CACHE_VARS, name
        for var in CACHE_VARS:
            assert env[var]["value"].startswith(MODELS_MOUNT + "/"), (name, var)
        if name == "head":  # loads no model
            continue
        [volume] = [v for v in pod["volumes"] if v.get("persistentVolumeClaim")]
        assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts[volume["name"]] == MODELS_MOUNT, name
        assert pod["securityContext"]["fsGroup"] == 100, "Ray's user must write the volume"
        # the service reads these very names
        for var in CACHE_VARS:
            clean_env.setenv(var, env[var]["value"])
        settings = ServiceSettings()
        assert settings.rmbg_cache_dir == env["BG_REMOVAL_RMBG_CACHE_DIR"]["value"]
        assert settings.u2net_home == env["U2NET_HOME"]["value"]


def test_service_workers_are_ready_only_when_the_service_answers() -> None:
    for name, container in containers(load(RAYSERVICE)):
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["serve"] == SERVE_PORT
        if name == "head":  # KubeRay's own probes; it takes no client traffic
            assert "readinessProbe" not in container
            continue
        probe = container["readinessProbe"]
        command = probe["exec"]["command"]
        script = command[-1]
        compile(script, "readinessProbe", "exec")  # a typo would keep every pod unready
        assert f"127.0.0.1:{SERVE_PORT}" in script
        assert "/api/v1/health" in script and "/-/healthz" in script
        # the health endpoint may take up to 10 s to refresh replica states
        assert probe["timeoutSeconds"] > 10
    assert load(RAYSERVICE)["spec"]["excludeHeadPodFromServeSvc"] is True


def _quantity(value: int | str) -> float:
    units = {"": 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    assert match, value
    return float(match[1]) * units[match[2]]


def test_worker_groups_hold_every_serve_group_at_its_maximum(
    clean_env: pytest.MonkeyPatch,
) -> None:
    """Group maxima in the manifest fit the replica maxima in serve_config.yaml."""
    manifest = load(RAYSERVICE)
    settings = service_settings(manifest)
    workers = dict(groups(manifest))
    assert settings.ingress_autoscaling and settings.u2net_autoscaling
    assert settings.rmbg_autoscaling and settings.rmbg_num_gpus

    cpu = workers["cpu"]
    limits = cpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    ingress_max = settings.ingress_autoscaling["max_replicas"]
    u2net_max = settings.u2net_autoscaling["max_replicas"]
    cpus_needed = ingress_max * settings.ingress_num_cpus + u2net_max * settings.u2net_num_cpus
    memory_needed = ingress_max * ingress_memory_bytes(settings)
    assert cpu["maxReplicas"] * _quantity(limits["cpu"]) >= cpus_needed
    assert cpu["maxReplicas"] * _quantity(limits["memory"]) >= memory_needed

    gpu = workers["gpu"]
    per_gpu = round(1 / settings.rmbg_num_gpus)
    assert gpu["maxReplicas"] * per_gpu >= settings.rmbg_autoscaling["max_replicas"]
    # Ray sees exactly the CPUs of the RMBG-2.0 replicas a GPU holds: nothing else fits
    assert float(gpu["rayStartParams"]["num-cpus"]) == per_gpu * settings.rmbg_num_cpus
    gpu_limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert _quantity(gpu_limits["cpu"]) >= float(gpu["rayStartParams"]["num-cpus"])


# --- the batch job and the image --------------------------------------------------------


def test_batch_job_runs_the_batch_command_and_cleans_up() -> None:
    spec = load(RAYJOB)["spec"]
    assert spec["entrypoint"].split()[:2] == ["bgremove", "batch"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0


def test_one_image_and_ray_version_everywhere() -> None:
    """The project's image (Ray as installed here), the same in every pod of both CRs."""
    images = set()
    for path in MANIFESTS:
        manifest = load(path)
        assert cluster_spec(manifest)["rayVersion"] == ray.__version__
        images |= {container["image"] for _, container in containers(manifest)}
    assert len(images) == 1, images
    [image] = images
    assert image.endswith("/bg-removal:0.1.0") and image == image.lower()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"ARG RAY_IMAGE=rayproject/ray:{ray.__version__}-" in dockerfile
