"""Sweeps as a pipeline of stages, one per module:

- `_validate`: every check of `flowlin.sweep`'s arguments;
- `_grid`: the configurations (`Grid`, from axes or a list) and their assembly into a Dataset;
- `_settings`: `SweepSettings`, what a store fingerprints and what the compiled program sees;
- `_plan`: chunk planning and the store fingerprint;
- `_kernel`: the per-chunk program (`run_chunk`) and `SweepTask`;
- `_executor`, `_ray`: executors (`LocalExecutor`, `RayExecutor`), which yield finished chunks;
- `_store`: `ShardStore`, one atomically written shard per chunk, verified before a resume
  adopts it, with `_manifest` (the manifest, checksums, atomic files) and `_lock` (one
  writer per store);
- `_sweep`: the public `sweep`, which normalises its arguments and hands them on.

The dataset's variable names belong to `flowlin._dataset`.
"""

from ._executor import AbstractExecutor as AbstractExecutor, LocalExecutor as LocalExecutor
from ._ray import RayExecutor as RayExecutor
from ._sweep import open_sweep as open_sweep, sweep as sweep
