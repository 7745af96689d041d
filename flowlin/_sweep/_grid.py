"""The configurations of a sweep: a grid (problem × width × scale × seed, or problem × depth ×
width × scale × seed for deep networks) or an explicit list, flattened to one table, and the
assembly of per-row records back onto it."""

from collections.abc import Mapping, Sequence

import equinox as eqx
import numpy as np
import xarray as xr
from jaxtyping import Float, Int

from .. import _dataset as schema
from .._init import check_std_fits, float64_std
from .._problem import Problem
from ._validate import (
    check_configs,
    check_unique,
    depth_array,
    int_array,
    scale_pairs,
    seed_array,
)


class Grid(eqx.Module):
    """The flat table of a sweep's configurations (one row per run), and how to label it.

    Row `i` runs problem `problem[i]` at width `width[i]`, scale `scales[scale_index[i]]`
    (a (std1, std2) pair; for `init="paper"` (alpha, alpha)) and seed `seed[i]`. For a grid,
    rows are in C order over `shape` = (problems, widths, scales, seeds); for a list of
    configurations `shape` is `None`.

    A sweep over deep networks (docs/theory.md §6) also has `depth[i]`, the number of layers
    L of row `i` (every hidden layer of width `width[i]`), and `depths`, its axis; a grid's
    `shape` is then (problems, depths, widths, scales, seeds). Without depths both are `None`
    and everything (rows, fingerprint, dataset) is what it was before depths existed.
    """

    problems: list[Problem]
    problem: Int[np.ndarray, " n"]
    width: Int[np.ndarray, " n"]
    scale_index: Int[np.ndarray, " n"]
    seed: Int[np.ndarray, " n"]
    scales: Float[np.ndarray, "s 2"]
    widths: Int[np.ndarray, " w"]
    seeds: Int[np.ndarray, " k"]
    paper_init: bool = eqx.field(static=True)
    shape: tuple[int, ...] | None = eqx.field(static=True)
    depth: Int[np.ndarray, " n"] | None = None
    depths: Int[np.ndarray, " d"] | None = None

    @classmethod
    def build(cls, call: str, problems, widths, scales, seeds, configs, init: str, depths=None):
        """From `configs` if given, else from the axes."""
        if configs is not None:
            grid = cls.from_configs(call, problems, configs, init)
        else:
            grid = cls.from_axes(call, problems, widths, scales, seeds, init, depths)
        grid.check_stds(call)
        return grid

    def check_stds(self, call: str) -> None:
        """Refuse a width and scale whose init std the dtype holds only as 0, a subnormal or
        inf (`flowlin.init.gaussian` refuses it by name; in a sweep it is traced, so it is
        checked here, before any compute): the run would start from zeros and "succeed"."""
        pairs = np.unique(np.stack([self.width, self.scale_index], axis=1), axis=0)
        for width, index in pairs:
            s1, s2 = self.scales[index]
            stds = [(s1, float64_std(1.0, width, s1))] if self.paper_init else [(s1, s1), (s2, s2)]
            for asked, std in stds:
                what = f"scales (scale {asked:g} at width {width})"
                check_std_fits(call, what, std, self.dtype, asked=asked)

    @classmethod
    def from_axes(
        cls, call: str, problems: list[Problem], widths, scales, seeds, init: str, depths=None
    ):
        widths = int_array(call, "widths", widths, 1)
        seeds = seed_array(call, seeds)
        pairs = scale_pairs(call, init, scales)
        check_unique(call, "widths", widths)
        check_unique(call, "seeds", seeds)
        check_unique(call, "scales", pairs)
        if depths is None:
            shape = (len(problems), len(widths), len(pairs), len(seeds))
            axes = np.meshgrid(*(np.arange(k) for k in shape), indexing="ij")
            pidx, wi, si, ki = (a.ravel() for a in axes)
            return cls(
                problems, pidx, widths[wi], si, seeds[ki], pairs, widths, seeds,
                init == "paper", shape,
            )  # fmt: skip
        depths = depth_array(call, "depths", depths)
        shape = (len(problems), len(depths), len(widths), len(pairs), len(seeds))
        axes = np.meshgrid(*(np.arange(k) for k in shape), indexing="ij")
        pidx, di, wi, si, ki = (a.ravel() for a in axes)
        return cls(
            problems, pidx, widths[wi], si, seeds[ki], pairs, widths, seeds, init == "paper",
            shape, depths[di], depths,
        )  # fmt: skip

    @classmethod
    def from_configs(cls, call: str, problems: list[Problem], configs: Sequence[Mapping], init):
        configs = check_configs(call, configs, len(problems))
        width = int_array(call, "configs[...]['width']", [c["width"] for c in configs], 1)
        seed = int_array(call, "configs[...]['seed']", [c["seed"] for c in configs], 0)
        pidx = int_array(call, "configs[...]['problem']", [c.get("problem", 0) for c in configs], 0)
        pairs = scale_pairs(call, init, [c["scale"] for c in configs])
        index = np.arange(len(configs))
        depth = None
        if "depth" in configs[0]:  # (then every config has one: check_configs)
            depth = int_array(call, "configs[...]['depth']", [c["depth"] for c in configs], 2)
        return cls(
            problems, pidx, width, index, seed, pairs, width, seed, init == "paper", None,
            depth, None if depth is None else np.unique(depth),
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self.width)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.problems[0].dtype)

    def rows(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The per-run inputs of the given rows (what the kernel maps over)."""
        pairs = self.scales[self.scale_index[rows]]
        return {
            "problem": np.asarray(self.problem[rows], np.int32),
            "width": np.asarray(self.width[rows], np.int32),
            "s1": np.asarray(pairs[:, 0], self.dtype),
            "s2": np.asarray(pairs[:, 1], self.dtype),
            "seed": np.asarray(self.seed[rows], np.int32),
        }

    def fingerprint_arrays(self) -> tuple[np.ndarray, ...]:
        """The data and table that identify the sweep's configurations (the depths too, for a
        sweep over depths: without them, exactly what it was before depths existed)."""
        data = [np.asarray(a) for p in self.problems for a in (p.X, p.Y)]
        # The rank too: the same data at another `rank_rtol` is another problem.
        data.append(np.asarray([p.rank for p in self.problems], np.int64))
        table = (self.problem, self.width, self.scale_index, self.seed, self.scales)
        return (*data, *table) + (() if self.depth is None else (self.depth,))

    @property
    def layers(self) -> int | None:
        """The most hidden layers of any row (L - 1 for the deepest), or None (two layers)."""
        return None if self.depth is None else int(self.depth.max()) - 1

    def coords(self, ts) -> tuple[tuple[str, ...], dict]:
        if self.shape is not None:
            return schema.grid_coords(
                len(self.problems), self.widths, self.scales, self.seeds, ts,
                paper_init=self.paper_init, depths=self.depths,
            )  # fmt: skip
        return schema.list_coords(
            self.problem, self.width, self.scales, self.seed, ts, depth=self.depth
        )

    def assemble(self, results: Mapping[int, tuple[np.ndarray, dict]], ts) -> xr.Dataset:
        """The records of every chunk (`{index: (rows, arrays)}`), placed on the grid."""
        flat = _scatter(len(self), results.values())
        dims, coords = self.coords(ts)
        shape = self.shape if self.shape is not None else (len(self),)
        arrays = {k: v.reshape(shape + v.shape[1:]) for k, v in flat.items()}
        ds = schema.to_dataset(arrays, dims, coords, schema.scale_meaning(self.paper_init))
        if self.shape is not None and len(self.problems) == 1:
            ds = schema.drop_single_problem(ds)
        return ds


def _scatter(n: int, parts) -> dict[str, np.ndarray]:
    """Per-chunk `(rows, arrays)` → arrays of `n` rows (rows no chunk gave: NaN, -1, False)."""
    out: dict[str, np.ndarray] = {}
    for rows, arrays in parts:
        for k, v in arrays.items():
            if k not in out:
                fill = (
                    False
                    if v.dtype == bool
                    else (-1 if np.issubdtype(v.dtype, np.integer) else np.nan)
                )
                out[k] = np.full((n,) + v.shape[1:], fill, dtype=v.dtype)
            out[k][rows] = v
    if not out:
        raise RuntimeError("flowlin.sweep: no chunk produced results")
    return out
