"""The local multi-device path dispatches per device (performance.md, lesson 6): the compiled
chunk program has no cross-device collective, so no device's adaptive loop waits for another's.
Its control: the same chunk left to XLA's automatic sharding has all-reduces (the loops'
conditions), so the check can tell the two apart."""

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

import flowlin
import flowlin._sweep as sweep_module


COLLECTIVES = ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter")
T1 = 8.0


class _Captured(Exception):
    pass


def _chunk_arguments(monkeypatch):
    """The (dyn, inputs, static) of the first chunk of a 4-device sweep, without running it."""
    captured = {}

    def capture(chunk, dyn, inputs, static):
        captured["args"] = (dyn, inputs, static)
        raise _Captured

    monkeypatch.setattr(sweep_module, "dispatch_chunk", capture)
    problem = flowlin.problems.gaussian(jax.random.key(0), n=5, D=12, m=2)
    with pytest.raises(_Captured):
        flowlin.sweep(
            problem,
            widths=[3, 5],
            scales=[0.4],
            seeds=4,
            method="gram",
            theory=False,
            bounds=False,
            t1=T1,
            saveat=flowlin.SaveAt(jnp.linspace(0.0, T1, 3), diagnostics=("loss",)),
            chunk_size=8,
            progress=False,
        )
    return captured["args"]


def _collectives(lowered) -> int:
    text = lowered.compile().compiled.as_text()
    return sum(text.count(f" {op}(") + text.count(f" {op}-start(") for op in COLLECTIVES)


@eqx.filter_jit
def _auto_sharded(dyn, cfg, st):
    def one(c):
        return sweep_module._run_one(dyn, st, c["problem"], c["width"], c["s1"], c["s2"], c["seed"])

    return jax.vmap(one)(cfg)


def test_chunk_has_no_cross_device_collectives(monkeypatch):
    assert len(jax.devices()) == 4, "conftest forces 4 host devices"
    dyn, inputs, static = _chunk_arguments(monkeypatch)
    assert static.mesh.devices.size == 4
    assert len(inputs["seed"].sharding.device_set) == 4  # the chunk is split over 4 devices
    assert _collectives(sweep_module._run_chunk.lower(dyn, inputs, static)) == 0
    assert _collectives(_auto_sharded.lower(dyn, inputs, static)) > 0
