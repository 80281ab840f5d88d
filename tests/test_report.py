"""`robust-nic report`: evaluation and study runs gathered into one Markdown + HTML page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import compose_config

from robust_nic.cli import main as cli_main
from robust_nic.config import resolve, save_settings, write_json
from robust_nic.evaluation.manifest import write_manifest
from robust_nic.evaluation.outputs import plot_delta_psnr_vs_eps
from robust_nic.evaluation.report import find_runs, write_report

CLEAN = {"test/clean/bpp": 0.5, "test/clean/bpp_est": 0.52, "test/clean/psnr": 30.0, "test/clean/ms_ssim": 0.95,
         "test/images": 3.0}  # fmt: skip
ADV = {"psnr_in": 40.1, "psnr_out": 22.0, "delta_psnr": 18.1, "psnr": 21.0, "bpp": 0.6, "delta_bpp_pct": 20.0}


def fake_run(path, overrides, metrics):
    """A run directory as evaluate.py leaves it: the real resolved config, made-up metrics."""
    settings = resolve(compose_config("evaluate", ["model.checkpoint=/ckpt/robust.pth.tar", *overrides]))
    save_settings(settings, path)
    write_json(metrics, path / "metrics.json")
    (path / ".hydra").mkdir()
    (path / ".hydra" / "config.yaml").write_text("unresolved: true\n")  # Hydra's copy: not a run
    return path


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    attack = ["attack=pgd", "attack.eps=0.01"]
    smooth = {"test/adv/delta_psnr_smooth": 6.5}  # evaluate.py writes it for undefended codecs only
    fake_run(root / "plain", attack, CLEAN | {f"test/adv/{k}": v for k, v in ADV.items()} | smooth)
    defended = CLEAN | {"test/clean/bpp": 0.55, "test/clean/psnr": 29.5}
    defended |= {f"test/adv/{k}": v - 10 for k, v in ADV.items()} | {
        f"test/adaptive/{k}": v - 5 for k, v in ADV.items()
    }
    fake_run(root / "ensemble", [*attack, "defense=self_ensemble"], defended)
    study = fake_run(root / "recompression", ["study=recompression", "study.generations=3"],
                     {"study/recompression/robust/psnr_gen3": 20.0})  # fmt: skip
    plot_delta_psnr_vs_eps({"psnr": [(1, 30.0), (2, 25.0), (3, 20.0)]}, study / "recompression.png")
    (study / "recompression.csv").write_text("codec,generation,psnr\nrobust,1,30\n")
    write_manifest(study, "recompression", "Recompression over 3 generations", "Encode, decode, repeat.",
                   [{"codec": "robust", "psnr_gen1": 30.0, "psnr_gen3": 20.0}],
                   {"recompression.png": "quality per generation"}, {"recompression.csv": "means"})  # fmt: skip
    (root / "notes").mkdir()  # no results: ignored
    return root


def test_report_has_clean_robustness_and_study_sections(runs, tmp_path):
    path = write_report([runs], tmp_path / "report")
    text = path.read_text()
    assert path.name == "report.md" and (tmp_path / "report" / "report.html").is_file()
    for heading in ("## How to read this page", "## Summary", "## Clean rate-distortion", "## Robustness",
                    "## Study: Recompression over 3 generations", "delta_psnr"):  # fmt: skip
        assert heading in text, heading
    clean_rows = [line for line in text.splitlines() if line.startswith("| robust | bmshj2018-hyperprior")]
    assert len(clean_rows) == 2  # both evaluation runs, one row each
    robustness = [line for line in text.splitlines() if "pgd" in line and line.startswith("| robust")]
    assert len(robustness) == 3  # plain: adv; ensemble: adv (transferred) and adaptive
    assert any(
        "adaptive" in line and "13.10" in line and "+0.050" in line and "-0.50 dB" in line
        for line in robustness
    )
    assert any("adv (direct)" in line and "| 18.10 | 6.50 |" in line for line in robustness)
    assert any("adaptive" in line and "| 13.10 | n/a |" in line for line in robustness)
    assert "| robust | 30.00 | 20.00 |" in text  # the study's summary table
    assert "PSNR vs the original 30.0 dB after one pass, 20.0 dB after 3 (recompression)" in text  # findings
    assert "![quality per generation](files/recompression/recompression.png)" in text
    assert (tmp_path / "report" / "files" / "recompression" / "recompression.png").is_file()
    page = (tmp_path / "report" / "report.html").read_text()
    separators = [line for line in text.splitlines() if line.startswith("|---")]
    assert (
        page.count("<table>") == len(separators) == 4
        and "<img src='files/recompression/recompression.png'" in page
    )


def test_runs_are_found_below_folders_and_hydra_copies_skipped(runs):
    found = find_runs([runs, runs / "plain"])
    assert sorted(r.name for r in found) == ["ensemble", "plain", "recompression"]
    assert [r.is_study for r in sorted(found, key=lambda r: r.name)] == [False, False, True]
    with pytest.raises(FileNotFoundError, match="no run directories"):
        find_runs([runs / "notes"])


def test_report_command(runs, tmp_path, capsys):
    cli_main(["report", str(runs / "plain"), str(runs / "ensemble"), "--out", str(tmp_path / "out")])
    assert "report written to" in capsys.readouterr().out
    text = (tmp_path / "out" / "report.md").read_text()
    assert "adv (transferred)" in text and "Study:" not in text


def rd_family(root, name, points, ms_ssim=0.95):
    """Evaluation runs of one codec at several qualities: one (bpp, PSNR) point each."""
    for quality, (bpp, psnr) in enumerate(points, start=1):
        metrics = CLEAN | {"test/clean/bpp": bpp, "test/clean/psnr": psnr, "test/clean/ms_ssim": ms_ssim + 0.01 * quality}
        fake_run(root / name / f"q{quality}", [f"model.quality={quality}"], metrics)
    return str(root / name)


def test_bdrate_of_a_codec_needing_ten_percent_more_bits(tmp_path, capsys):
    anchor_points = [(0.2, 27.0), (0.4, 30.0), (0.7, 33.0), (1.1, 36.0)]
    anchor = rd_family(tmp_path, "anchor", anchor_points)
    test = rd_family(tmp_path, "robust", [(1.1 * bpp, psnr) for bpp, psnr in anchor_points])
    cli_main(["bdrate", "--anchor", anchor, "--test", test, "--out", str(tmp_path / "bd.json")])
    printed = capsys.readouterr().out
    assert "BD-rate (psnr): +10.00 %" in printed
    # Each side's points are printed with their runs, lowest rate first.
    assert f"  test: 0.2200 bpp  27.000 dB  {Path(test).resolve() / 'q1'}" in printed
    result = json.loads((tmp_path / "bd.json").read_text())
    assert result["psnr"]["bd_rate_pct"] == pytest.approx(10.0, abs=1e-6)
    assert result["psnr"]["bd_quality_db"] < 0  # fewer dB at the same rate
    # Same codec against itself: no cost.
    cli_main(["bdrate", "--anchor", anchor, "--test", anchor])
    assert "BD-rate (psnr): +0.00 %" in capsys.readouterr().out


@pytest.mark.parametrize("case, expected", [
    ("one point", "at least 2 qualities"),
    ("no overlap", "do not overlap"),
    ("other images", "different images"),
    ("nested run", "lies inside run"),
])  # fmt: skip
def test_bdrate_says_why_it_cannot_compare(tmp_path, capsys, case, expected):
    anchor = rd_family(tmp_path, "anchor", [(0.2, 27.0), (0.4, 30.0)])
    if case == "one point":
        test = rd_family(tmp_path, "robust", [(0.3, 28.0)])
    elif case == "no overlap":
        test = rd_family(tmp_path, "robust", [(2.0, 40.0), (3.0, 44.0)])
    elif case == "nested run":  # another recipe's run kept inside q1's folder (a BD-rate would count it as a third point)
        test = rd_family(tmp_path, "robust", [(0.25, 27.5), (0.45, 30.5)])
        fake_run(tmp_path / "robust" / "q1" / "recon", ["model.quality=1"], CLEAN | {"test/clean/bpp": 0.3})
    else:
        test = str(tmp_path / "robust")
        for quality, (bpp, psnr) in enumerate([(0.2, 27.0), (0.4, 30.0)], start=1):
            metrics = CLEAN | {"test/clean/bpp": bpp, "test/clean/psnr": psnr}
            fake_run(tmp_path / "robust" / f"q{quality}", [f"model.quality={quality}", "max_images=1"], metrics)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["bdrate", "--anchor", anchor, "--test", test])
    assert exit_info.value.code == 2 and expected in capsys.readouterr().err


def test_report_and_bdrate_skip_broken_runs_naming_the_file(runs, tmp_path, capsys):
    """One truncated metrics.json, one broken config.yaml and one partial run: the good runs are still
    reported, each bad one is named in a warning; only when nothing valid is left is it an error."""
    truncated = fake_run(runs / "truncated", ["attack=pgd", "attack.eps=0.01"], CLEAN)
    (truncated / "metrics.json").write_text('{"test/clean/bpp": 0.5, "test/clean/ps')
    broken = fake_run(runs / "broken", ["attack=pgd", "attack.eps=0.01"], CLEAN)
    (broken / "config.yaml").write_text("model: [unclosed\n")
    partial = fake_run(runs / "partial", ["attack=pgd"], CLEAN | {"partial": True, "partial_reason": "killed"})
    with pytest.warns(UserWarning) as caught:
        path = write_report([runs], tmp_path / "report")
    messages = " ".join(str(w.message) for w in caught)
    assert str(truncated / "metrics.json") in messages
    assert str(broken / "config.yaml") in messages
    assert "partial" in messages and str(partial) in messages
    text = path.read_text()
    assert "ensemble" in text and "truncated" not in text and "partial" not in text.split("## Summary")[1]

    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (truncated).rename(only_bad / "truncated")
    with pytest.warns(UserWarning), pytest.raises(SystemExit) as exit_info:
        cli_main(["report", str(only_bad), "--out", str(tmp_path / "r2")])
    assert exit_info.value.code == 2
    assert "skipped" in capsys.readouterr().err


def test_bdrate_skips_a_truncated_run(tmp_path, capsys):
    points = [(0.2, 27.0), (0.4, 30.0), (0.7, 33.0)]
    anchor = rd_family(tmp_path, "anchor", points)
    test = rd_family(tmp_path, "robust", [(1.1 * bpp, psnr) for bpp, psnr in points])
    (tmp_path / "robust" / "q3" / "metrics.json").write_text("{")
    with pytest.warns(UserWarning, match="q3"):
        cli_main(["bdrate", "--anchor", anchor, "--test", test, "--out", str(tmp_path / "bd.json")])
    assert "BD-rate (psnr): +" in capsys.readouterr().out
    result = json.loads((tmp_path / "bd.json").read_text())
    assert sorted(result["test"]) == sorted(str((tmp_path / "robust" / q).resolve()) for q in ("q1", "q2"))
