"""Lesson 06's compliance checks: data/model cards and where the fine-tuned weights may live."""

from __future__ import annotations

import copy

import pytest

from kubecourse import render
from kubecourse.compliance import check_card, load_cards, weights_exposure


def test_the_course_cards_pass_and_the_gated_model_is_flagged_for_review():
    cards = load_cards()
    assert check_card(cards["kubecourse-instructions"], cards) == []
    assert check_card(cards["tiny-llama"], cards) == []
    (finding,) = check_card(cards["meta-llama/Llama-3.2-1B-Instruct"], cards)
    assert finding.startswith("license:") and "read its terms" in finding


@pytest.mark.parametrize(
    "change, field",
    [
        ({"license": ""}, "license: missing"),
        ({"license": "CC-BY-NC-4.0"}, "forbids commercial use"),
        ({"personal_data": "personal"}, "legal_basis"),
        ({"personal_data": "maybe"}, "personal_data: one of"),
        ({"derived_from": ["nowhere"]}, "no card for"),
    ],
)
def test_each_problem_is_named(change, field):
    cards = load_cards()
    card = {**cards["tiny-llama"], **change}
    assert any(field in p for p in check_card(card, cards)), check_card(card, cards)


def test_a_model_cannot_drop_its_data_sets_non_commercial_licence():
    cards = load_cards()
    nc = {**cards["kubecourse-instructions"], "name": "nc-data", "license": "CC-BY-NC-4.0"}
    model = {**cards["tiny-llama"], "derived_from": ["nc-data"]}
    assert any("cannot drop" in p for p in check_card(model, {**cards, "nc-data": nc}))


def test_weights_exposure_of_the_finetune_job():
    objects = render("03")
    assert weights_exposure(objects) == []
    leaky = copy.deepcopy(objects)
    job = next(o for o in leaky if o["kind"] == "Job")
    for volume in job["spec"]["template"]["spec"]["volumes"]:
        if volume["name"] == "outputs":
            volume.pop("persistentVolumeClaim")
            volume["emptyDir"] = {}
    assert any("not on a PVC" in p for p in weights_exposure(leaky))
    assert weights_exposure(objects, dockerfile="COPY model.safetensors /m/\n")
