"""attack=worst_case: the project's strongest attacks as one setting; per image the strongest on the real
bitstream, never weaker than any member alone, and the rows say which member won."""

from __future__ import annotations

import csv

import pytest
from conftest import assert_names_declared, compose_config
from omegaconf import OmegaConf

from robust_nic.attacks import AttackConfigError, AttackSuite, build_attack
from robust_nic.codecs import export_codec
from robust_nic.evaluation.runner import evaluate

MEMBERS = {  # the members of conf/attack/worst_case.yaml, each as a stand-alone attack
    "chen2023": ["attack=chen2023", "attack.proxy=skip"],
    "pgd_ste": ["attack=pgd", "attack.proxy=ste"],
    "pgd_ste_restart": ["attack=pgd", "attack.proxy=ste", "attack.seed=1"],
}


@pytest.fixture(scope="module")
def checkpoint(small_codec, tmp_path_factory):
    return export_codec(small_codec, tmp_path_factory.mktemp("ckpt") / "codec.pth.tar")


def per_image(checkpoint, photo_dir, run_dir, *overrides) -> dict[str, dict]:
    cfg = compose_config("evaluate", [f"model.checkpoint={checkpoint}", "data=folder", f"data.root={photo_dir}",
                                      "device=cpu", "attack.steps=4", "save_images=false", "progress=false",
                                      *overrides])  # fmt: skip
    evaluate(cfg, run_dir)
    with open(run_dir / "per_image.csv", newline="") as handle:
        return {row["image"]: row for row in csv.DictReader(handle)}


def test_worst_case_is_per_image_the_strongest_member(checkpoint, photo_dir, tmp_path):
    worst = per_image(checkpoint, photo_dir, tmp_path / "worst", "attack=worst_case")
    alone = {label: per_image(checkpoint, photo_dir, tmp_path / label, *args) for label, args in MEMBERS.items()}
    assert len(worst) >= 2
    for image, row in worst.items():
        deltas = {label: float(rows[image]["adv/delta_psnr"]) for label, rows in alone.items()}
        assert float(row["adv/delta_psnr"]) == pytest.approx(max(deltas.values()), abs=1e-9)
        won = {label: float(row[f"adv/won_by_{label}"]) for label in MEMBERS}
        assert sum(won.values()) == 1.0
        winner = next(label for label, flag in won.items() if flag == 1.0)
        assert deltas[winner] == max(deltas.values())
        # the kept example is the winner's own: its input PSNR too
        assert float(row["adv/psnr_in"]) == pytest.approx(float(alone[winner][image]["adv/psnr_in"]), abs=1e-9)
    assert_names_declared(tmp_path / "worst")  # adv/won_by_<member>


def test_suite_options_and_errors():
    cfg = compose_config("evaluate", ["attack=worst_case", "attack.steps=7", "attack.eps=0.02"]).attack
    suite = build_attack(OmegaConf.to_container(cfg, resolve=True))
    assert isinstance(suite, AttackSuite) and suite.name == "worst_case" and list(suite.members) == list(MEMBERS)
    assert all(m.options.steps == 7 and m.eps == 0.02 for m in suite.members.values())
    assert suite.members["chen2023"].proxy == "skip" and suite.members["pgd_ste_restart"].seed == 1
    with pytest.raises(AttackConfigError, match="training and the other studies take one attack"):
        suite(None, None)
