#!/usr/bin/env python3
"""Checks deploy/kubernetes offline, with no kubectl or kustomize binary:

1. renders both overlays with a small kustomize of its own (only the features the manifests
   use; anything else is refused, not guessed);
2. validates every rendered built-in resource against the Kubernetes schemas of a pinned
   version (kubernetes-validate, strict: unknown fields are errors), and every KEDA
   ScaledObject and CloudNativePG Cluster against the CRD schemas committed in deploy/crds;
3. checks the manifests against docker-compose.yml: every application service of compose has a
   Deployment with the same command, container ports, environment variable names, mounted
   files and probes on the same paths and ports as its compose healthcheck; every reference
   resolves (ConfigMap keys, Secrets that make-secrets.sh makes, autoscaler targets);
4. checks that compose starts in order (healthchecks that mean ready, depends_on, limits).

Usage (packages from deploy/requirements.txt, e.g. installed with
`pip install --target /tmp/k8stools -r deploy/requirements.txt`):

    PYTHONPATH=/tmp/k8stools python3 deploy/check.py                    # all checks
    PYTHONPATH=/tmp/k8stools python3 deploy/check.py --compare-kubectl  # and compare the
        rendering with `kubectl kustomize` (skipped when there is no kubectl)
    PYTHONPATH=/tmp/k8stools python3 deploy/check.py --self-test        # prove it catches drift
    PYTHONPATH=/tmp/k8stools python3 deploy/check.py --print production # the rendered YAML

Exits 0 when everything passes, 1 on any failure, 2 on a usage or set-up error.
"""

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import tempfile
import sys
from urllib.parse import urlsplit

try:
    import jsonschema
    import yaml
    import kubernetes_validate
    from kubernetes_validate.version import __version__ as KUBERNETES_VALIDATE_VERSION
except ImportError as e:  # pragma: no cover - set-up error
    sys.exit(
        f"check.py: {e}. Install the pinned packages first:\n"
        "  pip install --target /tmp/k8stools -r deploy/requirements.txt\n"
        "  PYTHONPATH=/tmp/k8stools python3 deploy/check.py"
    )

DEPLOY = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DEPLOY)
KUBERNETES = os.path.join(DEPLOY, "kubernetes")
OVERLAYS = ["local", "production"]
COMPOSE = os.path.join(ROOT, "docker-compose.yml")
SECRETS_SCRIPT = os.path.join(KUBERNETES, "make-secrets.sh")
NATS_VALUES = os.path.join(KUBERNETES, "nats", "values.yaml")

# The Kubernetes version the manifests are checked against (the oldest we support).
KUBERNETES_VERSION = "1.30.0"

# The CRDs committed under deploy/crds, by the apiVersion and kind they define.
CRD_FILES = ["keda.sh_scaledobjects.yaml", "postgresql.cnpg.io_clusters.yaml"]

class CheckError(Exception):
    """A failure of the renderer or of the set-up, reported as one message."""


def load_yaml_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def rid(doc):
    """`Kind/name` of a resource, for messages."""
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


# ------------------------------------------------------------------------------------------
# The kustomize subset
# ------------------------------------------------------------------------------------------

KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "replicas", "patches"}
BUILTIN_GROUPS = {"", "apps", "batch", "policy", "autoscaling", "networking.k8s.io", "rbac.authorization.k8s.io"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PersistentVolume", "StorageClass", "PriorityClass"}
WORKLOADS = {"Deployment", "StatefulSet", "ReplicaSet", "DaemonSet"}

# Strategic merge: the list fields of the built-in kinds a patch may set, with their merge
# key (None: the patch's list replaces the original, as Kubernetes does for these fields).
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
    "volumeMounts": "mountPath", "imagePullSecrets": "name", "topologySpreadConstraints": "topologyKey",
    "command": None, "args": None, "drop": None, "add": None, "metrics": None,
}


def group_of(api_version):
    return api_version.split("/")[0] if "/" in api_version else ""


def list_merge_key(field, path):
    if field == "ports":
        return "containerPort" if "containers" in path or "initContainers" in path else "port"
    if field not in MERGE_KEYS:
        raise CheckError(
            f"patch sets the list {'.'.join(path + [field])}, which this renderer does not merge "
            "(add its merge key to MERGE_KEYS in deploy/check.py, then run --compare-kubectl)")
    return MERGE_KEYS[field]


def strategic_merge(orig, patch, path):
    """kustomize's strategic merge of `patch` into `orig` for built-in kinds: maps merge, null
    deletes, lists with a merge key merge by it (the patch's items first, then the original's
    others, as kustomize orders them), other lists are replaced."""
    out = copy.deepcopy(orig)
    for key, value in patch.items():
        if key.startswith("$"):
            raise CheckError(f"patch directive {key} at {'.'.join(path)} is not supported")
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = strategic_merge(out[key], value, path + [key])
        elif isinstance(value, list) and isinstance(out.get(key), list):
            mkey = list_merge_key(key, path)
            if mkey is None:
                out[key] = copy.deepcopy(value)
                continue
            originals = {item[mkey]: item for item in out[key]}
            merged, seen = [], set()
            for item in value:
                k = item[mkey]
                seen.add(k)
                merged.append(strategic_merge(originals[k], item, path + [key]) if k in originals
                              else copy.deepcopy(item))
            merged += [item for item in out[key] if item[mkey] not in seen]
            out[key] = merged
        else:
            if isinstance(value, list):
                list_merge_key(key, path)  # refuses lists it does not know
            out[key] = copy.deepcopy(value)
    return out


def merge_patch(orig, patch, path):
    """A merge patch for custom resources (no schema): maps merge, null deletes. Lists are
    refused: kustomize's handling of lists without a schema is not reproduced here."""
    out = copy.deepcopy(orig)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value, path + [key])
        elif isinstance(value, list):
            raise CheckError(f"patch of a custom resource sets the list {'.'.join(path + [key])}: "
                             "not supported by this renderer")
        else:
            out[key] = copy.deepcopy(value)
    return out


def split_image(image):
    """(name, tag, digest) of an image reference."""
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    tag = None
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        image, tag = image[:colon], image[colon + 1:]
    return image, tag, digest


def pod_specs(doc):
    spec = doc.get("spec") or {}
    if doc.get("kind") == "Pod":
        yield spec
    elif "template" in spec:
        yield (spec["template"].get("spec") or {})


def render(directory, _stack=()):
    """The resources `kubectl kustomize directory` renders, for the features used here."""
    directory = os.path.abspath(directory)
    if directory in _stack:
        raise CheckError(f"kustomization cycle through {directory}")
    path = os.path.join(directory, "kustomization.yaml")
    if not os.path.exists(path):
        raise CheckError(f"{directory} has no kustomization.yaml")
    with open(path) as f:
        k = yaml.safe_load(f) or {}
    unknown = set(k) - KUSTOMIZATION_KEYS
    if unknown:
        raise CheckError(f"{path}: kustomize features {sorted(unknown)} are not supported by "
                         f"deploy/check.py's renderer (supported: {sorted(KUSTOMIZATION_KEYS)})")
    docs = []
    for entry in k.get("resources") or []:
        target = os.path.join(directory, entry)
        if os.path.isdir(target):
            docs += render(target, _stack + (directory,))
        else:
            docs += load_yaml_docs(target)
    seen = set()
    for d in docs:
        key = (d.get("apiVersion"), d.get("kind"), d["metadata"]["name"])
        if key in seen:
            raise CheckError(f"{path}: {rid(d)} is defined twice")
        seen.add(key)

    for p in k.get("patches") or []:
        if set(p) != {"path"}:
            raise CheckError(f"{path}: only `patches: - path: <file>` is supported, not {sorted(p)}")
        for patch in load_yaml_docs(os.path.join(directory, p["path"])):
            matches = [i for i, d in enumerate(docs)
                       if d.get("kind") == patch.get("kind")
                       and group_of(d.get("apiVersion", "")) == group_of(patch.get("apiVersion", ""))
                       and d["metadata"]["name"] == patch["metadata"]["name"]]
            if len(matches) != 1:
                raise CheckError(f"{p['path']}: patch {rid(patch)} matches {len(matches)} resources")
            i = matches[0]
            body = {key: v for key, v in patch.items() if key not in ("apiVersion", "kind")}
            body["metadata"] = {key: v for key, v in patch["metadata"].items() if key != "name"}
            if not body["metadata"]:
                del body["metadata"]
            if group_of(patch.get("apiVersion", "")) in BUILTIN_GROUPS:
                docs[i] = strategic_merge(docs[i], body, [])
            else:
                docs[i] = merge_patch(docs[i], body, [])

    namespace = k.get("namespace")
    if namespace:
        for d in docs:
            if d["kind"] not in CLUSTER_SCOPED:
                d["metadata"]["namespace"] = namespace

    for entry in k.get("labels") or []:
        extra = set(entry) - {"pairs", "includeSelectors", "includeTemplates"}
        if extra or entry.get("includeSelectors") or entry.get("includeTemplates"):
            raise CheckError(f"{path}: labels support only `pairs` (metadata labels), not {sorted(entry)}")
        for d in docs:
            d["metadata"].setdefault("labels", {}).update({str(a): str(b) for a, b in entry["pairs"].items()})

    for entry in k.get("replicas") or []:
        targets = [d for d in docs if d["kind"] in WORKLOADS and d["metadata"]["name"] == entry["name"]]
        if not targets:
            raise CheckError(f"{path}: replicas names {entry['name']}, which is no workload")
        for d in targets:
            d["spec"]["replicas"] = entry["count"]

    for entry in k.get("images") or []:
        extra = set(entry) - {"name", "newName", "newTag", "digest"}
        if extra:
            raise CheckError(f"{path}: images entry fields {sorted(extra)} are not supported")
        for d in docs:
            for spec in pod_specs(d):
                for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
                    name, tag, digest = split_image(c["image"])
                    if name != entry["name"]:
                        continue
                    name = entry.get("newName", name)
                    if "digest" in entry:
                        c["image"] = f"{name}@{entry['digest']}"
                    elif "newTag" in entry:
                        c["image"] = f"{name}:{entry['newTag']}"
                    else:
                        c["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    return docs


def canonical(doc):
    return json.dumps(doc, sort_keys=True)


def compare_with_kubectl(overlay, docs):
    """Differences between our rendering and `kubectl kustomize` (documents in any order)."""
    out = subprocess.run(["kubectl", "kustomize", os.path.join(KUBERNETES, "overlays", overlay)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return [f"kubectl kustomize {overlay} failed: {out.stderr.strip()}"]
    theirs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out.stdout) if d}
    ours = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    errors = []
    for key in sorted(set(theirs) | set(ours)):
        if key not in ours:
            errors.append(f"{overlay}: kubectl renders {key[0]}/{key[1]}, check.py does not")
        elif key not in theirs:
            errors.append(f"{overlay}: check.py renders {key[0]}/{key[1]}, kubectl does not")
        elif canonical(ours[key]) != canonical(theirs[key]):
            import difflib
            diff = difflib.unified_diff(
                json.dumps(theirs[key], sort_keys=True, indent=1).splitlines(),
                json.dumps(ours[key], sort_keys=True, indent=1).splitlines(),
                "kubectl", "check.py", lineterm="", n=2)
            errors.append(f"{overlay}: {key[0]}/{key[1]} differs:\n  " + "\n  ".join(diff))
    return errors


# ------------------------------------------------------------------------------------------
# Schema validation
# ------------------------------------------------------------------------------------------

def strict_schema(node):
    """The CRD schema with unknown fields refused, as the API server's strict field
    validation does (`kubectl apply --validate=strict`): every object with properties and no
    x-kubernetes-preserve-unknown-fields gets additionalProperties: false."""
    if isinstance(node, dict):
        node = {k: strict_schema(v) for k, v in node.items()}
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [strict_schema(v) for v in node]
    return node


def load_crds():
    """{(apiVersion, kind): (validator, source)} of the committed CRDs."""
    crds = {}
    for name in CRD_FILES:
        path = os.path.join(DEPLOY, "crds", name)
        for crd in load_yaml_docs(path):
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if not version.get("served", True):
                    continue
                schema = strict_schema(version["schema"]["openAPIV3Schema"])
                jsonschema.Draft7Validator.check_schema(schema)
                crds[(f"{group}/{version['name']}", kind)] = (jsonschema.Draft7Validator(schema), name)
    return crds


METADATA_KEYS = {"name", "namespace", "labels", "annotations"}


def validate_resources(docs, crds):
    errors = []
    for d in docs:
        key = (d.get("apiVersion"), d.get("kind"))
        if key in crds:
            validator, source = crds[key]
            for e in sorted(validator.iter_errors(d), key=lambda e: list(e.absolute_path)):
                where = ".".join(str(p) for p in e.absolute_path) or "(root)"
                errors.append(f"{rid(d)}: {where}: {e.message} (CRD schema {source})")
            extra = set(d.get("metadata") or {}) - METADATA_KEYS
            if extra:
                errors.append(f"{rid(d)}: metadata fields {sorted(extra)} are not expected")
        elif group_of(d.get("apiVersion", "")) in BUILTIN_GROUPS:
            try:
                kubernetes_validate.validate(d, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                where = ".".join(str(p) for p in e.absolute_path) or "(root)"
                errors.append(f"{rid(d)}: {where}: {e.message} (Kubernetes {KUBERNETES_VERSION}, strict)")
            except kubernetes_validate.SchemaNotFoundError as e:
                errors.append(f"{rid(d)}: {e.message}")
        else:
            errors.append(f"{rid(d)}: {d.get('apiVersion')} has no schema here (commit its CRD under "
                          "deploy/crds and name it in CRD_FILES)")
    return errors


# ------------------------------------------------------------------------------------------
# Compose and Kubernetes, side by side
# ------------------------------------------------------------------------------------------

def load_compose():
    with open(COMPOSE) as f:
        return yaml.safe_load(f)  # PyYAML applies the `<<` merge keys, as compose does


def app_services(compose):
    """The application services: those running the streamshop image."""
    return {name: s for name, s in compose["services"].items()
            if str(s.get("image", "")).split(":")[0] == "streamshop"}


def healthcheck_url(service):
    test = (service.get("healthcheck") or {}).get("test") or []
    if isinstance(test, str):
        test = test.split()
    for arg in test:
        if arg.startswith(("http://", "https://")):
            return urlsplit(arg), test
    return None, test


def by_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def resolve_port(container, port):
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return p["containerPort"]
    return None


def env_value(entry, configmaps):
    """The value of an env entry from a ConfigMap or a literal; None for Secrets."""
    if "value" in entry:
        return entry["value"]
    ref = (entry.get("valueFrom") or {}).get("configMapKeyRef")
    if ref:
        return ((configmaps.get(ref["name"]) or {}).get("data") or {}).get(ref["key"])
    return None


def secret_files(pod_spec, container, mount_path):
    """The file names a Secret volume mounted at mount_path shows (its items' paths)."""
    for m in container.get("volumeMounts") or []:
        if m["mountPath"] == mount_path:
            for v in pod_spec.get("volumes") or []:
                if v["name"] == m["name"] and "secret" in v:
                    return {i["path"] for i in v["secret"].get("items") or []}, v["secret"]["secretName"]
    return None, None


def check_consistency(compose, docs, overlay):
    errors = []
    deployments, configmaps = by_kind(docs, "Deployment"), by_kind(docs, "ConfigMap")
    services = app_services(compose)
    if not services:
        return ["docker-compose.yml: no service runs the streamshop image"]
    streamshop_deployments = {n for n, d in deployments.items()
                              if any(split_image(c["image"])[0].split("/")[-1] == "streamshop"
                                     for c in d["spec"]["template"]["spec"]["containers"])}
    for extra in sorted(streamshop_deployments - set(services)):
        errors.append(f"{overlay}: Deployment {extra} runs the streamshop image but compose has no such service")
    for name, svc in sorted(services.items()):
        where = f"{overlay}: {name}"
        dep = deployments.get(name)
        if dep is None:
            errors.append(f"{where}: compose runs it but there is no Deployment {name}")
            continue
        pod = dep["spec"]["template"]["spec"]
        containers = [c for c in pod["containers"] if c["name"] == name]
        if len(containers) != 1:
            errors.append(f"{where}: the Deployment has no container named {name}")
            continue
        c = containers[0]
        if svc.get("command") != c.get("command"):
            errors.append(f"{where}: command differs: compose {svc.get('command')}, Kubernetes {c.get('command')}")

        compose_ports = {int(p) for p in svc.get("expose") or []}
        k8s_ports = {p["containerPort"] for p in c.get("ports") or []}
        if compose_ports != k8s_ports:
            errors.append(f"{where}: container ports differ: compose exposes {sorted(compose_ports)}, "
                          f"the Deployment declares {sorted(k8s_ports)}")

        compose_env = svc.get("environment") or {}
        if isinstance(compose_env, list):
            compose_env = dict(e.split("=", 1) for e in compose_env)
        k8s_env = {e["name"]: e for e in c.get("env") or []}
        if c.get("envFrom"):
            errors.append(f"{where}: envFrom hides the variable names; list each in env")
        missing, extra = set(compose_env) - set(k8s_env), set(k8s_env) - set(compose_env)
        if missing:
            errors.append(f"{where}: environment variables in compose but not in the Deployment: {sorted(missing)}")
        if extra:
            errors.append(f"{where}: environment variables in the Deployment but not in compose: {sorted(extra)}")
        for var, entry in sorted(k8s_env.items()):
            ref = (entry.get("valueFrom") or {}).get("configMapKeyRef")
            if ref and env_value(entry, configmaps) is None:
                errors.append(f"{where}: {var} reads key {ref['key']} of ConfigMap {ref['name']}, which does not exist")
        # Values that tie the environment to ports and mounts must agree.
        for var in ("HTTP_ADDR", "TLS_DIR", "NATS_CREDENTIALS_DIR"):
            if var in compose_env and var in k8s_env:
                value = env_value(k8s_env[var], configmaps)
                if value is not None and str(value) != str(compose_env[var]):
                    errors.append(f"{where}: {var} is {compose_env[var]!r} in compose, {value!r} in Kubernetes")
        addr = env_value(k8s_env.get("HTTP_ADDR", {}), configmaps)
        if addr and int(str(addr).rsplit(":", 1)[1]) not in k8s_ports:
            errors.append(f"{where}: HTTP_ADDR {addr} is on no container port")

        # The files compose mounts into TLS_DIR and NATS_CREDENTIALS_DIR, from Secrets here.
        for var in ("TLS_DIR", "NATS_CREDENTIALS_DIR"):
            directory = compose_env.get(var)
            if not directory:
                continue
            wanted = {os.path.basename(v.split(":")[1]) for v in svc.get("volumes") or []
                      if isinstance(v, str) and os.path.dirname(v.split(":")[1]) == directory}
            files, secret = secret_files(pod, c, directory)
            if files is None:
                errors.append(f"{where}: nothing from a Secret is mounted at {var} {directory}")
            elif files != wanted:
                errors.append(f"{where}: {directory} holds {sorted(files)} (Secret {secret}), compose mounts {sorted(wanted)}")

        url, test = healthcheck_url(svc)
        if url is None:
            errors.append(f"{where}: the compose healthcheck calls no http(s):// URL ({test})")
            continue
        compose_port = url.port or (443 if url.scheme == "https" else 80)
        if url.path != "/readyz":
            errors.append(f"{where}: the compose healthcheck asks {url.path}, not /readyz")
        for kind, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = (c.get(kind) or {}).get("httpGet")
            if not get:
                errors.append(f"{where}: no {kind} with httpGet")
                continue
            port = resolve_port(c, get.get("port"))
            scheme = get.get("scheme", "HTTP").lower()
            if get.get("path") != path:
                errors.append(f"{where}: {kind} asks {get.get('path')}, not {path}")
            if port != compose_port:
                errors.append(f"{where}: {kind} is on port {port}, the compose healthcheck on {compose_port}")
            if scheme != url.scheme:
                errors.append(f"{where}: {kind} uses {scheme.upper()}, the compose healthcheck {url.scheme}")
        if url.scheme == "https":
            cacert = test[test.index("--cacert") + 1] if "--cacert" in test else None
            if not cacert or os.path.dirname(cacert) != compose_env.get("TLS_DIR"):
                errors.append(f"{where}: the compose healthcheck must trust the CA in TLS_DIR (--cacert), not {cacert}")
    return errors


def check_kubernetes_rules(docs, overlay):
    """What every service's Deployment must have, whatever compose says."""
    errors = []
    deployments = by_kind(docs, "Deployment")
    svcs, pdbs = by_kind(docs, "Service"), by_kind(docs, "PodDisruptionBudget")
    hpas, sos = by_kind(docs, "HorizontalPodAutoscaler"), by_kind(docs, "ScaledObject")
    for name, dep in sorted(deployments.items()):
        where = f"{overlay}: Deployment {name}"
        pod = dep["spec"]["template"]["spec"]
        labels = dep["spec"]["template"]["metadata"].get("labels") or {}
        psc = pod.get("securityContext") or {}
        if not psc.get("runAsNonRoot") or (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            errors.append(f"{where}: the pod must run as non-root with the RuntimeDefault seccomp profile")
        if "terminationGracePeriodSeconds" not in pod:
            errors.append(f"{where}: no terminationGracePeriodSeconds")
        for c in pod["containers"]:
            sc = c.get("securityContext") or {}
            if not (sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
                    and "ALL" in ((sc.get("capabilities") or {}).get("drop") or [])):
                errors.append(f"{where}: container {c['name']} needs readOnlyRootFilesystem, no privilege "
                              "escalation and all capabilities dropped")
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(res.get(part) or {}):
                    errors.append(f"{where}: container {c['name']} has no cpu and memory {part}")
            for probe in ("readinessProbe", "livenessProbe") if name != "oidc" else ("readinessProbe",):
                if probe not in c:
                    errors.append(f"{where}: container {c['name']} has no {probe}")
        selecting = lambda sel: sel and all(labels.get(k) == v for k, v in sel.items())
        if not any(selecting(s["spec"].get("selector")) for s in svcs.values()):
            errors.append(f"{where}: no Service selects its pods")
        if name != "oidc" and not any(selecting(p["spec"]["selector"].get("matchLabels")) for p in pdbs.values()):
            errors.append(f"{where}: no PodDisruptionBudget covers it")
    for kind, objects in (("HorizontalPodAutoscaler", hpas), ("ScaledObject", sos)):
        for name, o in objects.items():
            target = o["spec"]["scaleTargetRef"]["name"]
            if target not in deployments:
                errors.append(f"{overlay}: {kind} {name} scales {target}, which is no Deployment")
            elif "replicas" in deployments[target]["spec"]:
                errors.append(f"{overlay}: Deployment {target} sets replicas, which its {kind} owns")
    return errors


def referenced_secrets(docs):
    """(Secret, key or None) that the rendered resources need: an optional reference (the SMTP
    server's URL, which the operator gives when they want order emails) is not needed."""
    refs = set()
    for d in docs:
        for spec in pod_specs(d):
            for c in spec.get("containers") or []:
                for e in c.get("env") or []:
                    ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                    if ref and not ref.get("optional"):
                        refs.add((ref["name"], ref["key"]))
            for v in spec.get("volumes") or []:
                if "secret" in v:
                    items = v["secret"].get("items") or [{"key": None}]
                    refs |= {(v["secret"]["secretName"], i["key"]) for i in items}
        if d["kind"] == "Cluster":
            for role in (d["spec"].get("managed") or {}).get("roles") or []:
                refs.add((role["passwordSecret"]["name"], "password"))
            initdb = d["spec"].get("bootstrap", {}).get("initdb", {})
            if "secret" in initdb:
                refs.add((initdb["secret"]["name"], "password"))
    return refs


def nats_values():
    with open(NATS_VALUES) as f:
        return yaml.safe_load(f)


def nats_secrets(values):
    """(Secret, key) the NATS chart's values mount."""
    config = values["config"]
    refs = set()
    for part in (config["nats"], config["cluster"]):
        tls = part.get("tls") or {}
        if part is config["nats"] or part.get("enabled"):
            if tls.get("enabled"):
                refs |= {(tls["secretName"], tls.get("cert", "tls.crt")), (tls["secretName"], tls.get("key", "tls.key"))}
    ca = values.get("tlsCA") or {}
    if ca.get("enabled"):
        refs.add((ca["secretName"], ca.get("key", "ca.crt")))
    for op in (values.get("podTemplate") or {}).get("patch") or []:
        secret = (op.get("value") or {}).get("secret")
        if secret:
            refs.add((secret["secretName"], None))
    return refs


def check_nats_values(values, docs, overlay):
    """The chart's values give what the manifests assume: a 3-node JetStream cluster on file
    storage, TLS with client certificates, the monitoring port KEDA reads, the users."""
    errors = []
    config = values["config"]
    where = "nats/values.yaml"
    if not (config["cluster"].get("enabled") and config["cluster"].get("replicas") == 3):
        errors.append(f"{where}: the JetStream cluster must be enabled with 3 nodes")
    js = config.get("jetstream") or {}
    if not (js.get("enabled") and (js.get("fileStore") or {}).get("enabled", True)):
        errors.append(f"{where}: JetStream with file storage must be enabled")
    if not (config["nats"].get("tls") or {}).get("merge", {}).get("verify"):
        errors.append(f"{where}: client TLS must verify client certificates (verify: true)")
    if "limits" not in ((values.get("container") or {}).get("resources") or {}):
        errors.append(f"{where}: the nats container needs resource limits")
    if not any(k.endswith("$include") for k in (config.get("merge") or {})):
        errors.append(f"{where}: the users' authorization block is not included")
    monitor = config.get("monitor") or {}
    port = monitor.get("port", 8222)
    for so in by_kind(docs, "ScaledObject").values():
        namespace = so["metadata"].get("namespace")
        for t in so["spec"]["triggers"]:
            endpoint = t["metadata"].get("natsServerMonitoringEndpoint", "")
            want = f"nats-headless.{namespace}.svc.cluster.local:{port}"
            if endpoint != want or not monitor.get("enabled", True):
                errors.append(f"{overlay}: ScaledObject {so['metadata']['name']} reads {endpoint}, "
                              f"the chart's monitoring endpoint in namespace {namespace} is {want}")
    return errors


def make_secrets():
    """The Secrets make-secrets.sh prints (with the committed development keys, so nothing is
    made; STREAMSHOP_XTASK names the xtask binary, else it runs `cargo xtask`)."""
    with tempfile.TemporaryDirectory() as state:
        out = subprocess.run(["bash", SECRETS_SCRIPT, "--print", "--dev", "--state", state],
                             capture_output=True, text=True)
    if out.returncode != 0:
        raise CheckError(f"make-secrets.sh --print failed: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def check_secrets(docs, secrets, values, overlay):
    """Every Secret and key the manifests and the NATS values use is one make-secrets.sh makes."""
    made = {s["metadata"]["name"]: set(s.get("data") or {}) for s in secrets}
    errors = []
    for name, key in sorted(referenced_secrets(docs) | nats_secrets(values), key=str):
        if name not in made:
            errors.append(f"{overlay}: Secret {name} is used but make-secrets.sh does not make it")
        elif key and key not in made[name]:
            errors.append(f"{overlay}: Secret {name} is used with key {key}, which make-secrets.sh does not set "
                          f"(it sets {sorted(made[name])})")
    return errors


def check_compose_order(compose):
    """docker compose up starts in order: healthchecks that mean ready, dependencies on them."""
    errors = []
    services = compose["services"]
    pg = (services.get("postgres") or {}).get("healthcheck", {}).get("test") or []
    pg_text = " ".join(pg) if isinstance(pg, list) else pg
    if "127.0.0.1" not in pg_text:
        errors.append("compose: postgres's healthcheck must go over TCP (pg_isready -h 127.0.0.1): "
                      "the init scripts run on a server that listens on the socket only")
    for name, svc in sorted(app_services(compose).items()):
        if not svc.get("healthcheck"):
            errors.append(f"compose: {name} has no healthcheck")
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list) or not deps:
            errors.append(f"compose: {name} needs depends_on with conditions")
            continue
        for dep, cond in deps.items():
            if "healthcheck" in services.get(dep, {}) and cond.get("condition") != "service_healthy":
                errors.append(f"compose: {name} waits for {dep} to start, not to be healthy")
        needs = {"nats"} if "NATS_URL" in (svc.get("environment") or {}) else set()
        if "DATABASE_URL" in (svc.get("environment") or {}):
            needs.add("postgres")
        for dep in needs - set(deps):
            errors.append(f"compose: {name} does not wait for {dep}")
        limits = ((svc.get("deploy") or {}).get("resources") or {}).get("limits") or {}
        if not ({"cpus", "memory"} <= set(limits) or {"cpus", "mem_limit"} <= set(svc)):
            errors.append(f"compose: {name} has no cpu and memory limits")
    gateway = services.get("gateway") or {}
    for name in app_services(compose):
        if name != "gateway" and name not in (gateway.get("depends_on") or {}):
            errors.append(f"compose: the gateway does not wait for {name}")
    return errors


# ------------------------------------------------------------------------------------------
# Running the checks
# ------------------------------------------------------------------------------------------

def pinned_version():
    with open(os.path.join(DEPLOY, "requirements.txt")) as f:
        for line in f:
            m = re.match(r"\s*kubernetes-validate==([\w.]+)", line)
            if m:
                return m.group(1)
    return None


def all_checks(rendered, compose, crds, secrets, values):
    """[(name, errors)] of every check on rendered overlays {overlay: docs}."""
    results = [("make-secrets.sh: its Secrets validate", validate_resources(secrets, crds))]
    for overlay, docs in rendered.items():
        results.append((f"{overlay}: schemas (Kubernetes {KUBERNETES_VERSION} strict, KEDA and CloudNativePG CRDs)",
                        validate_resources(docs, crds)))
        results.append((f"{overlay}: compose and Kubernetes agree", check_consistency(compose, docs, overlay)))
        results.append((f"{overlay}: deployment rules and autoscalers", check_kubernetes_rules(docs, overlay)))
        results.append((f"{overlay}: make-secrets.sh makes every Secret used", check_secrets(docs, secrets, values, overlay)))
        results.append((f"{overlay}: the NATS chart's values fit", check_nats_values(values, docs, overlay)))
    results.append(("compose: starts in order", check_compose_order(compose)))
    return results


def report(results):
    failed = 0
    for name, errors in results:
        print(f"{'ok  ' if not errors else 'FAIL'} {name}" + (f" ({len(errors)} problems)" if errors else ""))
        for e in errors:
            print(f"       - {e}")
        failed += bool(errors)
    return failed


def self_test(rendered, compose, crds, secrets, values):
    """Mutates the rendered manifests and compose, and asserts each mutation is caught."""

    def dep(docs, name):
        return by_kind(docs, "Deployment")[name]

    def container(docs, name):
        return dep(docs, name)["spec"]["template"]["spec"]["containers"][0]

    def mutate_docs(fn):
        def run(docs, comp):
            fn(docs)
            return docs, comp
        return run

    def drop_env(docs):
        c = container(docs, "orders")
        c["env"] = [e for e in c["env"] if e["name"] != "NATS_URL"]

    def wrong_port(docs):
        container(docs, "inventory")["ports"][0]["containerPort"] = 9999

    def wrong_probe(docs):
        container(docs, "payments")["readinessProbe"]["httpGet"]["path"] = "/healthz"

    def http_probe(docs):
        container(docs, "query-api")["livenessProbe"]["httpGet"]["scheme"] = "HTTP"

    def unknown_field(docs):
        container(docs, "gateway")["imagePulPolicy"] = "Always"

    def wrong_type(docs):
        dep(docs, "orders")["spec"]["replicas"] = "two"

    def so_unknown(docs):
        by_kind(docs, "ScaledObject")["projections"]["spec"]["maxReplicas"] = 3

    def cluster_type(docs):
        by_kind(docs, "Cluster")["streamshop-pg"]["spec"]["instances"] = "three"

    def missing_key(docs):
        for e in container(docs, "orchestrator")["env"]:
            if e["name"] == "NATS_URL":
                e["valueFrom"]["configMapKeyRef"]["key"] = "NATS_ADDRESS"

    def missing_cert(docs):
        for v in dep(docs, "projections")["spec"]["template"]["spec"]["volumes"]:
            if v["name"] == "tls":
                v["secret"]["items"] = v["secret"]["items"][:2]

    def no_limits(docs):
        del container(docs, "orders")["resources"]["limits"]

    def root(docs):
        container(docs, "payments")["securityContext"]["readOnlyRootFilesystem"] = False

    def unknown_secret(docs):
        for e in container(docs, "orders")["env"]:
            if e["name"] == "DATABASE_URL":
                e["valueFrom"]["secretKeyRef"]["name"] = "orders-db"

    def keda_namespace(docs):
        so = by_kind(docs, "ScaledObject")["orchestrator"]
        so["spec"]["triggers"][0]["metadata"]["natsServerMonitoringEndpoint"] = "nats-headless.default.svc.cluster.local:8222"

    def compose_env(docs, comp):
        comp["services"]["query-api"]["environment"]["READ_YOUR_WRITES_TIMEOUT_MS"] = "2000"
        return docs, comp

    def compose_unhealthy_pg(docs, comp):
        comp["services"]["postgres"]["healthcheck"]["test"] = ["CMD", "pg_isready", "-U", "postgres"]
        return docs, comp

    def compose_no_wait(docs, comp):
        comp["services"]["gateway"]["depends_on"].pop("orders", None)
        return docs, comp

    mutations = [
        ("an environment variable removed from a Deployment", mutate_docs(drop_env), "but not in the Deployment"),
        ("a wrong container port", mutate_docs(wrong_port), "container ports differ"),
        ("a readiness probe on the wrong path", mutate_docs(wrong_probe), "readinessProbe asks"),
        ("a liveness probe over HTTP on a TLS service", mutate_docs(http_probe), "livenessProbe uses HTTP"),
        ("an unknown field in a container", mutate_docs(unknown_field), "imagePulPolicy"),
        ("a wrongly typed field in a Deployment", mutate_docs(wrong_type), "spec.replicas"),
        ("an unknown field in a ScaledObject", mutate_docs(so_unknown), "maxReplicas"),
        ("a wrongly typed field in a CloudNativePG Cluster", mutate_docs(cluster_type), "spec.instances"),
        ("an env var reading a missing ConfigMap key", mutate_docs(missing_key), "does not exist"),
        ("a certificate file missing from TLS_DIR", mutate_docs(missing_cert), "compose mounts"),
        ("a container without limits", mutate_docs(no_limits), "no cpu and memory limits"),
        ("a writable root filesystem", mutate_docs(root), "readOnlyRootFilesystem"),
        ("a Secret that make-secrets.sh does not make", mutate_docs(unknown_secret), "does not make it"),
        ("a KEDA trigger reading another namespace's NATS", mutate_docs(keda_namespace), "monitoring endpoint"),
        ("a compose variable the Deployment lacks", compose_env, "in compose but not in the Deployment"),
        ("postgres's healthcheck back on the socket", compose_unhealthy_pg, "over TCP"),
        ("the gateway not waiting for a service", compose_no_wait, "does not wait for orders"),
    ]
    failures = 0
    for what, mutate, expected in mutations:
        docs, comp = mutate(copy.deepcopy(rendered["production"]), copy.deepcopy(compose))
        errors = [e for _, errs in all_checks({"production": docs}, comp, crds, secrets, values) for e in errs]
        caught = [e for e in errors if expected in e]
        if caught:
            print(f"ok   self-test: {what}: caught ({caught[0].splitlines()[0][:150]})")
        else:
            failures += 1
            print(f"FAIL self-test: {what}: not caught (expected a message with {expected!r}; got {errors[:3]})")

    # The renderer refuses what it does not implement rather than guessing.
    k = os.path.join(KUBERNETES, "overlays", "production", "kustomization.yaml")
    with open(k) as f:
        text = f.read()
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        overlay = os.path.join(tmp, "overlays", "x")
        shutil.copytree(os.path.join(KUBERNETES, "overlays", "production"), overlay)
        shutil.copytree(os.path.join(KUBERNETES, "base"), os.path.join(tmp, "base"))
        with open(os.path.join(overlay, "kustomization.yaml"), "w") as f:
            f.write(text + "namePrefix: x-\n")
        try:
            render(overlay)
            failures += 1
            print("FAIL self-test: an unsupported kustomize feature: rendered anyway")
        except CheckError as e:
            print(f"ok   self-test: an unsupported kustomize feature: refused ({str(e)[:100]}...)")
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare-kubectl", action="store_true",
                        help="also compare the rendering with `kubectl kustomize` (skipped without kubectl)")
    parser.add_argument("--self-test", action="store_true",
                        help="mutate the manifests and compose, and check that every mutation is caught")
    parser.add_argument("--print", choices=OVERLAYS, help="print an overlay as rendered, and stop")
    args = parser.parse_args()

    pinned = pinned_version()
    from importlib.metadata import version
    print(f"kubernetes-validate {KUBERNETES_VALIDATE_VERSION} (pinned {pinned}), Kubernetes schemas "
          f"{KUBERNETES_VERSION} (strict), jsonschema {version('jsonschema')}, PyYAML {yaml.__version__}")
    if pinned != KUBERNETES_VALIDATE_VERSION:
        print(f"FAIL kubernetes-validate {KUBERNETES_VALIDATE_VERSION} is installed, deploy/requirements.txt "
              f"pins {pinned}: pip install -r deploy/requirements.txt")
        return 1

    try:
        rendered = {o: render(os.path.join(KUBERNETES, "overlays", o)) for o in OVERLAYS}
        crds = load_crds()
        secrets = make_secrets()
        values = nats_values()
    except (CheckError, OSError, yaml.YAMLError, KeyError) as e:
        print(f"FAIL rendering: {e}")
        return 1
    if args.print:
        print(yaml.safe_dump_all(rendered[args.print], sort_keys=False), end="")
        return 0
    for o, docs in rendered.items():
        print(f"ok   {o}: rendered {len(docs)} resources")
    compose = load_compose()

    if args.self_test:
        failures = self_test(rendered, compose, crds, secrets, values)
        print(f"self-test: {'all mutations caught' if not failures else f'{failures} mutations not caught'}")
        return 1 if failures else 0

    results = []
    if args.compare_kubectl:
        if shutil.which("kubectl"):
            for o in OVERLAYS:
                results.append((f"{o}: equal to `kubectl kustomize`", compare_with_kubectl(o, rendered[o])))
        else:
            print("skip compare with kubectl: no kubectl on PATH")
    results += all_checks(rendered, compose, crds, secrets, values)
    failed = report(results)
    if failed:
        print(f"check.py: {failed} of {len(results)} checks failed")
        return 1
    print(f"check.py: all {len(results)} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
