"""Exceptions the learner sees. Each keeps its cause, and API errors keep their HTTP status."""

from __future__ import annotations

from dataclasses import dataclass


class CourseError(Exception):
    """Base class for every error raised by the course helpers."""


@dataclass(frozen=True)
class Finding:
    """One problem found in a manifest: which object, which field, what is wrong."""

    obj: str  # "Job/cifar10-train"
    field: str  # "spec.template.spec.containers[0].image"
    message: str
    rule: str = "schema"  # schema | crd | semantic/<id> | policy | option | yaml

    def __str__(self) -> str:
        return f"{self.obj}: {self.field}: {self.message} [{self.rule}]"


class ManifestError(CourseError):
    """A manifest or option is invalid. `findings` lists every problem, each naming its field."""

    def __init__(self, findings: list[Finding] | Finding, summary: str = "invalid manifest"):
        self.findings = [findings] if isinstance(findings, Finding) else list(findings)
        lines = "\n".join(f"  - {f}" for f in self.findings)
        super().__init__(f"{summary} ({len(self.findings)} problem(s)):\n{lines}")

    @property
    def fields(self) -> list[str]:
        return [f.field for f in self.findings]


class OptionError(ManifestError):
    """An option has a bad value or does not apply to the objects it was given."""

    def __init__(self, field: str, message: str, obj: str = "options"):
        super().__init__(Finding(obj, field, message, rule="option"), summary="invalid option")

    @classmethod
    def combine(cls, errors: list[OptionError]) -> OptionError:
        """One error listing every bad option, so the learner fixes them all in one go."""
        combined = cls.__new__(cls)
        ManifestError.__init__(
            combined, [f for e in errors for f in e.findings], summary="invalid options"
        )
        return combined


class JobTimeout(CourseError):
    """wait() ran out of time before the job reached a terminal phase."""


class JobFailed(CourseError):
    """The job ended Failed (raised by wait(..., raise_on_failure=True))."""


class ApiError(CourseError):
    """A Kubernetes API call failed. Keeps the HTTP status, the reason and the server's message.

    The text ends in "(HTTP <status> <reason>)" when the server answered, in "(<reason>)" when no
    HTTP answer came (status None: never "HTTP None"), then a hint where a class has one."""

    status: int | None = None
    hint: str = ""

    def __init__(self, message: str, status: int | None = None, reason: str = "", body: str = ""):
        self.status = status if status is not None else type(self).status
        self.reason = reason
        self.body = body
        self.message = message
        if self.status is not None:
            where = f"HTTP {self.status} {reason}".rstrip()
        else:
            where = reason or "no HTTP answer"
        super().__init__(f"{message} ({where})" + (f"; {self.hint}" if self.hint else ""))


class Unauthorized(ApiError):
    """401: the credentials in the kubeconfig are missing, expired or wrong."""

    status = 401
    hint = (
        "check the kubeconfig: is its current context the cluster you mean "
        "(kubectl config current-context), and has its token or client certificate expired "
        "(kubectl auth whoami; log in again or refresh the kubeconfig)?"
    )


class Forbidden(ApiError):
    """403: authenticated, but RBAC does not allow this verb on this resource."""

    status = 403
    hint = "RBAC does not allow it: kubectl auth can-i <verb> <resource> -n <namespace>"


class NotFound(ApiError):
    """404: the object (or its namespace, or its CRD) does not exist."""

    status = 404


class JobNotFound(NotFound):
    """The backend has no job of that name (a 404 NotFound on every backend, as kubectl says)."""

    def __init__(
        self, message: str, status: int | None = 404, reason: str = "NotFound", body: str = ""
    ):
        super().__init__(message, status=status, reason=reason, body=body)


class Conflict(ApiError):
    """409: an object with that name already exists (or a stale resourceVersion)."""

    status = 409


class Invalid(ApiError):
    """422: the API server rejected the object (schema, immutable field, admission webhook)."""

    status = 422


class TooManyRequests(ApiError):
    """429: API priority and fairness throttled the request; retried with backoff."""

    status = 429


class ServerError(ApiError):
    """5xx: the API server (or an aggregated API / webhook behind it) failed; retried with backoff."""

    status = 500


class PodNotStarted(ApiError):
    """A pod has no log yet: it is not scheduled to a node (the server answers 204 No Content) or
    its containers are still waiting to start (400). The message names the pod and what holds it."""

    def __init__(self, message: str, status: int | None = None, reason: str = "", body: str = ""):
        super().__init__(message, status=status, reason=reason or "PodNotStarted", body=body)


class ClusterUnreachable(ApiError):
    """No HTTP answer at all: connection refused, DNS failure, TLS failure or timeout."""

    status = None


def api_error_for_status(status: int | None) -> type[ApiError]:
    """The exception class for an HTTP status (None means there was no HTTP answer)."""
    if status is None or status == 0:
        return ClusterUnreachable
    table = {
        401: Unauthorized,
        403: Forbidden,
        404: NotFound,
        409: Conflict,
        422: Invalid,
        429: TooManyRequests,
    }
    if status in table:
        return table[status]
    if status >= 500:
        return ServerError
    return ApiError
