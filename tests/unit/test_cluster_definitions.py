"""clusters/ as the tools that read it check it, with no cluster: every KubeRay manifest against the CRD of its
kind from the KubeRay release it targets (tests/data/kuberay), with unknown fields refused as `kubectl apply`'s
strict field validation refuses them; the RayService's serveConfigV2 against Serve's own schema; the cluster
launcher's config as `ray up` checks it. Each check is also shown to refuse a broken copy."""

from __future__ import annotations

import copy
import functools
import gzip
import json
import re
from importlib.metadata import version
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTERS = REPO / "clusters"
KUBERAY = REPO / "tests" / "data" / "kuberay"
KUBERAY_RELEASE = "v1.7.0"  # what tests/data/kuberay holds; the manifests' comments name it too
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml.gz", "RayJob": "ray.io_rayjobs.yaml.gz",
             "RayService": "ray.io_rayservices.yaml.gz"}
# KubeRay's own limits on names (ray-operator/controllers/ray/utils/constant.go): a RayJob's or RayService's
# cluster is named after it with a suffix.
MAX_NAME = {"RayCluster": 53, "RayJob": 47, "RayService": 47}
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are 1-1.4 MB of YAML


def _documents() -> list[tuple[str, dict]]:
    return [(path.name, doc) for path in sorted(CLUSTERS.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def _kuberay_manifests() -> list[tuple[str, dict]]:
    return [(name, doc) for name, doc in _documents() if str(doc.get("apiVersion", "")).startswith("ray.io/")]


def _strict(schema: dict) -> dict:
    """A CRD's structural schema as JSON Schema, applied as the API server applies it with strict field
    validation: an object with listed properties and no `additionalProperties` or
    `x-kubernetes-preserve-unknown-fields` refuses other fields (the server would prune them, or refuse them
    under `kubectl apply`'s default --validate=strict), and `nullable` admits null. `x-kubernetes-*` markers
    (int-or-string is spelled as anyOf integer/string beside them) and CEL rules are not evaluated here."""
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: _strict(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = _strict(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [_strict(sub) for sub in value]
        else:
            out[key] = value
    if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if out.pop("nullable", False):
        out = {"anyOf": [out, {"type": "null"}]}
    return out


@functools.cache
def _crd(kind: str) -> dict:
    with gzip.open(KUBERAY / CRD_FILES[kind], "rt") as f:
        return yaml.load(f, Loader=_Loader)


@functools.cache
def _validator(kind: str, api_version: str) -> jsonschema.Draft4Validator:
    """The validator of the CRD version an apiVersion names (OpenAPI v3.0 schemas are draft-4 JSON Schema)."""
    crd = _crd(kind)
    group, _, name = api_version.partition("/")
    assert (crd["spec"]["group"], crd["spec"]["names"]["kind"]) == (group, kind)
    [served] = [v for v in crd["spec"]["versions"] if v["name"] == name and v["served"]]
    return jsonschema.Draft4Validator(_strict(served["schema"]["openAPIV3Schema"]))


def _errors(doc: dict) -> list[str]:
    errors = _validator(doc["kind"], doc["apiVersion"]).iter_errors(doc)
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)


def _cluster_spec(doc: dict) -> dict:
    """The RayClusterSpec in a manifest: its spec, or the one a RayJob or RayService makes its cluster from."""
    key = {"RayCluster": None, "RayJob": "rayClusterSpec", "RayService": "rayClusterConfig"}[doc["kind"]]
    return doc["spec"][key] if key else doc["spec"]


def test_clusters_hold_each_kuberay_kind_at_ray_io_v1():
    manifests = _kuberay_manifests()
    assert sorted(doc["kind"] for _, doc in manifests) == sorted(CRD_FILES)
    for name, doc in manifests:
        assert doc["apiVersion"] == "ray.io/v1", name  # v1alpha1 is still served, but deprecated
    assert KUBERAY_RELEASE in (KUBERAY / "README.md").read_text()
    for path in {name for name, _ in manifests}:
        assert f"KubeRay {KUBERAY_RELEASE}" in (CLUSTERS / path).read_text(), f"{path} should name the release it targets"


MANIFESTS = [pytest.param(doc, id=name) for name, doc in _kuberay_manifests()]


@pytest.mark.parametrize("doc", MANIFESTS)
def test_each_kuberay_manifest_is_valid_against_its_crd(doc):
    assert _errors(doc) == []


@pytest.mark.parametrize("doc", MANIFESTS)
def test_each_kuberay_manifest_passes_the_checks_kuberay_makes_beyond_the_crd(doc):
    """ray-operator/controllers/ray/utils/validation.go, the parts these manifests touch, and our own pins."""
    metadata_name = doc["metadata"]["name"]
    assert DNS1035_LABEL.match(metadata_name) and len(metadata_name) <= MAX_NAME[doc["kind"]], metadata_name
    spec = _cluster_spec(doc)
    assert spec["rayVersion"] == version("ray")  # the pinned Ray (pyproject.toml), in the image
    ray_version = tuple(int(p) for p in spec["rayVersion"].split("."))
    assert spec["authOptions"] == {"mode": "token", "secretName": "mlsys-ray-auth"}, "Ray token auth, one shared Secret"
    assert ray_version >= (2, 52, 0)  # what KubeRay requires for authOptions.mode=token
    assert spec["enableInTreeAutoscaling"] is True
    groups = spec["workerGroupSpecs"]
    assert len({g["groupName"] for g in groups}) == len(groups)
    for group in groups:
        assert 0 <= group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"], group["groupName"]
    for template in [spec["headGroupSpec"]["template"], *(g["template"] for g in groups)]:
        ray_container = template["spec"]["containers"][0]  # KubeRay's Ray container is the first
        assert ray_container["image"] and ray_container["resources"]["requests"] == ray_container["resources"]["limits"]


def test_a_broken_manifest_is_refused():
    [(_, cluster)] = [(n, d) for n, d in _kuberay_manifests() if d["kind"] == "RayCluster"]
    typo = copy.deepcopy(cluster)
    typo["spec"]["workerGroupSpecs"][0]["minReplica"] = typo["spec"]["workerGroupSpecs"][0].pop("minReplicas")
    assert any("'minReplica' was unexpected" in e for e in _errors(typo))
    assert any("'minReplicas' is a required property" in e for e in _errors(typo))
    wrong_type = copy.deepcopy(cluster)
    wrong_type["spec"]["workerGroupSpecs"][0]["replicas"] = "two"
    assert _errors(wrong_type) == ["spec.workerGroupSpecs.0.replicas: 'two' is not of type 'integer'"]
    bad_mode = copy.deepcopy(cluster)
    bad_mode["spec"]["authOptions"]["mode"] = "tokens"
    assert _errors(bad_mode) == ["spec.authOptions.mode: 'tokens' is not one of ['disabled', 'token']"]
    deep = copy.deepcopy(cluster)  # a typo inside the embedded Pod template is caught too
    deep["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resource"] = {}
    assert any("'resource' was unexpected" in e for e in _errors(deep))
    quantity = copy.deepcopy(cluster)
    quantity["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "16 GB"
    assert _errors(quantity), "a quantity Kubernetes cannot parse"


def _serve_config() -> dict:
    [(_, service)] = [(n, d) for n, d in _kuberay_manifests() if d["kind"] == "RayService"]
    return yaml.safe_load(service["spec"]["serveConfigV2"])


def test_the_rayservice_dashboard_app_builds_from_its_import_path_and_args(tmp_path, monkeypatch):
    """The RayService's second application is the dashboard (docs/ui.md) at /ui, with reads behind the token."""
    from importlib import import_module

    from ray.serve import Application

    dashboard = {a["name"]: a for a in _serve_config()["applications"]}["mlsys-ui"]
    assert dashboard["route_prefix"] == "/ui" and "ui.private_reads=true" in dashboard["args"]["overrides"]
    assert "ui.token=${oc.env:MLSYS_UI_TOKEN}" in dashboard["args"]["overrides"]  # a replica may run on any node: all have it
    [(_, service)] = [(n, d) for n, d in _kuberay_manifests() if d["kind"] == "RayService"]
    spec = service["spec"]["rayClusterConfig"]
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        for container in group["template"]["spec"]["containers"]:
            [env] = [e for e in container.get("env", []) if e["name"] == "MLSYS_UI_TOKEN"]
            assert env["valueFrom"]["secretKeyRef"] == {"name": "mlsys-ui", "key": "token"}, container["name"]
    module, _, attr = dashboard["import_path"].partition(":")
    overrides = [o for o in dashboard["args"]["overrides"] if not o.startswith("home.")]
    monkeypatch.setenv("MLSYS_UI_TOKEN", "from-the-secret")
    assert isinstance(getattr(import_module(module), attr)({"overrides": [*overrides, f"home.root={tmp_path}"]}), Application)


def test_the_rayservice_serve_config_is_valid_for_serve():
    from ray.serve.schema import ServeDeploySchema

    config = _serve_config()
    ServeDeploySchema.model_validate(config)  # what KubeRay's PUT /api/serve/applications/ has Serve check
    app, dashboard = config["applications"]
    [same] = yaml.safe_load((CLUSTERS / "serve-ranking.yaml").read_text())["applications"]
    assert (app["import_path"], app["args"]["release"]) == (same["import_path"], same["args"]["release"])
    typo = copy.deepcopy(config)  # Serve ignores unknown keys, but a required one misspelled is missing
    typo["applications"][0]["import_paht"] = typo["applications"][0].pop("import_path")
    with pytest.raises(ValueError, match=r"applications\.0\.import_path\n  Field required"):
        ServeDeploySchema.model_validate(typo)
    bad_path = copy.deepcopy(config)
    bad_path["applications"][0]["import_path"] = "mlsys.api.serving:"
    with pytest.raises(ValueError, match="may not start or end with a colon"):
        ServeDeploySchema.model_validate(bad_path)


@pytest.fixture(scope="module")
def launcher() -> dict:
    return yaml.safe_load((CLUSTERS / "cluster-launcher.yaml").read_text())


def test_the_cluster_launcher_config_is_valid_for_ray_up(launcher):
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(launcher, schema)  # the file as written
    validate_config(prepare_config(copy.deepcopy(launcher)))  # as `ray up` checks it, merged with the provider's defaults
    images = [launcher["docker"]["image"], launcher["available_node_types"]["gpu"]["docker"]["worker_image"]]
    assert all(image.startswith(f"rayproject/ray:{version('ray')}-py311-") for image in images)
    commands = launcher["head_start_ray_commands"] + launcher["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token ray start" in c for c in commands if "ray start" in c)
    assert launcher["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"  # one token on every node


def test_a_broken_cluster_launcher_config_is_refused(launcher):
    from ray.autoscaler._private.util import prepare_config, validate_config

    typo = copy.deepcopy(launcher)
    typo["available_node_types"]["cpu"]["min_worker"] = typo["available_node_types"]["cpu"].pop("min_workers")
    with pytest.raises(jsonschema.ValidationError, match="'min_worker' was unexpected"):
        validate_config(prepare_config(typo))
    too_many = copy.deepcopy(launcher)
    too_many["available_node_types"]["cpu"]["min_workers"] = too_many["max_workers"] + 1
    with pytest.raises(ValueError, match="max_workers"):
        validate_config(prepare_config(too_many))


def test_the_retrain_cronjob_reads_the_token_from_the_secret_and_key_kuberay_uses():
    """KubeRay's authOptions reads the Secret's key ``auth_token``: one Secret, one key, for every manifest."""
    cronjob = yaml.safe_load((CLUSTERS / "retrain-cronjob.yaml").read_text())
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    (token,) = [e for e in container["env"] if e["name"] == "RAY_AUTH_TOKEN"]
    ref = token["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == ("mlsys-ray-auth", "auth_token")
