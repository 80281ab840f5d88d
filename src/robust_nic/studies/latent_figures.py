"""Latents study figures: the per-channel latent range ("safe zone") and coded symbols vs the predicted pmf."""

from __future__ import annotations

from pathlib import Path

from robust_nic.plotting import plt, save_figure


def plot_latent_range(rows: list[dict], title: str, path: Path) -> Path:
    """Channels sorted by natural max: natural [min, max] shaded, adversarial max and min as lines."""
    ordered = sorted(rows, key=lambda r: r["rank_by_natural_max"])
    ranks = range(len(ordered))
    figure, axis = plt.subplots(figsize=(8, 4))
    axis.fill_between(ranks, [r["natural_min"] for r in ordered], [r["natural_max"] for r in ordered],
                      color="tab:green", alpha=0.3, step="mid", label="natural range (safe zone)")  # fmt: skip
    axis.plot(
        ranks, [r["adversarial_max"] for r in ordered], ".-", color="tab:red", lw=0.8, label="adversarial max"
    )
    axis.plot(
        ranks,
        [r["adversarial_min"] for r in ordered],
        ".-",
        color="tab:blue",
        lw=0.8,
        label="adversarial min",
    )
    axis.set_xlabel("channel of y, sorted by natural maximum")
    axis.set_ylabel("latent value")
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    return save_figure(figure, path)


def plot_symbol_histogram(panels: dict[str, dict], title: str, path: Path) -> Path:
    """One panel per entropy model: symbol frequencies (bars) and the predicted pmf (lines), natural vs adversarial."""
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    colours = {"natural": "tab:green", "adversarial": "tab:red"}
    for axis, (model, kinds) in zip(axes[0], panels.items(), strict=True):
        width = 0.4
        for shift, (kind, h) in zip((-width / 2, width / 2), kinds.items(), strict=True):
            values = h["values"].double()
            frequency = h["counts"].double() / max(int(h["counts"].sum()), 1)
            axis.bar(
                values + shift,
                frequency,
                width=width,
                color=colours[kind],
                alpha=0.5,
                label=f"{kind} symbols",
            )
            axis.plot(values, h["predicted"], color=colours[kind], lw=1.2, label=f"{kind}: predicted pmf")
        axis.set_yscale("log")
        axis.set_xlabel("coded symbol")
        axis.set_ylabel("frequency / probability")
        axis.set_title(model)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title)
    return save_figure(figure, path)
