"""`kubecourse` command line: the facade's verbs for a terminal.

kubecourse env                                   # what notebook 00 checks
kubecourse doctor --namespace learner-01 --lesson 02   # preflight on the cluster, exit 1 on a failure
kubecourse render 01 --set name=my-run --set gpus=0   # manifest set 01: lesson 02's Job
kubecourse validate 01                           # or a YAML file
kubecourse submit 01 --set smoke=true --set env='{"DATASET":"synthetic"}' --follow
kubecourse workshop up --learners 3              # table of what would be created (dry run)
kubecourse workshop up --learners 3 --apply --backend kubernetes   # create; `down` removes
kubecourse workshop creds --learners 3 --out kubeconfigs/          # one kubeconfig per learner
kubecourse workshop status --learners 3                            # the progress board
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .errors import CourseError
from .manifests import parse_yaml, render


def _parse_sets(pairs: list[str]) -> dict[str, Any]:
    """--set key=value; values are JSON when they parse as JSON (numbers, lists, maps), else strings."""
    values = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set {pair!r}: expected key=value")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return values


def _objects(target: str, sets: list[str]) -> list[dict]:
    path = Path(target)
    if path.is_file():
        from .manifests import apply_options

        return apply_options(parse_yaml(path.read_text(), str(path)), **_parse_sets(sets))
    return render(target, **_parse_sets(sets))


def _workshop(args: argparse.Namespace) -> int:
    from .workshop import DRY_RUN_NOTE, NOT_CHECKED, Workshop

    ws = Workshop(
        learners=args.learners, name=args.name, gpus=args.gpus, cpu=args.cpu, memory=args.memory
    )
    if args.action in ("creds", "status"):
        return _workshop_cluster(ws, args)
    objects = ws.render()
    if not args.apply:
        print(ws.table(objects))
        verb = "create" if args.action == "up" else "delete"
        print(f"dry run: would {verb} {len(objects)} objects; add --apply to do it")
        return 0
    from .backends.config import KubernetesBackendConfig
    from .client import make_backend

    config = args.backend
    if args.backend == "kubernetes":
        config = KubernetesBackendConfig(kubeconfig=args.kubeconfig)
    backend = make_backend(config)
    try:
        if args.action == "up":
            results = ws.up(
                backend, dry_run=args.server_dry_run, create_namespaces=args.create_namespaces
            )
        else:
            results = ws.down(backend)
    finally:
        backend.close()
    print(ws.table(objects, results))
    if NOT_CHECKED in results.values():
        print(f"note: {DRY_RUN_NOTE}")
    return 0


def _workshop_cluster(ws, args: argparse.Namespace) -> int:
    """creds and status read and write through the cluster API (kubeconfig of the instructor)."""
    from .cluster import ClusterApi

    api = ClusterApi(kubeconfig=args.kubeconfig)
    try:
        if args.action == "creds":
            rows = ws.credentials(api, args.out, expiry_s=int(args.expiry_hours * 3600))
            for row in rows:
                print(f"{row['learner']}  {row['kubeconfig']}  expires {row['expires']}")
            print(f"{len(rows)} kubeconfigs in {args.out}: hand each learner theirs")
        else:
            print(ws.board(ws.jobs(api)))
    finally:
        api.close()
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from .cluster import ClusterApi
    from .context import resolve_namespace, resolve_queue
    from .doctor import run_doctor

    api = ClusterApi(kubeconfig=args.kubeconfig)
    try:
        report = run_doctor(
            api,
            namespace=resolve_namespace(args.namespace or "", args.kubeconfig),
            lessons=args.lesson or None,
            queue=resolve_queue(args.queue or "", args.kubeconfig),
        )
    finally:
        api.close()
    print(report)
    return 0 if report.ok else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubecourse", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_manifest_commands(sub)
    _add_doctor(sub)
    _add_workshop(sub)
    return parser


def _add_manifest_commands(sub) -> None:
    sub.add_parser("env", help="check Python, torch, GPU, disk and cluster")
    for name, text in (
        ("render", "print a manifest set with options applied"),
        ("validate", "schema + CRD + policy checks"),
        ("submit", "validate and run on a backend"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument(
            "target",
            help="manifest set number or folder (01 = manifests/01-cifar10-job/, used by lessons "
            "02 and 11; see `python -m kubecourse.coursemap`) or a YAML file",
        )
        command.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="a typed option (repeatable)",
        )
        if name == "submit":
            command.add_argument("--backend", default="local", choices=["local", "kubernetes"])
            command.add_argument(
                "--dry-run", action="store_true", help="server-side dry run (kubernetes)"
            )
            command.add_argument(
                "--follow", action="store_true", help="follow logs and wait for the end"
            )
            command.add_argument("--timeout", type=float, default=3600, help="seconds to wait")


def _add_doctor(sub) -> None:
    doctor = sub.add_parser("doctor", help="preflight: API, versions, CRDs, GPUs, storage, rights")
    doctor.add_argument("--namespace", help="default: $KUBECOURSE_NAMESPACE, kubeconfig context")
    doctor.add_argument(
        "--lesson", action="append", help="manifest lesson number (repeatable; default: all)"
    )
    doctor.add_argument("--queue", help="LocalQueue to check (default: $KUBECOURSE_QUEUE)")
    doctor.add_argument("--kubeconfig", help="kubeconfig file (default: what kubectl uses)")


def _add_workshop(sub) -> None:
    workshop = sub.add_parser("workshop", help="namespaces, quotas, queues, RBAC for N learners")
    workshop.add_argument(
        "action",
        choices=["up", "down", "creds", "status"],
        help="create, remove, write one kubeconfig per learner, show the progress board",
    )
    workshop.add_argument("--learners", type=int, required=True)
    workshop.add_argument("--name", default="kubecourse", help="label value that groups it all")
    workshop.add_argument(
        "--gpus", type=int, help="GPU quota per learner (default: largest lesson)"
    )
    workshop.add_argument("--cpu", help="cpu quota per learner (default: largest lesson)")
    workshop.add_argument("--memory", help="memory quota per learner (default: largest lesson)")
    workshop.add_argument("--backend", default="local", choices=["local", "kubernetes"])
    workshop.add_argument("--kubeconfig", help="kubeconfig file (default: what kubectl uses)")
    workshop.add_argument(
        "--apply", action="store_true", help="really create/delete (default: only print the plan)"
    )
    workshop.add_argument(
        "--server-dry-run", action="store_true", help="with --apply: dryRun=All (kubernetes)"
    )
    workshop.add_argument(
        "--create-namespaces",
        action="store_true",
        help="with --server-dry-run: create the namespaces for real, dry-run everything else",
    )
    workshop.add_argument("--out", default="workshop-kubeconfigs", help="creds: output folder")
    workshop.add_argument(
        "--expiry-hours", type=float, default=24.0, help="creds: token lifetime in hours"
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "workshop":
            return _workshop(args)
        if args.command == "doctor":
            return _doctor(args)
        if args.command == "env":
            from .env import check_environment

            print(json.dumps(check_environment(), indent=2))
            return 0
        objects = _objects(args.target, args.set)
        if args.command == "render":
            from .display import to_yaml

            print(to_yaml(objects), end="")
            return 0
        if args.command == "validate":
            from .validation import validate

            report = validate(objects)
            print(report)
            return 0 if report.ok else 1
        from .client import TrainingClient

        with TrainingClient(backend=args.backend) as client:
            job = client.submit(objects, dry_run=args.dry_run)
            if args.follow and not args.dry_run:
                client.logs(job, follow=True)
                status = client.wait(job, timeout_s=args.timeout, progress=False)
                return 0 if status.phase == "Succeeded" else 1
        return 0
    except CourseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
