"""Render a kustomization (deploy/k8s/overlays/*) and validate it against the
Kubernetes schemas, with no kustomize, kubectl or cluster.

A deliberately small subset of kustomize: exactly the fields Relay's base and
overlays use, with kustomize's meaning, and an error on any other field (so a
new field is never silently dropped).  What `kubectl kustomize` renders from the
same directory is the same set of objects.

- ``resources``: YAML files or directories holding a kustomization.yaml;
- ``configMapGenerator`` / ``secretGenerator``: ``files`` (``key=path`` or
  ``path``; non-UTF-8 files go to ``binaryData``), ``literals``, ``envs``,
  ``behavior`` create | merge | replace; ``generatorOptions.disableNameSuffixHash``
  must be true (name hashes and the reference rewriting they need are left out);
- ``patches``: strategic-merge patches from ``path``, matched by kind and name;
  lists of containers, env, volumes, ports and volume mounts merge by their key;
- ``namespace``, ``images`` (name → newName / newTag / digest), ``replicas``.

Validation: ``kubernetes-validate`` (its schemas ship in the wheel; nothing is
fetched) in strict mode, so an unknown field is an error too.

Usage: python scripts/render_k8s.py DIR [--validate] [--kubernetes-version 1.33]
"""

from __future__ import annotations

import argparse
import base64
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

KUBERNETES_VERSION = "1.33"
_KNOWN = {"apiVersion", "kind", "resources", "configMapGenerator", "secretGenerator", "generatorOptions",
          "patches", "namespace", "images", "replicas"}  # fmt: skip
# Strategic merge: these lists merge element by element on the key (Kubernetes' patchMergeKey).
_MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "envFrom": None, "volumes": "name",
               "volumeMounts": "mountPath", "ports": "containerPort", "imagePullSecrets": "name"}  # fmt: skip
# Objects without a namespace.
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                   "PriorityClass", "StorageClass", "PersistentVolume"}  # fmt: skip

Obj = dict[str, Any]


class KustomizeError(ValueError):
    """A kustomization this renderer cannot render faithfully."""


def build(directory: Path) -> list[Obj]:
    """The objects the kustomization in ``directory`` renders, in order."""
    directory = directory.resolve()
    path = directory / "kustomization.yaml"
    if not path.is_file():
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    k = yaml.safe_load(path.read_text()) or {}
    unknown = set(k) - _KNOWN
    if unknown:
        raise KustomizeError(f"{path}: unsupported field(s) {sorted(unknown)}")
    objects: list[Obj] = []
    for entry in k.get("resources", []):
        target = directory / entry
        if target.is_dir():
            objects += build(target)
        elif target.is_file():
            objects += [doc for doc in yaml.safe_load_all(target.read_text()) if doc]
        else:
            raise KustomizeError(f"{path}: resource {entry!r} does not exist")
    options = k.get("generatorOptions", {})
    if (k.get("configMapGenerator") or k.get("secretGenerator")) and not _hash_disabled(options, objects):
        raise KustomizeError(f"{path}: generatorOptions.disableNameSuffixHash must be true")
    for kind, field in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for spec in k.get(field, []):
            _generate(objects, kind, spec, directory)
    for patch in k.get("patches", []):
        _patch(objects, patch, directory)
    if "namespace" in k:
        for obj in objects:
            if obj["kind"] not in _CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = k["namespace"]
    for image in k.get("images", []):
        _set_image(objects, image)
    for replicas in k.get("replicas", []):
        _set_replicas(objects, replicas)
    return objects


def _hash_disabled(options: Obj, objects: list[Obj]) -> bool:
    # An overlay that only merges into a base's generator inherits the base's option.
    return bool(options.get("disableNameSuffixHash")) or any(
        o.get("metadata", {}).get("annotations", {}).get("relay.render/generated") for o in objects
    )


def _generate(objects: list[Obj], kind: str, spec: Obj, directory: Path) -> None:
    unknown = set(spec) - {"name", "files", "literals", "envs", "behavior", "type"}
    if unknown:
        raise KustomizeError(f"{kind} generator {spec.get('name')!r}: unsupported field(s) {sorted(unknown)}")
    text: dict[str, str] = {}
    binary: dict[str, bytes] = {}
    for entry in spec.get("files", []):
        key, _, rel = entry.partition("=") if "=" in entry else (Path(entry).name, "", entry)
        data = (directory / rel).read_bytes()
        try:
            text[key] = data.decode("utf-8")
        except UnicodeDecodeError:
            binary[key] = data
    for env_file in spec.get("envs", []):
        for line in (directory / env_file).read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                text[key.strip()] = value
    for literal in spec.get("literals", []):
        key, sep, value = literal.partition("=")
        if not sep:
            raise KustomizeError(f"{kind} {spec['name']}: literal {literal!r} is not KEY=VALUE")
        text[key] = value
    existing = next((o for o in objects if o["kind"] == kind and o["metadata"]["name"] == spec["name"]), None)
    behavior = spec.get("behavior", "create")
    if behavior == "create":
        if existing is not None:
            raise KustomizeError(f"{kind} {spec['name']} already exists (use behavior: merge or replace)")
        obj: Obj = {"apiVersion": "v1", "kind": kind, "metadata": {
            "name": spec["name"], "annotations": {"relay.render/generated": "true"}}}  # fmt: skip
        if kind == "Secret":
            obj["type"] = spec.get("type", "Opaque")
        objects.append(obj)
    elif existing is None:
        raise KustomizeError(f"{kind} {spec['name']}: behavior {behavior} needs an existing generated object")
    else:
        obj = existing
        if behavior == "replace":
            obj.pop("data", None)
            obj.pop("binaryData", None)
    if kind == "Secret":
        # Secrets hold every value base64-encoded under data.
        merged = {**{k: v.encode() for k, v in text.items()}, **binary}
        data = {k: base64.b64encode(v).decode() for k, v in merged.items()}
        obj["data"] = {**obj.get("data", {}), **data}
        return
    if text:
        obj["data"] = {**obj.get("data", {}), **text}
    if binary:
        obj["binaryData"] = {
            **obj.get("binaryData", {}),
            **{k: base64.b64encode(v).decode() for k, v in binary.items()},
        }


def _patch(objects: list[Obj], entry: Obj, directory: Path) -> None:
    if set(entry) != {"path"}:
        raise KustomizeError(f"patch {entry!r}: only strategic-merge patches from a path are supported")
    patch = yaml.safe_load((directory / entry["path"]).read_text())
    name, kind = patch["metadata"]["name"], patch["kind"]
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    if len(matches) != 1:
        raise KustomizeError(f"patch {entry['path']}: {len(matches)} {kind} named {name!r} (need exactly one)")
    body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
    body["metadata"] = {k: v for k, v in patch["metadata"].items() if k not in ("name", "namespace")}
    strategic_merge(matches[0], body)


def strategic_merge(base: Obj, patch: Obj) -> Obj:
    """Merge ``patch`` into ``base`` in place: maps recursively, keyed lists by key,
    other lists replaced, ``null`` deletes."""
    for key, value in patch.items():
        current = base.get(key)
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(current, dict):
            strategic_merge(current, value)
        elif isinstance(value, list) and isinstance(current, list) and _MERGE_KEYS.get(key):
            merge_key = _MERGE_KEYS[key]
            for item in value:
                same = next((c for c in current if c.get(merge_key) == item.get(merge_key)), None)
                if same is None:
                    current.append(copy.deepcopy(item))
                else:
                    strategic_merge(same, item)
        else:
            base[key] = copy.deepcopy(value)
    return base


def pod_spec(obj: Obj) -> Obj | None:
    """The pod spec of a workload (Deployment, Job, ...), or None."""
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    template = spec.get("template")
    return template.get("spec") if isinstance(template, dict) else None


def _set_image(objects: list[Obj], entry: Obj) -> None:
    found = False
    for obj in objects:
        spec = pod_spec(obj)
        for container in (spec or {}).get("containers", []) + (spec or {}).get("initContainers", []):
            image = container["image"]
            name = image.split("@")[0]
            name = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
            if name != entry["name"]:
                continue
            found = True
            new = entry.get("newName", name)
            if "digest" in entry:
                container["image"] = f"{new}@{entry['digest']}"
            elif "newTag" in entry:
                container["image"] = f"{new}:{entry['newTag']}"
            else:
                container["image"] = new + image[len(name) :]
    if not found:
        raise KustomizeError(f"images: no container uses {entry['name']!r}")


def _set_replicas(objects: list[Obj], entry: Obj) -> None:
    matches = [o for o in objects if o["metadata"]["name"] == entry["name"] and "replicas" in o.get("spec", {})]
    if not matches:
        raise KustomizeError(f"replicas: no workload named {entry['name']!r}")
    for obj in matches:
        obj["spec"]["replicas"] = int(entry["count"])


def strip_render_annotations(objects: list[Obj]) -> list[Obj]:
    """The objects without this renderer's bookkeeping annotation (what kustomize prints)."""
    for obj in objects:
        annotations = obj.get("metadata", {}).get("annotations", {})
        annotations.pop("relay.render/generated", None)
        if "annotations" in obj.get("metadata", {}) and not annotations:
            del obj["metadata"]["annotations"]
    return objects


def render(directory: Path) -> list[Obj]:
    return strip_render_annotations(build(directory))


def validate(objects: list[Obj], version: str = KUBERNETES_VERSION) -> list[str]:
    """Schema errors, one line each (empty: every object is valid)."""
    import kubernetes_validate

    errors = []
    for obj in objects:
        where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{where}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{where}: no schema: {exc.message}")
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--validate", action="store_true", help="validate against the Kubernetes schemas")
    parser.add_argument("--kubernetes-version", default=KUBERNETES_VERSION)
    args = parser.parse_args(argv)
    try:
        objects = render(args.directory)
    except (KustomizeError, OSError, yaml.YAMLError) as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 2
    if args.validate:
        errors = validate(objects, args.kubernetes_version)
        for error in errors:
            print(error, file=sys.stderr)
        if errors:
            return 1
    print(yaml.safe_dump_all(objects, sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
