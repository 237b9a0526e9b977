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
from typing import Any

from .. import constants as C
from ..errors import (
    ApiError,
    ClusterUnreachable,
    Conflict,
    JobTimeout,
    NotFound,
    PodNotStarted,
    api_error_for_status,
)
from ..manifests import Manifest, object_id
from ..types import Event, JobRef, JobStatus, LogLine
from . import workloads as W
from .base import Backend
from .config import KubernetesBackendConfig
from .kubernetes_volumes import KubernetesOutputs
from .outputs import JobOutputs

_RETRYABLE = (429, 500, 502, 503, 504)


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


class KubernetesBackend(Backend, KubernetesOutputs, JobOutputs):
    """Submits and follows jobs on the cluster named by a kubeconfig (or the in-cluster config)."""

    name = "kubernetes"
    runs_images = True

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
        self.follow_poll_s = 0.2  # following logs: seconds between looks for a replacement pod
        self._api_client = None
        # What each submit of this backend created besides the workload, so delete() removes it
        # (objects in the workload's namespace also get an ownerReference: the garbage collector
        # removes those even when another process deletes the job).
        self._created: dict[tuple[str, str, str], list[Manifest]] = {}

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
                status = exc.status or None  # 0: the client got no HTTP answer at all
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
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """A raw REST call for any kind (built-in or custom) returning the decoded JSON."""
        client = self.api_client
        params = client.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params={"Accept": "application/json", "Content-Type": content_type},
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
    # submit: dry run everything, then create everything, or nothing
    # ---------------------------------------------------------------------------------------------

    def submit(self, objects: list[Manifest], *, dry_run: bool = False) -> JobRef:
        """Server-side dry run (dryRun=All, fieldValidation=Strict) of every object in dependency
        order, then create them in that order. Any failure deletes what this submit created and
        raises the server's error. Dependencies that exist already (a PVC of an earlier run) are
        reused as they are; an existing workload is a Conflict."""
        order = [objects[i] for i in _creation_order(objects)]
        workloads = [o for o in order if o.get("kind") in C.WORKLOAD_KINDS]
        if not workloads:
            raise ApiError(
                "nothing to follow: the manifests contain no workload", reason="NoWorkload"
            )
        target = workloads[-1]
        created: list[Manifest] = []
        reused: list[str] = []
        try:
            unchecked = self._namespaces_first(order, dry_run, created, reused)
            self._dry_run(order, unchecked, reused)
            if not dry_run:
                self._create(order, created, reused)
                self._own(target, created)
        except BaseException:
            self._roll_back(created)
            raise
        meta = target["metadata"]
        ref = JobRef(
            meta["name"], meta.get("namespace", "default"), target["kind"], dry_run=dry_run,
            api_version=target["apiVersion"], created=tuple(object_id(o) for o in created),
            reused=tuple(reused),
        )  # fmt: skip
        if not dry_run:
            self._created[(ref.namespace, ref.kind, ref.name)] = [
                o for o in created if object_id(o) != object_id(target)
            ]
        return ref

    def _post(self, obj: Manifest, *, dry_run: bool) -> Manifest:
        query = {**({"dryRun": "All"} if dry_run else {}), "fieldValidation": "Strict"}
        what = f"{'server-side dry run of' if dry_run else 'create'} {object_id(obj)}"
        return self._call(what, self._request, "POST", resource_path(obj), query=query, body=obj)

    def _namespaces_first(
        self, order: list[Manifest], dry_run: bool, created: list[Manifest], reused: list[str]
    ) -> set[str]:
        """A Namespace this submit brings is created before the dry run of anything else: the
        server does not store dry-run objects, so the objects inside a dry-run namespace would be
        answered 404 `namespaces "x" not found`. On a dry_run submit nothing is created: the
        objects of a new namespace are left unchecked (returned), with a printed note."""
        unchecked: set[str] = set()
        for obj in order:
            if obj.get("kind") != "Namespace":
                continue
            name = obj["metadata"]["name"]
            try:
                self._post(obj, dry_run=True)
            except Conflict:
                reused.append(object_id(obj))
                continue
            if dry_run:
                unchecked.add(name)
                print(
                    f"note: namespace {name!r} does not exist yet, and a dry run stores nothing: "
                    f"the objects inside it are not checked by the server"
                )
            else:
                print(
                    f"creating namespace {name!r} first: the server checks objects only inside "
                    "an existing namespace (it is deleted again if the submit fails)"
                )
                created.append(self._post(obj, dry_run=False))
        return unchecked

    def _dry_run(self, order: list[Manifest], unchecked: set[str], reused: list[str]) -> None:
        for obj in order:
            namespace = obj["metadata"].get("namespace")
            if obj.get("kind") == "Namespace" or namespace in unchecked:
                continue
            try:
                self._post(obj, dry_run=True)
            except Conflict as error:
                if obj.get("kind") in C.WORKLOAD_KINDS:
                    raise Conflict(
                        f"{error.message}; delete it first (client.delete) or choose another "
                        "name (the Name option)",
                        status=error.status,
                        reason=error.reason,
                        body=error.body,
                    ) from error
                # Shared dependencies (the PVC holding the data set, a ConfigMap) outlive jobs:
                # the next job reuses them as they are, like the local backend's PVC folders.
                reused.append(object_id(obj))

    def _create(self, order: list[Manifest], created: list[Manifest], reused: list[str]) -> None:
        done = {object_id(o) for o in created}
        for obj in order:
            if object_id(obj) in done or object_id(obj) in reused:
                continue
            try:
                created.append(self._post(obj, dry_run=False))
            except Conflict:
                if obj.get("kind") in C.WORKLOAD_KINDS:
                    raise
                reused.append(object_id(obj))  # created by someone else since the dry run

    def _own(self, target: Manifest, created: list[Manifest]) -> None:
        """Make the workload the owner of what this submit created in its namespace (the headless
        Service, ConfigMaps...), except PVCs: deleting the job then removes them, even from
        kubectl. Owners must be in the same namespace, so cluster objects get no reference."""
        workload = next((o for o in created if object_id(o) == object_id(target)), None)
        if workload is None:
            return
        meta = workload["metadata"]
        owner = {
            "apiVersion": workload.get("apiVersion", target["apiVersion"]),
            "kind": target["kind"],
            "name": meta["name"],
            "uid": meta["uid"],
        }
        for obj in created:
            obj_meta = obj.get("metadata") or {}
            if (
                obj is workload
                or obj.get("kind") in ("PersistentVolumeClaim", "Namespace")
                or obj_meta.get("namespace") != meta.get("namespace")
            ):
                continue
            references = [*(obj_meta.get("ownerReferences") or []), owner]
            self._call(
                f"set the owner of {object_id(obj)}",
                self._request,
                "PATCH",
                resource_path(obj, name=obj_meta["name"]),
                body={"metadata": {"ownerReferences": references}},
                content_type="application/merge-patch+json",
            )

    def _roll_back(self, created: list[Manifest]) -> None:
        """Delete what a failed submit created, newest first; report (not raise) what stays."""
        for obj in reversed(created):
            try:
                self._delete_object(obj)
            except ApiError as error:
                print(f"warning: could not roll back {object_id(obj)}: {error}")

    def _delete_object(self, obj: Manifest) -> None:
        meta = obj["metadata"]
        try:
            self._call(
                f"delete {object_id(obj)}",
                self._request,
                "DELETE",
                resource_path(obj, meta.get("namespace"), name=meta["name"]),
                query={"propagationPolicy": "Background"},
            )
        except NotFound:
            pass  # gone already (taken along by its owner or its namespace)

    # ---------------------------------------------------------------------------------------------
    # Plain objects (workshop tooling)
    # ---------------------------------------------------------------------------------------------

    def apply_objects(self, objects: list[Manifest], *, dry_run: bool = False) -> list[str]:
        """Create each object, dependencies first. A dry run stores nothing, so the server cannot
        check objects inside a namespace the same dry run brings: those are "unchecked"."""
        results = [""] * len(objects)
        new_namespaces: set[str] = set()
        for i in _creation_order(objects):
            obj = objects[i]
            if dry_run and obj["metadata"].get("namespace") in new_namespaces:
                results[i] = "unchecked"
                continue
            try:
                self._post(obj, dry_run=dry_run)
                results[i] = "dry run" if dry_run else "created"
                if obj.get("kind") == "Namespace":
                    new_namespaces.add(obj["metadata"]["name"])
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

    # ---------------------------------------------------------------------------------------------
    # Reading a workload of any kind
    # ---------------------------------------------------------------------------------------------

    @staticmethod
    def _kind(ref: JobRef) -> W.Kind:
        try:
            return W.kind_of(ref.kind, ref.api_version)
        except ValueError as error:
            raise ApiError(str(error), reason="UnknownKind") from error

    def _get_workload(self, ref: JobRef, kind: W.Kind) -> Manifest:
        try:
            return self._call(
                f"get {kind.kind}/{ref.name}",
                self._request,
                "GET",
                kind.path(ref.namespace, ref.name),
            )
        except NotFound as error:
            raise _not_found(ref, kind, error) from error

    def _list_workload(self, ref: JobRef, kind: W.Kind) -> tuple[Manifest, str | None]:
        """The workload and the list's resourceVersion: a watch must start from the collection's
        version, because the object's own version may already be compacted away (410 again)."""
        try:
            listing = self._call(
                f"list {kind.kind}/{ref.name}",
                self._request,
                "GET",
                kind.path(ref.namespace),
                query={"fieldSelector": f"metadata.name={ref.name}"},
            )
        except NotFound as error:
            raise _not_found(ref, kind, error) from error
        items = listing.get("items") or []
        if not items:
            raise NotFound(
                f'{kind.plural}.{kind.group} "{ref.name}" not found in namespace {ref.namespace}',
                status=404,
                reason="NotFound",
            )
        return items[0], (listing.get("metadata") or {}).get("resourceVersion")

    def _list(self, what: str, kind: str, namespace: str, **query: str) -> list[Manifest]:
        """Items of a core/v1 list (pods, events) in a namespace, filtered by selectors."""
        path = resource_path("v1", kind, namespace)
        return self._call(what, self._request, "GET", path, query=query).get("items") or []

    def _pods(self, ref: JobRef, kind: W.Kind, obj: Manifest) -> list[Manifest]:
        """The workload's pods, found by its own controller's label, in rank order (a retried
        pod after the one it replaces)."""
        pods = self._list(
            f"list pods of {kind.kind}/{ref.name}",
            "Pod",
            ref.namespace,
            labelSelector=kind.pod_selector(ref.name),
        )

        def key(pod: Manifest) -> tuple:
            rank = kind.rank(obj, pod)
            meta = pod.get("metadata") or {}
            return (rank if rank is not None else 1 << 30, meta.get("creationTimestamp") or "",
                    meta.get("name", ""))  # fmt: skip

        return sorted(pods, key=key)

    def _kueue(self, ref: JobRef, kind: W.Kind, obj: Manifest) -> tuple[str, str] | None:
        """Kueue's reason for a suspended workload that names a LocalQueue (None without one)."""
        queue = ((obj.get("metadata") or {}).get("labels") or {}).get(C.KUEUE_QUEUE_LABEL)
        if not queue or not kind.suspended(obj):
            return None
        uid = (obj.get("metadata") or {}).get("uid")
        try:
            listing = self._call(
                "list Kueue workloads",
                self._request,
                "GET",
                f"/apis/kueue.x-k8s.io/v1beta1/namespaces/{ref.namespace}/workloads",
            )
        except NotFound:
            return "NotAdmitted", f"waiting for Kueue (LocalQueue {queue!r}), whose API is absent"
        owned = [
            w
            for w in listing.get("items") or []
            if any(
                o.get("uid") == uid for o in (w.get("metadata") or {}).get("ownerReferences") or []
            )
        ]
        return W.kueue_reason(owned[0] if owned else None, queue)

    def _status(self, ref: JobRef, kind: W.Kind, obj: Manifest) -> JobStatus:
        pods = self._pods(ref, kind, obj)
        return W.workload_status(kind, obj, pods, self._kueue(ref, kind, obj))

    def status(self, ref: JobRef) -> JobStatus:
        kind = self._kind(ref)
        return self._status(ref, kind, self._get_workload(ref, kind))

    def pod_objects(self, ref: JobRef) -> list[Manifest]:
        kind = self._kind(ref)
        return self._pods(ref, kind, self._get_workload(ref, kind))  # as the API server has them

    def wait(
        self,
        ref: JobRef,
        *,
        timeout_s: float,
        on_update: Callable[[JobStatus], None] | None = None,
    ) -> JobStatus:
        """Follow the workload with a watch stream; re-open it after drops and on 410 Gone re-list
        it. Each change is read with the job's pods, so Running means a pod really runs; a timeout
        says what holds the job (the scheduler's or Kueue's message)."""
        kind = self._kind(ref)
        deadline = time.monotonic() + timeout_s
        obj, resource_version = self._list_workload(ref, kind)
        status = self._status(ref, kind, obj)
        if on_update:
            on_update(status)
        drops = 0
        while not status.done:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                status = self._status(ref, kind, self._get_workload(ref, kind))
                if status.done:
                    break
                why = f": {status.reason}: {status.message}" if status.reason else ""
                raise JobTimeout(
                    f"{kind.kind} {ref.namespace}/{ref.name} still {status.phase} after "
                    f"{timeout_s:.0f} s{why}"
                )
            try:
                status, resource_version = self._watch_chunk(
                    ref, kind, resource_version, remaining, on_update
                )
                drops = 0
            except _Relist:
                obj, resource_version = self._list_workload(ref, kind)
                status = self._status(ref, kind, obj)
                if on_update:
                    on_update(status)
            except _Dropped as drop:
                drops += 1
                if drops >= self.max_attempts:
                    raise drop.error from drop.error.__cause__
                time.sleep(self._delay(drops, drop.headers))
        return self._status(ref, kind, self._get_workload(ref, kind))

    def _watch_chunk(
        self,
        ref: JobRef,
        kind: W.Kind,
        resource_version: str | None,
        remaining: float,
        on_update: Callable[[JobStatus], None] | None,
    ) -> tuple[JobStatus, str | None]:
        """One watch request (at most watch_chunk_s); the status after it and where it ended."""
        from kubernetes import watch
        from kubernetes.client import CustomObjectsApi
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        stream = watch.Watch(return_type="object")  # plain dicts, as the server sent them
        chunk = min(remaining, self.watch_chunk_s)
        status = None
        try:
            for event in stream.stream(
                CustomObjectsApi(self.api_client).list_namespaced_custom_object,
                kind.group, kind.version, ref.namespace, kind.plural,
                field_selector=f"metadata.name={ref.name}",
                resource_version=resource_version,
                timeout_seconds=max(1, int(chunk)),
                _request_timeout=chunk + 10,
            ):  # fmt: skip
                obj = event["object"]
                resource_version = obj.get("metadata", {}).get("resourceVersion", resource_version)
                if event["type"] == "DELETED":
                    raise NotFound(
                        f"{kind.kind} {ref.namespace}/{ref.name} was deleted while waiting",
                        status=404,
                        reason="Deleted",
                    )
                if event["type"] == "BOOKMARK":
                    continue
                status = self._status(ref, kind, obj)
                if on_update:
                    on_update(status)
                if status.done:
                    stream.stop()
                    return status, resource_version
        except ApiException as exc:
            if exc.status == 410:  # our resourceVersion was compacted away: start over
                raise _Relist from exc
            error = api_error_for_status(exc.status or None)(
                f"watch {kind.kind}/{ref.name} failed: {_status_message(exc)[0]}",
                status=exc.status or None,
                reason=str(exc.reason or ""),
            )
            error.__cause__ = exc
            if (exc.status or None) in _RETRYABLE:
                raise _Dropped(error, exc.headers) from exc
            raise error from exc
        except (Urllib3Error, OSError) as exc:
            error = ClusterUnreachable(
                f"watch {kind.kind}/{ref.name} kept dropping: {exc}", reason=type(exc).__name__
            )
            error.__cause__ = exc
            raise _Dropped(error, None) from exc
        # The server ended the chunk: re-read with the pods (a pod may have started meanwhile).
        status = self._status(ref, kind, self._get_workload(ref, kind))
        if on_update:
            on_update(status)
        return status, resource_version

    # ---------------------------------------------------------------------------------------------
    # Logs
    # ---------------------------------------------------------------------------------------------

    def logs(
        self,
        ref: JobRef,
        *,
        follow: bool = False,
        index: int | None = None,
        tail_lines: int | None = None,
    ) -> Iterator[LogLine]:
        """Logs of every pod of the job, one pod after the other (see client.logs for merging).

        A pod without a node (the server answers 204 No Content) or whose containers wait to
        start (400) has no log yet: with follow, its start is awaited on a watch; without, the
        lines of the other pods come first and then PodNotStarted says which pod and why.
        Following, a pod that replaces a failed or preempted one (the controller's retry) is
        followed next, until the workload has finished: the local backend does the same, while
        `kubectl logs -f -l ...` would have to be run again."""
        kind = self._kind(ref)
        obj = self._get_workload(ref, kind)
        pods = self._pods(ref, kind, obj)
        if follow and not pods:
            # Right after submit the controller has not made its pods yet: watch for them.
            pods = self._wait_for_pods(ref, kind, obj, timeout_s=self.pod_start_timeout_s)
        not_started: list[tuple[str, str, int]] = []
        followed: set[str] = set()
        while pods:
            for pod in pods:
                followed.add(pod["metadata"]["name"])
                rank = kind.rank(obj, pod)
                if index is not None and rank != index:
                    continue
                try:
                    yield from self._pod_log(pod, ref.namespace, rank, follow, tail_lines)
                except PodNotStarted as waiting:
                    not_started.append((pod["metadata"]["name"], waiting.message, waiting.status))
            obj, pods = self._next_pods(ref, kind, followed, index) if follow else (obj, [])
        if not_started:
            raise PodNotStarted(
                "no log yet: "
                + "; ".join(f"{message}" for _, message, _ in not_started)
                + " (logs(..., follow=True) waits for it to start)",
                status=not_started[0][2],
                reason="PodNotStarted",
            )

    def _next_pods(
        self, ref: JobRef, kind: W.Kind, followed: set[str], index: int | None
    ) -> tuple[Manifest, list[Manifest]]:
        """Following logs: the workload and its pods not followed yet (a replacement), waited for
        while one may still come; no pods once the workload has finished (or is gone) or every
        followed pod has succeeded (a controller never replaces a pod that succeeded)."""
        while True:
            try:
                obj = self._get_workload(ref, kind)
            except NotFound:
                return {}, []
            pods = self._pods(ref, kind, obj)
            new = [pod for pod in pods if pod["metadata"]["name"] not in followed]
            if new:
                return obj, new
            status = W.workload_status(kind, obj, pods, self._kueue(ref, kind, obj))
            mine = [pod for pod in pods if index is None or kind.rank(obj, pod) == index]
            succeeded = all((p.get("status") or {}).get("phase") == C.SUCCEEDED for p in mine)
            if status.phase in C.TERMINAL_PHASES or (mine and succeeded):
                return obj, []
            time.sleep(self.follow_poll_s)

    def _pod_log(
        self, pod: Manifest, namespace: str, rank: int | None, follow: bool, tail_lines: int | None
    ) -> Iterator[LogLine]:
        """One pod's log lines; PodNotStarted (not following) when it has none yet."""
        from kubernetes.client import CoreV1Api

        core = CoreV1Api(self.api_client)
        name = pod["metadata"]["name"]
        containers = [c["name"] for c in pod.get("spec", {}).get("containers") or []]
        kwargs: dict[str, Any] = {"follow": follow, "_preload_content": False}
        if containers:
            kwargs["container"] = "trainer" if "trainer" in containers else containers[0]
        if tail_lines is not None:
            kwargs["tail_lines"] = tail_lines
        for _attempt in range(2):
            try:
                response = self._call(
                    f"logs of Pod/{name}", core.read_namespaced_pod_log, name, namespace, **kwargs
                )
                if response.status != 204:
                    break
                response.read()  # 204 has no body, but the connection is only reusable once read
                response.release_conn()
                waiting = PodNotStarted(_not_started(pod, "it has no node yet"), status=204)
            except ApiError as error:
                # Containers not started yet: 400 "is waiting to start" (kubectl says the same).
                if error.status != 400 or "waiting to start" not in str(error):
                    raise
                waiting = PodNotStarted(_not_started(pod, error.message), status=400)
            if not follow:
                raise waiting
            pod = self._wait_pod_started(name, namespace, timeout_s=self.pod_start_timeout_s)
        else:
            raise waiting
        try:
            buffer = b""
            for chunk in response.stream(4096):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    yield LogLine(name, rank, line.decode(errors="replace"))
            if buffer:
                yield LogLine(name, rank, buffer.decode(errors="replace"))
        finally:
            response.release_conn()

    def _wait_for_pods(
        self, ref: JobRef, kind: W.Kind, obj: Manifest, *, timeout_s: float
    ) -> list[Manifest]:
        """Block on a watch of the job's pods until the first one exists; then list them all."""
        from kubernetes import watch
        from kubernetes.client import CoreV1Api

        stream = watch.Watch(return_type="object")  # plain dicts, as the server sent them
        for _ in stream.stream(
            CoreV1Api(self.api_client).list_namespaced_pod,
            ref.namespace,
            label_selector=kind.pod_selector(ref.name),
            timeout_seconds=max(1, int(timeout_s)),
            _request_timeout=timeout_s + 10,
        ):
            stream.stop()
            return self._pods(ref, kind, obj)
        raise JobTimeout(
            f"{kind.kind} {ref.namespace}/{ref.name} made no pod within {timeout_s:.0f} s"
        )

    def _wait_pod_started(self, pod_name: str, namespace: str, *, timeout_s: float) -> Manifest:
        """Block on a watch of one pod until it leaves Pending (its containers have started)."""
        from kubernetes import watch
        from kubernetes.client import CoreV1Api

        stream = watch.Watch(return_type="object")  # plain dicts, as the server sent them
        last: Manifest = {"metadata": {"name": pod_name}}
        for event in stream.stream(
            CoreV1Api(self.api_client).list_namespaced_pod,
            namespace,
            field_selector=f"metadata.name={pod_name}",
            timeout_seconds=max(1, int(timeout_s)),
            _request_timeout=timeout_s + 10,
        ):
            last = event["object"]
            if ((last.get("status") or {}).get("phase") or C.PENDING) != C.PENDING:
                stream.stop()
                return last
        reason, message = W.pod_waiting(last)
        raise JobTimeout(
            f"pod {namespace}/{pod_name} did not start within {timeout_s:.0f} s: {reason} {message}"
        )

    # ---------------------------------------------------------------------------------------------
    # Events, delete
    # ---------------------------------------------------------------------------------------------

    def events(self, ref: JobRef) -> list[Event]:
        """Events about the workload, its child Jobs (JobSet, TrainJob) and its pods."""
        kind = self._kind(ref)
        obj = self._get_workload(ref, kind)
        involved = [ref.name]
        if kind.pod_label == W.JOBSET_NAME_LABEL:
            children = self._call(
                f"list Jobs of {kind.kind}/{ref.name}",
                self._request,
                "GET",
                resource_path("batch/v1", "Job", ref.namespace),
                query={"labelSelector": kind.pod_selector(ref.name)},
            )
            involved += [j["metadata"]["name"] for j in children.get("items") or []]
        involved += [p["metadata"]["name"] for p in self._pods(ref, kind, obj)]
        out = []
        for obj_name in dict.fromkeys(involved):
            items = self._list(
                f"events of {obj_name}",
                "Event",
                ref.namespace,
                fieldSelector=f"involvedObject.name={obj_name}",
            )
            out += [_event(item, obj_name) for item in items]
        return sorted(out, key=lambda e: e.time)

    def delete(self, ref: JobRef, *, missing_ok: bool = False, volumes: bool = False) -> None:
        """Delete the workload (Foreground: it disappears after its pods, so a re-submit never
        races them) and what its submit created: the garbage collector takes what it owns (the
        headless Service...), this backend deletes the rest it created. PVCs and namespaces stay
        (their data outlives jobs) unless volumes=True, which also deletes the claims the
        workload's pods mount. An absent workload is NotFound unless missing_ok."""
        kind = self._kind(ref)
        claims: list[str] = []
        try:
            if volumes:
                claims = _claims(self._get_workload(ref, kind))
            self._call(
                f"delete {kind.kind}/{ref.name}",
                self._request,
                "DELETE",
                kind.path(ref.namespace, ref.name),
                query={"propagationPolicy": "Foreground"},
                body={
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "propagationPolicy": "Foreground",
                },
            )
        except NotFound as error:
            if not missing_ok:
                raise _not_found(ref, kind, error) from error
        for obj in self._created.pop((ref.namespace, ref.kind, ref.name), []):
            if obj.get("kind") == "Namespace" or (
                obj.get("kind") == "PersistentVolumeClaim" and not volumes
            ):
                continue
            claims = [c for c in claims if object_id(obj) != f"PersistentVolumeClaim/{c}"]
            self._delete_object(obj)
        for claim in claims:
            self._delete_object(
                {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                 "metadata": {"name": claim, "namespace": ref.namespace}}
            )  # fmt: skip

    def close(self) -> None:
        if self._api_client is not None:
            self._api_client.close()
            self._api_client = None

    @staticmethod
    def _job_status(job: Manifest, pods: list[Manifest]) -> JobStatus:
        """A batch/v1 Job and its pods as a JobStatus (recorded cases use this)."""
        return W.workload_status(W.KINDS[("batch", "Job")], job, pods)


class _Relist(Exception):
    """The watch's resourceVersion expired (410 Gone): list again."""


class _Dropped(Exception):
    """A watch ended early (connection lost, 429/5xx); retried a bounded number of times."""

    def __init__(self, error: ApiError, headers: Any):
        super().__init__(str(error))
        self.error, self.headers = error, headers


def _not_found(ref: JobRef, kind: W.Kind, error: NotFound) -> NotFound:
    """The server's 404, saying whether the object or the whole API (a CRD) is missing."""
    message = error.message
    if "could not find the requested resource" in message:
        message += (
            f": the {kind.describe()} API is not served here; is its CRD installed? "
            f"(kubectl get crd {kind.plural}.{kind.group})"
        )
    return NotFound(message, status=404, reason=error.reason or "NotFound", body=error.body)


def _not_started(pod: Manifest, why: str) -> str:
    reason, message = W.pod_waiting(pod)
    detail = f"{reason}: {message}".strip(": ") if reason else ""
    return f"pod {pod['metadata']['name']} has not started ({why}{'; ' + detail if detail else ''})"


def _claims(obj: Any) -> list[str]:
    """Every PVC a workload's pod templates mount (claimName anywhere in the object)."""
    found: list[str] = []
    if isinstance(obj, dict):
        claim = (
            (obj.get("persistentVolumeClaim") or {})
            if isinstance(obj.get("persistentVolumeClaim"), dict)
            else {}
        )
        if claim.get("claimName"):
            found.append(claim["claimName"])
        for value in obj.values():
            found += _claims(value)
    elif isinstance(obj, list):
        for value in obj:
            found += _claims(value)
    return list(dict.fromkeys(found))


def _event(item: Manifest, obj_name: str) -> Event:
    ref = item.get("involvedObject") or {}
    when = W.timestamp(
        item.get("lastTimestamp")
        or item.get("eventTime")
        or item.get("firstTimestamp")
        or item.get("metadata", {}).get("creationTimestamp")
    )
    return Event(
        when or 0.0,
        item.get("type", "Normal"),
        item.get("reason", ""),
        f"{ref.get('kind', '?')}/{ref.get('name', obj_name)}",
        item.get("message", ""),
        int(item.get("count") or 1),
    )


def _creation_order(objects: list[Manifest]) -> list[int]:
    """Indices of `objects` with dependencies first (constants.KIND_ORDER), stable otherwise."""
    rank = {kind: i for i, kind in enumerate(C.KIND_ORDER)}
    return sorted(
        range(len(objects)), key=lambda i: rank.get(objects[i].get("kind", ""), len(rank))
    )


def _status_message(exc: Any) -> tuple[str, str]:
    """The server's Status message and reason from an ApiException, falling back to its text."""
    try:
        body = json.loads(exc.body)
        return body.get("message") or str(exc.reason), body.get("reason") or str(exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason or exc), str(exc.reason or "")
