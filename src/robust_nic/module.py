"""LightningModule: rate-distortion training of a CompressAI codec, optionally on adversarial inputs."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import lightning as L
import torch
from compressai.models import CompressionModel

from robust_nic.codecs import lambda_for, resize_entropy_buffers
from robust_nic.coding import code
from robust_nic.data import stream_seed
from robust_nic.evaluation.measure import adversarial_metrics, clean_metrics, code_or_nan
from robust_nic.losses import RateDistortionLoss
from robust_nic.reconstruction import reconstruct
from robust_nic.resume import STEPS_PER_BATCH
from robust_nic.settings import AdversarialSettings, OptimSettings, group_settings, typed

# Random streams keyed with (seed, rank, batch index): batch crops use 0 (data.CropBatches).
TRAIN_STREAM, VALIDATION_STREAM, ATTACK_STREAM = 1, 2, 3


def split_parameters(codec: CompressionModel, entropy_lr_mult: float = 1.0) -> tuple[list[dict], list]:
    """Network parameter groups (entropy-model density params may get a higher lr) and aux params."""
    transforms, density, aux = [], [], []
    for name, param in codec.named_parameters():
        if name.endswith(".quantiles"):
            aux.append(param)
        elif "entropy_bottleneck" in name:
            density.append(param)
        else:
            transforms.append(param)
    groups = [{"params": transforms, "lr_mult": 1.0}]
    if density:
        groups.append({"params": density, "lr_mult": float(entropy_lr_mult)})
    return groups, aux


def training_settings(settings: Mapping) -> tuple[OptimSettings, AdversarialSettings]:
    """The `optim` and `train` groups, typed and checked (before any work, and again for the module)."""
    optim = dict(settings["optim"])
    optim["milestones"] = tuple(optim.get("milestones") or ())
    return typed(OptimSettings, "optim", optim), typed(AdversarialSettings, "train", settings.get("train"))


class CodecModule(L.LightningModule):
    """Trains `codec` on `lambda * D + R` with CompressAI's two optimizers.

    One Lightning step per batch: the aux optimizer steps outside Lightning's count, so global_step,
    trainer.max_steps, schedules and resumes all count batches. With an attack, each training step first
    crafts adversarial examples for part of the batch against the current weights. `record` (the run's
    resolved settings, plain containers) is only stored in checkpoints, never read back by the module.
    """

    def __init__(
        self,
        codec: CompressionModel,
        loss: RateDistortionLoss,
        optim: OptimSettings,
        max_batches: int,
        adversarial: AdversarialSettings | None = None,
        consistency_lmbda: float = 0.0,
        attack=None,
        val_attack=None,
        record: Mapping | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.automatic_optimization = False  # two optimizers (network, aux)
        self.codec = codec
        # Checkpoints must stay loadable with weights_only=True: plain containers only.
        self.save_hyperparameters({"cfg": dict(record or {}), "steps_per_batch": STEPS_PER_BATCH})
        self.loss = loss
        self.optim = optim
        self.adversarial = adversarial or AdversarialSettings()
        self.attack = attack
        # Validation measures robustness at the full budget, possibly with a stronger attack.
        self.val_attack = val_attack or attack
        self.max_batches = int(max_batches)
        self.consistency_lmbda = float(consistency_lmbda)
        self.seed = int(seed)

    @classmethod
    def from_settings(cls, codec: CompressionModel, settings: Mapping, attack=None, val_attack=None) -> CodecModule:
        """The module as train.py configures it from the resolved settings."""
        optim, adversarial = training_settings(settings)
        loss, model = group_settings(settings, "loss"), group_settings(settings, "model")
        return cls(
            codec,
            RateDistortionLoss(loss.metric, loss.lmbda),
            optim,
            int(settings["trainer"]["max_steps"]),  # a Lightning Trainer argument (conf/trainer)
            adversarial,
            # The consistency term is an MSE: weigh it like the mse loss of this quality would.
            consistency_lmbda=lambda_for("mse", min(model.quality, 8)),
            attack=attack,
            val_attack=val_attack,
            record=settings,
            seed=settings["seed"],  # resolve() typed the top-level keys
        )

    def configure_optimizers(self):
        groups, aux_params = split_parameters(self.codec, self.optim.entropy_lr_mult)
        lr = float(self.optim.lr)
        for group in groups:
            group["lr"] = lr * group.pop("lr_mult")
        optimizer = torch.optim.Adam(groups, lr=lr)
        aux_optimizer = torch.optim.Adam(aux_params, lr=float(self.optim.aux_lr))
        return [optimizer, aux_optimizer], [self._scheduler(optimizer)]

    def _scheduler(self, optimizer):
        kind = self.optim.scheduler
        if kind == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, self.max_batches))
        if kind == "multistep":
            milestones = [int(f * self.max_batches) for f in self.optim.milestones]
            return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=self.optim.gamma)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)  # none (OptimSettings checked the name)

    # ---- training -------------------------------------------------------------------------------

    def adversarial_batch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Inputs and targets with the first round(adv_ratio * B) images (at least one) replaced by adversarial ones."""
        ratio = float(self.adversarial.adv_ratio)
        # A positive ratio attacks at least one image: round(0.4 * 1) = 0 would silently finetune plainly.
        count = max(1, round(ratio * x.shape[0])) if ratio > 0 else 0
        if self.attack is None or count == 0:
            return x, x, 0
        # The attack ramps eps up over attack.warmup_steps batches (the paper's schedule); random starts
        # differ per step and per DDP rank yet stay reproducible from attack.seed (or, unset, the run's seed).
        attack = self.attack.at_step(self.global_step)
        if attack.seed is not None:
            attack = dataclasses.replace(attack, seed=attack.seed + self.global_step + 100_003 * self.global_rank)
        else:
            attack = dataclasses.replace(attack, seed=self.stream_seed(ATTACK_STREAM))
        x_adv = attack(self.codec, x[:count]).detach()
        inputs = torch.cat([x_adv, x[count:]])
        targets = inputs if self.adversarial.adv_target == "adversarial" else x
        return inputs, targets, count

    def rd_and_consistency(self, batch, inputs, targets, adv_count: int) -> dict[str, torch.Tensor]:
        """Rate-distortion loss of the (partly adversarial) batch, plus, with train.consistency_weight,
        a term pulling each attacked reconstruction towards its clean one (what delta_psnr measures)."""
        out = self.codec(inputs)  # the training proxy (noise): rates, and distortion without consistency
        weight = float(self.adversarial.consistency_weight or 0.0)
        if weight <= 0 or not adv_count:
            return self.loss(out, targets)
        # Both terms on the real decoder's values (straight-through rounding). With the distortion left
        # on the noise path, training kept that path good while the rounding path, seen only by the
        # consistency term, collapsed (measured: 20.6 dB noise path vs 14.9 dB rounded).
        real, clean = self.real_reconstructions(inputs, batch[:adv_count])
        losses = self.loss({"x_hat": real, "likelihoods": out["likelihoods"]}, targets)
        consistency = ((real[:adv_count] - clean) ** 2).mean()
        losses["consistency_loss"] = consistency
        losses["loss"] = losses["loss"] + weight * self.consistency_lmbda * 255**2 * consistency
        return losses

    def real_reconstructions(self, inputs: torch.Tensor, clean_inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstructions as the real decoder makes them (differentiable for `inputs`, constant for
        `clean_inputs`): straight-through rounding (robust_nic.reconstruction). Not a knob: noise
        draws differ between the two inputs, and skip would leave the rounded path untrained."""
        with torch.no_grad():
            clean = reconstruct(self.codec, clean_inputs, "ste")
        return reconstruct(self.codec, inputs, "ste"), clean

    def stream_seed(self, stream: int, *more: int) -> int:
        """A seed from (seed, rank, batch index, stream): a resumed run draws exactly what the
        uninterrupted one drew, and nothing depends on the clock or on what ran before."""
        return stream_seed(self.seed, self.global_rank, self.global_step, stream, *more)

    def seed_global_rng(self, stream: int) -> None:
        """Seed every global-RNG draw that follows (the noise proxy, for one)."""
        torch.manual_seed(self.stream_seed(stream))

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        optimizer, aux_optimizer = self.optimizers()
        batch_index = self.global_step  # before the optimizer steps advance it: the eps this batch used
        self.seed_global_rng(TRAIN_STREAM)
        inputs, targets, adv_count = self.adversarial_batch(batch)
        losses = self.rd_and_consistency(batch, inputs, targets, adv_count)
        aux_loss = self.codec.aux_loss()
        optimizer.zero_grad()
        aux_optimizer.zero_grad()
        # One backward for both: aux_loss only reaches the quantiles (CompressAI detaches the rest),
        # and DDP then sees every parameter used.
        self.manual_backward(losses["loss"] + aux_loss)
        self.clip_gradients(optimizer, gradient_clip_val=self.optim.clip, gradient_clip_algorithm="norm")
        optimizer.step()
        # The raw optimizer: Lightning counts a step per LightningOptimizer.step(), and the aux step is part
        # of the same batch. Safe at 32-true and bf16 (no loss scaler to undo); fp16 with a GradScaler is
        # refused by training.check_precision.
        aux_optimizer.optimizer.step()
        self.lr_schedulers().step()
        metrics = {f"train/{k}": v for k, v in losses.items()} | {"train/aux_loss": aux_loss}
        if self.attack is not None:
            metrics |= {"train/eps": float(self.attack.eps_at(batch_index)), "train/adv_fraction": adv_count / batch.shape[0]}
        self.log_dict(metrics, prog_bar=False, batch_size=batch.shape[0])
        self.log("loss", losses["loss"], prog_bar=True, logger=False, batch_size=batch.shape[0])
        return losses["loss"]

    # ---- validation: real entropy coding on whole images -----------------------------------------

    def on_validation_epoch_start(self) -> None:
        self.seed_global_rng(VALIDATION_STREAM)
        self.codec.update(force=True)  # on every rank, so CDF buffers stay identical across ranks

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        clean = code(self.codec, batch)
        metrics = {f"val/{k}": v for k, v in clean_metrics(batch, clean).items() if k in ("bpp", "bpp_est", "psnr", "ms_ssim")}
        metrics["val/rd_loss"] = self._real_rd_loss(batch, clean, metrics["val/ms_ssim"])
        if self.attack is not None:
            attack = self.val_attack
            if getattr(attack, "seed", 0) is None:  # unseeded: still a function of (seed, rank, step, image)
                attack = dataclasses.replace(attack, seed=self.stream_seed(VALIDATION_STREAM, batch_idx))
            with torch.inference_mode(False), torch.enable_grad():
                x_adv = attack(self.codec, batch.clone())
            # A non-finite x_adv is measured as NaN, never entropy-coded (the range coder hangs on NaN).
            attacked = code_or_nan(lambda x: code(self.codec, x), x_adv)
            adv = adversarial_metrics(batch, x_adv, clean, attacked)
            metrics |= {f"val/adv/{k}": adv[k] for k in ("delta_psnr", "psnr", "psnr_out", "bpp")}
            # One number for sweepers: clean RD cost plus attacked vulnerability (both lower is better).
            weight = float(self.adversarial.robust_weight)
            metrics["val/robust_objective"] = metrics["val/rd_loss"] + weight * adv["delta_psnr"].clamp(min=0)
            if batch_idx == 0:
                self._log_images(batch, x_adv, clean.x_hat, attacked.x_hat)
        for name, value in metrics.items():
            # On the module's device: DDP's NCCL all-reduce (sync_dist) cannot reduce CPU tensors. A NaN is
            # logged as NaN (never dropped or capped); ModelCheckpoint ranks a NaN monitor value last.
            value = value.float().mean().to(self.device)
            self.log(name, value, batch_size=1, sync_dist=True, prog_bar=name in ("val/psnr", "val/adv/delta_psnr"))

    def _real_rd_loss(self, x: torch.Tensor, coded, ms_ssim: torch.Tensor) -> torch.Tensor:
        """The training objective with the bitstream's bpp: what checkpoint selection should minimise."""
        if self.loss.metric == "mse":
            distortion = 255**2 * ((coded.x_hat - x) ** 2).flatten(1).mean(1).cpu().double()
        else:
            distortion = 1 - ms_ssim
        return self.loss.lmbda * distortion + coded.bpp

    def _log_images(self, x, x_adv, x_hat, x_hat_adv) -> None:
        """Source / adversarial / clean reconstruction / attacked reconstruction, for dashboards."""
        from robust_nic.trackers import log_image_panel

        log_image_panel(self.logger, "val/images", [x, x_adv, x_hat, x_hat_adv],
                        ["source", "adversarial", "clean recon", "attacked recon"], self.global_step)

    # ---- checkpoints ------------------------------------------------------------------------------

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # CDF buffers change size after update(); resize ours before the generic loader compares shapes.
        resize_entropy_buffers(self.codec, state_dict, prefix="codec.")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
