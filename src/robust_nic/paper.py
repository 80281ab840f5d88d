"""The paper's experiments as a list of independent, resumable jobs, each one public command
(evaluate.py / train.py / robust-nic) writing into out/jobs/<id>. Stages order the dependencies:
1 attacks, ablations, transfer, defenses, finetuning; 2 what needs a finetuned codec; 3 the report."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from robust_nic.config import CONF_DIR

CLI = ["-m", "robust_nic"]  # the robust-nic command, from this interpreter


@dataclass
class Job:
    id: str
    stage: int
    kind: str
    argv: list[str]  # after `python`
    done_file: str  # relative to the job directory; finished = present and not partial
    model: str | None = None
    passes: float = 0.0  # forward+backward passes at the probe size (for the estimate)
    notes: list[str] = field(default_factory=list)


def job_dir(cfg, job_id: str) -> Path:
    return Path(cfg["out"]) / "jobs" / job_id


def finished(cfg, job: Job) -> bool:
    path = job_dir(cfg, job.id) / job.done_file
    if not path.is_file():
        return False
    if path.suffix == ".json":
        try:
            return not json.loads(path.read_text()).get("partial", False)
        except (json.JSONDecodeError, AttributeError):
            return False
    return True


def exists(group: str, name: str) -> bool:
    return (CONF_DIR / group / f"{name}.yaml").is_file()


def model_arch(model: str) -> str:
    return yaml.safe_load((CONF_DIR / "model" / f"{model}.yaml").read_text())["model"]["arch"]


def model_qualities(cfg, model: str) -> list[int]:
    from robust_nic.codecs import qualities

    if cfg.get("qualities"):
        return list(cfg["qualities"])
    return [int(q) for q in qualities(model_arch(model))] if model != "tiny" else [3]


def images(cfg) -> int:
    for o in cfg.get("common") or []:
        if o.startswith("max_images="):
            return int(o.split("=", 1)[1])
    return 24 if cfg["dataset"] == "kodak" else 3


def build_jobs(cfg, log=print) -> list[Job]:
    """Every job of the paper, skipping (with a printed message) configs absent from this tree."""
    evaluate = ["-m", "robust_nic", "evaluate"]
    train = ["-m", "robust_nic", "train"]
    common = [f"data={cfg['dataset']}", *(cfg.get("common") or [])]
    train_root = [f"data.train_root={cfg['train_root']}"] if cfg.get("train_root") else []
    train_common = [f"data={cfg['dataset']}", *train_root, *(cfg.get("train_common") or [])]
    out = Path(cfg["out"]) / "jobs"
    standins: dict[tuple, str] = {}  # (model, loss, quality) -> the stand-in job's checkpoint

    def weights(model: str, loss: str, q: int) -> list[str]:
        """Zoo weights, or (pretrained=false) a stand-in trained for a few steps in stage 0."""
        if cfg["pretrained"]:
            return []
        sid = f"standin-{model}-{loss}-q{q}"
        if sid not in standins:
            standins[sid] = str(out / sid / "checkpoints" / "last.ckpt")
            jobs.append(
                Job(
                    sid,
                    0,
                    "standin",
                    [
                        *train,
                        f"model={model}",
                        f"model.quality={q}",
                        f"loss={loss}",
                        "model.pretrained=false",
                        "attack=none",
                        *train_common,
                        f"hydra.run.dir={out / sid}",
                    ],
                    "train_metrics.json",
                    model,
                )
            )
        return [f"model.checkpoint={standins[sid]}"]

    jobs: list[Job] = []
    attack = cfg["headline_attack"] if exists("attack", cfg["headline_attack"]) else "chen2023"
    if attack != cfg["headline_attack"]:
        log(f"paper: attack={cfg['headline_attack']} is not in this tree; the headline attack is chen2023")
    budget = [f"attack={attack}", f"attack.eps={cfg['eps']}"]
    single = ["attack=chen2023", f"attack.eps={cfg['eps']}"]  # the studies take one attack (the paper's)
    per_image = dict(cfg["estimate"]["passes_per_image"])
    n = images(cfg)
    f = cfg["focus"]
    bare = [f"model={f['model']}", f"model.quality={f['quality']}", f"loss={f['loss']}"]
    focus = [*bare, *weights(f["model"], f["loss"], f["quality"])]

    def run(job_id: str) -> str:
        return f"hydra.run.dir={out / job_id}"

    for model in cfg["models"]:
        for loss in cfg["losses"]:
            for q in model_qualities(cfg, model):
                jid = f"attack-{model}-{loss}-q{q}"
                argv = [
                    *evaluate,
                    f"model={model}",
                    f"model.quality={q}",
                    f"loss={loss}",
                    *weights(model, loss, q),
                    *budget,
                    *common,
                    "save_images=false",
                    run(jid),
                ]
                jobs.append(Job(jid, 1, "attack", argv, "metrics.json", model, per_image["attack"] * n))
    jid = "noise-focus"
    jobs.append(
        Job(
            jid,
            1,
            "noise",
            [*evaluate, *focus, "attack=noise", f"attack.eps={cfg['eps']}", *common, run(jid)],
            "metrics.json",
            f["model"],
            per_image["noise"] * n,
        )
    )
    for name in cfg["ablations"]:
        if not exists("experiment", name):
            log(f"paper: experiment={name} is not in this tree; its job is skipped")
            continue
        jid = name.replace("_", "-")
        argv = [*evaluate, "-m", f"experiment={name}", *focus, *common, f"hydra.sweep.dir={out / jid}"]
        jobs.append(Job(jid, 1, "ablation", argv, "ablation.csv", f["model"], per_image["ablation"] * n))
    jid = "transfer-image"
    jobs.append(
        Job(
            jid,
            1,
            "transfer",
            [*evaluate, "study=transfer", *focus, *single, *common, run(jid)],
            "study.json",
            f["model"],
            per_image["transfer"] * n,
        )
    )
    zoo_file = focus_weights(cfg)
    for name in cfg["defenses"]:
        if name == "latent_range" and exists("defense", name) and zoo_file is None:
            log(
                "paper: defense=latent_range needs a checkpoint file to fit its ranges (pretrained=true); skipped"
            )
            continue
        if not exists("defense", name):
            log(f"paper: defense={name} is not in this tree; its job is skipped")
            continue
        jid = f"defense-{name}"
        extra, stage = [], 1
        if name == "latent_range":  # needs the fitted ranges (job fit-latent-range, stage 1)
            extra, stage = (
                [f"defense.ranges={out / 'fit-latent-range' / 'ranges.pt'}", f"model.checkpoint={zoo_file}"],
                2,
            )
        jobs.append(
            Job(
                jid,
                stage,
                "defense",
                [*evaluate, *focus, f"defense={name}", *extra, *budget, *common, run(jid)],
                "metrics.json",
                f["model"],
                per_image["defense"] * n,
            )
        )
    if "latent_range" in cfg["defenses"] and exists("defense", "latent_range") and zoo_file is not None:
        jid = "fit-latent-range"
        jobs.append(
            Job(
                jid,
                1,
                "fit",
                [
                    *CLI,
                    "fit-latent-range",
                    "--checkpoint",
                    str(zoo_file),
                    "--out",
                    str(out / jid / "ranges.pt"),
                    *focus,
                    *common,
                ],
                "ranges.pt",
                f["model"],
                2 * n,
            )
        )
    steps = cfg["estimate"]["train_steps"] * cfg["estimate"]["passes_per_train_step"]
    recipes = {"paper": ["attack=auto", f"attack.eps={cfg['eps']}"]}
    if exists("experiment", "finetune_cheap"):
        recipes["cheap"] = ["experiment=finetune_cheap"]
    for recipe, overrides in recipes.items():
        jid = f"finetune-{recipe}"
        jobs.append(
            Job(
                jid,
                1,
                "finetune",
                [*train, *focus, *overrides, *train_common, run(jid)],
                "train_metrics.json",
                f["model"],
                steps * 300 / 2,
            )
        )
        ckpt = out / jid / "checkpoints" / "last.ckpt"
        eid = f"evaluate-finetuned-{recipe}"
        jobs.append(
            Job(
                eid,
                2,
                "evaluate",
                [*evaluate, *bare, f"model.checkpoint={ckpt}", *budget, *common, run(eid)],
                "metrics.json",
                f["model"],
                per_image["evaluate"] * n,
            )
        )
    finetuned = [str(out / f"finetune-{r}" / "checkpoints" / "last.ckpt") for r in recipes]
    labels = ",".join(f"finetuned_{r}" for r in recipes)
    jid = "transfer-model"
    jobs.append(
        Job(
            jid,
            2,
            "transfer",
            [
                *evaluate,
                "study=transfer",
                *focus,
                *single,
                "study.cross_image=false",
                f"study.codecs=[{','.join(finetuned)}]",
                f"study.labels=[{labels}]",
                *common,
                run(jid),
            ],
            "study.json",
            f["model"],
            per_image["transfer"] * n,
        )
    )
    jid = "recompression"
    jobs.append(
        Job(
            jid,
            2,
            "recompression",
            [
                *evaluate,
                "study=recompression",
                *focus,
                f"study.generations={cfg['generations']}",
                f"study.codecs=[{','.join(finetuned)}]",
                f"study.labels=[{labels}]",
                *common,
                run(jid),
            ],
            "study.json",
            f["model"],
            per_image["recompression"] * n * cfg["generations"] / 50,
        )
    )
    jobs.append(Job("report", 3, "report", [], "report.md"))
    kinds = cfg.get("kinds")
    return [j for j in jobs if not kinds or j.kind in kinds]


TRAINING_KINDS = ("standin", "finetune")
EVALUATION_SETS = ("kodak",)  # datasets without a training split of their own


def training_set_problem(cfg, jobs: list[Job]) -> str | None:
    """What stops the training jobs among `jobs`: an evaluation set as dataset without train_root."""
    training = [j.id for j in jobs if j.kind in TRAINING_KINDS]
    if training and cfg["dataset"] in EVALUATION_SETS and not cfg.get("train_root"):
        return (
            f"training set: the finetuning jobs ({', '.join(training[:3])}{', ...' if len(training) > 3 else ''}) "
            f"need train_root=DIR, a folder of training images (e.g. DIV2K/train or CLIC); dataset={cfg['dataset']} "
            "is the evaluation set and is never trained on. Or leave them out: kinds=[attack,noise,...]"
        )
    return None


def image_manifest(cfg) -> dict:
    """The images each training job trained and validated on (its checkpoint's fingerprints) beside the
    evaluated images (the test split every evaluation job reads), and their overlap (empty unless a job
    was told eval.allow_training_images=true)."""
    from omegaconf import OmegaConf

    from robust_nic.data import split_files
    from robust_nic.fingerprints import SPLITS, checkpoint_fingerprints, fingerprints

    # Read directly (this runs inside a Hydra app): the dataset's test split, as far as the jobs read it.
    data = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "data" / f"{cfg['dataset']}.yaml"), resolve=True)
    evaluated = fingerprints(split_files(data)["test"][: images(cfg)])
    trained: dict[str, dict[str, str]] = {}
    for job in build_jobs(cfg, log=lambda _: None):
        checkpoint = job_dir(cfg, job.id) / "checkpoints" / "last.ckpt"
        recorded = checkpoint_fingerprints(checkpoint) if job.kind in TRAINING_KINDS else None
        if recorded:
            trained[job.id] = {digest: name for split in SPLITS for digest, name in recorded.get(split, {}).items()}
    seen = {digest for images in trained.values() for digest in images}
    return {
        "evaluated": sorted(evaluated.values()),
        "trained": {job: sorted(images.values()) for job, images in trained.items()},
        "overlap": sorted(evaluated[d] for d in evaluated if d in seen),
        "fingerprints": {"evaluated": evaluated, "trained": trained},
    }


def focus_weights(cfg) -> Path | None:
    """The focus codec's pretrained file in the torch hub cache (None for stand-ins)."""
    from robust_nic.codecs import pretrained_path, pretrained_url
    from robust_nic.config import LOSS_METRICS

    f = cfg["focus"]
    if not cfg["pretrained"]:
        return None
    return pretrained_path(pretrained_url(model_arch(f["model"]), f["quality"], LOSS_METRICS[f["loss"]]))


def missing_inputs(cfg) -> list[str]:
    """The pretrained weights (per model, quality, metric) absent from the torch hub cache, and Kodak."""
    from robust_nic.codecs import CodecError, pretrained_path, pretrained_url
    from robust_nic.config import LOSS_METRICS

    missing = []
    if cfg["pretrained"]:
        for model in cfg["models"]:
            for loss in cfg["losses"]:
                for q in model_qualities(cfg, model):
                    try:
                        path = pretrained_path(pretrained_url(model_arch(model), q, LOSS_METRICS[loss]))
                    except CodecError as err:
                        missing.append(str(err))
                        continue
                    if not path.is_file():
                        missing.append(f"weights {model} quality {q} {loss}: {path}")
    if cfg["dataset"] == "kodak":
        root = Path(kodak_root()).expanduser()
        absent = [i for i in range(1, 25) if not (root / f"kodim{i:02d}.png").is_file()]
        if absent:
            missing.append(f"Kodak: {len(absent)} of 24 images absent from {root} (kodim01.png..kodim24.png)")
    return missing


def kodak_root() -> str:
    """conf/data/kodak.yaml's data.root (read directly: this runs inside a Hydra app)."""
    from omegaconf import OmegaConf

    return str(OmegaConf.to_container(OmegaConf.load(CONF_DIR / "data" / "kodak.yaml"), resolve=True)["root"])


# Job kinds whose images go through the evaluation runner, eval.batch_size at a time (the studies' own
# loops and training do not).
BATCHED_KINDS = ("attack", "noise", "ablation", "defense", "evaluate")


def eval_batch_size(cfg) -> int:
    """eval.batch_size of the evaluation jobs (set through `common`); 1 unless given."""
    sizes = [item.split("=", 1)[1] for item in cfg.get("common") or [] if item.startswith("eval.batch_size=")]
    return int(sizes[-1]) if sizes else 1


def probe_seconds(cfg, model: str, batch: int = 1) -> float:
    """Seconds per image of one forward+backward pass of the model at the probe size, `batch` images at a
    time (random stand-in weights: the same cost as the pretrained ones)."""
    import torch

    from robust_nic.codecs import build_codec

    f = cfg["focus"]
    quality = f["quality"] if f["quality"] in model_qualities(cfg, model) else model_qualities(cfg, model)[-1]
    channels = yaml.safe_load((CONF_DIR / "model" / f"{model}.yaml").read_text())["model"].get("channels")
    codec = build_codec(model_arch(model), quality, "mse", channels=channels, pretrained=False)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    codec.to(device)
    x = torch.rand(batch, 3, *cfg["estimate"]["probe_size"], device=device, requires_grad=True)
    times = []
    for _ in range(2):  # the first pass warms up
        start = time.perf_counter()
        codec(x)["x_hat"].sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times[-1] / batch


def estimate(cfg, jobs: list[Job], log=print) -> float:
    """Seconds for the unfinished jobs on this machine, one job after another. Every pass costs what the
    probe measures here; the runner's jobs with eval.batch_size > 1 cost what a batch of that size measures
    per image (its speed-up is measured, never assumed: on CPU it was below 1)."""
    batch = eval_batch_size(cfg)
    size = f"{cfg['estimate']['probe_size'][0]}x{cfg['estimate']['probe_size'][1]}"
    total = 0.0
    for model in sorted({j.model for j in jobs if j.model}):
        single = probe_seconds(cfg, model)
        log(f"  probe {model}: {single:.3f} s per forward+backward pass at {size}")
        batched = single
        if batch > 1 and any(j.kind in BATCHED_KINDS for j in jobs if j.model == model):
            batched = probe_seconds(cfg, model, batch)
            log(f"  probe {model}: {batched:.3f} s per image as a batch of {batch} (eval.batch_size), "
                f"{single / batched:.2f}x the speed of one at a time")  # fmt: skip
        total += sum((batched if j.kind in BATCHED_KINDS else single) * j.passes for j in jobs if j.model == model)
    return total


def duration_text(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def run_one(cfg, job: Job) -> bool:
    """Run one job unless finished; True when it finished now or before."""
    if finished(cfg, job):
        print(f"paper: skip {job.id}: finished ({job_dir(cfg, job.id) / job.done_file})")
        return True
    if job.kind == "report":
        write_paper_report(cfg)
        return True
    job_dir(cfg, job.id).mkdir(parents=True, exist_ok=True)
    print(f"paper: run {job.id}: python {' '.join(job.argv)}", flush=True)
    code = subprocess.run([sys.executable, *job.argv]).returncode
    if code != 0:
        print(f"paper: {job.id} failed (exit status {code}); re-run to retry it", file=sys.stderr)
    return code == 0 and finished(cfg, job)


# --- the report page and the paper's numbers beside ours -----------------------------------------------


def paper_numbers() -> dict:
    return yaml.safe_load((CONF_DIR / "paper_numbers.yaml").read_text())


def our_rows(cfg) -> dict[str, dict]:
    """Our measured rows matching the paper's: noise, attacked (pretrained), finetuned (paper recipe)."""
    from robust_nic.evaluation import metric_keys

    out = Path(cfg["out"]) / "jobs"
    f = cfg["focus"]
    sources = {
        "noise": out / "noise-focus",
        "attacked": out / f"attack-{f['model']}-{f['loss']}-q{f['quality']}",
        "finetuned": out / "evaluate-finetuned-paper",
    }
    rows = {}
    for name, run in sources.items():
        path = run / "metrics.json"
        if path.is_file():
            metrics = json.loads(path.read_text())
            metrics = metrics.get("metrics", metrics)
            rows[name] = {m: metrics.get(metric_keys.key("adv", m)) for m in ("psnr", "ms_ssim")}
    return rows


def comparison_markdown(cfg) -> str:
    paper = paper_numbers()
    ours = our_rows(cfg)
    f = cfg["focus"]
    lines = [
        "# Paper vs ours",
        "",
        f"{paper['model']} ({paper['loss']}): PSNR (dB) / MS-SSIM of the reconstruction vs the original. "
        f"Ours: {f['model']} quality {f['quality']} ({f['loss']}), attack.eps={cfg['eps']} (rms), data={cfg['dataset']}, "
        f"pretrained={cfg['pretrained']}. The paper states neither budget nor quality: assumed as ours.",
        "",
        "| row | paper PSNR | paper MS-SSIM | our PSNR | our MS-SSIM |",
        "|---|---|---|---|---|",
    ]
    for name, row in paper["rows"].items():
        mine = ours.get(name, {})
        cells = [
            f"{v:.2f}" if k == "psnr" and v is not None else f"{v:.4f}" if v is not None else "not run"
            for k, v in (("psnr", mine.get("psnr")), ("ms_ssim", mine.get("ms_ssim")))
        ]
        lines.append(
            f"| {row['label']} | {row['psnr']:.2f} | {row['ms_ssim']:.4f} | {cells[0]} | {cells[1]} |"
        )
    return "\n".join(lines) + "\n"


def write_paper_report(cfg) -> Path:
    """robust-nic report over every job, plus paper.md (the paper's numbers beside ours) linked from it."""
    out = Path(cfg["out"])
    report = out / "report"
    code = subprocess.run(
        [sys.executable, *CLI, "report", str(out / "jobs"), "--out", str(report)]
    ).returncode
    if code != 0:
        print("paper: robust-nic report failed; paper.md is still written", file=sys.stderr)
    report.mkdir(parents=True, exist_ok=True)
    (report / "paper.md").write_text(comparison_markdown(cfg))
    (report / "images.json").write_text(json.dumps(image_manifest(cfg), indent=2, sort_keys=True) + "\n")
    link = "\n\nThe paper's numbers beside ours: [paper.md](paper.md)\n"
    for page in ("report.md", "report.html"):
        path = report / page
        if path.is_file() and "paper.md" not in path.read_text():
            text = path.read_text()
            text = (
                text.replace(
                    "</body>", '<p><a href="paper.md">The paper\'s numbers beside ours</a></p></body>'
                )
                if page.endswith(".html")
                else text + link
            )
            path.write_text(text)
    return report / "report.md"
