"""Kubernetes backend: the official `kubernetes` client against a real (or fake) API server.

Nothing is loaded at import: the kubeconfig (or the in-cluster service account) is read on the first
API call. Every API error becomes a kubecourse ApiError subclass that keeps the HTTP status, reason
and server message; 429 and 5xx answers (and refused connections) are retried a bounded number of
times with exponential backoff that honours Retry-After.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from .. import constants as C
from ..errors import (
    ApiError,
    ClusterUnreachable,
    Conflict,
    JobTimeout,
    NotFound,
    api_error_for_status,
)
from ..manifests import Manifest, object_id
from ..types import Event, JobRef, JobStatus, LogLine, PodStatus
from .base import Backend
from .config import KubernetesBackendConfig

_RETRYABLE = (429, 500, 502, 503, 504)


def _timestamp(value: Any) -> float | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def resource_path(
    obj_or_api_version: Manifest | str,
    kind: str | None = None,
    namespace: str | None = None,
    name: str | None = None,
) -> str:
    """REST path of a kind: /api/v1/namespaces/ns/pods or /apis/batch/v1/namespaces/ns/jobs/name."""
    if isinstance(obj_or_api_version, dict):
        obj = obj_or_api_version
        api_version, kind = obj["apiVersion"], obj["kind"]
        namespace = namespace or obj.get("metadata", {}).get("namespace")
    else:
        api_version = obj_or_api_version
    if kind not in C.RESOURCES:
        raise ApiError(
            f"the course does not know the REST plural of kind {kind!r}",
            status=None,
            reason="UnknownKind",
        )
    plural, namespaced = C.RESOURCES[kind]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespaced:
        base += f"/namespaces/{namespace or 'default'}"
    base += f"/{plural}"
    return f"{base}/{name}" if name else base


class KubernetesBackend(Backend):
    """Submits and follows jobs on the cluster named by a kubeconfig (or the in-cluster config)."""

    name = "kubernetes"

    def __init__(self, config: KubernetesBackendConfig | None = None):
        config = config or KubernetesBackendConfig()
        self.config = config
        self.kubeconfig = str(config.kubeconfig) if config.kubeconfig else None
        self.context = config.context
        self.max_attempts = 1 + max(0, config.retries)
        self.backoff_s = config.backoff_s
        self.request_timeout_s = config.request_timeout_s
        # A watch is re-opened at least this often (server-side timeout).
        self.watch_chunk_s = config.watch_chunk_s
        self.pod_start_timeout_s = config.pod_start_timeout_s  # CUDA image pulls take minutes
        self._api_client = None

    # ---------------------------------------------------------------------------------------------
    # Connection, requests, errors
    # ---------------------------------------------------------------------------------------------

    @property
    def api_client(self):
        """The kubernetes ApiClient, configured on first use (never at import)."""
        if self._api_client is None:
            from kubernetes import client, config

            configuration = client.Configuration()
            try:
                config.load_kube_config(
                    config_file=self.kubeconfig,
                    context=self.context,
                    client_configuration=configuration,
                )
            except (config.ConfigException, FileNotFoundError, TypeError) as kube_error:
                try:
                    config.load_incluster_config(client_configuration=configuration)
                except config.ConfigException as incluster_error:
                    raise ClusterUnreachable(
                        f"no kubeconfig ({kube_error}) and not in a pod ({incluster_error})"
                    ) from kube_error
            configuration.retries = (
                0  # retries are ours: bounded, logged, and honouring Retry-After
            )
            self._api_client = client.ApiClient(configuration)
        return self._api_client

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one API call with bounded retries; translate failures into kubecourse errors."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        for attempt in range(1, self.max_attempts + 1):
            try:
                return fn(*args, **kwargs)
            except ApiException as exc:
                status = exc.status or None
                message, reason = _status_message(exc)
                if status in _RETRYABLE and attempt < self.max_attempts:
                    time.sleep(self._delay(attempt, exc.headers))
                    continue
                raise api_error_for_status(status)(
                    f"{what} failed: {message}",
                    status=status,
                    reason=reason,
                    body=str(exc.body or ""),
                ) from exc
            except (Urllib3Error, ConnectionError, OSError) as exc:
                if attempt < self.max_attempts:
                    time.sleep(self._delay(attempt, None))
                    continue
                raise ClusterUnreachable(
                    f"{what} failed: cannot reach the API server at {self.api_client.configuration.host} ({exc})",
                    reason=type(exc).__name__,
                ) from exc
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, headers: Any) -> float:
        retry_after = (headers or {}).get("Retry-After") if headers else None
        if retry_after:
            try:
                return min(float(retry_after), 30.0)
            except ValueError:
                pass
        return self.backoff_s * (2 ** (attempt - 1))

    def _request(
        self, method: str, path: str, *, query: dict[str, Any] | None = None, body: Any = None
    ) -> Any:
        """A raw REST call for any kind (built-in or custom) returning the decoded JSON."""
        client = self.api_client
        params = client.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = client.call_api(*params, _request_timeout=self.request_timeout_s)
        response.read()
        if not 200 <= response.status <= 299:
            client.response_deserialize(
                response, {}
            )  # raises ApiException with status, reason, body
        return json.loads(response.data or b"null")

    # ---------------------------------------------------------------------------------------------
    # Backend verbs
    # ---------------------------------------------------------------------------------------------

    def submit(self, objects: list[Manifest], *, dry_run: bool = False) -> JobRef:
        query = {"fieldValidation": "Strict"}
        if dry_run:
            query["dryRun"] = "All"  # server-side dry run: admission and validation, nothing stored
        target = None
        for obj in objects:
            path = resource_path(obj)
            is_workload = obj.get("kind") in C.WORKLOAD_KINDS
            try:
                self._call(
                    f"create {object_id(obj)}", self._request, "POST", path, query=query, body=obj
                )
            except Conflict:
                if is_workload:
                    raise
                # Shared dependencies (the PVC holding the data set, a ConfigMap) outlive jobs:
                # the next job reuses them as they are, like the local backend's PVC folders.
                print(f"exists, reused: {object_id(obj)}")
            if is_workload:
                target = obj
        if target is None:
            raise ApiError(
                "nothing to follow: the manifests contain no workload", reason="NoWorkload"
            )
        meta = target["metadata"]
        return JobRef(
            meta["name"], meta.get("namespace", "default"), target["kind"], dry_run=dry_run
        )

    def apply_objects(self, objects: list[Manifest], *, dry_run: bool = False) -> list[str]:
        query = {"fieldValidation": "Strict"}
        if dry_run:
            query["dryRun"] = "All"
        results = [""] * len(objects)
        for i in _creation_order(objects):
            obj = objects[i]
            try:
                self._call(
                    f"create {object_id(obj)}",
                    self._request,
                    "POST",
                    resource_path(obj),
                    query=query,
                    body=obj,
                )
                results[i] = "dry run" if dry_run else "created"
            except Conflict:
                results[i] = "exists"  # left as it is, like `kubectl create` would
        return results

    def delete_objects(self, objects: list[Manifest]) -> list[str]:
        results = [""] * len(objects)
        for i in reversed(_creation_order(objects)):
            obj = objects[i]
            try:
                self._call(
                    f"delete {object_id(obj)}",
                    self._request,
                    "DELETE",
                    resource_path(obj, name=obj["metadata"]["name"]),
                    query={"propagationPolicy": "Foreground"},
                )
                results[i] = "deleted"
            except NotFound:
                results[i] = "absent"  # already gone (or taken along with its namespace)
        return results

    def get_objects(self, objects: list[Manifest]) -> list[Manifest | None]:
        found = []
        for obj in objects:
            path = resource_path(obj, name=obj["metadata"]["name"])
            try:
                found.append(self._call(f"get {object_id(obj)}", self._request, "GET", path))
            except NotFound:
                found.append(None)
        return found

    def _get_job(self, name: str, namespace: str) -> Manifest:
        return self._call(
            f"get Job/{name}",
            self._request,
            "GET",
            resource_path("batch/v1", "Job", namespace, name),
        )

    def _list_job(self, name: str, namespace: str) -> tuple[Manifest, str | None]:
        """The Job and the list's resourceVersion: a watch must start from the collection's
        version, because the object's own version may already be compacted away (410 again)."""
        listing = self._call(
            f"list Job/{name}",
            self._request,
            "GET",
            resource_path("batch/v1", "Job", namespace),
            query={"fieldSelector": f"metadata.name={name}"},
        )
        items = listing.get("items") or []
        if not items:
            raise NotFound(f"Job {namespace}/{name} not found", status=404, reason="NotFound")
        return items[0], (listing.get("metadata") or {}).get("resourceVersion")

    def _list(self, what: str, kind: str, namespace: str, **query: str) -> list[Manifest]:
        """Items of a core/v1 list (pods, events) in a namespace, filtered by selectors."""
        path = resource_path("v1", kind, namespace)
        return self._call(what, self._request, "GET", path, query=query).get("items") or []

    def _pods(self, name: str, namespace: str) -> list[Manifest]:
        pods = self._list(
            f"list pods of Job/{name}", "Pod", namespace, labelSelector=f"{C.JOB_NAME_LABEL}={name}"
        )
        return sorted(pods, key=_pod_sort_key)

    def status(self, ref: JobRef) -> JobStatus:
        name, namespace = ref.name, ref.namespace
        return self._job_status(self._get_job(name, namespace), self._pods(name, namespace))

    def pod_objects(self, ref: JobRef) -> list[Manifest]:
        return self._pods(ref.name, ref.namespace)  # as the API server has them

    def wait(
        self,
        ref: JobRef,
        *,
        timeout_s: float,
        on_update: Callable[[JobStatus], None] | None = None,
    ) -> JobStatus:
        """Follow the Job with a watch stream; re-open it after drops and on 410 Gone re-list it."""
        from kubernetes import watch
        from kubernetes.client import CustomObjectsApi
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        name, namespace = ref.name, ref.namespace
        deadline = time.monotonic() + timeout_s
        job, resource_version = self._list_job(name, namespace)
        status = self._job_status(job, [])
        if on_update:
            on_update(status)
        custom = CustomObjectsApi(self.api_client)
        drops = 0
        while not status.done:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise JobTimeout(
                    f"job {namespace}/{name} still {status.phase} after {timeout_s:.0f} s"
                )
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    custom.list_namespaced_custom_object,
                    "batch",
                    "v1",
                    namespace,
                    "jobs",
                    field_selector=f"metadata.name={name}",
                    resource_version=resource_version,
                    timeout_seconds=max(1, int(min(remaining, self.watch_chunk_s))),
                    _request_timeout=min(remaining, self.watch_chunk_s) + 10,
                ):
                    obj = event["object"]
                    resource_version = obj.get("metadata", {}).get(
                        "resourceVersion", resource_version
                    )
                    if event["type"] == "DELETED":
                        raise NotFound(
                            f"Job {namespace}/{name} was deleted while waiting",
                            status=404,
                            reason="Deleted",
                        )
                    if event["type"] == "BOOKMARK":
                        continue
                    status = self._job_status(obj, [])
                    if on_update:
                        on_update(status)
                    if status.done:
                        stream.stop()
                        break
                drops = 0
            except ApiException as exc:
                if exc.status in _RETRYABLE and drops + 1 < self.max_attempts:
                    drops += 1
                    time.sleep(self._delay(drops, exc.headers))
                    continue
                if exc.status != 410:
                    raise api_error_for_status(exc.status)(
                        f"watch Job/{name} failed", status=exc.status, reason=str(exc.reason)
                    ) from exc
                # 410 Gone: our resourceVersion was compacted away; start over from a fresh list.
                job, resource_version = self._list_job(name, namespace)
                status = self._job_status(job, [])
                if on_update:
                    on_update(status)
            except (Urllib3Error, OSError) as exc:
                drops += 1
                if drops >= self.max_attempts:
                    raise ClusterUnreachable(
                        f"watch Job/{name} kept dropping: {exc}", reason=type(exc).__name__
                    ) from exc
                time.sleep(self._delay(drops, None))
        return self._job_status(self._get_job(name, namespace), self._pods(name, namespace))

    def logs(
        self,
        ref: JobRef,
        *,
        follow: bool = False,
        index: int | None = None,
        tail_lines: int | None = None,
    ) -> Iterator[LogLine]:
        """Logs of every pod of the job, one pod after the other (see client.logs for merging)."""
        from kubernetes.client import CoreV1Api

        name, namespace = ref.name, ref.namespace
        core = CoreV1Api(self.api_client)
        pods = self._pods(name, namespace)
        if follow and not pods:
            # Right after submit the Job controller has not made its pods yet: watch for them.
            pods = self._wait_for_pods(name, namespace, timeout_s=self.pod_start_timeout_s)
        for pod in pods:
            pod_index = _pod_index(pod)
            if index is not None and pod_index != index:
                continue
            containers = [c["name"] for c in pod.get("spec", {}).get("containers") or []]
            container = (
                "trainer" if "trainer" in containers else (containers[0] if containers else None)
            )
            kwargs = {"follow": follow, "_preload_content": False}
            if container:
                kwargs["container"] = container
            if tail_lines is not None:
                kwargs["tail_lines"] = tail_lines
            pod_name = pod["metadata"]["name"]
            try:
                response = self._call(
                    f"logs of Pod/{pod_name}",
                    core.read_namespaced_pod_log,
                    pod_name,
                    namespace,
                    **kwargs,
                )
            except ApiError as error:
                # Following a pod whose container has not started yet answers 400 "is waiting to
                # start" (kubectl logs -f fails the same way): watch the pod start, then follow.
                if not (follow and error.status == 400 and "waiting to start" in str(error)):
                    raise
                self._wait_pod_started(pod_name, namespace, timeout_s=self.pod_start_timeout_s)
                response = self._call(
                    f"logs of Pod/{pod_name}",
                    core.read_namespaced_pod_log,
                    pod_name,
                    namespace,
                    **kwargs,
                )
            try:
                buffer = b""
                for chunk in response.stream(4096):
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        yield LogLine(
                            pod["metadata"]["name"], pod_index, line.decode(errors="replace")
                        )
                if buffer:
                    yield LogLine(
                        pod["metadata"]["name"], pod_index, buffer.decode(errors="replace")
                    )
            finally:
                response.release_conn()

    def _wait_for_pods(self, name: str, namespace: str, *, timeout_s: float) -> list[Manifest]:
        """Block on a watch of the job's pods until the first one exists; then list them all."""
        from kubernetes import watch
        from kubernetes.client import CoreV1Api

        stream = watch.Watch()
        for _ in stream.stream(
            CoreV1Api(self.api_client).list_namespaced_pod,
            namespace,
            label_selector=f"{C.JOB_NAME_LABEL}={name}",
            timeout_seconds=max(1, int(timeout_s)),
            _request_timeout=timeout_s + 10,
        ):
            stream.stop()
            return self._pods(name, namespace)
        raise JobTimeout(f"Job {namespace}/{name} made no pod within {timeout_s:.0f} s")

    def _wait_pod_started(self, pod_name: str, namespace: str, *, timeout_s: float) -> None:
        """Block on a watch of one pod until it leaves Pending (its containers have started)."""
        from kubernetes import watch
        from kubernetes.client import CoreV1Api

        core = CoreV1Api(self.api_client)
        stream = watch.Watch()
        for event in stream.stream(
            core.list_namespaced_pod,
            namespace,
            field_selector=f"metadata.name={pod_name}",
            timeout_seconds=max(1, int(timeout_s)),
            _request_timeout=timeout_s + 10,
        ):
            phase = ((event["raw_object"].get("status") or {}).get("phase")) or C.PENDING
            if phase != C.PENDING:
                stream.stop()
                return
        raise JobTimeout(f"pod {namespace}/{pod_name} did not start within {timeout_s:.0f} s")

    def events(self, ref: JobRef) -> list[Event]:
        name, namespace = ref.name, ref.namespace
        involved = [name] + [p["metadata"]["name"] for p in self._pods(name, namespace)]
        out = []
        for obj_name in involved:
            items = self._list(
                f"events of {obj_name}",
                "Event",
                namespace,
                fieldSelector=f"involvedObject.name={obj_name}",
            )
            for item in items:
                ref = item.get("involvedObject") or {}
                when = (
                    _timestamp(
                        item.get("lastTimestamp")
                        or item.get("eventTime")
                        or item.get("firstTimestamp")
                        or item.get("metadata", {}).get("creationTimestamp")
                    )
                    or 0.0
                )
                out.append(
                    Event(
                        when,
                        item.get("type", "Normal"),
                        item.get("reason", ""),
                        f"{ref.get('kind', '?')}/{ref.get('name', obj_name)}",
                        item.get("message", ""),
                        int(item.get("count") or 1),
                    )
                )
        return sorted(out, key=lambda e: e.time)

    def delete(self, ref: JobRef, *, missing_ok: bool = False, volumes: bool = False) -> None:
        name, namespace = ref.name, ref.namespace
        # Foreground: the Job disappears only after its pods are gone, so a re-submit never races them.
        try:
            self._call(
                f"delete Job/{name}",
                self._request,
                "DELETE",
                resource_path("batch/v1", "Job", namespace, name),
                query={"propagationPolicy": "Foreground"},
                body={
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "propagationPolicy": "Foreground",
                },
            )
        except NotFound:
            if not missing_ok:
                raise

    def close(self) -> None:
        if self._api_client is not None:
            self._api_client.close()
            self._api_client = None

    # ---------------------------------------------------------------------------------------------
    # Translating API objects into the shared types
    # ---------------------------------------------------------------------------------------------

    @staticmethod
    def _job_status(job: Manifest, pods: list[Manifest]) -> JobStatus:
        meta, status = job.get("metadata", {}), job.get("status") or {}
        conditions = {
            c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"
        }
        phase, reason, message = C.PENDING, "", ""
        if "Complete" in conditions:
            phase = C.SUCCEEDED
        elif "Failed" in conditions:
            phase, reason, message = (
                C.FAILED,
                conditions["Failed"].get("reason", ""),
                conditions["Failed"].get("message", ""),
            )
        elif status.get("active") or any(
            (p.get("status") or {}).get("phase") == C.RUNNING for p in pods
        ):
            phase = C.RUNNING
        elif "Suspended" in conditions:
            reason = "Suspended"  # e.g. waiting for Kueue admission
        return JobStatus(
            meta.get("name", ""),
            meta.get("namespace", "default"),
            phase,
            reason,
            message,
            int(status.get("succeeded") or 0),
            int(status.get("failed") or 0),
            int(status.get("active") or 0),
            [_pod_status(p) for p in pods],
            _timestamp(status.get("startTime")),
            _timestamp(status.get("completionTime")),
        )


def _creation_order(objects: list[Manifest]) -> list[int]:
    """Indices of `objects` with dependencies first (constants.KIND_ORDER), stable otherwise."""
    rank = {kind: i for i, kind in enumerate(C.KIND_ORDER)}
    return sorted(
        range(len(objects)), key=lambda i: rank.get(objects[i].get("kind", ""), len(rank))
    )


def _pod_index(pod: Manifest) -> int | None:
    meta = pod.get("metadata", {})
    value = (meta.get("annotations") or {}).get(C.COMPLETION_INDEX_ANNOTATION) or (
        meta.get("labels") or {}
    ).get(C.COMPLETION_INDEX_ANNOTATION)
    return int(value) if value is not None else None


def _pod_sort_key(pod: Manifest) -> tuple:
    index = _pod_index(pod)
    return (
        index if index is not None else -1,
        pod.get("metadata", {}).get("creationTimestamp") or "",
        pod["metadata"]["name"],
    )


def _pod_status(pod: Manifest) -> PodStatus:
    status = pod.get("status") or {}
    exit_code, reason, restarts = None, status.get("reason", ""), 0
    for container in status.get("containerStatuses") or []:
        restarts += int(container.get("restartCount") or 0)
        state = container.get("state") or {}
        if "terminated" in state:
            exit_code = state["terminated"].get("exitCode")
            reason = state["terminated"].get("reason", reason)
        elif "waiting" in state:
            reason = state["waiting"].get("reason", reason)
    return PodStatus(
        pod["metadata"]["name"],
        _pod_index(pod),
        status.get("phase", C.PENDING),
        exit_code,
        reason,
        restarts,
    )


def _status_message(exc: Any) -> tuple[str, str]:
    """The server's Status message and reason from an ApiException, falling back to its text."""
    try:
        body = json.loads(exc.body)
        return body.get("message") or str(exc.reason), body.get("reason") or str(exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason or exc), str(exc.reason or "")
