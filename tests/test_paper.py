"""paper.py: the paper's experiments as staged, resumable Hydra jobs, offline with stand-in codecs."""

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from robust_nic import paper
from robust_nic.settings import PaperEstimate, PaperSettings, plain, typed

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "models=[tiny]",
    "losses=[mse]",
    "focus.model=tiny",
    "focus.loss=mse",
    "pretrained=false",
    "dataset=samples",
    'common=["max_images=1","attack.steps=2","progress=false","save_images=false"]',
    'train_common=["trainer.max_steps=2","trainer.val_check_interval=2","train.val_attack.steps=2",'
    '"data.batch_size=2","data.max_val_images=1","logger=none"]',
    "generations=2",
    "defenses=[bitdepth]",
    "estimate.probe_size=[64,64]",
]


def run_paper(
    tmp_path: Path, *overrides: str, env: dict | None = None, flags=()
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "paper.py"), *flags, f"out={tmp_path / 'paper'}", *overrides],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=1800,
    )


def offline_jobs(out: Path, *overrides: str) -> list:
    from omegaconf import OmegaConf

    from robust_nic.config import compose_config

    cfg = compose_config("paper", [*TINY, f"out={out}", *overrides])
    return paper.build_jobs(typed(PaperSettings, "paper", OmegaConf.to_container(cfg, resolve=True)), log=lambda _: None)


def test_the_offline_job_list(tmp_path):
    """Stand-in first, each stage's jobs in order, every job on the focus codec's stand-in checkpoint."""
    jobs = offline_jobs(tmp_path)
    assert [(j.id, j.stage, j.kind) for j in jobs] == [
        ("standin-tiny-mse-q3", 0, "standin"), ("attack-tiny-mse-q3", 1, "attack"), ("noise-focus", 1, "noise"),
        ("ablation-optimizer", 1, "ablation"), ("ablation-distance", 1, "ablation"),
        ("ablation-budget", 1, "ablation"), ("transfer-image", 1, "transfer"), ("defense-bitdepth", 1, "defense"),
        ("finetune-paper", 1, "finetune"), ("evaluate-finetuned-paper", 2, "evaluate"),
        ("finetune-cheap", 1, "finetune"), ("evaluate-finetuned-cheap", 2, "evaluate"),
        ("transfer-model", 2, "transfer"), ("recompression", 2, "recompression"), ("report", 3, "report"),
    ]  # fmt: skip
    runs = tmp_path / "jobs"
    common = ["data=samples", "max_images=1", "attack.steps=2", "progress=false", "save_images=false"]
    focus = ["model=tiny", "model.quality=3", "loss=mse",
             f"model.checkpoint={runs / 'standin-tiny-mse-q3' / 'checkpoints' / 'last.ckpt'}"]  # fmt: skip
    by_id = {j.id: j for j in jobs}
    assert by_id["defense-bitdepth"].argv == [
        "-m", "robust_nic", "evaluate", *focus, "defense=bitdepth", "attack=worst_case", "attack.eps=0.01",
        *common, f"hydra.run.dir={runs / 'defense-bitdepth'}",
    ]  # fmt: skip
    finetuned = [str(runs / f"finetune-{r}" / "checkpoints" / "last.ckpt") for r in ("paper", "cheap")]
    assert by_id["transfer-model"].argv == [
        "-m", "robust_nic", "evaluate", "study=transfer", *focus, "attack=chen2023", "attack.eps=0.01",
        "study.cross_image=false", f"study.codecs=[{','.join(finetuned)}]",
        "study.labels=[finetuned_paper,finetuned_cheap]", *common, f"hydra.run.dir={runs / 'transfer-model'}",
    ]  # fmt: skip
    assert [j.id for j in offline_jobs(tmp_path, "kinds=[noise,report]")] == ["noise-focus", "report"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("headline_attack=nope", "headline_attack: 'nope' is not a conf/attack config"),
        ("defenses=[bitdepth,nope]", "defenses: 'nope' is not a conf/defense config"),
        ("ablations=[nope]", "ablations: 'nope' is not a conf/experiment config"),
    ],
)
def test_a_config_name_missing_from_conf_is_an_error_naming_the_key(tmp_path, override, message):
    from robust_nic.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        offline_jobs(tmp_path, override)


def test_start_message_lists_missing_weights_kodak_and_an_estimate(tmp_path):
    result = run_paper(
        tmp_path,
        "models=[bmshj2018_hyperprior]",
        "qualities=[1,2]",
        "losses=[mse,ms_ssim]",
        "dry_run=true",
        "estimate.probe_size=[64,64]",
        env={"TORCH_HOME": str(tmp_path / "hub"), "ROBUST_NIC_CACHE": str(tmp_path / "cache")},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "missing: 6 inputs" in out  # 2 qualities x 2 metrics, Kodak, and a training set
    assert "training set: the finetuning jobs (finetune-paper" in out and "need train_root=DIR" in out
    hub = tmp_path / "hub" / "hub" / "checkpoints"  # TORCH_HOME/hub
    assert f"weights bmshj2018_hyperprior quality 1 ms_ssim: {hub}" in out
    assert f"weights bmshj2018_hyperprior quality 2 mse: {hub}" in out
    assert f"Kodak: 24 of 24 images absent from {tmp_path / 'cache' / 'kodak'}" in out
    assert "estimated duration" in out and "probe bmshj2018_hyperprior" in out
    assert not (tmp_path / "paper" / "jobs").exists()  # printed before any work


def test_offline_run_writes_the_report_beside_the_paper_and_a_rerun_skips_finished_jobs(tmp_path):
    reduced = [*TINY, "kinds=[standin,attack,noise,report]"]
    first = run_paper(tmp_path, *reduced)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    jobs = tmp_path / "paper" / "jobs"
    attacked = json.loads((jobs / "attack-tiny-mse-q3" / "metrics.json").read_text())
    noise = json.loads((jobs / "noise-focus" / "metrics.json").read_text())
    table = (tmp_path / "paper" / "report" / "paper.md").read_text()
    assert "| Gaussian noise | 27.09 | 0.9670 |" in table and "| attacked | 11.61 | 0.6752 |" in table
    get = lambda m, k: m.get("metrics", m)[f"test/adv/{k}"]  # noqa: E731
    assert f"{get(noise, 'psnr'):.2f} | {get(noise, 'ms_ssim'):.4f} |" in table.splitlines()[-3]
    assert f"{get(attacked, 'psnr'):.2f} | {get(attacked, 'ms_ssim'):.4f} |" in table.splitlines()[-2]
    assert "not run" in table.splitlines()[-1]  # the finetuning jobs were left out
    assert "paper.md" in (tmp_path / "paper" / "report" / "report.md").read_text()
    images = json.loads((tmp_path / "paper" / "report" / "images.json").read_text())
    trained = images["fingerprints"]["trained"]["standin-tiny-mse-q3"]
    assert images["evaluated"] == ["chelsea.png"] and len(trained) == 6  # 5 training photos, 1 validation
    assert images["overlap"] == [] and not set(trained) & set(images["fingerprints"]["evaluated"])

    results = jobs / "attack-tiny-mse-q3" / "metrics.json"
    before = results.stat().st_mtime_ns
    second = run_paper(tmp_path, *reduced)
    assert second.returncode == 0, second.stderr
    assert "4 jobs, 3 finished, 1 to run" in second.stdout  # only the report is re-built
    assert "paper: run " not in second.stdout
    assert results.stat().st_mtime_ns == before


def test_finetuning_without_a_training_set_stops_before_anything_runs(tmp_path):
    result = run_paper(tmp_path, "models=[tiny]", "losses=[mse]", "focus.model=tiny", "focus.loss=mse",
                       "pretrained=false", "estimate.probe=false", "kinds=[finetune]")  # fmt: skip
    assert result.returncode != 0
    assert "paper: error: training set: the finetuning jobs (finetune-paper" in result.stderr
    assert "dataset=kodak is the evaluation set and is never trained on" in result.stderr
    assert not (tmp_path / "paper" / "jobs").exists()


def test_a_partial_metrics_file_is_not_finished(tmp_path):
    settings = PaperSettings(out=str(tmp_path))
    job = paper.Job("attack-x", 1, "attack", [], "metrics.json")
    results = tmp_path / "jobs" / "attack-x" / "metrics.json"
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps({"partial": True, "metrics": {}}))
    assert not paper.finished(settings, job)
    results.write_text(json.dumps({"metrics": {}}))
    assert paper.finished(settings, job)


@pytest.mark.parametrize(
    ("launcher", "plugin", "target"),
    [
        ("joblib", "hydra_plugins.hydra_joblib_launcher", "JoblibLauncher"),
        ("submitit_slurm", "hydra_plugins.hydra_submitit_launcher", "SlurmLauncher"),
    ],
)
def test_one_override_runs_the_jobs_through_an_existing_launcher(tmp_path, launcher, plugin, target):
    if importlib.util.find_spec(plugin) is None:
        pytest.skip(f"{plugin} is not installed: pip install .[cluster]")
    result = run_paper(
        tmp_path, "stage=1", "job=noise-focus", f"hydra/launcher={launcher}", flags=("--cfg", "hydra")
    )
    assert result.returncode == 0, result.stderr
    assert target in result.stdout


@pytest.mark.slow
def test_the_whole_paper_runs_offline_with_stand_ins(tmp_path):
    result = run_paper(tmp_path, *TINY)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "unfinished: none" in result.stdout
    table = (tmp_path / "paper" / "report" / "paper.md").read_text()
    assert "not run" not in table


def test_the_estimate_prices_batched_evaluation_jobs_with_a_timed_batch(monkeypatch):
    """eval.batch_size in `common` prices the runner's jobs at a batch's measured cost per image; training
    and the studies keep the one-image cost."""
    timed = {1: 2.0, 4: 0.5}  # seconds per image of one pass, as probed at each batch size
    monkeypatch.setattr(paper, "probe_seconds", lambda cfg, model, batch=1: timed[batch])
    cfg = PaperSettings(common=["max_images=2", "eval.batch_size=4"], estimate=PaperEstimate(probe_size=[64, 64]))
    jobs = [paper.Job("attack-x", 1, "attack", [], "metrics.json", "tiny", 10.0),
            paper.Job("finetune-x", 1, "finetune", [], "metrics.json", "tiny", 3.0),
            paper.Job("transfer-x", 1, "transfer", [], "study.json", "tiny", 1.0)]  # fmt: skip
    lines = []
    assert paper.estimate(cfg, jobs, log=lines.append) == 10.0 * 0.5 + (3.0 + 1.0) * 2.0
    assert "0.500 s per image as a batch of 4 (eval.batch_size), 4.00x the speed of one at a time" in lines[-1]
    assert paper.estimate(dataclasses.replace(cfg, common=[]), jobs, log=lines.append) == (10.0 + 3.0 + 1.0) * 2.0


@pytest.mark.parametrize("dataset", ["kodak", "samples"])
def test_dataset_settings_equal_the_composed_data_group(dataset):
    """paper.py reads conf/data/<name>.yaml itself (inside its Hydra app): it must see what a job's `data`
    group resolves to, the schema's defaults included, not the raw file."""
    from omegaconf import OmegaConf

    from robust_nic.config import compose_config
    from robust_nic.paper import dataset_settings

    composed = OmegaConf.to_container(compose_config("evaluate", [f"data={dataset}"]).data, resolve=True)
    crops = ("patch_size", "batch_size")  # training crops: the model config sets them
    assert {k: v for k, v in plain(dataset_settings(dataset)).items() if k not in crops} == {
        k: v for k, v in composed.items() if k not in crops
    }
