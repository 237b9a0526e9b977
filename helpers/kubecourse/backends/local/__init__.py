"""The local backend: Jobs run as processes on this machine, as a cluster would run their pods.

Its parts, each reachable by a test without starting processes where it can be:
    plan.py        a pure plan_pod(): pod spec + PodContext -> processes, env, folders, network
    controller.py  the Job controller (backoffLimit, podFailurePolicy, Indexed, deadlines) behind
                   a small JobHost protocol; the fake cluster's Job controller runs the same code
    runtime.py     the process runner (the kubelet's part): process groups, SIGTERM then SIGKILL
    backend.py     LocalBackend: the Backend verbs over the three, with kill/preempt disruptions
"""

from .backend import LocalBackend

__all__ = ["LocalBackend"]
