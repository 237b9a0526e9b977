"""A small read-mostly view of a cluster for the instructor tools (doctor, workshop creds/status).

    api = ClusterApi()                      # the kubeconfig kubectl would use, read on first call
    api.version()                           # {"gitVersion": "v1.34.0", ...}
    api.can_i("create", "batch", "jobs", namespace="learner-01")   # SelfSubjectAccessReview
    api.request("GET", "/api/v1/nodes")     # any REST path, decoded JSON

It talks through the official `kubernetes` client (loaded lazily, never at import) and turns every
failure into the kubecourse ApiError for its HTTP status, with the server's message and the cause.
The training backends stay the only way to run jobs; this is for the objects around them.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import ClusterUnreachable, api_error_for_status


class ClusterApi:
    """REST calls to the cluster named by a kubeconfig (or the in-cluster service account)."""

    def __init__(
        self, kubeconfig: str | None = None, context: str | None = None, timeout_s: float = 10.0
    ):
        self.kubeconfig = kubeconfig
        self.context = context
        self.timeout_s = timeout_s
        self._client = None

    @property
    def api_client(self):
        if self._client is None:
            from kubernetes import client, config

            configuration = client.Configuration()
            try:
                config.load_kube_config(
                    config_file=self.kubeconfig,
                    context=self.context,
                    client_configuration=configuration,
                )
            except (config.ConfigException, FileNotFoundError, TypeError) as error:
                raise ClusterUnreachable(f"cannot load the kubeconfig: {error}") from error
            configuration.retries = 0
            self._client = client.ApiClient(configuration)
        return self._client

    @property
    def server(self) -> str:
        """The API server's URL, as the kubeconfig names it."""
        return self.api_client.configuration.host

    def ca_data(self) -> str | None:
        """The cluster CA certificate (PEM) the kubeconfig trusts, None when it names none."""
        path = self.api_client.configuration.ssl_ca_cert
        if not path:
            return None
        with open(path, encoding="utf-8") as handle:
            return handle.read()

    def request(
        self, method: str, path: str, *, query: dict[str, Any] | None = None, body: Any = None
    ) -> Any:
        """One REST call; the decoded JSON answer. Raises the ApiError subclass of the status."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        what = f"{method} {path}"
        client = self.api_client
        try:
            params = client.param_serialize(
                method,
                path,
                query_params=list((query or {}).items()),
                header_params={"Accept": "application/json", "Content-Type": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
            )
            response = client.call_api(*params, _request_timeout=self.timeout_s)
            response.read()
            if not 200 <= response.status <= 299:
                client.response_deserialize(response, {})  # raises ApiException
            return json.loads(response.data or b"null")
        except ApiException as error:
            message, reason = _status_of(error)
            raise api_error_for_status(error.status)(
                f"{what} failed: {message}",
                status=error.status,
                reason=reason,
                body=str(error.body or ""),
            ) from error
        except (HTTPError, OSError) as error:
            raise ClusterUnreachable(
                f"{what} failed: cannot reach the API server at {client.configuration.host} ({error})",
                reason=type(error).__name__,
            ) from error

    def version(self) -> dict:
        return self.request("GET", "/version")

    def can_i(self, verb: str, group: str, resource: str, namespace: str | None = None) -> bool:
        """SelfSubjectAccessReview: may the caller do `verb` on `resource`? (`pods/log` is the
        resource `pods` with subresource `log`.)"""
        plural, _, sub = resource.partition("/")
        attributes = {"verb": verb, "group": group, "resource": plural}
        if sub:
            attributes["subresource"] = sub
        if namespace:
            attributes["namespace"] = namespace
        review = self.request(
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            body={
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attributes},
            },
        )
        return bool((review.get("status") or {}).get("allowed"))

    def token(self, namespace: str, service_account: str, expiry_s: int) -> dict:
        """A bound ServiceAccount token through the TokenRequest API: {"token", "expirationTimestamp"}."""
        answer = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
            body={
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": int(expiry_s)},
            },
        )
        return answer.get("status") or {}

    def list(self, path: str, **query: str) -> list[dict]:
        return self.request("GET", path, query=query or None).get("items") or []

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _status_of(error) -> tuple[str, str]:
    try:
        status = json.loads(error.body or "{}")
        return status.get("message") or str(error.reason), status.get("reason") or str(error.reason)
    except (TypeError, ValueError):
        return str(error.reason or error), str(error.reason or "")


def pinned_versions(path: str | None = None) -> dict[str, str]:
    """cluster/versions.env as a dict: the pinned chart versions and the minimum Kubernetes
    version that the docs, scripts/cluster-up.sh, the tests and `kubecourse doctor` share."""
    from pathlib import Path

    from .manifests import repo_root

    text = Path(path or repo_root() / "cluster" / "versions.env").read_text()
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.lstrip().startswith("#")}


__all__ = ["ClusterApi", "pinned_versions"]
