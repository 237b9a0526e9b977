"""kubecourse: the control plane of the course "Train large models on Kubernetes, hands-on".

Load a lesson's manifests, apply typed options, validate, and run them on a backend:

    from kubecourse import TrainingClient, render
    objects = render("01", name="cifar10-smoke", extra_args=["--smoke"])
    with TrainingClient() as client:            # backend="kubernetes" for a real cluster
        job = client.submit(objects)
        client.wait(job)

Nothing happens at import: no kubeconfig is read, no folder is made, torch is never imported.
"""

from .backends.config import BackendConfig, KubernetesBackendConfig, LocalBackendConfig
from .client import TrainingClient, make_backend
from .errors import (
    ApiError,
    ClusterUnreachable,
    Conflict,
    CourseError,
    Finding,
    Forbidden,
    Invalid,
    JobFailed,
    JobNotFound,
    JobTimeout,
    ManifestError,
    NotFound,
    OptionError,
    PodNotStarted,
    ServerError,
    TooManyRequests,
    Unauthorized,
)
from .manifests import (
    Args,
    BackoffLimit,
    Command,
    Cpu,
    Deadline,
    Env,
    ExtraArgs,
    Gpus,
    Image,
    Memory,
    Name,
    Namespace,
    Nodes,
    Priority,
    ProcsPerNode,
    Queue,
    Volumes,
    apply_options,
    load_lesson,
    render,
)
from .types import Event, JobRef, JobStatus, LogLine, PodStatus
from .validation import Report, check, validate

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "Args",
    "BackendConfig",
    "BackoffLimit",
    "ClusterUnreachable",
    "Command",
    "Conflict",
    "CourseError",
    "Cpu",
    "Deadline",
    "Env",
    "Event",
    "ExtraArgs",
    "Finding",
    "Forbidden",
    "Gpus",
    "Image",
    "Invalid",
    "JobFailed",
    "JobNotFound",
    "JobRef",
    "JobStatus",
    "JobTimeout",
    "KubernetesBackendConfig",
    "LocalBackendConfig",
    "LogLine",
    "ManifestError",
    "Memory",
    "Name",
    "Namespace",
    "Nodes",
    "NotFound",
    "OptionError",
    "PodNotStarted",
    "PodStatus",
    "Priority",
    "ProcsPerNode",
    "Queue",
    "Report",
    "ServerError",
    "TooManyRequests",
    "TrainingClient",
    "Unauthorized",
    "Volumes",
    "apply_options",
    "check",
    "load_lesson",
    "make_backend",
    "render",
    "validate",
]
