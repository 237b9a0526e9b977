#!/usr/bin/env bash
# Multi-node launcher: work out who this node is from the Kubernetes environment, wait for the
# master's DNS name, then exec torchrun with elastic restarts.
#
#   labs/launch.sh [flags] -- <torchrun program args, e.g. -m labs.lm_pretrain --smoke>
#
# Flags (each overrides what the environment says):
#   --nnodes N            number of nodes (pods)
#   --node-rank R         this node's rank, 0..N-1
#   --nproc-per-node G    worker processes per node (one per GPU)
#   --master-addr HOST    rank 0's address (a pod DNS name on Kubernetes)
#   --master-port PORT    rendezvous port on the master (default 29500)
#   --max-restarts K      elastic restarts of the worker group before giving up (default 3)
#   --dns-timeout S       seconds to wait for HOST to resolve (default 300; 0 = do not wait)
#   --rdzv-id ID          rendezvous id shared by all nodes of one run (default: the job name)
#   --dry-run             print the decision and the torchrun command, run nothing
#
# Where the values come from, first match wins (flags beat all of them):
#   TrainJob (Kubeflow Trainer v2)  PET_NNODES, PET_NODE_RANK, PET_NPROC_PER_NODE,
#                                   PET_MASTER_ADDR, PET_MASTER_PORT (set by the trainer runtime)
#   JobSet                          JOBSET_NAME (+ REPLICATED_JOB_NAME, JOB_INDEX) and
#                                   JOB_COMPLETION_INDEX; master <jobset>-<rjob>-<JOB_INDEX>-0.<jobset>
#                                   unless MASTER_ADDR is set; NNODES from the env
#   Indexed Job                     JOB_COMPLETION_INDEX = node rank, NNODES and MASTER_ADDR from
#                                   the manifest's env (MASTER_ADDR=<job>-0.<headless service>)
#   PyTorchJob (Kubeflow v1)        RANK and WORLD_SIZE count PODS here (node rank, number of nodes),
#                                   not processes; MASTER_ADDR/MASTER_PORT set by the operator
#   none of these                   one node: rank 0 of 1, master 127.0.0.1
#
# Rendezvous: c10d on MASTER_ADDR:MASTER_PORT (the agent on the master hosts the store, the others
# connect), so a failed worker makes every node's agent restart its workers together and the lab
# resumes from its newest checkpoint. Worker log lines are prefixed "[rankN]:" (torchrun --tee).
# Exit codes: torchrun's (0, or 1 when the workers failed --max-restarts+1 times); 3 = bad
# arguments or environment; 4 = the master's name did not resolve within --dns-timeout.
set -euo pipefail

die() { echo "launch: error: $*" >&2; exit 3; }
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

nnodes="" node_rank="" nproc="" master_addr="" master_port="" source=""
max_restarts="${MAX_RESTARTS:-3}" dns_timeout="${DNS_TIMEOUT_S:-300}" rdzv_id="${RDZV_ID:-}"
dry_run=0
while [[ $# -gt 0 ]]; do
  if [[ "$1" != "--" && "$1" != "--dry-run" && "$1" == --* ]] && [[ $# -lt 2 || "$2" == --* ]]; then
    die "$1 needs a value"
  fi
  case "$1" in
    --nnodes) nnodes="$2"; shift 2 ;;
    --node-rank) node_rank="$2"; shift 2 ;;
    --nproc-per-node) nproc="$2"; shift 2 ;;
    --master-addr) master_addr="$2"; shift 2 ;;
    --master-port) master_port="$2"; shift 2 ;;
    --max-restarts) max_restarts="$2"; shift 2 ;;
    --dns-timeout) dns_timeout="$2"; shift 2 ;;
    --rdzv-id) rdzv_id="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; break ;;
    *) die "unknown flag $1 (program arguments go after --)" ;;
  esac
done
[[ $# -gt 0 ]] || die "no program given: launch.sh [flags] -- -m labs.lm_pretrain ..."

# ---- derive from the environment (only what the flags left empty) ------------------------------
if [[ -n "${PET_NNODES:-}" ]]; then
  source="TrainJob (PET_* variables)"
  : "${nnodes:=${PET_NNODES}}" "${node_rank:=${PET_NODE_RANK:-0}}"
  : "${nproc:=${PET_NPROC_PER_NODE:-}}" "${master_addr:=${PET_MASTER_ADDR:-}}"
  : "${master_port:=${PET_MASTER_PORT:-}}"
elif [[ -n "${JOBSET_NAME:-}" ]]; then
  source="JobSet (JOBSET_NAME=${JOBSET_NAME})"
  : "${node_rank:=${JOB_COMPLETION_INDEX:-0}}" "${nnodes:=${NNODES:-}}"
  : "${master_addr:=${MASTER_ADDR:-${JOBSET_NAME}-${REPLICATED_JOB_NAME:-workers}-${JOB_INDEX:-0}-0.${JOBSET_NAME}}}"
elif [[ -n "${JOB_COMPLETION_INDEX:-}" ]]; then
  source="Indexed Job (JOB_COMPLETION_INDEX=${JOB_COMPLETION_INDEX})"
  : "${node_rank:=${JOB_COMPLETION_INDEX}}" "${nnodes:=${NNODES:-}}"
  : "${master_addr:=${MASTER_ADDR:-}}"
elif [[ -n "${RANK:-}" && -n "${WORLD_SIZE:-}" && -n "${MASTER_ADDR:-}" ]]; then
  source="PyTorchJob (RANK/WORLD_SIZE count pods)"
  : "${node_rank:=${RANK}}" "${nnodes:=${WORLD_SIZE}}" "${master_addr:=${MASTER_ADDR}}"
else
  source="flags / single node"
fi
: "${nnodes:=1}" "${node_rank:=0}" "${nproc:=${NPROC_PER_NODE:-1}}"
: "${master_addr:=${MASTER_ADDR:-127.0.0.1}}" "${master_port:=${MASTER_PORT:-29500}}"
: "${rdzv_id:=${JOBSET_NAME:-${JOB_NAME:-kubecourse}}}"

for pair in "nnodes:$nnodes" "node-rank:$node_rank" "nproc-per-node:$nproc" \
            "master-port:$master_port" "max-restarts:$max_restarts" "dns-timeout:$dns_timeout"; do
  is_uint "${pair#*:}" || die "--${pair%%:*} must be a non-negative integer, got '${pair#*:}'"
done
[[ "$nnodes" -ge 1 ]] || die "--nnodes must be >= 1, got $nnodes"
[[ "$nproc" -ge 1 ]] || die "--nproc-per-node must be >= 1, got $nproc"
[[ "$node_rank" -lt "$nnodes" ]] || die "node rank $node_rank is not below nnodes $nnodes (from $source)"
[[ -n "$master_addr" ]] || die "no master address: set MASTER_ADDR or pass --master-addr (from $source)"

echo "launch: source=$source nnodes=$nnodes node_rank=$node_rank nproc_per_node=$nproc" \
     "master=$master_addr:$master_port rdzv_id=$rdzv_id max_restarts=$max_restarts"

# The image has `torchrun` on PATH; a bare Python environment may only have the module.
if command -v torchrun >/dev/null 2>&1; then launcher=(torchrun); else launcher=(python -m torch.distributed.run); fi
cmd=("${launcher[@]}" --nnodes="$nnodes" --node-rank="$node_rank" --nproc-per-node="$nproc"
     --rdzv-backend=c10d --rdzv-endpoint="$master_addr:$master_port" --rdzv-id="$rdzv_id"
     --max-restarts="$max_restarts" --tee=3 "$@")
# Each restart round gets a fresh worker store (rank 0 picks a new port) instead of sharing the
# agent's rendezvous store: in the shared store the keys of the previous round's process group are
# still there, so after an elastic restart the new workers read the dead workers' addresses and
# gloo fails with "Connection refused" (measured: every restart failed that way with torch 2.13).
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1
# torchrun prefixes each worker line with this (${rank} is the global rank); not a shell expansion.
export TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE='[rank${rank}]:'
if [[ "$dry_run" == 1 ]]; then
  printf 'launch: would run:'; printf ' %q' "${cmd[@]}"; echo
  exit 0
fi

# ---- wait for the master's DNS name ------------------------------------------------------------
# A headless Service publishes pod names only once the pods exist (publishNotReadyAddresses makes
# that before they are Ready); a node that starts first must not fail on NXDOMAIN.
resolves() {
  if command -v getent >/dev/null 2>&1; then
    getent hosts "$1" >/dev/null 2>&1
  else
    python -c 'import socket, sys; socket.getaddrinfo(sys.argv[1], None)' "$1" >/dev/null 2>&1
  fi
}
start=$SECONDS
until resolves "$master_addr"; do
  if (( SECONDS - start >= dns_timeout )); then
    echo "launch: error: $master_addr did not resolve within ${dns_timeout}s (is the headless Service there, and the pod's subdomain its name?)" >&2
    exit 4
  fi
  sleep 1
done
(( SECONDS - start > 0 )) && echo "launch: $master_addr resolved after $((SECONDS - start))s"

exec "${cmd[@]}"
