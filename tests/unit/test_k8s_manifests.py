"""deploy/k8s: every overlay renders (scripts/render_k8s.py), every object validates
against the Kubernetes schemas offline (kubernetes-validate, strict), and the
objects fit together: probes, secrets, selectors, security, commands."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay_server import cli

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
sys.path.insert(0, str(REPO / "scripts"))

import gen_k8s_envoy  # noqa: E402
import render_k8s  # noqa: E402

# The keys of the relay-secrets Secret (docs/deployment.md says how to create it).
SECRET_KEYS = {"database-url", "app-database-url", "redis-url", "master-key", "jwt-secret", "admin-token"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendering and validation work offline: any connection attempt fails the test."""

    def refuse(self: socket.socket, address: Any) -> None:
        raise AssertionError(f"attempted a network connection to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def rendered(overlay: str) -> list[dict[str, Any]]:
    return render_k8s.render(K8S / "overlays" / overlay)


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} rendered"
    return matches[0]


def containers(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(workload name, pod spec, container) for every container of every workload."""
    out = []
    for obj in objects:
        spec = render_k8s.pod_spec(obj)
        for container in (spec or {}).get("containers", []):
            out.append((obj["metadata"]["name"], spec, container))
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_every_object_validates_against_the_kubernetes_schemas(overlay: str) -> None:
    objects = rendered(overlay)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert {("Deployment", "relay-gateway"), ("Deployment", "relay-workers"), ("Job", "relay-migrate"),
            ("Service", "relay"), ("HorizontalPodAutoscaler", "relay-gateway"),
            ("PodDisruptionBudget", "relay-gateway"), ("ConfigMap", "relay-envoy")} <= kinds  # fmt: skip
    assert render_k8s.validate(objects) == []
    assert all(o["metadata"].get("namespace") for o in objects)


def test_the_validator_rejects_an_unknown_field_and_a_wrong_type() -> None:
    objects = rendered("prod")
    gateway = find(objects, "Deployment", "relay-gateway")
    gateway["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    find(objects, "HorizontalPodAutoscaler", "relay-gateway")["spec"]["minReplicas"] = "three"
    errors = render_k8s.validate(objects)
    assert any("Deployment/relay-gateway" in e and "livenesProbe" in e for e in errors), errors
    assert any("HorizontalPodAutoscaler/relay-gateway" in e and "minReplicas" in e for e in errors), errors


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_non_root_read_only_bounded_and_gets_secrets_from_the_secret(overlay: str) -> None:
    objects = rendered(overlay)
    for workload, spec, container in containers(objects):
        where = f"{workload}/{container['name']}"
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec.get("automountServiceAccountToken") is False, where
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False, where
        assert security["capabilities"]["drop"] == ["ALL"], where
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), where
        assert {"cpu", "memory"} <= set(container["resources"]["limits"]), where
        assert ":" in container["image"].rsplit("/", 1)[-1] and not container["image"].endswith(":latest"), where
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == "relay-secrets" and ref["key"] in SECRET_KEYS, (where, env)
            elif any(word in env["name"] for word in ("URL", "KEY", "SECRET", "TOKEN", "PASSWORD")):
                pytest.fail(f"{where}: {env['name']} is a plain value, not from the Secret")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_relay_containers_run_relay_commands_and_the_gateway_probes_health_and_ready(overlay: str) -> None:
    objects = rendered(overlay)
    for workload, _spec, container in containers(objects):
        if container["name"] == "envoy":
            continue
        with pytest.raises(SystemExit) as exit_:
            cli.main([*container.get("command", [])[1:], *container["args"], "--help"])
        assert exit_.value.code == 0, f"{workload}: relay {container['args']} is not a relay command"
    gateway = find(objects, "Deployment", "relay-gateway")["spec"]["template"]["spec"]
    by_name = {c["name"]: c for c in gateway["containers"]}
    relay, envoy = by_name["relay"], by_name["envoy"]
    assert relay["livenessProbe"]["httpGet"]["path"] == "/health"
    assert relay["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert envoy["readinessProbe"]["httpGet"]["path"] == "/ready"
    # The probes' named port is the sidecar's listener, which the rendered Envoy config binds on every interface.
    http = next(p for p in envoy["ports"] if p["name"] == "http")
    config = yaml.safe_load(find(objects, "ConfigMap", "relay-envoy")["data"]["envoy.yaml"])
    listener = config["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert (listener["address"], listener["port_value"]) == ("0.0.0.0", http["containerPort"])
    mount = next(m for m in envoy["volumeMounts"] if m["name"] == "envoy-config")["mountPath"]
    assert envoy["args"][envoy["args"].index("-c") + 1] == f"{mount}/envoy.yaml"
    assert f'"{mount}/relay.pb"' in find(objects, "ConfigMap", "relay-envoy")["data"]["envoy.yaml"]
    assert "relay.pb" in find(objects, "ConfigMap", "relay-envoy")["binaryData"]
    # The console binds loopback; Envoy's /dashboard route dials the port the container is given.
    dashboard = by_name["dashboard"]
    console_port = int(next(e["value"] for e in dashboard["env"] if e["name"] == "RELAY_DASHBOARD_PORT"))
    cluster = next(c for c in config["static_resources"]["clusters"] if c["name"] == "relay_dashboard")
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert (endpoint["address"], endpoint["port_value"]) == ("127.0.0.1", console_port)
    grpc_target = next(e["value"] for e in dashboard["env"] if e["name"] == "RELAY_GRPC_TARGET")
    assert grpc_target == f"127.0.0.1:{next(p['containerPort'] for p in relay['ports'] if p['name'] == 'grpc')}"
    assert dashboard["readinessProbe"]["httpGet"] == {"path": "/dashboard/healthz", "port": "http"}
    workers = find(objects, "Deployment", "relay-workers")["spec"]["template"]["spec"]["containers"][0]
    assert {"grpc"} == {k for k in workers["livenessProbe"] if k == "grpc"}
    jobs_on = {e["name"]: e["value"] for e in workers["env"] if "value" in e}
    gateway_env = {e["name"]: e["value"] for e in relay["env"] if "value" in e}
    assert jobs_on["RELAY_BACKGROUND_JOBS"] == "true" and gateway_env["RELAY_BACKGROUND_JOBS"] == "false"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_pdb_hpa_and_config_references_point_at_what_is_rendered(overlay: str) -> None:
    objects = rendered(overlay)
    gateway = find(objects, "Deployment", "relay-gateway")
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    service = find(objects, "Service", "relay")
    assert service["spec"]["selector"].items() <= labels.items()
    pdb = find(objects, "PodDisruptionBudget", "relay-gateway")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert gateway["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = find(objects, "HorizontalPodAutoscaler", "relay-gateway")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "relay-gateway"
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"] or hpa["spec"]["minReplicas"] == 1
    ports = {p["name"] for c in gateway["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    config_maps = {o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"}
    for workload, spec, container in containers(objects):
        for source in container.get("envFrom", []):
            assert source["configMapRef"]["name"] in config_maps, workload
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, workload
        mounts = {m["name"] for m in container.get("volumeMounts", [])}
        assert mounts <= {v["name"] for v in spec.get("volumes", [])}, workload


def test_overlays_change_what_they_say() -> None:
    dev, prod = rendered("dev"), rendered("prod")
    assert find(dev, "Deployment", "relay-gateway")["spec"]["replicas"] == 1
    assert find(prod, "Deployment", "relay-gateway")["spec"]["replicas"] == 3
    assert find(dev, "ConfigMap", "relay-settings")["data"]["RELAY_LOG_LEVEL"] == "DEBUG"
    # A merge keeps the base's other entries.
    assert find(dev, "ConfigMap", "relay-settings")["data"]["RELAY_STATE_DIR"] == "/var/lib/relay"
    relay = find(prod, "Deployment", "relay-gateway")["spec"]["template"]["spec"]["containers"][0]
    assert relay["image"] == "registry.example.com/relay:0.1.0"
    env = {e["name"] for e in relay["env"]}
    assert {"RELAY_WORKERS", "DATABASE_URL", "RELAY_BACKGROUND_JOBS"} <= env  # merged by name, none lost
    assert relay["resources"]["limits"]["memory"] == "2Gi"


def test_strategic_merge_merges_keyed_lists_and_null_deletes() -> None:
    base = {"spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": "1"}], "args": ["x"]}],
                     "paused": True}}  # fmt: skip
    render_k8s.strategic_merge(base, {"spec": {"paused": None, "containers": [
        {"name": "a", "env": [{"name": "Y", "value": "2"}], "args": ["y"]}, {"name": "b"}]}})  # fmt: skip
    assert base == {"spec": {"containers": [
        {"name": "a", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}], "args": ["y"]},
        {"name": "b"}]}}  # fmt: skip


def test_the_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\ncommonLabels: {a: b}\n")
    with pytest.raises(render_k8s.KustomizeError, match="commonLabels"):
        render_k8s.render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text("secretGenerator: [{name: s, literals: [a=b]}]\n")
    with pytest.raises(render_k8s.KustomizeError, match="disableNameSuffixHash"):
        render_k8s.render(tmp_path)


def test_secret_generator_encodes_values(tmp_path: Path) -> None:
    (tmp_path / "secrets.env").write_text("# comment\nmaster-key=abc=\n")
    (tmp_path / "kustomization.yaml").write_text(
        "secretGenerator: [{name: relay-secrets, envs: [secrets.env], literals: [admin-token=t]}]\n"
        "generatorOptions: {disableNameSuffixHash: true}\n"
    )
    [secret] = render_k8s.render(tmp_path)
    assert secret["type"] == "Opaque" and "annotations" not in secret["metadata"]
    assert secret["data"] == {"master-key": "YWJjPQ==", "admin-token": "dA=="}
    assert render_k8s.validate([secret]) == []


@pytest.mark.timeout(180)
def test_the_checked_in_envoy_config_map_files_are_what_make_gen_renders(no_network: None) -> None:
    # Envoy validates the config (a subprocess, loopback only): connections stay refused in this process.
    fresh = gen_k8s_envoy.render()
    committed = {p.name: p.read_bytes() for p in gen_k8s_envoy.OUT.iterdir()}
    stale = sorted(name for name in fresh.keys() | committed.keys() if fresh.get(name) != committed.get(name))
    assert not stale, f"deploy/k8s/base/envoy is stale ({stale}): run `make gen`"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_setting_the_manifests_give_is_one_relay_reads(overlay: str) -> None:
    """A misspelt RELAY_* name would be silently ignored by the server: each must be a Settings field,
    with a value of its type (the console's own RELAY_GRPC_TARGET is read by relay_server.dashboard)."""
    from dataclasses import fields

    from relay_server.settings import Settings

    known = {f.name for f in fields(Settings)}
    objects = rendered(overlay)
    given: dict[str, str] = {}
    for name, value in find(objects, "ConfigMap", "relay-settings")["data"].items():
        given[name] = value
    for _workload, _spec, container in containers(objects):
        if container["name"] == "envoy":
            continue
        for env in container.get("env", []):
            given[env["name"]] = env.get("value", "from-a-secret")
    dashboard_only = {"RELAY_GRPC_TARGET"}
    for name, value in given.items():
        if name in dashboard_only:
            continue
        field_name = name.removeprefix("RELAY_").lower()
        assert field_name in known, f"{name} is not a Relay setting"
        if value != "from-a-secret":
            Settings.from_env({name: value})  # a value of the wrong type raises here
    assert {"RELAY_BACKGROUND_JOBS", "DATABASE_URL", "RELAY_STATE_DIR"} <= set(given)
