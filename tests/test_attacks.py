"""The attack engine: budgets after 8-bit rounding, codec state, proxies, objectives, optimisers, configs."""

from __future__ import annotations

import copy
import dataclasses
import functools
import warnings

import numpy as np
import pytest
import torch
from compressai.models import Cheng2020Anchor, MeanScaleHyperprior, ScaleHyperprior
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from torch import nn

from robust_nic.attacks import (
    OPTIMIZERS,
    Attack,
    AttackConfigError,
    Budget,
    ZeroGradientError,
    build_attack,
)
from robust_nic.attacks.factory import variant, with_defaults
from robust_nic.attacks.objectives import Objective
from robust_nic.coding import bpp_from_likelihoods, code, forward_padded
from robust_nic.config import compose_config, resolve
from robust_nic.metrics import ms_ssim_loss, mse_per_image, to_8bit
from robust_nic.reconstruction import Surrogate, patched_quantize

warnings.filterwarnings("ignore", category=FutureWarning)

LATENT_SCALE = 4.0
NORM_EPS = {"rms": 0.01, "linf": 4 / 255}
FAST = settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    from skimage import data
    from skimage.transform import resize

    image = resize(data.astronaut(), (96, 96), anti_aliasing=True).astype(np.float32)
    return to_8bit(torch.from_numpy(image).permute(2, 0, 1)[None])


@pytest.fixture(scope="module")
def codec(small_codec) -> ScaleHyperprior:
    """The test run's small trained codec (tests/conftest.py), with finer latent quantization (the same
    unquantized function): an 8-bit-sized perturbation should flip some roundings."""
    model = copy.deepcopy(small_codec)
    with torch.no_grad():
        model.g_a[-1].weight.mul_(LATENT_SCALE)
        model.g_a[-1].bias.mul_(LATENT_SCALE)
        model.g_s[0].weight.div_(LATENT_SCALE)
    model.update(force=True)
    return model.eval()


@functools.cache
def attack_config(name: str) -> dict:
    """conf/attack/<name>.yaml as Hydra composes it (base + the attack's differences)."""
    return OmegaConf.to_container(compose_config("evaluate", [f"attack={name}"]).attack, resolve=True)


def attack(name: str, norm: str = "rms", **overrides) -> Attack:
    cfg = dict(attack_config(name))
    cfg.update(norm=norm, eps=NORM_EPS[norm], steps=3)
    if cfg["objective"] != "rate":  # a rate attack (attack=bitrate) needs its likelihood-giving proxy
        cfg["proxy"] = "skip"
    cfg.update(overrides)
    return build_attack(cfg)


def crop(photo: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return photo[..., :h, :w].contiguous()


def on_8bit_grid(x: torch.Tensor) -> bool:
    return torch.equal(x, to_8bit(x))


# --- budget --------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["rms", "linf"])
@FAST
@given(
    seed=st.integers(0, 2**16), eps_scale=st.floats(0.2, 3.0), box=st.sampled_from([None, 2 / 255, 16 / 255])
)
def test_round_stays_in_budget(norm, seed, eps_scale, box):
    """Budget.round: any proposal (even far over budget) ends up 8-bit and within budget."""
    g = torch.Generator().manual_seed(seed)
    x = to_8bit(torch.rand(3, 3, 19, 23, generator=g))
    x[0, :, :5] = 1.0  # saturated regions: clipping at [0,1] must not break the bound
    budget = Budget(norm, eps=NORM_EPS[norm] * eps_scale, linf=box)
    proposal = x + torch.randn(x.shape, generator=g) * NORM_EPS[norm] * eps_scale * 2
    x_adv = budget.round(x, proposal)
    assert on_8bit_grid(x_adv)
    assert budget.within(x, x_adv).all()


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("norm", ["rms", "linf"])
@FAST
@given(
    seed=st.integers(0, 2**16),
    size=st.tuples(st.integers(17, 70), st.integers(17, 70)),
    eps_scale=st.floats(0.3, 2.0),
    box=st.sampled_from([None, 16 / 255]),
)
def test_budget_holds_after_rounding(codec, name, norm, seed, size, eps_scale, box):
    g = torch.Generator().manual_seed(seed)
    x = to_8bit(torch.rand(2, 3, *size, generator=g))
    x[1, :, : size[0] // 2] = 0.0
    eps = NORM_EPS[norm] * eps_scale
    a = attack(name, norm, eps=eps, linf=box, seed=seed, steps=2)
    x_adv = a(codec, x)
    assert x_adv.shape == x.shape and on_8bit_grid(x_adv)
    assert a.budget.within(x, x_adv).all()
    delta = (x_adv - x).double().flatten(1)
    size_ = delta.pow(2).mean(1).sqrt() if norm == "rms" else delta.abs().amax(1)
    assert (size_ <= eps + 1e-6).all()
    if box is not None:
        assert (delta.abs().amax(1) <= box + 1e-6).all()


def test_per_image_eps(codec, photo):
    x = torch.cat([crop(photo, 40, 40), crop(photo, 40, 40).flip(-1)])
    eps = torch.tensor([0.004, 0.02])
    a = attack("pgd", eps=eps)
    x_adv = a(codec, x)
    rms = (x_adv - x).flatten(1).pow(2).mean(1).sqrt()
    assert (rms <= eps + 1e-6).all() and rms[1] > 0.01


# --- codec state --------------------------------------------------------------------------------


def snapshot(model: nn.Module) -> dict:
    return {
        "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "grads": {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()},
        "requires_grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "modes": {k: m.training for k, m in model.named_modules()},
        "patched": [k for k, m in model.named_modules() if "quantize" in m.__dict__],
    }


def assert_same(before: dict, after: dict) -> None:
    for key in before["params"]:
        assert torch.equal(before["params"][key], after["params"][key]), key
    for key, grad in before["grads"].items():
        other = after["grads"][key]
        assert (grad is None) == (other is None), key
        assert grad is None or torch.equal(grad, other), key
    assert before["requires_grad"] == after["requires_grad"]
    assert before["modes"] == after["modes"]
    assert after["patched"] == []


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(
    "overrides",
    [
        dict(name="chen2023", proxy="skip"),
        dict(name="pgd", proxy="ste"),
        dict(name="mifgsm", proxy="noise", objective="rate"),
    ],
)
def test_codec_state_untouched(photo, training, overrides):
    torch.manual_seed(1)
    model = MeanScaleHyperprior(16, 24)
    model.g_s[0].weight.grad = torch.ones_like(model.g_s[0].weight)  # some grads set, others None
    model.h_a[0].weight.requires_grad_(False)
    model.train(training)
    model.h_s.eval()  # mixed modes must come back exactly
    before = snapshot(model)
    overrides = dict(overrides)
    attack(overrides.pop("name"), **overrides)(model, crop(photo, 33, 45))
    assert_same(before, snapshot(model))


def test_patch_restored_after_error(codec):
    with pytest.raises(RuntimeError, match="boom"), patched_quantize(codec, "ste"):
        assert "quantize" in codec.entropy_bottleneck.__dict__
        raise RuntimeError("boom")
    assert all("quantize" not in m.__dict__ for m in codec.modules())


# --- proxies ------------------------------------------------------------------------------------


def test_zero_gradient_guard(codec, photo):
    codec.g_s[0].weight.grad = torch.ones_like(codec.g_s[0].weight)  # the caller's state, to keep
    codec.train()  # as in finetuning; the attack runs the codec in eval mode
    before = snapshot(codec)
    try:
        with pytest.raises(ZeroGradientError, match=r"attack\.proxy.*skip.*noise.*ste"):
            attack("pgd", proxy="none")(codec, crop(photo, 40, 40))
        # The failed attack leaves the codec exactly as found (train mode, flags, grads, no patch).
        assert_same(before, snapshot(codec))
    finally:
        codec.g_s[0].weight.grad = None
        codec.eval()


@pytest.mark.parametrize("model_cls", [ScaleHyperprior, MeanScaleHyperprior, Cheng2020Anchor])
def test_ste_matches_eval_and_passes_gradients(codec, model_cls, photo):
    model = (
        codec
        if model_cls is ScaleHyperprior
        else model_cls(16)
        if model_cls is Cheng2020Anchor
        else model_cls(16, 24)
    )
    model.eval()
    x = crop(photo, 50, 37).requires_grad_(True)
    with torch.no_grad():
        real = forward_padded(model, x)["x_hat"]
    surrogate = Surrogate(model, "ste")
    with surrogate.active():
        out = surrogate(x)
    assert torch.allclose(out["x_hat"], real, atol=1e-5)
    (grad,) = torch.autograd.grad(
        out["x_hat"].sum() + bpp_from_likelihoods(out["likelihoods"], 50 * 37).sum(), x
    )
    assert grad.abs().amax() > 0


def test_noise_proxy_ignores_eval_flag():
    """mbt2018/cheng2020 pick the mode from their own flag; the patch must still add noise in eval."""
    model = MeanScaleHyperprior(16, 24).eval()
    x = torch.rand(1, 3, 64, 64)
    g = torch.Generator().manual_seed(0)
    surrogate = Surrogate(model, "noise", g)
    with torch.no_grad(), surrogate.active():
        y = model.g_a(x)
        y_hat = model.gaussian_conditional.quantize(y, "dequantize")
    offset = y_hat - y
    assert offset.abs().amax() <= 0.5 and offset.std() > 0.2  # uniform noise, not rounding of ~0 latents


@pytest.mark.parametrize("model_cls", [MeanScaleHyperprior, Cheng2020Anchor])
@pytest.mark.parametrize("proxy", ["ste", "noise"])
@pytest.mark.parametrize("objective", ["distortion", "rate"])
def test_context_and_mean_codecs(photo, model_cls, proxy, objective):
    torch.manual_seed(0)
    model = model_cls(16) if model_cls is Cheng2020Anchor else model_cls(16, 24)
    model.eval()
    x = crop(photo, 35, 29)
    a = attack("pgd", proxy=proxy, objective=objective, steps=2)
    result = a.run(model, x)
    assert a.budget.within(x, result.x_adv).all() and torch.isfinite(result.score).all()


class Wrapper(nn.Module):
    """A defense-like module: contains the codec, no g_a/g_s of its own."""

    def __init__(self, codec):
        super().__init__()
        self.codec = codec

    def forward(self, x):
        out = self.codec(x.flip(-1))
        return {"x_hat": out["x_hat"].flip(-1), "likelihoods": out["likelihoods"]}


@pytest.mark.parametrize("proxy", ["skip", "ste", "noise"])
def test_attack_through_wrapper(codec, photo, proxy):
    x = crop(photo, 40, 40)
    before = snapshot(codec)
    result = attack("pgd", proxy=proxy, steps=4, eps=0.02).run(Wrapper(codec), x)
    assert (result.score > 0).all()
    assert_same(before, snapshot(codec))


# --- objectives and optimisers ------------------------------------------------------------------


def real_recon(codec, x):
    return code(codec, x).x_hat


@pytest.mark.parametrize(
    "overrides",
    [
        dict(name="chen2023", steps=30, lr=0.005),
        dict(name="pgd", steps=12, proxy="ste"),
        dict(name="mifgsm", steps=12),
    ],
)
def test_attack_beats_noise_baseline(codec, photo, overrides):
    x = crop(photo, 64, 64)
    clean = real_recon(codec, x)
    noisy = real_recon(codec, attack("noise")(codec, x))
    overrides = dict(overrides)
    adversarial = real_recon(codec, attack(overrides.pop("name"), **overrides)(codec, x))
    assert mse_per_image(adversarial, clean) > 2 * mse_per_image(noisy, clean)


def test_ste_escapes_stationary_start(codec, photo):
    """With ste the zero-init iterate reconstructs exactly like the clean codec: the distortion's
    gradient is exactly 0 there although the proxy passes gradients; the attack must not stall."""
    x = crop(photo, 48, 48)
    result = attack("chen2023", proxy="ste", steps=6, progress=True).run(codec, x)
    assert (result.score > 0).all()


@pytest.mark.parametrize("overrides", [dict(distance="ms_ssim"), dict(reference="source")])
def test_ms_ssim_distance_and_source_reference(codec, photo, overrides):
    """The attack raises its own objective, measured on the real codec's output, beyond what the
    random-noise baseline at the same budget does (the score alone is > 0 before any step)."""
    x = torch.cat([crop(photo, 48, 48), crop(photo, 48, 48).flip(-1)])
    pgd = attack("pgd", steps=6, **overrides)
    x_adv = pgd(codec, x)
    noisy = attack("noise")(codec, x)
    reference = x if "reference" in overrides else real_recon(codec, x)

    def damage(example):
        recon = real_recon(codec, example)
        return ms_ssim_loss(recon, reference) if "distance" in overrides else mse_per_image(recon, reference)

    # Damage beyond the clean reconstruction's own (0 vs itself; its coding error vs the source).
    attacked, baseline = damage(x_adv) - damage(x), damage(noisy) - damage(x)
    assert torch.isfinite(attacked).all() and torch.isfinite(baseline).all()
    assert (attacked > 5 * baseline.abs()).all() and (attacked > 1e-3).all(), (attacked, baseline)


def test_distortion_scores_what_the_decoder_outputs():
    """The real decoder clamps to [0, 1]: pixels pushed past 1 score no more than 1 does."""
    goal = torch.full((1, 3, 8, 8), 0.9)
    beyond = {"x_hat": torch.full((1, 3, 8, 8), 1.4), "likelihoods": None}
    mse = Objective("distortion", "source", "mse")
    assert torch.allclose(mse.score(beyond, goal), torch.tensor([0.01]))  # (1.0 - 0.9)^2, not 0.5^2
    # The clean reconstruction (the recon reference) is compared as decoded too.
    assert torch.equal(Objective().goal(goal, torch.full_like(goal, 1.2)), torch.ones_like(goal))
    targeted = Objective("targeted", "recon", "mse")
    assert torch.allclose(targeted.score(beyond, torch.ones_like(goal)), torch.tensor([0.0]))


def test_targeted_moves_towards_target(codec, photo):
    x = crop(photo, 64, 64)
    target = torch.full_like(x, 0.5)
    target[..., :32, :] = x[..., :32, :].flip(-1)
    clean = real_recon(codec, x)
    adversarial = real_recon(
        codec, attack("pgd", objective="targeted", steps=12, eps=0.03)(codec, x, target=target)
    )
    assert mse_per_image(adversarial, target) < 0.95 * mse_per_image(clean, target)

    mask = torch.zeros(64, 64)
    mask[20:44, 20:44] = 1
    masked = real_recon(
        codec, attack("pgd", objective="targeted", steps=12, eps=0.03)(codec, x, target, mask)
    )
    inside = (slice(None), slice(None), slice(20, 44), slice(20, 44))
    assert mse_per_image(masked[inside], target[inside]) < mse_per_image(clean[inside], target[inside])

    with pytest.raises(ValueError, match="target"):
        attack("pgd", objective="targeted")(codec, x)


def test_rate_attack_raises_bpp(codec, photo):
    x = crop(photo, 64, 64)
    clean = code(codec, x, update=True)
    # rms 0.1: the shared small codec's estimated rate rose only 3 % at rms 0.03 (measured)
    attacked = code(codec, attack("pgd", proxy="ste", objective="rate", steps=12, eps=0.1)(codec, x))
    assert (attacked.bpp_est > clean.bpp_est * 1.05).all()
    assert (attacked.bpp > clean.bpp).all()

    toward = attack("pgd", proxy="ste", objective="rate", target_bpp=0.0, steps=12, eps=0.1)(codec, x)
    assert (code(codec, toward).bpp_est < clean.bpp_est).all()


@pytest.mark.parametrize("name", ["pgd", "noise"])
def test_seed_reproducible(codec, photo, name):
    x = crop(photo, 40, 40)
    first = attack(name, seed=3, random_start=True, steps=2, proxy="noise")(codec, x)
    again = attack(name, seed=3, random_start=True, steps=2, proxy="noise")(codec, x)
    other = attack(name, seed=4, random_start=True, steps=2, proxy="noise")(codec, x)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_restarts_keep_strongest(codec, photo):
    """The first restart reproduces the single run (same seed); each image keeps its strongest restart,
    with the matching example."""
    x = torch.cat([photo[..., i : i + 40, j : j + 40] for i, j in ((0, 0), (50, 10), (20, 56), (56, 56))])
    single = attack("pgd", steps=2, restarts=1).run(codec, x)
    several = attack("pgd", steps=2, restarts=4).run(codec, x)
    assert (several.score >= single.score).all()  # never weaker than the first restart, per image
    later_won = several.score > single.score
    assert later_won.any()  # the restarts explored: another start won somewhere
    for i in range(x.shape[0]):  # the example kept is the one the score belongs to
        assert torch.equal(several.x_adv[i], single.x_adv[i]) != bool(later_won[i])


# --- configuration and calling context ----------------------------------------------------------


# What each conf/attack file builds (the values the 20-key YAMLs had before the shared base).
EXPECTED_BUILDS = {
    "chen2023": ("skip", {"steps": 1001, "lr": 0.01, "random_start": False}),
    "pgd": ("ste", {"steps": 100, "alpha": None, "random_start": True}),
    "ifgsm": ("skip", {"steps": 100, "alpha": None, "random_start": False}),
    "mifgsm": ("skip", {"steps": 100, "alpha": None, "random_start": False, "decay": 1.0}),
    "noise": ("skip", None),
    "bitrate": ("ste", {"steps": 100, "alpha": None, "random_start": True}),
}


@pytest.mark.parametrize("name", ["none", *OPTIMIZERS])
def test_configs_build(name):
    cfg = attack_config(name)
    assert set(cfg) == set(attack_config("none"))  # every attack.* override composes with every attack
    built = build_attack(cfg)
    assert (built is None) == (name == "none")
    if built is not None:
        assert built.eps == 0.01 and built.budget.norm == "rms" and built.restarts == 1 and built.seed == 0
        proxy, options = EXPECTED_BUILDS[name]
        assert built.proxy == proxy
        assert (dataclasses.asdict(built.options) if built.options else None) == options


def test_auto_resolves_to_the_paper_recipe():
    settings = resolve(compose_config("train", ["attack.eps=0.01"]))
    built = build_attack(settings["attack"])
    assert built.name == "chen2023" and built.options.steps == 300 and built.warmup_steps == 100
    assert with_defaults(settings["attack"])["lr"] == 0.01  # the saved config says what ran


def test_options_of_another_optimiser_are_said_or_dropped(caplog):
    with caplog.at_level("WARNING"):
        build_attack({**attack_config("pgd"), "lr": 0.1})  # pgd has no lr: ignored, and said
    assert "attack=pgd ignores ['attack.lr=0.1']" in caplog.text
    with pytest.raises(AttackConfigError, match=r"attack\.stepz"):
        build_attack({**attack_config("pgd"), "stepz": 3})
    with pytest.raises(AttackConfigError, match=r"attack\.steps='many' is not a valid setting"):
        build_attack({**attack_config("pgd"), "steps": "many"})
    # finetuning's validation attack may switch optimiser: the training one's own options do not follow
    training = with_defaults(attack_config("chen2023"))
    val = build_attack(variant(training, {"name": "pgd", "steps": 7}))
    assert val.name == "pgd" and val.options.steps == 7 and val.options.random_start is False  # shared knob kept


def test_every_gradient_step_counts(codec, photo):
    """steps=N takes N gradient steps and each result is a candidate: a one-step attack from zero moves
    the image and scores above the start (the loop once scored only the start and dropped the step)."""
    x = crop(photo, 64, 64)
    one_step = attack("ifgsm", steps=1, random_start=False)
    start = one_step.objective.score(Surrogate(codec, "skip")(x), real_recon(codec, x))
    result = one_step.run(codec, x)
    assert not torch.equal(result.x_adv, x)
    assert (result.score > start).all()


def test_select_last_returns_the_final_iterate_unscored(codec, photo):
    """Finetuning's inner loop (attack.select=last) keeps the final iterate without a scoring forward;
    it still moves the image, within budget and on the 8-bit grid."""
    x = crop(photo, 64, 64)
    last = attack("pgd", steps=1, select="last").run(codec, x)
    assert torch.isnan(last.score).all()
    assert not torch.equal(last.x_adv, x) and on_8bit_grid(last.x_adv)
    assert (mse_per_image(last.x_adv, x).sqrt() <= NORM_EPS["rms"] + 1e-6).all()
    with pytest.raises(AttackConfigError, match="attack.select"):
        attack("pgd", select="first")
    with pytest.raises(AttackConfigError, match="restarts"):
        attack("pgd", select="last", restarts=2)


def test_config_errors():
    with pytest.raises(AttackConfigError, match="proxy"):
        attack("chen2023", objective="rate")  # skip gives no likelihoods
    with pytest.raises(AttackConfigError, match="attack.name"):
        build_attack({"name": "cw"})
    with pytest.raises(AttackConfigError, match="attack.proxy"):
        attack("pgd", proxy="round")
    with pytest.raises(AttackConfigError, match="attack.norm"):
        build_attack({"name": "pgd", "norm": "l2"})


def test_eps_warmup():
    a = attack("pgd", eps=0.02, warmup_steps=4)
    assert [a.eps_at(s) for s in range(5)] == pytest.approx([0.005, 0.01, 0.015, 0.02, 0.02])
    assert a.at_step(0).eps == pytest.approx(0.005) and a.eps == 0.02
    assert a.with_eps(0.001).budget == Budget("rms", 0.001)


def test_calling_contexts(codec, photo):
    x = crop(photo, 32, 32)
    with torch.no_grad():  # e.g. inside a validation step: the attack turns autograd back on
        assert attack("pgd")(codec, x).shape == x.shape
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        attack("pgd")(codec, x)
