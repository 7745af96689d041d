"""Chunk planning: which configurations share one compiled program, in which order, and the
fingerprint that ties a store to one plan."""

import dataclasses
import hashlib
import json

import numpy as np

from ._grid import Grid


#: Widths that share a compiled shape are padded to at most this factor of the smallest
#: (the full solver pays for the padded width; the gram solver only at initialization).
WIDTH_BUCKET_RATIO = 2.0
#: The gram solver's cost does not depend on the width, so for it widths also share a bucket
#: whenever the padded weights of one configuration stay under this many entries (width ·
#: (D + m)): fewer compiled shapes (each costs seconds) at a negligible initialization cost.
GRAM_BUCKET_ENTRIES = 2**18


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Configurations computed by one call of the compiled program.

    `rows` are flat configuration indices; the last chunk of a bucket is padded by repeating
    its last row, and only the first `valid` results are kept. `pad_to` is the width every
    network of the chunk is zero-padded to (exact: docs/theory.md §3). `depth`: the number of
    layers of every network of the chunk (a sweep over depths; `None` for two layers).
    """

    index: int
    pad_to: int
    rows: np.ndarray
    valid: int
    depth: int | None = None


def _round_up(x: int, k: int) -> int:
    return -(-x // k) * k


def buckets(widths: np.ndarray, ratio: float, max_shared: int = 0) -> dict[int, int]:
    """Map each width to the padded width of its bucket (geometric buckets; widths up to
    `max_shared` may also share one bucket whatever their ratio)."""
    out = {}
    ws = sorted(set(int(w) for w in widths))
    i = 0
    while i < len(ws):
        j = i
        while j + 1 < len(ws) and (ws[j + 1] <= ratio * ws[i] or ws[j + 1] <= max_shared):
            j += 1
        for w in ws[i : j + 1]:
            out[w] = ws[j]
        i = j + 1
    return out


def log_product_scale(paper_init: bool, width: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """log of the typical size of an initial product W2W1's entries: std1·std2·√h."""
    width = np.asarray(width, float)
    if paper_init:  # std = h^-alpha for both layers
        return (0.5 - 2 * pairs[:, 0]) * np.log(width)
    return np.log(pairs[:, 0]) + np.log(pairs[:, 1]) + 0.5 * np.log(width)


def plan_chunks(
    grid: Grid, chunk_size: int, n_devices: int, *, pad_widths: bool, gram: bool
) -> list[Chunk]:
    """Cut the grid into chunks of at most `chunk_size` (rounded up to a multiple of
    `n_devices`), one padded width per chunk.

    `pad_widths=False` (Wishart sampling): shapes do not depend on the width at all. `gram`:
    the solve costs the same at every width, so widths share shapes while memory allows.

    Deep networks (a sweep over depths) are bucketed by their exact shape, (depth, width), and
    never padded: a middle layer is h×h, so padding h to 2h would cost up to 4× per step, and
    the deep initialization draws each shape's weights as `flowlin.init.deep_gaussian` does.
    """
    if grid.depth is not None:
        return _plan_deep(grid, chunk_size, n_devices)
    n = len(grid)
    width, pairs = grid.width, grid.scales[grid.scale_index]
    if pad_widths:
        p0 = grid.problems[0]
        max_shared = GRAM_BUCKET_ENTRIES // (p0.D + p0.m) if gram else 0
        bucket_of = buckets(width, WIDTH_BUCKET_RATIO, max_shared)
        pad = np.array([bucket_of[int(w)] for w in width])
    else:
        pad = np.ones(n, dtype=int)
    # Bucket by padded width; inside a bucket, order by the initial product's scale
    # (‖W2W1‖ ~ std1·std2·√h: it sets the plateau a run starts on, hence its step count) so
    # that a chunk, and each vmapped batch in it, holds runs of similar length (less lockstep
    # waste), then by scale, width, seed, problem.
    order = np.lexsort(
        (
            grid.problem,
            grid.seed,
            width,
            pairs[:, 1],
            pairs[:, 0],
            np.round(log_product_scale(grid.paper_init, width, pairs), 1),
            pad,
        )
    )
    chunks = []
    for p in sorted(set(pad.tolist())):
        _cut(chunks, order[pad[order] == p], chunk_size, n_devices, int(p), None)
    return chunks


def _cut(chunks: list, rows, chunk_size: int, n_devices: int, pad_to: int, depth) -> None:
    """Append the chunks of one bucket's (ordered) rows to `chunks`. Every chunk of a bucket
    has one size (one compiled shape), a multiple of the number of devices; the last chunk is
    padded by repeating its last configuration."""
    size = _round_up(min(chunk_size, len(rows)), n_devices)
    for start in range(0, len(rows), size):
        part = rows[start : start + size]
        valid = len(part)
        if valid < size:
            part = np.concatenate([part, np.full(size - valid, part[-1])])
        chunks.append(Chunk(len(chunks), pad_to, part, valid, depth))


def _plan_deep(grid: Grid, chunk_size: int, n_devices: int) -> list[Chunk]:
    """Chunks of a sweep over depths: one bucket per (depth, width), in increasing order of
    both; inside a bucket ordered by scale, seed and problem."""
    pairs = grid.scales[grid.scale_index]
    order = np.lexsort((grid.problem, grid.seed, pairs[:, 1], pairs[:, 0], grid.width, grid.depth))
    chunks: list[Chunk] = []
    shapes = sorted(set(zip(grid.depth.tolist(), grid.width.tolist())))
    for depth, width in shapes:
        mask = (grid.depth[order] == depth) & (grid.width[order] == width)
        _cut(chunks, order[mask], chunk_size, n_devices, int(width), int(depth))
    return chunks


def fingerprint(grid: Grid, chunks: list[Chunk], settings: dict) -> str:
    """A hash of the problems, the configurations, the settings and the chunks."""
    h = hashlib.sha256()
    for a in grid.fingerprint_arrays():
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())  # the same bytes in another shape differ
        h.update(a.tobytes())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    # The chunks themselves, not just their number: shards of a differently chunked run of the
    # same grid (another chunk_size, or another number of devices per chunk, e.g. local vs Ray)
    # would leave rows uncomputed or computed twice.
    for c in chunks:
        shape = [c.index, c.pad_to, c.valid] + ([] if c.depth is None else [c.depth])
        h.update(np.asarray(shape, np.int64).tobytes())
        h.update(np.ascontiguousarray(c.rows, np.int64).tobytes())
    return h.hexdigest()


def chunk_coordinates(grid: Grid, chunk: Chunk) -> dict[str, list]:
    """The configurations a chunk computes (its valid rows), as plain lists: what a store's
    manifest records for the chunk's shard."""
    rows = chunk.rows[: chunk.valid]
    out = {
        "rows": rows.tolist(),
        "problem": grid.problem[rows].tolist(),
        "width": grid.width[rows].tolist(),
        "scale": grid.scales[grid.scale_index[rows]].tolist(),
        "seed": grid.seed[rows].tolist(),
    }
    if grid.depth is not None:
        out["depth"] = grid.depth[rows].tolist()
    return out
