"""Compliance for lesson 06: licence and data-card checks, and where the model weights may live.

    cards = load_cards()                       # docs/cards/*.yaml: data sets and models
    check_card(cards["tiny-llama"], cards)     # [] or the problems, each naming the field
    weights_exposure(load_lesson("03"))        # [] or how the fine-tuned weights could leak

A card says what a data set or model is, under which licence, where it came from, whether it holds
personal data and what it is for. The check is deliberately conservative: a licence outside the
permissive list, or personal data without a stated basis, is a finding for a person to review, not
a verdict. It is not legal advice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .manifests import Manifest, parse_yaml, pod_spec, repo_root, trainer_container, workload

REQUIRED = ("name", "kind", "license", "source", "personal_data", "intended_use")
# SPDX identifiers that allow training and redistributing derived weights, commercial use included.
PERMISSIVE = {
    "Apache-2.0",
    "MIT",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "CC-BY-4.0",
    "CC0-1.0",
    "ODC-By-1.0",
}
NON_COMMERCIAL = {"CC-BY-NC-4.0", "CC-BY-NC-SA-4.0", "CC-BY-NC-ND-4.0"}
PERSONAL_DATA = {"none", "unknown", "pseudonymised", "personal"}


def cards_dir() -> Path:
    return repo_root() / "docs" / "cards"


def load_cards(folder: Path | None = None) -> dict[str, dict[str, Any]]:
    """Every card in docs/cards/, by name."""
    cards = {}
    for path in sorted((folder or cards_dir()).glob("*.yaml")):
        (card,) = parse_yaml(path.read_text(), str(path))
        cards[card["name"]] = card
    return cards


def check_card(card: dict[str, Any], cards: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """What a person must review before training on (or shipping) what `card` describes."""
    problems = [f"{field}: missing" for field in REQUIRED if not card.get(field)]
    licence = card.get("license", "")
    if licence in NON_COMMERCIAL:
        problems.append(f"license: {licence} forbids commercial use of what is trained on it")
    elif licence and licence not in PERMISSIVE:
        problems.append(f"license: {licence} is not a permissive SPDX licence: read its terms")
    if card.get("personal_data") not in PERSONAL_DATA:
        problems.append(f"personal_data: one of {sorted(PERSONAL_DATA)}")
    elif card["personal_data"] == "personal" and not card.get("legal_basis"):
        problems.append("personal_data: personal data needs a legal_basis (consent, contract, ...)")
    for parent in card.get("derived_from") or []:
        upstream = (cards or {}).get(parent)
        if upstream is None:
            problems.append(f"derived_from: no card for {parent!r}")
        elif upstream.get("license") in NON_COMMERCIAL and licence not in NON_COMMERCIAL:
            problems.append(
                f"license: {licence} but trained on {parent} ({upstream['license']}): "
                "a derived model cannot drop the non-commercial restriction"
            )
    return problems


def weights_exposure(objects: list[Manifest], dockerfile: str | None = None) -> list[str]:
    """Ways the fine-tuned weights could leak from the Job's manifests or the image."""
    job = workload(objects)
    spec = pod_spec(job)
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    problems = []
    for mount in trainer_container(spec).get("volumeMounts") or []:
        volume = volumes.get(mount["name"], {})
        if mount["mountPath"].startswith("/outputs") and "persistentVolumeClaim" not in volume:
            problems.append(f"{mount['mountPath']}: outputs not on a PVC (RBAC cannot guard them)")
        if "hostPath" in volume:
            problems.append(
                f"{mount['mountPath']}: a hostPath volume: any pod on the node reads it"
            )
    for env in trainer_container(spec).get("env") or []:
        if env["name"].endswith(("TOKEN", "API_KEY", "SECRET")) and "value" in env:
            problems.append(f"env {env['name']}: an inline token (use a Secret by reference)")
    text = (
        dockerfile if dockerfile is not None else (repo_root() / "labs" / "Dockerfile").read_text()
    )
    for line in text.splitlines():
        words = line.split()
        if (
            words
            and words[0] in ("COPY", "ADD")
            and any(w.endswith((".safetensors", ".bin", ".pt", ".gguf")) for w in words)
        ):
            problems.append(f"Dockerfile: {line.strip()!r} bakes weights into the image")
    return problems
