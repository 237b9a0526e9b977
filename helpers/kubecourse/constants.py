"""The course's Kubernetes vocabulary, explained once.

Every label key, annotation, environment variable and status the helpers use is defined here with
what it means in Kubernetes terms, so the rest of the code (and the learner) has one place to look.
"""

import re

# --- Versions -------------------------------------------------------------------------------------
# The Kubernetes minor the built-in schemas are checked against (kubernetes-validate ships one JSON
# schema set per minor). Pinned so a validation result never changes under the learner's feet.
KUBERNETES_VERSION = "1.34.0"

# --- Labels and annotations set by the Job controller on the pods it creates ---------------------
# Current label (Kubernetes >= 1.27); selects every pod of a Job.
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
# The legacy spelling, still set for compatibility; older clusters only have this one.
LEGACY_JOB_NAME_LABEL = "job-name"
# Indexed Jobs: each pod's index (0..completions-1), also exported as JOB_COMPLETION_INDEX.
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
# Kueue: which LocalQueue admits the workload; the Job is created suspended until admitted.
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# Kueue: priority of the workload (a WorkloadPriorityClass name).
KUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
# The label each controller puts on the pods of one job (what a per-job NetworkPolicy selects):
# JobSet (also a TrainJob's pods: Trainer v2 makes a JobSet of the TrainJob's name), PyTorchJob,
# Volcano Job. batch/v1 Jobs use JOB_NAME_LABEL above.
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
PYTORCHJOB_NAME_LABEL = "training.kubeflow.org/job-name"
VOLCANO_JOB_NAME_LABEL = "volcano.sh/job-name"
JOB_NAME_LABELS = (JOB_NAME_LABEL, JOBSET_NAME_LABEL, PYTORCHJOB_NAME_LABEL, VOLCANO_JOB_NAME_LABEL)
# Every object the course creates carries this label, so one selector finds and cleans them all.
COURSE_LABEL = "course.kubecourse.dev/lesson"

# --- Resources ------------------------------------------------------------------------------------
# Extended resource advertised by the NVIDIA device plugin; whole GPUs only, requests == limits.
GPU_RESOURCE = "nvidia.com/gpu"

# --- Environment variables a training pod sees ----------------------------------------------------
# Set by the Job controller in Indexed mode; the local backend sets it the same way.
ENV_COMPLETION_INDEX = "JOB_COMPLETION_INDEX"
# Set by torchrun / the launch script for every rank.
ENV_RANK = "RANK"
ENV_WORLD_SIZE = "WORLD_SIZE"
ENV_MASTER_ADDR = "MASTER_ADDR"
ENV_MASTER_PORT = "MASTER_PORT"
# torchrun's per-worker log prefix as labs/launch.sh configures it ("[rank3]:step 5/60 ...").
WORKER_RANK_PREFIX = re.compile(r"^\[rank(\d+)\]:")

# --- Job phases (one vocabulary for every backend) ------------------------------------------------
# Pending: created, no container started yet (scheduling, image pull, Kueue admission, local start).
# Running: at least one container process is running.
# Succeeded / Failed: terminal; the Job's Complete / Failed condition is True.
PENDING = "Pending"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
TERMINAL_PHASES = (SUCCEEDED, FAILED)

# --- Object kinds: REST plural and whether the object lives in a namespace ------------------------
# Creation order follows the list: things others depend on come first (a Job's pods need the PVC,
# the ServiceAccount and the ConfigMap to exist before they can start).
KIND_ORDER = [
    "Namespace",
    "PriorityClass",
    "ResourceQuota",
    "LimitRange",
    "ServiceAccount",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "NetworkPolicy",
    "Secret",
    "ConfigMap",
    "PersistentVolumeClaim",
    "Service",
    "ResourceFlavor",
    "ClusterQueue",
    "LocalQueue",
    "WorkloadPriorityClass",
    "Queue",
    "PodGroup",
    "ClusterTrainingRuntime",
    "TrainingRuntime",
    "PodMonitor",
    "ServiceMonitor",
    "PrometheusRule",
    "Job",
    "JobSet",
    "PyTorchJob",
    "TrainJob",
]

# kind -> (REST plural, namespaced)
RESOURCES: dict[str, tuple[str, bool]] = {
    "Namespace": ("namespaces", False),
    "PriorityClass": ("priorityclasses", False),
    "ResourceQuota": ("resourcequotas", True),
    "LimitRange": ("limitranges", True),
    "ServiceAccount": ("serviceaccounts", True),
    "Role": ("roles", True),
    "ClusterRole": ("clusterroles", False),
    "RoleBinding": ("rolebindings", True),
    "ClusterRoleBinding": ("clusterrolebindings", False),
    "NetworkPolicy": ("networkpolicies", True),
    "Secret": ("secrets", True),
    "ConfigMap": ("configmaps", True),
    "PersistentVolumeClaim": ("persistentvolumeclaims", True),
    "Service": ("services", True),
    "Pod": ("pods", True),
    "Event": ("events", True),
    "Job": ("jobs", True),
    "ResourceFlavor": ("resourceflavors", False),
    "ClusterQueue": ("clusterqueues", False),
    "LocalQueue": ("localqueues", True),
    "WorkloadPriorityClass": ("workloadpriorityclasses", False),
    "Queue": ("queues", False),
    "PodGroup": ("podgroups", True),
    "PodMonitor": ("podmonitors", True),  # Prometheus Operator (lesson 10)
    "ServiceMonitor": ("servicemonitors", True),
    "PrometheusRule": ("prometheusrules", True),
    "JobSet": ("jobsets", True),
    "PyTorchJob": ("pytorchjobs", True),
    "TrainJob": ("trainjobs", True),
    "TrainingRuntime": ("trainingruntimes", True),
    "ClusterTrainingRuntime": ("clustertrainingruntimes", False),
}

# Kinds whose pods the helpers follow (logs, status, wait).
WORKLOAD_KINDS = ("Job", "JobSet", "PyTorchJob", "TrainJob")

# --- Local backend --------------------------------------------------------------------------------
# Where the local backend keeps run folders and "PVC" folders (relative to the repository root).
LOCAL_STATE_DIR = ".course"
# An absolute folder that replaces it (tests give each pytest-xdist worker its own).
LOCAL_STATE_DIR_ENV = "KUBECOURSE_STATE_DIR"
