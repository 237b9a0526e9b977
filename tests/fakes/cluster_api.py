"""What the instructor tools need from a cluster, on top of the fake API server's object store.

    with FakeApiServer() as api:
        cluster = FakeCluster(api, gpu_nodes=2).install()
        ...  # doctor, workshop creds/status talk to api.url

- `/version` answers the configured Kubernetes version.
- `/apis` (discovery) lists only the groups and versions configured as served: the built-in ones
  and the CRDs of the operators this fake cluster "has installed".
- Nodes with `nvidia.com/gpu` allocatable and the GPU Operator's labels, a default and an RWX
  StorageClass are seeded as objects.
- TokenRequest (`POST .../serviceaccounts/<sa>/token`) issues a token naming the ServiceAccount
  with an expiry. A request carrying such a token is authorized the way RBAC would: by the Roles
  bound to that ServiceAccount in the request's namespace (403 with the real message otherwise).
  The kubeconfig token of `write_kubeconfig` stays the all-powerful admin.
- SelfSubjectAccessReview answers from the same RBAC evaluation.
(A namespaced create in a namespace that does not exist is a 404 in the fake itself, as on a
real server, where a dry-run Namespace is not stored.)
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from tests.fakes.apiserver import ApiError, FakeApiServer

KUBERNETES_VERSION = ("1", "34")
BUILTIN_GROUPS = {
    "apps": ["v1"],
    "batch": ["v1"],
    "policy": ["v1"],
    "networking.k8s.io": ["v1"],
    "rbac.authorization.k8s.io": ["v1"],
    "scheduling.k8s.io": ["v1"],
    "storage.k8s.io": ["v1"],
    "authorization.k8s.io": ["v1"],
    "authentication.k8s.io": ["v1"],
    "apiextensions.k8s.io": ["v1"],
    "coordination.k8s.io": ["v1"],
}
# The operators' API groups at the versions the course's manifests use.
OPERATOR_GROUPS = {
    "kueue.x-k8s.io": ["v1beta2", "v1beta1"],
    "jobset.x-k8s.io": ["v1alpha2"],
    "trainer.kubeflow.org": ["v1alpha1"],
    "kubeflow.org": ["v1"],
    "batch.volcano.sh": ["v1alpha1"],
    "scheduling.volcano.sh": ["v1beta1"],
    "monitoring.coreos.com": ["v1"],
}
_TOKEN_PREFIX = "fake-sa."
_OPEN_PATHS = ("/version", "/api", "/apis", "/healthz", "/readyz", "/livez")


@dataclass
class FakeCluster:
    api: FakeApiServer
    version: tuple[str, str] = KUBERNETES_VERSION
    groups: dict[str, list[str]] = field(
        default_factory=lambda: {**BUILTIN_GROUPS, **OPERATOR_GROUPS}
    )
    gpu_nodes: int = 2
    gpus_per_node: int = 8
    cpu_nodes: int = 1
    storage_classes: tuple[tuple[str, bool, bool], ...] = (
        ("standard", True, False),
        ("nfs", False, True),
    )
    tokens: dict[str, dict] = field(default_factory=dict)

    def install(self) -> FakeCluster:
        self._seed()
        self.api.routes.append(self._route)
        return self

    # -- seeded objects ----------------------------------------------------------------------------

    def _seed(self) -> None:
        for i in range(self.gpu_nodes):
            self.api.put_object(gpu_node(f"gpu-node-{i}", self.gpus_per_node))
        for i in range(self.cpu_nodes):
            self.api.put_object(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": f"cpu-node-{i}", "labels": {}},
                    "status": {"allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"}},
                }
            )
        for name, default, rwx in self.storage_classes:
            annotations = {"storageclass.kubernetes.io/is-default-class": "true"} if default else {}
            labels = {"course.kubecourse.dev/access-modes": "ReadWriteMany"} if rwx else {}
            self.api.put_object(
                {
                    "apiVersion": "storage.k8s.io/v1",
                    "kind": "StorageClass",
                    "metadata": {"name": name, "annotations": annotations, "labels": labels},
                    "provisioner": "nfs.csi.k8s.io" if rwx else "rancher.io/local-path",
                }
            )

    # -- the route hook ----------------------------------------------------------------------------

    def _route(self, handler, method: str, path: str, query: dict, body):
        path = path.rstrip("/") or "/"
        user = self._user(handler.headers.get("Authorization", ""))
        if path == "/version" and method == "GET":
            major, minor = self.version
            return 200, {"major": major, "minor": minor, "gitVersion": f"v{major}.{minor}.0"}
        if path == "/apis" and method == "GET":
            return 200, {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [_group(g, vs) for g, vs in self.groups.items()],
            }
        if path.endswith("/selfsubjectaccessreviews") and method == "POST":
            attributes = (body.get("spec") or {}).get("resourceAttributes") or {}
            allowed = user is None or self.allowed(user, attributes)
            return 201, {**body, "status": {"allowed": allowed}}
        if user is not None and path not in _OPEN_PATHS:
            self._authorize(user, method, path, query)
        parts = [p for p in path.split("/") if p]
        if method == "POST" and parts[-1:] == ["token"] and "serviceaccounts" in parts:
            return self._token(parts, body or {})
        return None

    def _token(self, parts: list[str], body: dict):
        namespace, account = parts[parts.index("namespaces") + 1], parts[-2]
        if self.api.get("serviceaccounts", account, namespace) is None:
            raise ApiError(404, "NotFound", f'serviceaccounts "{account}" not found')
        expiry = int((body.get("spec") or {}).get("expirationSeconds") or 3600)
        if expiry < 600:
            raise ApiError(
                422,
                "Invalid",
                "spec.expirationSeconds: may not specify a duration less than 10 minutes",
            )
        expires = datetime.now(timezone.utc) + timedelta(seconds=expiry)
        claims = {"ns": namespace, "sa": account, "exp": int(time.time()) + expiry}
        token = _TOKEN_PREFIX + base64.urlsafe_b64encode(json.dumps(claims).encode()).decode()
        self.tokens[token] = claims
        status = {"token": token, "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}
        return 201, {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": body.get("spec") or {},
            "status": status,
        }

    # -- RBAC --------------------------------------------------------------------------------------

    def _user(self, header: str) -> dict | None:
        token = header.removeprefix("Bearer ").strip()
        if not token.startswith(_TOKEN_PREFIX):
            return None  # the admin
        claims = self.tokens.get(token)
        if claims is None or claims["exp"] < time.time():
            raise ApiError(401, "Unauthorized", "Unauthorized")
        return claims

    def allowed(self, user: dict, attributes: dict) -> bool:
        namespace = attributes.get("namespace") or ""
        resource = attributes.get("resource", "")
        if attributes.get("subresource"):
            resource += "/" + attributes["subresource"]
        want = (attributes.get("verb", ""), attributes.get("group", ""), resource)
        if not namespace:
            return False  # the learner is bound only inside namespaces
        for binding in self.api.objects(
            "rolebindings", namespace, group="rbac.authorization.k8s.io"
        ):
            subjects = binding.get("subjects") or []
            if not any(
                s.get("kind") == "ServiceAccount"
                and s.get("name") == user["sa"]
                and s.get("namespace", namespace) == user["ns"]
                for s in subjects
            ):
                continue
            role = self.api.get(
                "roles", binding["roleRef"]["name"], namespace, group="rbac.authorization.k8s.io"
            )
            for rule in (role or {}).get("rules") or []:
                if (
                    want[0] in rule.get("verbs", [])
                    and want[1] in rule.get("apiGroups", [])
                    and want[2] in rule.get("resources", [])
                ):
                    return True
        return False

    def _authorize(self, user: dict, method: str, path: str, query: dict) -> None:
        attributes = request_attributes(method, path, query)
        if attributes is None or self.allowed(user, attributes):
            return
        who = f"system:serviceaccount:{user['ns']}:{user['sa']}"
        resource, group = attributes["resource"], attributes["group"]
        qualified = f"{resource}.{group}" if group else resource
        where = (
            f' in the namespace "{attributes["namespace"]}"'
            if attributes.get("namespace")
            else " at the cluster scope"
        )
        sub = f"/{attributes['subresource']}" if attributes.get("subresource") else ""
        raise ApiError(
            403,
            "Forbidden",
            f'{qualified} is forbidden: User "{who}" cannot {attributes["verb"]} resource '
            f'"{resource}{sub}" in API group "{group}"{where}',
        )


def request_attributes(method: str, path: str, query: dict) -> dict | None:
    """The authorizer's view of a request (verb, group, resource, subresource, namespace)."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    namespace = ""
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return None
    named = len(rest) >= 2
    if method == "GET":
        verb = (
            "watch"
            if str(query.get("watch", "")).lower() in ("true", "1")
            else ("get" if named else "list")
        )
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
        if method == "DELETE" and not named:
            verb = "deletecollection"
    attributes = {"verb": verb, "group": group, "resource": rest[0], "namespace": namespace}
    if len(rest) >= 3:
        attributes["subresource"] = rest[2]
    return attributes


def gpu_node(name: str, gpus: int, product: str = "NVIDIA-H100-80GB-HBM3") -> dict:
    """A node as the GPU Operator leaves it: allocatable GPUs and the feature-discovery labels."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": product,
                "nvidia.com/gpu.count": str(gpus),
                "nvidia.com/gpu.deploy.device-plugin": "true",
            },
        },
        "status": {
            "allocatable": {
                "cpu": "96",
                "memory": "1500Gi",
                "nvidia.com/gpu": str(gpus),
                "pods": "110",
            }
        },
    }


def _group(name: str, versions: list[str]) -> dict:
    docs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": docs, "preferredVersion": docs[0]}
