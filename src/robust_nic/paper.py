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

from robust_nic.config import CONF_DIR, ConfigError
from robust_nic.rows import markdown_table
from robust_nic.settings import DataSettings, PaperSettings, typed

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


def job_dir(paper: PaperSettings, job_id: str) -> Path:
    return Path(paper.out) / "jobs" / job_id


def finished(paper: PaperSettings, job: Job) -> bool:
    path = job_dir(paper, job.id) / job.done_file
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


def model_qualities(paper: PaperSettings, model: str) -> list[int]:
    from robust_nic.codecs import qualities

    if paper.qualities:
        return list(paper.qualities)
    return [int(q) for q in qualities(model_arch(model))] if model != "tiny" else [3]


def images(paper: PaperSettings) -> int:
    for o in paper.common or []:
        if o.startswith("max_images="):
            return int(o.split("=", 1)[1])
    return 24 if paper.dataset == "kodak" else 3


class Plan:
    """What the paper's jobs share, derived once from the paper config; jobs are added in order.

    Stand-in codecs (pretrained=false) are stage-0 jobs added the first time a job needs their checkpoint.
    """

    def __init__(self, paper: PaperSettings, log=print):
        self.paper, self.log, self.jobs = paper, log, []
        self.out = Path(paper.out) / "jobs"
        self.evaluate, self.train = [*CLI, "evaluate"], [*CLI, "train"]
        self.common = [f"data={paper.dataset}", *paper.common]
        train_root = [f"data.train_root={paper.train_root}"] if paper.train_root else []
        self.train_common = [f"data={paper.dataset}", *train_root, *paper.train_common]
        self.budget = [f"attack={paper.headline_attack}", f"attack.eps={paper.eps}"]
        self.single = [
            "attack=chen2023",
            f"attack.eps={paper.eps}",
        ]  # the studies take one attack (the paper's)
        self.per_image = {
            kind: passes * images(paper) for kind, passes in paper.estimate.passes_per_image.items()
        }
        f = paper.focus
        self.focus_model = f.model
        self.bare = [f"model={f.model}", f"model.quality={f.quality}", f"loss={f.loss}"]
        self.focus = [*self.bare, *self.weights(f.model, f.loss, f.quality)]
        self.recipes = {
            "paper": ["attack=auto", f"attack.eps={paper.eps}"],
            "cheap": ["experiment=finetune_cheap"],
        }
        self.zoo_file = focus_weights(
            paper
        )  # the focus codec's weights file (None: not downloaded, or stand-ins)

    def run_dir(self, job_id: str) -> str:
        return f"hydra.run.dir={self.out / job_id}"

    def add(self, job_id: str, stage: int, kind: str, argv: list[str], done_file: str, passes: float) -> None:
        """A job on the focus codec."""
        self.jobs.append(Job(job_id, stage, kind, argv, done_file, self.focus_model, passes))

    def weights(self, model: str, loss: str, q: int) -> list[str]:
        """Zoo weights, or (pretrained=false) a stand-in trained for a few steps in stage 0."""
        if self.paper.pretrained:
            return []
        sid = f"standin-{model}-{loss}-q{q}"
        checkpoint = str(self.out / sid / "checkpoints" / "last.ckpt")
        if not any(job.id == sid for job in self.jobs):
            argv = [*self.train, f"model={model}", f"model.quality={q}", f"loss={loss}", "model.pretrained=false",
                    "attack=none", *self.train_common, f"hydra.run.dir={self.out / sid}"]  # fmt: skip
            self.jobs.append(Job(sid, 0, "standin", argv, "train_metrics.json", model))
        return [f"model.checkpoint={checkpoint}"]

    def finetuned(self) -> list[str]:
        """The study.codecs and study.labels overrides of the finetuned checkpoints (stage 2)."""
        checkpoints = [str(self.out / f"finetune-{r}" / "checkpoints" / "last.ckpt") for r in self.recipes]
        labels = ",".join(f"finetuned_{r}" for r in self.recipes)
        return [f"study.codecs=[{','.join(checkpoints)}]", f"study.labels=[{labels}]"]


def attack(plan: Plan) -> None:
    """The headline attack on every model, loss and quality."""
    for model in plan.paper.models:
        for loss in plan.paper.losses:
            for q in model_qualities(plan.paper, model):
                jid = f"attack-{model}-{loss}-q{q}"
                argv = [*plan.evaluate, f"model={model}", f"model.quality={q}", f"loss={loss}",
                        *plan.weights(model, loss, q), *plan.budget, *plan.common, "save_images=false",
                        plan.run_dir(jid)]  # fmt: skip
                plan.jobs.append(Job(jid, 1, "attack", argv, "metrics.json", model, plan.per_image["attack"]))


def noise(plan: Plan) -> None:
    argv = [*plan.evaluate, *plan.focus, "attack=noise", f"attack.eps={plan.paper.eps}", *plan.common]
    plan.add(
        "noise-focus",
        1,
        "noise",
        [*argv, plan.run_dir("noise-focus")],
        "metrics.json",
        plan.per_image["noise"],
    )


def ablation(plan: Plan) -> None:
    for name in plan.paper.ablations:
        jid = name.replace("_", "-")
        argv = [
            *plan.evaluate,
            "-m",
            f"experiment={name}",
            *plan.focus,
            *plan.common,
            f"hydra.sweep.dir={plan.out / jid}",
        ]
        plan.add(jid, 1, "ablation", argv, "ablation.csv", plan.per_image["ablation"])


def transfer_image(plan: Plan) -> None:
    argv = [
        *plan.evaluate,
        "study=transfer",
        *plan.focus,
        *plan.single,
        *plan.common,
        plan.run_dir("transfer-image"),
    ]
    plan.add("transfer-image", 1, "transfer", argv, "study.json", plan.per_image["transfer"])


def defense(plan: Plan) -> None:
    """Each defense against the headline attack; latent_range needs the ranges fitted in stage 1."""
    for name in plan.paper.defenses:
        extra, stage = [], 1
        if name == "latent_range":
            if plan.zoo_file is None:
                plan.log(
                    "paper: defense=latent_range needs a checkpoint file to fit its ranges (pretrained=true); skipped"
                )
                continue
            extra = [
                f"defense.ranges={plan.out / 'fit-latent-range' / 'ranges.pt'}",
                f"model.checkpoint={plan.zoo_file}",
            ]
            stage = 2
        jid = f"defense-{name}"
        argv = [
            *plan.evaluate,
            *plan.focus,
            f"defense={name}",
            *extra,
            *plan.budget,
            *plan.common,
            plan.run_dir(jid),
        ]
        plan.add(jid, stage, "defense", argv, "metrics.json", plan.per_image["defense"])


def fit_latent_range(plan: Plan) -> None:
    if "latent_range" in plan.paper.defenses and plan.zoo_file is not None:
        ranges = plan.out / "fit-latent-range" / "ranges.pt"
        argv = [
            *CLI,
            "fit-latent-range",
            "--checkpoint",
            str(plan.zoo_file),
            "--out",
            str(ranges),
            *plan.focus,
            *plan.common,
        ]
        plan.add("fit-latent-range", 1, "fit", argv, "ranges.pt", 2 * images(plan.paper))


def finetune(plan: Plan) -> None:
    """Each finetuning recipe (stage 1), then its codec under the headline attack (stage 2)."""
    estimate = plan.paper.estimate
    for recipe, overrides in plan.recipes.items():
        jid = f"finetune-{recipe}"
        argv = [*plan.train, *plan.focus, *overrides, *plan.train_common, plan.run_dir(jid)]
        plan.add(
            jid,
            1,
            "finetune",
            argv,
            "train_metrics.json",
            estimate.train_steps * estimate.passes_per_train_step * 300 / 2,
        )
        eid = f"evaluate-finetuned-{recipe}"
        checkpoint = plan.out / jid / "checkpoints" / "last.ckpt"
        argv = [
            *plan.evaluate,
            *plan.bare,
            f"model.checkpoint={checkpoint}",
            *plan.budget,
            *plan.common,
            plan.run_dir(eid),
        ]
        plan.add(eid, 2, "evaluate", argv, "metrics.json", plan.per_image["evaluate"])


def transfer_model(plan: Plan) -> None:
    argv = [*plan.evaluate, "study=transfer", *plan.focus, *plan.single, "study.cross_image=false",
            *plan.finetuned(), *plan.common, plan.run_dir("transfer-model")]  # fmt: skip
    plan.add("transfer-model", 2, "transfer", argv, "study.json", plan.per_image["transfer"])


def recompression(plan: Plan) -> None:
    generations = plan.paper.generations
    argv = [*plan.evaluate, "study=recompression", *plan.focus, f"study.generations={generations}",
            *plan.finetuned(), *plan.common, plan.run_dir("recompression")]  # fmt: skip
    plan.add(
        "recompression",
        2,
        "recompression",
        argv,
        "study.json",
        plan.per_image["recompression"] * generations / 50,
    )


def report(plan: Plan) -> None:
    plan.jobs.append(Job("report", 3, "report", [], "report.md"))


# The paper's jobs, in the order they are listed (and run within a stage).
STAGES = (attack, noise, ablation, transfer_image, defense, fit_latent_range, finetune, transfer_model,
          recompression, report)  # fmt: skip


def check_names(paper: PaperSettings) -> None:
    """The attack, experiments and defenses the paper config names exist in conf/ (ConfigError naming the key)."""
    named = [("headline_attack", "attack", paper.headline_attack)]
    named += [("ablations", "experiment", name) for name in paper.ablations]
    named += [("defenses", "defense", name) for name in paper.defenses]
    for key, group, name in named:
        if not exists(group, name):
            raise ConfigError(f"{key}: {name!r} is not a conf/{group} config")


def build_jobs(paper: PaperSettings, log=print) -> list[Job]:
    """Every job of the paper (only those of `kinds` when set)."""
    check_names(paper)
    plan = Plan(paper, log)
    for stage in STAGES:
        stage(plan)
    kinds = paper.kinds
    return [j for j in plan.jobs if not kinds or j.kind in kinds]


TRAINING_KINDS = ("standin", "finetune")
EVALUATION_SETS = ("kodak",)  # datasets without a training split of their own


def training_set_problem(paper: PaperSettings, jobs: list[Job]) -> str | None:
    """What stops the training jobs among `jobs`: an evaluation set as dataset without train_root."""
    training = [j.id for j in jobs if j.kind in TRAINING_KINDS]
    if training and paper.dataset in EVALUATION_SETS and not paper.train_root:
        return (
            f"training set: the finetuning jobs ({', '.join(training[:3])}{', ...' if len(training) > 3 else ''}) "
            f"need train_root=DIR, a folder of training images (e.g. DIV2K/train or CLIC); dataset={paper.dataset} "
            "is the evaluation set and is never trained on. Or leave them out: kinds=[attack,noise,...]"
        )
    return None


def image_manifest(paper: PaperSettings) -> dict:
    """The images each training job trained and validated on (its checkpoint's fingerprints) beside the
    evaluated images (the test split every evaluation job reads), and their overlap (empty unless a job
    was told eval.allow_training_images=true)."""

    from robust_nic.data import split_files
    from robust_nic.fingerprints import SPLITS, checkpoint_fingerprints, fingerprints

    # The dataset's test split, as far as the jobs read it.
    evaluated = fingerprints(split_files(dataset_settings(paper.dataset))["test"][: images(paper)])
    trained: dict[str, dict[str, str]] = {}
    for job in build_jobs(paper, log=lambda _: None):
        checkpoint = job_dir(paper, job.id) / "checkpoints" / "last.ckpt"
        recorded = checkpoint_fingerprints(checkpoint) if job.kind in TRAINING_KINDS else None
        if recorded:
            trained[job.id] = {
                digest: name for split in SPLITS for digest, name in recorded.get(split, {}).items()
            }
    seen = {digest for images in trained.values() for digest in images}
    return {
        "evaluated": sorted(evaluated.values()),
        "trained": {job: sorted(images.values()) for job, images in trained.items()},
        "overlap": sorted(evaluated[d] for d in evaluated if d in seen),
        "fingerprints": {"evaluated": evaluated, "trained": trained},
    }


def focus_weights(paper: PaperSettings) -> Path | None:
    """The focus codec's pretrained file in the torch hub cache (None for stand-ins)."""
    from robust_nic.codecs import pretrained_path, pretrained_url
    from robust_nic.config import LOSS_METRICS

    f = paper.focus
    if not paper.pretrained:
        return None
    return pretrained_path(pretrained_url(model_arch(f.model), f.quality, LOSS_METRICS[f.loss]))


def missing_inputs(paper: PaperSettings) -> list[str]:
    """The pretrained weights (per model, quality, metric) absent from the torch hub cache, and Kodak."""
    from robust_nic.codecs import CodecError, pretrained_path, pretrained_url
    from robust_nic.config import LOSS_METRICS

    missing = []
    if paper.pretrained:
        for model in paper.models:
            for loss in paper.losses:
                for q in model_qualities(paper, model):
                    try:
                        path = pretrained_path(pretrained_url(model_arch(model), q, LOSS_METRICS[loss]))
                    except CodecError as err:
                        missing.append(str(err))
                        continue
                    if not path.is_file():
                        missing.append(f"weights {model} quality {q} {loss}: {path}")
    if paper.dataset == "kodak":
        root = Path(kodak_root()).expanduser()
        absent = [i for i in range(1, 25) if not (root / f"kodim{i:02d}.png").is_file()]
        if absent:
            missing.append(f"Kodak: {len(absent)} of 24 images absent from {root} (kodim01.png..kodim24.png)")
    return missing


def dataset_settings(name: str) -> DataSettings:
    """conf/data/<name>.yaml over its schema's defaults, as the jobs' `data` group resolves (read directly:
    this runs inside a Hydra app, which cannot compose another config)."""
    from omegaconf import OmegaConf

    values = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "data" / f"{name}.yaml"), resolve=True)
    values.pop("defaults", None)  # the schema it extends: DataSettings' defaults below
    return typed(DataSettings, "data", values)


def kodak_root() -> str:
    """conf/data/kodak.yaml's data.root."""
    return str(dataset_settings("kodak").root)


# Job kinds whose images go through the evaluation runner, eval.batch_size at a time (the studies' own
# loops and training do not).
BATCHED_KINDS = ("attack", "noise", "ablation", "defense", "evaluate")


def eval_batch_size(paper: PaperSettings) -> int:
    """eval.batch_size of the evaluation jobs (set through `common`); 1 unless given."""
    sizes = [item.split("=", 1)[1] for item in paper.common or [] if item.startswith("eval.batch_size=")]
    return int(sizes[-1]) if sizes else 1


def probe_seconds(paper: PaperSettings, model: str, batch: int = 1) -> float:
    """Seconds per image of one forward+backward pass of the model at the probe size, `batch` images at a
    time (random stand-in weights: the same cost as the pretrained ones)."""
    import torch

    from robust_nic.codecs import build_codec

    f = paper.focus
    quality = f.quality if f.quality in model_qualities(paper, model) else model_qualities(paper, model)[-1]
    channels = yaml.safe_load((CONF_DIR / "model" / f"{model}.yaml").read_text())["model"].get("channels")
    codec = build_codec(model_arch(model), quality, "mse", channels=channels, pretrained=False)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    codec.to(device)
    x = torch.rand(batch, 3, *paper.estimate.probe_size, device=device, requires_grad=True)
    times = []
    for _ in range(2):  # the first pass warms up
        start = time.perf_counter()
        codec(x)["x_hat"].sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times[-1] / batch


def estimate(paper: PaperSettings, jobs: list[Job], log=print) -> float:
    """Seconds for the unfinished jobs on this machine, one job after another. Every pass costs what the
    probe measures here; the runner's jobs with eval.batch_size > 1 cost what a batch of that size measures
    per image (its speed-up is measured, never assumed: on CPU it was below 1)."""
    batch = eval_batch_size(paper)
    size = f"{paper.estimate.probe_size[0]}x{paper.estimate.probe_size[1]}"
    total = 0.0
    for model in sorted({j.model for j in jobs if j.model}):
        single = probe_seconds(paper, model)
        log(f"  probe {model}: {single:.3f} s per forward+backward pass at {size}")
        batched = single
        if batch > 1 and any(j.kind in BATCHED_KINDS for j in jobs if j.model == model):
            batched = probe_seconds(paper, model, batch)
            log(f"  probe {model}: {batched:.3f} s per image as a batch of {batch} (eval.batch_size), "
                f"{single / batched:.2f}x the speed of one at a time")  # fmt: skip
        total += sum((batched if j.kind in BATCHED_KINDS else single) * j.passes for j in jobs if j.model == model)
    return total


def duration_text(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def run_one(paper: PaperSettings, job: Job) -> bool:
    """Run one job unless finished; True when it finished now or before."""
    if finished(paper, job):
        print(f"paper: skip {job.id}: finished ({job_dir(paper, job.id) / job.done_file})")
        return True
    if job.kind == "report":
        write_paper_report(paper)
        return True
    job_dir(paper, job.id).mkdir(parents=True, exist_ok=True)
    print(f"paper: run {job.id}: python {' '.join(job.argv)}", flush=True)
    code = subprocess.run([sys.executable, *job.argv]).returncode
    if code != 0:
        print(f"paper: {job.id} failed (exit status {code}); re-run to retry it", file=sys.stderr)
    return code == 0 and finished(paper, job)


# --- the report page and the paper's numbers beside ours -----------------------------------------------


def paper_numbers() -> dict:
    return yaml.safe_load((CONF_DIR / "paper_numbers.yaml").read_text())


def our_rows(paper: PaperSettings) -> dict[str, dict]:
    """Our measured rows matching the paper's: noise, attacked (pretrained), finetuned (paper recipe)."""
    from robust_nic.evaluation import metric_keys

    out = Path(paper.out) / "jobs"
    f = paper.focus
    sources = {
        "noise": out / "noise-focus",
        "attacked": out / f"attack-{f.model}-{f.loss}-q{f.quality}",
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


def comparison_markdown(paper: PaperSettings) -> str:
    published = paper_numbers()
    ours = our_rows(paper)
    f = paper.focus
    lines = [
        "# Paper vs ours",
        "",
        f"{published['model']} ({published['loss']}): PSNR (dB) / MS-SSIM of the reconstruction vs the original. "
        f"Ours: {f.model} quality {f.quality} ({f.loss}), attack.eps={paper.eps} (rms), data={paper.dataset}, "
        f"pretrained={paper.pretrained}. The paper states neither budget nor quality: assumed as ours.",
        "",
    ]
    table = []
    for name, row in published["rows"].items():
        mine = ours.get(name, {})
        cells = [
            f"{v:.2f}" if k == "psnr" and v is not None else f"{v:.4f}" if v is not None else "not run"
            for k, v in (("psnr", mine.get("psnr")), ("ms_ssim", mine.get("ms_ssim")))
        ]
        table.append([row["label"], f"{row['psnr']:.2f}", f"{row['ms_ssim']:.4f}", *cells])
    columns = ["row", "paper PSNR", "paper MS-SSIM", "our PSNR", "our MS-SSIM"]
    return "\n".join(lines) + "\n" + markdown_table(columns, table)


def write_paper_report(paper: PaperSettings) -> Path:
    """robust-nic report over every job, plus paper.md (the paper's numbers beside ours) linked from it."""
    out = Path(paper.out)
    report = out / "report"
    code = subprocess.run(
        [sys.executable, *CLI, "report", str(out / "jobs"), "--out", str(report)]
    ).returncode
    if code != 0:
        print("paper: robust-nic report failed; paper.md is still written", file=sys.stderr)
    report.mkdir(parents=True, exist_ok=True)
    (report / "paper.md").write_text(comparison_markdown(paper))
    (report / "images.json").write_text(json.dumps(image_manifest(paper), indent=2, sort_keys=True) + "\n")
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
