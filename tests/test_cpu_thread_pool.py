"""jaxlib's CPU LAPACK kernels block a pool thread while pieces of the batch run on the same
pool; with as many device programs in flight as pool threads the process hangs. Importing
flowlin sizes the pool (`PJRT_NPROC`) so that this cannot happen. Regression test in a
subprocess (a hang must fail the test, not stall the suite)."""

import os
import subprocess
import sys
import textwrap


SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import flowlin  # sizes the pool before JAX creates its CPU client
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    P = jax.sharding.PartitionSpec
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("d",))

    def local(a):
        s = [jax.vmap(lambda x: jnp.linalg.svd(x, compute_uv=False))(a + i) for i in range(3)]
        e = [jax.vmap(lambda x: jnp.linalg.eigvalsh(x @ x.T))(a * i) for i in range(3)]
        return sum(o.sum(-1) for o in s + e)

    f = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=P("d"), out_specs=P("d")))
    a = jax.random.normal(jax.random.key(0), (4 * 512, 12, 12))
    for i in range(10):
        out = f(a + i).block_until_ready()
    # Against NumPy's LAPACK: the singular values and eigenvalues are the same numbers.
    a9 = np.asarray(a + 9)
    ref = sum(np.linalg.svd(a9 + i, compute_uv=False).sum(-1) for i in range(3))
    ref = ref + sum(np.linalg.eigvalsh((a9 * i) @ (a9 * i).transpose(0, 2, 1)).sum(-1)
                    for i in range(3))
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-10)
    print("pool", os.environ["PJRT_NPROC"], "ok")
    """
)


def test_batched_lapack_on_four_host_devices_does_not_hang():
    # Without flowlin's pool sizing this script hangs within two calls on a 2-core machine
    # (jaxlib 0.9.2: four `lapack_dgesdd_ffi` calls each blocking one of four pool threads).
    env = {k: v for k, v in os.environ.items() if k not in ("PJRT_NPROC", "NPROC")}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ok" in done.stdout and int(done.stdout.split()[1]) >= 16
