"""The small sweep the store and Ray tests share: gradient descent (a fixed-length loop compiles
in a fraction of the adaptive flow solver's time, in every worker; the executor and the store do
not care what a chunk computes), 2 widths in one bucket x 4 seeds = 8 configurations in 4 chunks
of 2: one compiled shape."""

import jax.numpy as jnp

import flowlin


D, M = 12, 2
GRID = dict(widths=[3, 5], scales=[0.4], seeds=4)
STEPS, LR = 50, 0.05
COMMON = dict(
    dynamics="descent",
    method=flowlin.FullWeights(),
    lr=LR,
    steps=STEPS,
    theory=False,
    bounds=False,
    saveat=flowlin.SaveAt(
        jnp.linspace(0.0, STEPS * LR, 5), diagnostics=("loss", "distance_to_min_norm")
    ),
    progress=False,
    chunk_size=2,
)
N_CHUNKS = 4
