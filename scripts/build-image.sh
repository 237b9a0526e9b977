#!/usr/bin/env bash
# `make image`: build the lab image with docker, podman or buildah (the first one found), push it
# (--push) or load it into the kind cluster (--kind), and record its digest in build/image.env,
# so the manifests can be rendered with the image pinned by digest:
#     render("01", image="$IMAGE_DIGEST_REF")      # e.g. ghcr.io/kubecourse/labs@sha256:...
#
#   scripts/build-image.sh [--image REPO:TAG] [--push | --kind] [--dry-run]
set -euo pipefail
source "$(dirname "$0")/cluster-lib.sh"
IMAGE=ghcr.io/kubecourse/labs:0.1.0 TARGET=none
while [ $# -gt 0 ]; do
    case "$1" in
        --image) IMAGE="$2"; shift ;;
        --push) TARGET=push ;;
        --kind) TARGET=kind ;;
        --dry-run) DRY_RUN=1 ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
TOOL=""
for candidate in docker podman buildah; do
    if command -v "$candidate" >/dev/null 2>&1; then TOOL="$candidate"; break; fi
done
if [ -z "$TOOL" ]; then
    if [ "$DRY_RUN" = 0 ]; then echo "error: none of docker, podman, buildah is installed" >&2; exit 1; fi
    echo "# note: none of docker, podman, buildah is installed here; showing the docker commands"
    TOOL=docker
fi
if [ "$TOOL" = buildah ]; then
    run buildah bud -f "$ROOT/labs/Dockerfile" -t "$IMAGE" "$ROOT"
else
    run "$TOOL" build -f "$ROOT/labs/Dockerfile" -t "$IMAGE" "$ROOT"
fi
case "$TARGET" in
    push) run "$TOOL" push "$IMAGE" ;;
    kind) run kind load docker-image "$IMAGE" --name kubecourse ;;
esac
mkdir -p "$ROOT/build"
if [ "$DRY_RUN" = 1 ]; then
    echo "# record: the pushed digest (docker inspect --format '{{index .RepoDigests 0}}') -> build/image.env"
    exit 0
fi
if [ "$TARGET" = push ]; then
    ref="$("$TOOL" inspect --format '{{index .RepoDigests 0}}' "$IMAGE")"
else  # not pushed: the local image ID is the digest of its config (kind loads it as is)
    ref="${IMAGE%:*}@$("$TOOL" inspect --format '{{.Id}}' "$IMAGE")"
fi
printf 'IMAGE=%s\nIMAGE_DIGEST_REF=%s\n' "$IMAGE" "$ref" > "$ROOT/build/image.env"
echo "recorded $ref in build/image.env"
