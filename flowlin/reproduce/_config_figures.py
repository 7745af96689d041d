"""The figures of `flowlin sweep CONFIG.toml` (`flowlin.reproduce.config.run_config`):
`loss.png` and `distance.png`."""

import pathlib

import numpy as np
import xarray as xr

from .. import _dataset as schema
from ._report import plt, save_figure


def config_figures(ds: xr.Dataset, ts, title: str, out: pathlib.Path, files: list) -> None:
    """`loss.png` (excess loss over time per width and scale) and, with several widths,
    `distance.png` (final distance vs width)."""
    fig, ax = plt().subplots(figsize=(7, 4.5))
    mean = ds.excess_loss.mean(schema.SEED)
    others = [k for k in mean.dims if k not in (schema.TIME, schema.WIDTH)]
    flat = mean.stack(group=others) if others else mean.expand_dims(group=[0])
    styles = ["-", "--", ":", "-."]
    for wi, w in enumerate(ds[schema.WIDTH].values):
        for gi in range(flat.sizes["group"]):
            values = np.ravel(np.asarray(flat.group.values[gi], dtype=object))  # (0.5,) -> 0.5
            label = ", ".join([f"h={w}", *(f"{k}={v}" for k, v in zip(others, values))])
            ax.semilogy(
                ts,
                flat.sel({schema.WIDTH: w}).isel(group=gi),
                f"C{wi % 10}{styles[gi % 4]}",
                label=label,
            )
    ax.set(xlabel="flow time t", ylabel="excess loss L − L* (seed mean)", title="Loss vs time")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, out / "loss.png", files)
    if ds.sizes[schema.WIDTH] == 1:
        return
    fig, ax = plt().subplots(figsize=(6, 4.5))
    dist = ds[schema.final_var("distance_to_min_norm")]
    for s in ds[schema.SCALE].values:
        ds_s = dist.sel({schema.SCALE: s})
        ax.errorbar(
            ds[schema.WIDTH].values,
            ds_s.mean(schema.SEED),
            ds_s.std(schema.SEED, ddof=min(1, ds_s.sizes[schema.SEED] - 1)),  # sample s.d.
            fmt="o-",
            capsize=3,
            label=f"scale {s}",
        )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="width h",
        ylabel=r"$\|W(t_1) - W^*\|_F$",
        title="Distance to the min-norm solution",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save_figure(fig, out / "distance.png", files)
