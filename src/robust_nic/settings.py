"""Typed settings: each config group's dataclass is the one home of its keys, defaults, types and ranges.

`typed(cls, group, values)` turns a group's composed values into its dataclass, refusing an unknown key,
a value of the wrong type or out of range with one ConfigError naming `group.key`. The groups whose
defaults live here are stored in Hydra's ConfigStore as `schema/<group>` (plain nodes made from the
dataclasses' defaults, so our own errors, not OmegaConf's, report a bad value); the YAMLs extend them.
This module stays light (no torch): Hydra's config package imports it before composing.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A setting that is unknown, of the wrong type, out of range or contradicts another; the message
    names the key and what to choose instead (the command line shows it as one line, exit status 2)."""


def convert(value, hint):
    """`value` as the annotated type: int, float, bool, str, list[...]/tuple[...] of them, X | None."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if value is None and len(options) < len(args):
            return None
        errors = []
        for option in options:
            try:
                return convert(value, option)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise ValueError("; ".join(errors))
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise TypeError(f"expected a list, got {type(value).__name__}")
        item = args[0] if args else typing.Any
        items = [convert(v, item) for v in value]
        return items if origin is list else tuple(items)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(f"expected true or false, got {type(value).__name__}")
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number, got {type(value).__name__}")
        if hint is int and float(value) != int(value):
            raise ValueError(f"expected a whole number, got {value}")
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError(f"expected text, got {type(value).__name__}")
        return value
    return value


def typed(cls, group: str, values: Mapping | None, owner: str | None = None):
    """`values` (a config group) as its settings dataclass: missing keys take the dataclass's defaults,
    a null keeps null where the type allows it and takes the default otherwise; unknown keys and values of
    the wrong type are refused naming `group.key` (ranges: the dataclass's __post_init__). `owner` names
    what the keys belong to in messages (e.g. `attack=pgd`; default: the group). Every settings group and
    every registry entry's options (robust_nic.registry) are read here."""
    owner = owner or group
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if values is not None and not isinstance(values, Mapping):
        raise ConfigError(f"{group}={values!r} is not a valid setting: {owner} has keys {', '.join(fields)}")
    values = dict(values or {})
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(dotted(group, k) for k in unknown)}; {owner} has "
            f"{', '.join(fields) or 'no options'}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if value is None and not allows_none(hints[key]) and has_default(fields[key]):
            continue
        if dataclasses.is_dataclass(hints[key]):  # a nested group, e.g. paper.estimate
            kwargs[key] = typed(hints[key], dotted(group, key), value)
            continue
        try:
            kwargs[key] = convert(value, hints[key])
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{dotted(group, key)}={value!r} is not a valid setting ({err})") from err
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:  # a key without default left unset, a check's ValueError
        raise ConfigError(f"{owner}: {err}") from err


def allows_none(hint) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def has_default(field: dataclasses.Field) -> bool:
    return field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING


def plain(settings) -> dict:
    """A settings dataclass as the plain dict a saved config or checkpoint holds (tuples become lists)."""
    return {k: plain_value(v) for k, v in dataclasses.asdict(settings).items()}


def check_range(
    group: str, key: str, value, low=None, high=None, low_open: bool = False, why: str = ""
) -> None:
    """`low <= value <= high` (`low < value` with low_open), else a ConfigError naming `group.key`."""
    if value is None:
        return
    below = low is not None and (value <= low if low_open else value < low)
    if below or (high is not None and value > high):
        span = f"{'(' if low_open else '['}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ConfigError(f"{dotted(group, key)}={value} must be in {span}{why}")


def check_choice(group: str, key: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{dotted(group, key)}={value} is unknown; choose {' | '.join(map(str, choices))}")


def dotted(group: str, key: str) -> str:
    """A key as the command line writes it: `group.key`, or `key` at the top level (group "")."""
    return f"{group}.{key}" if group else key


def top_level(cls, values: Mapping):
    """The top-level keys of a composed config (train.yaml, evaluate.yaml) as `cls`; the groups' keys
    (model, data, ...) are typed by their own dataclasses."""
    names = {f.name for f in dataclasses.fields(cls)}
    return typed(cls, "", {k: v for k, v in values.items() if k in names})


# The attack group's allowed values (the attack modules check the same lists on their Python objects).
NORMS = ("rms", "linf")
OBJECTIVES = ("distortion", "targeted", "rate")
REFERENCES = ("recon", "source")
DISTANCES = ("mse", "ms_ssim")
PROXIES = ("skip", "noise", "ste", "none")
SELECT = ("best", "last")  # which iterate an attack returns (robust_nic.attacks.engine.iterate)
# Largest meaningful budget per norm ([0,1] units): an RMS of 0.25 is an input PSNR of 12 dB, and an
# L-inf step of 0.5 moves mid-grey to black or white; beyond these nothing is "imperceptible".
EPS_MAX = {"rms": 0.25, "linf": 0.5}


@dataclass(frozen=True)
class AttackSettings:
    """The `attack` keys every optimiser shares (each optimiser adds its own options dataclass,
    robust_nic.attacks.optimizers; `use` and `members` belong to attack=auto and suites)."""

    name: str = "none"
    norm: str = "rms"  # rms: sqrt(MSE(x, x_adv)) <= eps per image ([0,1] scale; 0.01 = MSE 1e-4, 40 dB); linf
    eps: float | list[float] | None = 0.01  # one budget, or one per image
    linf: float | None = None  # optional extra L-inf box on the perturbation (paper: 0.0627 = 16/255)
    objective: str = "distortion"  # distortion | targeted | rate
    reference: str = "recon"  # distortion vs the clean reconstruction (paper) or the source
    distance: str = "mse"  # mse | ms_ssim
    target_bpp: float | None = None  # rate objective: null = maximise bpp, else push bpp_est towards it
    target_image: str | None = None  # targeted objective: the image to look like (null: the next test image)
    restarts: int = 1  # keep each image's strongest of several runs
    seed: int | None = 0  # random starts and noise; null = unseeded
    progress: bool = False  # tqdm bar over the steps
    warmup_steps: int = 0  # finetuning: eps ramps up linearly over this many training steps
    select: str = "best"  # best: each image's strongest iterate; last: the final one, unscored (finetuning)
    proxy: str = "skip"  # skip = g_s(g_a(x)) (paper) | ste | noise | none (no gradient: an error)

    def __post_init__(self):
        for key, choices in (("norm", NORMS), ("objective", OBJECTIVES), ("reference", REFERENCES),
                             ("distance", DISTANCES), ("proxy", PROXIES), ("select", SELECT)):  # fmt: skip
            check_choice("attack", key, getattr(self, key), choices)
        if self.name not in ("none", "auto") and self.eps is None:
            raise ConfigError(
                f"attack.eps=null: attack={self.name} needs a budget, e.g. attack.eps=0.01 (or attack=none)"
            )
        if self.name != "none" and self.eps is not None:
            high = EPS_MAX[self.norm]
            for value in self.eps if isinstance(self.eps, list) else [self.eps]:
                check_range("attack", "eps", value, 0, high, low_open=True, why=(
                    f" for attack.norm={self.norm}: eps is in [0,1] pixel units (rms 0.01 = the paper's MSE 1e-4, "
                    "40 dB; linf 4/255 = 0.0157); for no attack use attack=none"))  # fmt: skip
        check_range(
            "attack",
            "linf",
            self.linf,
            0,
            1,
            low_open=True,
            why=" ([0,1] pixel units, 16/255 = 0.0627) or null",
        )
        check_range("attack", "target_bpp", self.target_bpp, 0)
        check_range("attack", "restarts", self.restarts, 1)
        check_range("attack", "warmup_steps", self.warmup_steps, 0)


def split_attack(cfg: Mapping) -> tuple[AttackSettings, dict]:
    """The `attack` group as its shared settings and the rest (the optimiser's options, `use`, `members`)."""
    shared = {f.name for f in dataclasses.fields(AttackSettings)}
    return typed(AttackSettings, "attack", {k: v for k, v in cfg.items() if k in shared}), {
        k: v for k, v in cfg.items() if k not in shared
    }


LOSS_METRICS = {"mse": "mse", "ms_ssim": "ms-ssim", "ms-ssim": "ms-ssim"}  # loss.metric -> the codec metric


@dataclass(frozen=True)
class ModelSettings:
    """The `model` group: which codec (conf/model/<name>.yaml sets name and arch, required)."""

    name: str
    arch: str  # a CompressAI zoo architecture or one a model.module registers
    quality: int = 3  # the zoo's quality index: channels (zoo) and lambda
    metric: str | None = None  # null: follows loss (mse | ms-ssim; codecs.check_metric)
    channels: list[int] | None = None  # null: the zoo's (N, M) for the quality
    pretrained: bool = False  # CompressAI's trained weights
    checkpoint: str | None = None  # weights of this project (or a CompressAI-layout state dict)
    module: str | None = None  # a Python module to import first that registers model.arch (your own codec)

    def __post_init__(self):
        check_range("model", "quality", self.quality, 1)
        for value in self.channels or []:
            check_range("model", "channels", value, 1)


@dataclass(frozen=True)
class LossSettings:
    """The `loss` group: lambda * distortion + bpp."""

    metric: str = "mse"  # mse: lambda * 255^2 * MSE; ms-ssim: lambda * (1 - MS-SSIM) (needs 161 px crops)
    lmbda: float | None = None  # null: CompressAI's lambda for model.quality

    def __post_init__(self):
        if self.metric not in LOSS_METRICS:
            raise ConfigError(f"loss.metric={self.metric} is unknown; choose loss=mse or loss=ms_ssim")
        check_range("loss", "lmbda", self.lmbda, 0, low_open=True)


# scikit-image ships these colour photos inside its wheel (no download): data=samples trains, validates and
# tests on three disjoint sets of them.
SAMPLE_TRAIN = ("astronaut.png", "hubble_deep_field.jpg", "ihc.png", "motorcycle_left.png", "retina.jpg")
SAMPLE_VAL = ("motorcycle_right.png",)
SAMPLE_HELDOUT = ("chelsea.png", "coffee.png", "rocket.jpg")
DATA_SOURCES = ("samples", "folder", "kodak")


@dataclass(frozen=True)
class DataSettings:
    """The `data` group: where training, validation and test images come from, and the training batches
    (conf/model/<name>.yaml sets each codec's patch_size and batch_size)."""

    name: str  # samples | kodak | folder
    root: str | None = None  # folder: the images (data.root=DIR); kodak: where they are downloaded
    train_root: str | None = (
        None  # a folder to train on instead (e.g. CLIC, DIV2K); the test images stay root's
    )
    val_root: str | None = None  # null: hold out val_fraction of the training images for validation
    val_fraction: float = 0.1
    test_root: str | None = None  # folder: evaluate.py codes test_root, or all of root
    # samples: the scikit-image photos of each split
    train_photos: list[str] = field(default_factory=lambda: list(SAMPLE_TRAIN))
    val_photos: list[str] = field(default_factory=lambda: list(SAMPLE_VAL))
    heldout_photos: list[str] = field(default_factory=lambda: list(SAMPLE_HELDOUT))
    patch_size: int = 256  # training crops (px)
    batch_size: int = 8
    num_workers: int = 4
    max_val_images: int | None = 24  # null: every validation image
    # Largest image coded and attacked whole (validation, evaluation): attacked, about 7.7 GB for a zoo
    # hyperprior, 4.8 GB for tiny (bench/memory.py); training crops any size.
    max_pixels: int = 3_500_000

    def __post_init__(self):
        if self.name not in DATA_SOURCES:
            raise ConfigError(f"data.name={self.name} is unknown; choose data=samples, data=folder or data=kodak")
        if self.name == "folder" and not self.root:
            raise ConfigError("data=folder needs data.root=DIR (a folder of png/jpg/webp images)")
        check_range("data", "val_fraction", self.val_fraction, 0, 1, low_open=True)
        for key in ("patch_size", "batch_size", "max_val_images", "max_pixels"):
            check_range("data", key, getattr(self, key), 1)
        check_range("data", "num_workers", self.num_workers, 0)


@dataclass(frozen=True)
class EvalSettings:
    """The `eval` group of evaluate.py."""

    # A test image whose pixels model.checkpoint was trained or validated on stops the run; true: measure
    # it anyway (said in metrics.json's training_images).
    allow_training_images: bool = False
    # Test images of one size attacked and coded together (per-image results as one at a time, up to float
    # sums). On CPU batching measured slower (bench/results/batched_evaluation_cpu.json): keep 1; on a GPU,
    # larger is faster. attack.proxy=noise needs 1.
    batch_size: int = 1

    def __post_init__(self):
        check_range("eval", "batch_size", self.batch_size, 1, why=" (images attacked together)")


CODING_DEVICES = ("auto", "cpu", "same")


@dataclass(frozen=True)
class CodingSettings:
    """The `coding` group: where entropy coding runs."""

    # auto: codecs with a context model (mbt2018, cheng2020) on a CPU copy, the others where the image is;
    # cpu; same: where the image is. On a CPU-only machine all three are the same.
    device: str = "auto"

    def __post_init__(self):
        check_choice("coding", "device", self.device, CODING_DEVICES)


@dataclass(frozen=True)
class CheckpointSettings:
    """The `checkpoint` group of train.py."""

    # checkpoints/last.ckpt is also written every this many minutes of training (at a batch boundary), so a
    # hard kill loses at most that much; 0: after every batch; null: only at validations and the end
    every_minutes: float | None = 10

    def __post_init__(self):
        check_range("checkpoint", "every_minutes", self.every_minutes, 0, why=" (0: every batch) or null")


@dataclass(frozen=True)
class RunSettings:
    """The top-level keys train.py and evaluate.py share."""

    seed: int = 0  # every random draw: training crops, attack starts and noise (per image: seed and its name)
    # torch CPU threads; null: OMP_NUM_THREADS if set, else all cores. Jobs sharing a machine: threads=1 each
    threads: int | None = None
    coding: CodingSettings = field(default_factory=CodingSettings)  # coding.device: where entropy coding runs

    def __post_init__(self):
        check_range("", "threads", self.threads, 1)


@dataclass(frozen=True)
class TrainRunSettings(RunSettings):
    """train.py's top-level keys."""

    # resume: re-run with hydra.run.dir=RUN_DIR (continues from its checkpoint with the most training), or
    # ckpt_path=FILE (used unless the run directory's own checkpoints hold more training)
    ckpt_path: str | None = None
    checkpoint: CheckpointSettings = field(default_factory=CheckpointSettings)  # checkpoint.every_minutes
    optimized_metric: str | None = None  # the metric a Hydra sweeper (e.g. hparams_search=optuna) minimises


@dataclass(frozen=True)
class EvaluateRunSettings(RunSettings):
    """evaluate.py's top-level keys."""

    device: str = "auto"  # auto | cpu | cuda | cuda:1
    max_images: int | None = None  # evaluate only the first N test images
    save_images: bool = True  # adversarial PNGs, amplified perturbations, comparison figures
    progress: bool = True  # progress bars over images and attack steps

    def __post_init__(self):
        super().__post_init__()
        check_range("", "max_images", self.max_images, 1, why=" (or null for every test image)")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ConfigError(f"device={self.device} is unknown; choose auto | cpu | cuda | cuda:N | mps")


SCHEDULERS = ("multistep", "cosine", "none")


@dataclass(frozen=True)
class OptimSettings:
    """The `optim` group: CompressAI's two Adam optimizers (network, aux quantiles) and the lr schedule."""

    lr: float | None = (
        None  # null: 1e-4 from scratch, 1e-5 finetuning pretrained/checkpointed weights (resolve)
    )
    aux_lr: float = 1e-3
    clip: float = 1.0  # network gradient-norm clip
    entropy_lr_mult: float = 1.0  # lr multiplier of the entropy bottleneck's density parameters
    scheduler: str | None = "multistep"  # multistep | cosine | none
    milestones: tuple[float, ...] = (0.8,)  # fractions of the training batches (trainer.max_steps)
    gamma: float = 0.1

    def __post_init__(self):
        if self.scheduler not in (*SCHEDULERS, None):
            raise ConfigError(f"optim.scheduler={self.scheduler} is unknown; choose {' | '.join(SCHEDULERS)}")
        for key in ("lr", "aux_lr", "clip", "entropy_lr_mult"):
            check_range("optim", key, getattr(self, key), 0, low_open=True)
        for value in self.milestones:
            check_range("optim", "milestones", value, 0, 1, low_open=True, why=" (fractions of trainer.max_steps)")
        check_range("optim", "gamma", self.gamma, 0, 1, low_open=True, why=" (the lr factor at each milestone)")


@dataclass(frozen=True)
class AdversarialSettings:
    """The `train` group: how adversarial examples enter finetuning (active with an attack)."""

    adv_ratio: float = 1.0  # fraction of each batch replaced by adversarial examples
    adv_target: str = "adversarial"  # reconstruction target: the adversarial image (paper) or the source
    consistency_weight: float = 0.0  # pull attacked reconstructions towards clean ones (beyond the paper)
    robust_weight: float = 0.1  # val/robust_objective = val/rd_loss + robust_weight * val/adv/delta_psnr
    # overrides of attack.* keys for the validation attack (null or absent: the training attack's), e.g.
    # train.val_attack.steps=200; checked as the attack is built (training.training_attacks)
    val_attack: dict = field(default_factory=lambda: dict.fromkeys(("name", "steps", "proxy", "random_start")))

    def __post_init__(self):
        check_range("train", "adv_ratio", self.adv_ratio, 0, 1, why=" (a fraction of the batch)")
        check_range("train", "consistency_weight", self.consistency_weight, 0)
        check_range("train", "robust_weight", self.robust_weight, 0)
        if self.adv_target not in ("adversarial", "source"):
            raise ConfigError(f"train.adv_target={self.adv_target} is unknown; choose adversarial | source")


PAPER_MODELS = ("bmshj2018_factorized", "bmshj2018_hyperprior", "mbt2018", "cheng2020")
PAPER_ABLATIONS = ("ablation_optimizer", "ablation_distance", "ablation_budget")
PAPER_DEFENSES = ("bitdepth", "resize", "self_ensemble", "latent_range")
# Assumed forward+backward passes per image of each job kind (the duration estimate).
PASSES_PER_IMAGE = {"attack": 3003, "noise": 2, "ablation": 8008, "transfer": 1100, "defense": 3003,
                    "evaluate": 3003, "recompression": 100}  # fmt: skip


@dataclass(frozen=True)
class PaperFocus:
    """The codec finetuned, ablated, defended and transferred."""

    model: str = "bmshj2018_hyperprior"
    loss: str = "ms_ssim"
    quality: int = 3


@dataclass(frozen=True)
class PaperEstimate:
    """Duration estimate: one timed forward+backward pass per model at probe_size, times the passes each job
    kind needs (assumed counts, per image or per training step). With eval.batch_size=N in `common`, the
    evaluation jobs' passes cost what a timed batch of N costs per image (measured, not assumed)."""

    probe: bool = True
    probe_size: list[int] = field(default_factory=lambda: [512, 768])  # a Kodak image
    passes_per_image: dict = field(default_factory=lambda: dict(PASSES_PER_IMAGE))  # per job kind
    passes_per_train_step: float = 4  # batch 8 x 256^2 px ~ 4 Kodak images
    train_steps: int = 2000


@dataclass(frozen=True)
class PaperSettings:
    """`robust-nic paper` (conf/paper.yaml): the paper's experiments as resumable Hydra jobs."""

    job: str | None = None  # set by the driver's multiruns; null: the driver
    stage: int | None = None
    out: str = "paper_runs"  # every job writes into out/jobs/<id>; the report goes to out/report
    models: list[str] = field(default_factory=lambda: list(PAPER_MODELS))  # conf/model names
    qualities: list[int] | None = None  # null: every quality of each model
    losses: list[str] = field(default_factory=lambda: ["mse", "ms_ssim"])
    eps: float = 0.01  # attack.eps (attack.norm=rms: MSE 1e-4)
    headline_attack: str = (
        "worst_case"  # headline attack (a conf/attack name)
    )
    focus: PaperFocus = field(default_factory=PaperFocus)
    ablations: list[str] = field(
        default_factory=lambda: list(PAPER_ABLATIONS)
    )  # conf/experiment names
    defenses: list[str] = field(
        default_factory=lambda: list(PAPER_DEFENSES)
    )  # conf/defense names
    generations: int = 50  # recompression generations
    pretrained: bool = True  # false: random stand-ins (offline test)
    dataset: str = "kodak"  # data=... of every job: the evaluated images
    # The finetuning set, a folder (e.g. DIV2K/train or CLIC): every train.py job trains on it (validating on a
    # held-out part), never on the evaluated images; required with dataset=kodak.
    train_root: str | None = None
    dry_run: bool = False  # true: print the plan (missing inputs, estimate) and stop
    kinds: list[str] | None = None  # keep only these job kinds, e.g. [attack, noise, finetune, report]
    common: list[str] = field(
        default_factory=list
    )  # overrides for every evaluate.py job, e.g. [max_images=1]
    train_common: list[str] = field(default_factory=list)  # overrides for train.py jobs only
    estimate: PaperEstimate = field(default_factory=PaperEstimate)

    def __post_init__(self):
        check_range("paper", "eps", self.eps, 0, EPS_MAX["rms"], low_open=True)
        check_range("paper", "generations", self.generations, 1)


# config group -> the dataclass holding its defaults (the schema/<group> config its YAMLs extend)
SCHEMAS = {
    "train_run": TrainRunSettings,  # the top level of train.yaml
    "evaluate_run": EvaluateRunSettings,  # the top level of evaluate.yaml
    "attack": AttackSettings,
    "model": ModelSettings,
    "loss": LossSettings,
    "data": DataSettings,
    "eval": EvalSettings,
    "optim": OptimSettings,
    "train": AdversarialSettings,
    "paper": PaperSettings,
    "coding": CodingSettings,
    "checkpoint": CheckpointSettings,
}


def schema(cls) -> dict:
    """A group's defaults as a plain config node; a key without default is Hydra's ??? (must be set)."""
    node = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            node[f.name] = plain_value(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            node[f.name] = plain(value) if dataclasses.is_dataclass(value) else plain_value(value)
        else:
            node[f.name] = "???"
    return node


def group_settings(settings: Mapping, group: str):
    """The typed settings of config group `group` (a key of SCHEMAS) from resolved settings: what a component
    is handed instead of the group's raw keys."""
    return typed(SCHEMAS[group], group, settings.get(group))


def plain_value(value):
    return list(value) if isinstance(value, tuple) else value


def store_schemas() -> None:
    """Each group's defaults as the config `schema/<group>` in Hydra's ConfigStore, which the group's YAMLs
    extend (`defaults: [/schema/<group>@_here_, _self_]`): plain nodes, so the values are typed here."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, cls in SCHEMAS.items():
        store.store(group="schema", name=group, node=schema(cls))
