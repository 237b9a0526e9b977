#!/usr/bin/env bash
# The course cluster: the operators the lessons use, at the chart versions of cluster/versions.env.
#
#   scripts/cluster-up.sh --kind [--image IMG]   # a laptop with Docker: a kind cluster, IMG loaded
#   scripts/cluster-up.sh --existing [--gpu]     # the cluster of $KUBECONFIG (a GPU cluster: --gpu)
#   ... --dry-run                                # print every command, run none (what the tests do)
#
# Installs: NVIDIA GPU Operator (--gpu; with lesson 04's time-slicing/MIG configs), Kueue, JobSet,
# Kubeflow Trainer v2, the v1 Training Operator (PyTorchJob), Volcano, kube-prometheus-stack, an
# NFS provisioner when the cluster has no RWX StorageClass, and the course namespace; then runs
# `kubecourse doctor`. Checks that the server runs Kubernetes >= KUBERNETES_MIN first.
set -euo pipefail
source "$(dirname "$0")/cluster-lib.sh"
MODE="" GPU=0 IMAGE="" CLUSTER=kubecourse
while [ $# -gt 0 ]; do
    case "$1" in
        --kind) MODE=kind ;;
        --existing) MODE=existing ;;
        --gpu) GPU=1 ;;
        --image) IMAGE="$2"; shift ;;
        --dry-run) DRY_RUN=1 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[ -n "$MODE" ] || { echo "choose --kind or --existing (see --help)" >&2; exit 2; }
need kubectl; need helm
[ "$MODE" = kind ] && need kind

if [ "$MODE" = kind ]; then
    run kind create cluster --name "$CLUSTER" --image "$KIND_NODE_IMAGE" --wait 180s
    if [ -n "$IMAGE" ]; then run kind load docker-image "$IMAGE" --name "$CLUSTER"; fi
fi

# The minimum Kubernetes version (the course's manifests and Kubeflow Trainer v2 need it).
if [ "$DRY_RUN" = 1 ]; then
    echo "# check: kubectl version -o json reports a server >= v$KUBERNETES_MIN"
else
    server="$(kubectl version -o json | python3 -c 'import json,sys; v=json.load(sys.stdin)["serverVersion"]; print(v["major"]+"."+v["minor"].rstrip("+"))')"
    if [ "$(printf '%s\n%s\n' "$KUBERNETES_MIN" "$server" | sort -V | head -1)" != "$KUBERNETES_MIN" ]; then
        echo "error: the server runs Kubernetes $server; the course needs >= $KUBERNETES_MIN" >&2
        exit 1
    fi
    echo "Kubernetes $server >= $KUBERNETES_MIN"
fi

if [ "$GPU" = 1 ]; then
    # The GPU Operator's pods need privileged Pod Security; the device-plugin/MIG configs first.
    run kubectl create namespace gpu-operator
    run kubectl label --overwrite namespace gpu-operator pod-security.kubernetes.io/enforce=privileged
    run kubectl apply -f "$ROOT/manifests/04-production/admin/gpu-sharing.yaml"
    run helm upgrade --install gpu-operator "$GPU_OPERATOR_CHART" --repo "$GPU_OPERATOR_REPO" \
        --version "$GPU_OPERATOR_VERSION" --namespace gpu-operator --wait \
        --set devicePlugin.config.name=device-plugin-config --set devicePlugin.config.default=exclusive \
        --set migManager.config.name=mig-parted-config
fi
run helm upgrade --install kueue "$KUEUE_CHART" --version "$KUEUE_VERSION" \
    --namespace kueue-system --create-namespace --wait
run helm upgrade --install jobset "$JOBSET_CHART" --version "$JOBSET_VERSION" \
    --namespace jobset-system --create-namespace --wait
run helm upgrade --install kubeflow-trainer "$TRAINER_CHART" --version "$TRAINER_VERSION" \
    --namespace kubeflow-system --create-namespace --wait
run kubectl apply --server-side -k "$TRAINING_OPERATOR_KUSTOMIZE"
run helm upgrade --install volcano "$VOLCANO_CHART" --repo "$VOLCANO_REPO" --version "$VOLCANO_VERSION" \
    --namespace volcano-system --create-namespace --wait
run helm upgrade --install kube-prometheus-stack "$PROMETHEUS_STACK_CHART" \
    --version "$PROMETHEUS_STACK_VERSION" --namespace monitoring --create-namespace --wait \
    --set prometheus.prometheusSpec.podMonitorSelectorNilUsesHelmValues=false

# An RWX StorageClass only where the cluster has none (the multi-node lessons share a claim).
rwx_present=0
if [ "$DRY_RUN" = 0 ] && kubectl get storageclass -o jsonpath='{.items[*].provisioner}' | grep -Eq 'nfs|cephfs|efs|filestore|file.csi|lustre'; then
    rwx_present=1
fi
if [ "$rwx_present" = 0 ]; then
    [ "$DRY_RUN" = 1 ] && echo "# only when no StorageClass has an RWX provisioner:"
    run helm upgrade --install nfs "$NFS_CHART" --repo "$NFS_REPO" --version "$NFS_VERSION" \
        --namespace nfs --create-namespace --wait --set storageClass.name=nfs
fi

run kubectl apply -k "$ROOT/manifests/00-course/"
run python3 -m kubecourse.cli doctor --namespace kubecourse
