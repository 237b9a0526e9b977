"""GPU sharing (lesson 08): what the course's device-plugin configs advertise, and what that admits.

`manifests/04-production/admin/gpu-sharing.yaml` holds the NVIDIA device plugin's time-slicing
profiles and the MIG manager's partitions. From them:

    slices_per_gpu(sharing, "time-sliced-4")        # {"nvidia.com/gpu": 4}
    capacity(sharing, nodes=2, gpus_per_node=8, profile="all-1g.10gb")   # 112 one-slice pods

The device plugin's `sharing.mps` takes the same `replicas` list as time-slicing (profile
`mps-4`); ISOLATION says what each mode does and does not isolate.
"""

from __future__ import annotations

from .manifests import Manifest, lesson_dir, parse_yaml

# What each sharing mode isolates between the pods that share one physical GPU.
ISOLATION = {
    "exclusive": {"memory": "yes (whole GPU)", "compute": "yes", "faults": "yes", "sizes": "1 GPU"},
    "time-slicing": {
        "memory": "no: one pod can take all of it (OOM for the others)",
        "compute": "no: pods take turns (context switches)",
        "faults": "no: a crash can take the others' contexts",
        "sizes": "N equal replicas",
    },
    "MPS": {
        "memory": "limit per client (no hardware isolation)",
        "compute": "concurrent kernels, % of SMs per client",
        "faults": "no: one MPS server for all clients",
        "sizes": "N equal replicas",
    },
    "MIG": {
        "memory": "yes: hardware partitions",
        "compute": "yes: dedicated SMs",
        "faults": "yes: per instance",
        "sizes": "fixed profiles (1g.10gb ... 7g.80gb), A100/H100 only",
    },
}


def load_sharing() -> list[Manifest]:
    """The device-plugin and MIG-manager ConfigMaps of the course."""
    path = lesson_dir("04") / "admin" / "gpu-sharing.yaml"
    return parse_yaml(path.read_text(), str(path))


def _config_map(sharing: list[Manifest], name: str) -> dict[str, str]:
    return next(o for o in sharing if o["metadata"]["name"] == name)["data"]


def profiles(sharing: list[Manifest]) -> dict[str, str]:
    """Every profile a node can select, with its mode: time-slicing, exclusive or MIG."""
    found = {}
    for name, text in _config_map(sharing, "device-plugin-config").items():
        shared = parse_yaml(text, name)[0].get("sharing") or {}
        found[name] = "MPS" if "mps" in shared else "time-slicing" if shared else "exclusive"
    mig = parse_yaml(_config_map(sharing, "mig-parted-config")["config.yaml"], "mig")[0]
    for name, parts in mig["mig-configs"].items():
        enabled = any(p.get("mig-enabled") for p in parts)
        found[name] = "MIG" if enabled else "exclusive"
    return found


def slices_per_gpu(sharing: list[Manifest], profile: str) -> dict[str, int]:
    """The extended resources one physical GPU advertises under `profile`."""
    plugin = _config_map(sharing, "device-plugin-config")
    if profile in plugin:
        config = parse_yaml(plugin[profile], profile)[0]
        modes = config.get("sharing") or {}
        shared = modes.get("timeSlicing") or modes.get("mps") or {}
        return {r["name"]: int(r["replicas"]) for r in shared.get("resources") or []} or {
            "nvidia.com/gpu": 1
        }
    mig = parse_yaml(_config_map(sharing, "mig-parted-config")["config.yaml"], "mig")[0]
    if profile not in mig["mig-configs"]:
        raise KeyError(f"no GPU sharing profile {profile!r}; known: {sorted(profiles(sharing))}")
    slices: dict[str, int] = {}
    for part in mig["mig-configs"][profile]:
        if not part.get("mig-enabled"):
            slices["nvidia.com/gpu"] = slices.get("nvidia.com/gpu", 0) + 1
        for device, count in (part.get("mig-devices") or {}).items():
            key = f"nvidia.com/mig-{device}"
            slices[key] = slices.get(key, 0) + int(count)
    return slices


def capacity(sharing: list[Manifest], *, nodes: int, gpus_per_node: int, profile: str) -> int:
    """How many pods asking for one slice (of any advertised kind) the nodes can run at once."""
    return nodes * gpus_per_node * sum(slices_per_gpu(sharing, profile).values())
