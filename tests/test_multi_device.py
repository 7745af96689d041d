"""The local multi-device path dispatches per device (each device runs its own adaptive loops,
docs/ray.md): the compiled chunk program has no cross-device collective, so no device's
adaptive loop waits for another's.
Its control: the same chunk left to XLA's automatic sharding has all-reduces (the loops'
conditions), so the check can tell the two apart."""

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

import flowlin
from flowlin._sweep._kernel import make_mesh, run_chunk, run_one


COLLECTIVES = ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter")
T1 = 8.0


class _Captured(Exception):
    pass


class _Capture(flowlin.AbstractExecutor):
    """Places the first chunk on all local devices as the local executor does, and stops
    with its `run_chunk` arguments instead of running it."""

    batch_size = None

    def resolve(self, call, settings):
        return self

    def known_devices(self):
        return tuple(str(d) for d in jax.local_devices())

    def devices_per_chunk(self):
        return len(jax.local_devices())

    def run(self, task, chunks, store, **kwargs):
        raise _Captured(task.arguments(chunks[0], make_mesh()))
        yield


def _chunk_arguments():
    """The (payload, rows, program) of the first chunk of a 4-device sweep, without running it."""
    problem = flowlin.problems.gaussian(jax.random.key(0), n=5, D=12, m=2)
    with pytest.raises(_Captured) as captured:
        flowlin.sweep(
            problem,
            widths=[3, 5],
            scales=[0.4],
            seeds=4,
            method=flowlin.Gram(),
            theory=False,
            bounds=False,
            t1=T1,
            saveat=flowlin.SaveAt(jnp.linspace(0.0, T1, 3), diagnostics=("loss",)),
            chunk_size=8,
            progress=False,
            executor=_Capture(),
        )
    return captured.value.args[0]


def _collectives(lowered) -> int:
    text = lowered.compile().compiled.as_text()
    return sum(text.count(f" {op}(") + text.count(f" {op}-start(") for op in COLLECTIVES)


@eqx.filter_jit
def _auto_sharded(payload, rows, program):
    return jax.vmap(lambda row: run_one(payload, program.pad_to, row))(rows)


def test_chunk_has_no_cross_device_collectives():
    assert len(jax.devices()) == 4, "conftest forces 4 host devices"
    payload, rows, program = _chunk_arguments()
    assert program.mesh.devices.size == 4
    assert len(rows["seed"].sharding.device_set) == 4  # the chunk is split over 4 devices
    assert _collectives(run_chunk.lower(payload, rows, program)) == 0
    assert _collectives(_auto_sharded.lower(payload, rows, program)) > 0
