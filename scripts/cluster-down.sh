#!/usr/bin/env bash
# Remove what scripts/cluster-up.sh installed (the releases, or the whole kind cluster).
#
#   scripts/cluster-down.sh --kind        # delete the kind cluster
#   scripts/cluster-down.sh --existing    # uninstall the releases from $KUBECONFIG's cluster
#   ... --dry-run                         # print every command, run none
set -euo pipefail
source "$(dirname "$0")/cluster-lib.sh"
MODE="" CLUSTER=kubecourse
while [ $# -gt 0 ]; do
    case "$1" in
        --kind) MODE=kind ;;
        --existing) MODE=existing ;;
        --dry-run) DRY_RUN=1 ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[ -n "$MODE" ] || { echo "choose --kind or --existing (see --help)" >&2; exit 2; }
if [ "$MODE" = kind ]; then
    need kind
    run kind delete cluster --name "$CLUSTER"
    exit 0
fi
need kubectl; need helm
run kubectl delete -k "$ROOT/manifests/00-course/" --ignore-not-found
for release in "nfs nfs" "kube-prometheus-stack monitoring" "volcano volcano-system" \
    "kubeflow-trainer kubeflow-system" "jobset jobset-system" "kueue kueue-system" "gpu-operator gpu-operator"; do
    set -- $release
    run helm uninstall "$1" --namespace "$2" --ignore-not-found
done
run kubectl delete --ignore-not-found -k "$TRAINING_OPERATOR_KUSTOMIZE"
