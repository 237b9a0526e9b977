# Shared by scripts/cluster-up.sh, cluster-down.sh and build-image.sh (sourced, not run).
# `run CMD...` prints the command ("+ CMD") and runs it, or only prints it with --dry-run.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../cluster/versions.env
source "$ROOT/cluster/versions.env"
DRY_RUN=0

run() {
    printf '+'; printf ' %q' "$@"; printf '\n'
    if [ "$DRY_RUN" = 0 ]; then "$@"; fi
}

need() {  # need TOOL: fail early (dry runs only note it) when a tool is missing
    if ! command -v "$1" >/dev/null 2>&1; then
        if [ "$DRY_RUN" = 1 ]; then echo "# note: $1 is not installed here (dry run: nothing is run)"; return 0; fi
        echo "error: $1 is not installed; see docs/cluster-setup.md" >&2
        exit 1
    fi
}
