"""The bad-input table: every public argument refused by name, never by a dependency.

Each row is one wrong argument to a public entry point: `Problem`, `LinearNetwork`, `GramInit`,
`init.*`, `SaveAt`, the method and executor modules (an argument a module does not take),
`gradient_flow`, `gradient_descent`, `sweep`, `check_bounds`,
`summarize_bounds`, the TOML schema (`flowlin.reproduce.config.load_config`) and the CLI. A row
passes when flowlin refuses the call with a `TypeError` or `ValueError` raised by flowlin's own
code (the last frame of the traceback is inside the package, not JAX, diffrax, xarray or
NumPy), in the style of `flowlin/_errors.py` ("`call`: arg ..."), and the text after the call
names the argument. A CLI row passes when the command exits with a usage error (code 2) whose
output names the argument, with no Python traceback.

All rows run in ONE fresh interpreter without the test suite's jaxtyping/beartype import hook
(conftest.py), as users call flowlin: with the hook a wrongly typed argument would be refused by
beartype before flowlin's own check. Every row is refused before any compute, so the table
costs one interpreter start, one import of flowlin and one short solve (the trajectory the
`check_bounds` rows need).

Run as a script (`python tests/test_bad_inputs.py`) it prints every row's outcome: `refused`,
`unnamed` (refused, but the message does not name the argument), `dependency` (ended in a
traceback from another package, or an exception type flowlin does not raise for arguments) or
`accepted` (no error) — how the table was measured against older code.
"""

import collections
import json
import os
import subprocess
import sys
import textwrap

import pytest
from helpers_bad_inputs import ROWS as MORE_ROWS


#: The objects the rows use (small: n=4, D=6, m=1, h=3; a problem of rank 4).
SETUP = textwrap.dedent(
    """
    import pathlib, tempfile
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    import diffrax as dfx
    import flowlin
    from flowlin import init

    key = jax.random.key(0)
    problem = flowlin.problems.gaussian(key, n=4, D=6, m=1)
    X, Y = np.asarray(problem.X), np.asarray(problem.Y)
    net = init.gaussian(jax.random.key(1), 6, 1, 3, 0.5, 0.5)
    dnet = init.deep_gaussian(jax.random.key(2), 6, 1, (3, 2))
    DW = [np.asarray(w) for w in dnet.weights]
    W1, W2 = np.asarray(net.W1), np.asarray(net.W2)
    p32 = flowlin.Problem(X.astype(np.float32), Y.astype(np.float32))
    gram = init.gram_init(net, problem)
    Q = np.asarray(gram.Q)
    GF = flowlin.gradient_flow
    GD = flowlin.gradient_descent
    grid = dict(widths=[3], scales=[0.5], t1=0.1, progress=False)
    def sweep(**kw):
        return flowlin.sweep(problem, **{**grid, **kw})
    _traj = []
    def traj():
        if not _traj:
            _traj.append(GD(net, problem, 0.01, 1))  # (cheaper to compile than a flow)
        return _traj[0]
    CB = flowlin.check_bounds

    tmp = pathlib.Path(tempfile.mkdtemp())
    GOOD_TOML = '''
    [problem]
    kind = "gaussian"
    n = 4
    D = 6
    [init]
    widths = [3]
    scales = [0.5]
    [dynamics]
    t1 = 0.1
    saves = 3
    '''
    def toml(old=None, new=None, raw=None, name="c.toml"):
        path = tmp / name
        text = GOOD_TOML if old is None else GOOD_TOML.replace(old, new)
        if old is not None:
            assert text != GOOD_TOML, old
        path.write_bytes(raw if raw is not None else text.encode())
        return path
    def afile():
        (tmp / "afile").write_text("x")
        return tmp / "afile"
    def load(*a, **kw):
        from flowlin.reproduce.config import load_config
        return load_config(toml(*a, **kw))

    class CliRefused(Exception):
        pass
    def cli(*args):
        from typer.testing import CliRunner
        from flowlin._cli import app
        out = [] if "--out" in args else ["--out", str(tmp / "out")]
        res = CliRunner().invoke(app, [str(a) for a in args] + out)
        if res.exception is not None and not isinstance(res.exception, SystemExit):
            raise res.exception
        if res.exit_code == 0:
            return res.output
        raise CliRefused(f"exit {res.exit_code}: {res.output}")
    """
)

#: id → (the call, the argument its message must name). `cli/...` rows invoke the command.
ROWS: dict[str, tuple[str, str]] = {
    # -- Problem ---------------------------------------------------------------------------
    "Problem/X-1d": ("flowlin.Problem(X[0], Y)", "X"),
    "Problem/Y-1d": ("flowlin.Problem(X, Y[:, 0])", "Y"),
    "Problem/rows-differ": ("flowlin.Problem(X, Y[:3])", "X"),
    "Problem/X-nan": ("flowlin.Problem(np.where(X > 0, np.nan, X), Y)", "X"),
    "Problem/Y-inf": ("flowlin.Problem(X, Y + np.inf)", "Y"),
    "Problem/X-complex": ("flowlin.Problem(X + 1j * X, Y)", "X"),
    "Problem/Y-complex": ("flowlin.Problem(X, Y + 0.5j)", "Y"),
    "Problem/X-float16": ("flowlin.Problem(X.astype(np.float16), Y)", "X"),
    "Problem/X-bool": ("flowlin.Problem(X > 0, Y)", "X"),
    "Problem/X-string": ("flowlin.Problem('data.csv', Y)", "X"),
    "Problem/X-empty": ("flowlin.Problem(X[:, :0], Y)", "X"),
    "Problem/X-zero": ("flowlin.Problem(0 * X, Y)", "X"),
    "Problem/rank_rtol-negative": (
        "flowlin.Problem(X[:, :5] @ np.eye(5, 6), Y, rank_rtol=-1)",
        "rank_rtol",
    ),
    "Problem/rank_rtol-nan": ("flowlin.Problem(X, Y, rank_rtol=float('nan'))", "rank_rtol"),
    "Problem/rank_rtol-one": ("flowlin.Problem(X, Y, rank_rtol=1.0)", "rank_rtol"),
    "Problem/rank_rtol-string": ("flowlin.Problem(X, Y, rank_rtol='1e-9')", "rank_rtol"),
    "Problem/rank-zero": ("flowlin.Problem(X, Y, rank=0)", "rank"),
    "Problem/rank-float": ("flowlin.Problem(X, Y, rank=4.0)", "rank"),
    "Problem/rank-wrong": ("flowlin.Problem(X, Y, rank=3)", "rank"),
    "Problem/allow_full_column_rank-string": (
        "flowlin.Problem(X[:, :4], Y, allow_full_column_rank='no')",
        "allow_full_column_rank",
    ),
    # -- LinearNetwork ---------------------------------------------------------------------
    "LinearNetwork/W1-1d": ("flowlin.LinearNetwork(W1[0], W2)", "W1"),
    "LinearNetwork/widths-differ": ("flowlin.LinearNetwork(W1[:2], W2)", "W1"),
    "LinearNetwork/W2-nan": ("flowlin.LinearNetwork(W1, W2 * np.nan)", "W2"),
    "LinearNetwork/W1-complex": ("flowlin.LinearNetwork(W1 * 1j, W2)", "W1"),
    "LinearNetwork/W2-float16": ("flowlin.LinearNetwork(W1, W2.astype(np.float16))", "W2"),
    "LinearNetwork/W1-none": ("flowlin.LinearNetwork(None, W2)", "W1"),
    "LinearNetwork/W1-3d": ("flowlin.LinearNetwork(W1[None], W2)", "W1"),
    # -- GramInit --------------------------------------------------------------------------
    "GramInit/Q-not-symmetric": ("flowlin.GramInit(Q + np.triu(Q, 1), Q)", "Q"),
    "GramInit/K-shape": ("flowlin.GramInit(Q, Q[:1, :1])", "K"),
    "GramInit/K-complex": ("flowlin.GramInit(Q, Q * 1j)", "K"),
    # -- init.* ----------------------------------------------------------------------------
    "init.gaussian/h-zero": ("init.gaussian(key, 6, 1, 0, 0.5, 0.5)", "h"),
    "init.gaussian/h-float": ("init.gaussian(key, 6, 1, 2.5, 0.5, 0.5)", "h"),
    "init.gaussian/D-negative": ("init.gaussian(key, -6, 1, 3, 0.5, 0.5)", "D"),
    "init.gaussian/std1-negative": ("init.gaussian(key, 6, 1, 3, -0.5, 0.5)", "std1"),
    "init.gaussian/std2-nan": ("init.gaussian(key, 6, 1, 3, 0.5, float('nan'))", "std2"),
    "init.gaussian/pad_to-small": ("init.gaussian(key, 6, 1, 3, 0.5, 0.5, pad_to=2)", "h"),
    "init.gaussian/dtype-int": ("init.gaussian(key, 6, 1, 3, 0.5, 0.5, dtype=jnp.int32)", "dtype"),
    "init.gaussian/dtype-float16": (
        "init.gaussian(key, 6, 1, 3, 0.5, 0.5, dtype='float16')",
        "dtype",
    ),
    "init.gaussian/key-int": ("init.gaussian(123, 6, 1, 3, 0.5, 0.5)", "key"),
    "init.paper/alpha-negative": ("init.paper(key, 6, 1, 3, -0.5)", "alpha"),
    "init.paper/D-zero": ("init.paper(key, 0, 1, 3, 0.5)", "D"),
    "init.paper/key-int": ("init.paper(0, 6, 1, 3, 0.5)", "key"),
    "LinearNetwork/call-batch": ("net(np.ones((5, 6)))", "x"),
    "DeepLinearNetwork/call-wrong-D": ("dnet(np.ones(5))", "x"),
    "init.paper/alpha-nan": ("init.paper(key, 6, 1, 3, float('nan'))", "alpha"),
    "init.lambda_balanced/lam-nan": ("init.lambda_balanced(key, problem, 1, float('nan'))", "lam"),
    "init.lambda_balanced/lam-inf": ("init.lambda_balanced(key, problem, 1, float('inf'))", "lam"),
    "init.lambda_balanced/lam-h-too-wide": ("init.lambda_balanced(key, problem, 5, 1.0)", "h"),
    "init.lambda_balanced/scale-nan": (
        "init.lambda_balanced(key, problem, 1, 1.0, scale=float('nan'))",
        "scale",
    ),
    "init.lambda_balanced/problem-array": ("init.lambda_balanced(key, X, 1, 1.0)", "problem"),
    "init.balanced_like/h-below-m": (
        "init.balanced_like(flowlin.LinearNetwork(W1[:1], np.ones((2, 1))), "
        "flowlin.Problem(X, np.c_[Y, -Y[::-1]]))",
        "h",
    ),
    "init.balanced_like/problem-none": ("init.balanced_like(net, None)", "problem"),
    "init.pad_width/width-small": ("init.pad_width(net, 2)", "width"),
    "init.reduce_width/keep_null_space-string": (
        "init.reduce_width(net, problem, keep_null_space='yes')",
        "keep_null_space",
    ),
    "init.project_to_invariant_set/D-mismatch": (
        "init.project_to_invariant_set(flowlin.LinearNetwork(W1[:, :5], W2), problem)",
        "net",
    ),
    "init.gram_init/net-gram": ("init.gram_init(gram, problem)", "net"),
    # -- deep networks (issue 20) -------------------------------------------------------------
    "DeepLinearNetwork/mismatched-layers": (
        "flowlin.DeepLinearNetwork([DW[0], DW[2]])",
        "weights[1]",
    ),
    "DeepLinearNetwork/one-layer": ("flowlin.DeepLinearNetwork([DW[0]])", "depth"),
    "DeepLinearNetwork/empty": ("flowlin.DeepLinearNetwork([])", "weights"),
    "DeepLinearNetwork/array-not-list": ("flowlin.DeepLinearNetwork(DW[0])", "weights"),
    "DeepLinearNetwork/nan": ("flowlin.DeepLinearNetwork([DW[0] * np.nan, *DW[1:]])", "weights[0]"),
    "init.deep_gaussian/widths-empty": ("init.deep_gaussian(key, 6, 1, ())", "widths"),
    "init.deep_gaussian/widths-int": ("init.deep_gaussian(key, 6, 1, 3)", "widths"),
    "init.deep_gaussian/widths-zero": ("init.deep_gaussian(key, 6, 1, (3, 0))", "widths[1]"),
    "init.deep_gaussian/widths-float": ("init.deep_gaussian(key, 6, 1, (3, 2.5))", "widths[1]"),
    "init.deep_gaussian/scaling-unknown": (
        "init.deep_gaussian(key, 6, 1, (3,), scaling='xavier')",
        "scaling",
    ),
    "init.deep_gaussian/alpha-negative": (
        "init.deep_gaussian(key, 6, 1, (3,), alpha=-1.0)",
        "alpha",
    ),
    "init.deep_gaussian/scale-nan": (
        "init.deep_gaussian(key, 6, 1, (3,), scale=float('nan'))",
        "scale",
    ),
    "init.deep_gaussian/D-zero": ("init.deep_gaussian(key, 0, 1, (3,))", "D"),
    "init.deep_gaussian/key-int": ("init.deep_gaussian(0, 6, 1, (3,))", "key"),
    "init.deep_gaussian/dtype-int": ("init.deep_gaussian(key, 6, 1, (3,), dtype='int32')", "dtype"),
    "init.deep_orthogonal/scale-negative": (
        "init.deep_orthogonal(key, 6, 1, (3,), scale=-1.0)",
        "scale",
    ),
    "init.deep_orthogonal/widths-empty": ("init.deep_orthogonal(key, 6, 1, [])", "widths"),
    "init.deep_balanced/widths-below-rank": (
        "init.deep_balanced(key, np.eye(2, 6), (1, 3))",
        "widths",
    ),
    "init.deep_balanced/product-1d": ("init.deep_balanced(key, np.ones(6), (3,))", "product"),
    "init.deep_balanced/product-nan": (
        "init.deep_balanced(key, np.eye(2, 6) * np.nan, (3,))",
        "product",
    ),
    "init.deep_balanced/product-string": ("init.deep_balanced(key, 'W', (3,))", "product"),
    "init.deep_balanced/widths-empty": ("init.deep_balanced(key, np.eye(2, 6), ())", "widths"),
    "init.project_to_invariant_set/deep-D-mismatch": (
        "init.project_to_invariant_set(init.deep_gaussian(key, 5, 1, (3,)), problem)",
        "net",
    ),
    "gradient_flow/stepto-ends-short": (
        "GF(net, problem, 1.0, solver=dfx.Euler(), "
        "stepsize_controller=dfx.StepTo(ts=jnp.linspace(0.0, 0.5, 5)))",
        "stepsize_controller",
    ),
    "gradient_flow/deep-gram-method": ("GF(dnet, problem, 0.1, method=flowlin.Gram())", "method"),
    "gradient_flow/deep-m-mismatch": (
        "GF(init.deep_gaussian(key, 6, 2, (3,)), problem, 0.1)",
        "net",
    ),
    "gradient_flow/deep-batched": (
        "GF(flowlin.DeepLinearNetwork([w[None] for w in DW]), problem, 0.1)",
        "net",
    ),
    "gradient_descent/deep-D-mismatch": (
        "GD(init.deep_gaussian(key, 5, 1, (3, 2)), problem, 0.01, 10)",
        "net",
    ),
    "gradient_descent/deep-lr-zero": ("GD(dnet, problem, 0.0, 10)", "lr"),
    "init.wishart/h-zero": ("init.wishart(key, problem, 0, 0.5, 0.5)", "h"),
    # -- SaveAt ----------------------------------------------------------------------------
    "SaveAt/diagnostics-unknown": ("flowlin.SaveAt(diagnostics=('los',))", "diagnostics"),
    "SaveAt/ts-2d": ("flowlin.SaveAt(ts=[[0.0, 1.0]])", "ts"),
    # -- constructing a module with an argument it does not take ----------------------------
    "Problem/unknown-keyword": ("flowlin.Problem(X, Y, rtol=1e-9)", "rtol"),
    "Problem/missing-Y": ("flowlin.Problem(X)", "Y"),
    "LinearNetwork/unknown-keyword": ("flowlin.LinearNetwork(W1, W2, W3=W2)", "W3"),
    "GramInit/missing-K": ("flowlin.GramInit(Q=Q)", "K"),
    "DeepLinearNetwork/unknown-keyword": ("flowlin.DeepLinearNetwork(layers=DW)", "layers"),
    "SaveAt/unknown-keyword": ("flowlin.SaveAt(t=[0.0, 1.0])", "t"),
    "Gram/unknown-keyword": ("flowlin.Gram(refine=True)", "refine"),
    "Gram/too-many-positional": ("flowlin.Gram(True, True)", "positional"),
    "FullWeights/unknown-keyword": ("flowlin.FullWeights(rtol=1e-9)", "rtol"),
    "LocalExecutor/unknown-keyword": ("flowlin.LocalExecutor(batch=4)", "batch"),
    "RayExecutor/unknown-keyword": ("flowlin.RayExecutor(num_workers=2)", "num_workers"),
    # -- gradient_flow ---------------------------------------------------------------------
    "gradient_flow/net-none": ("GF(None, problem, 1.0)", "net"),
    "gradient_flow/problem-tuple": ("GF(net, (X, Y), 1.0)", "problem"),
    "gradient_flow/method-string": ("GF(net, problem, 1.0, method='gram')", "method"),
    "gradient_flow/t1-zero": ("GF(net, problem, 0.0)", "t1"),
    "gradient_flow/t1-nan": ("GF(net, problem, float('nan'))", "t1"),
    "gradient_flow/t1-array": ("GF(net, problem, jnp.array([0.5, 1.0]))", "t1"),
    "gradient_flow/rtol-negative": ("GF(net, problem, 0.1, rtol=-1.0)", "rtol"),
    "gradient_flow/rtol-nan": ("GF(net, problem, 0.1, rtol=float('nan'))", "rtol"),
    "gradient_flow/atol-negative": ("GF(net, problem, 0.1, atol=-1e-10)", "atol"),
    "gradient_flow/atol-nan": ("GF(net, problem, 0.1, atol=float('nan'))", "atol"),
    "gradient_flow/rtol-string": ("GF(net, problem, 0.1, rtol='1e-8')", "rtol"),
    "gradient_flow/max_steps-zero": ("GF(net, problem, 0.1, max_steps=0)", "max_steps"),
    "gradient_flow/max_steps-float": ("GF(net, problem, 0.1, max_steps=100.5)", "max_steps"),
    "gradient_flow/dt0-negative": ("GF(net, problem, 0.1, dt0=-0.01)", "dt0"),
    "gradient_flow/dt0-nan": ("GF(net, problem, 0.1, dt0=float('nan'))", "dt0"),
    "gradient_flow/stop_at_loss-negative": (
        "GF(net, problem, 0.1, stop_at_loss=-1.0)",
        "stop_at_loss",
    ),
    "gradient_flow/saveat-after-t1": ("GF(net, problem, 0.1, saveat=[0.0, 0.5])", "saveat"),
    "gradient_flow/saveat-decreasing": ("GF(net, problem, 0.1, saveat=[0.1, 0.0])", "saveat"),
    "gradient_flow/solver-string": ("GF(net, problem, 0.1, solver='tsit5')", "solver"),
    "gradient_flow/stepsize_controller-string": (
        "GF(net, problem, 0.1, stepsize_controller='pid')",
        "stepsize_controller",
    ),
    "gradient_flow/adjoint-string": ("GF(net, problem, 0.1, adjoint='backsolve')", "adjoint"),
    "gradient_flow/float32-problem-float64-net": ("GF(net, p32, 0.1)", "problem"),
    "gradient_flow/gram-init-full-method": ("GF(gram, problem, 0.1)", "net"),
    # -- gradient_descent ------------------------------------------------------------------
    "gradient_descent/lr-zero": ("GD(net, problem, 0.0, 10)", "lr"),
    "gradient_descent/lr-nan": ("GD(net, problem, float('nan'), 10)", "lr"),
    "gradient_descent/steps-float": ("GD(net, problem, 0.01, 2.5)", "steps"),
    "gradient_descent/steps-negative": ("GD(net, problem, 0.01, -1)", "steps"),
    "gradient_descent/optimizer-string": (
        "GD(net, problem, 0.01, 10, optimizer='adam')",
        "optimizer",
    ),
    "gradient_descent/averaged-string": ("GD(net, problem, 0.01, 10, averaged='yes')", "averaged"),
    "gradient_descent/float32-problem-float64-net": ("GD(net, p32, 0.01, 10)", "problem"),
    "gradient_descent/net-gram": ("GD(gram, problem, 0.01, 10)", "net"),
    # -- sweep -----------------------------------------------------------------------------
    "sweep/widths-duplicate": ("sweep(widths=[3, 3])", "widths"),
    "sweep/seeds-duplicate": ("sweep(seeds=[0, 0])", "seeds"),
    "sweep/scales-duplicate": ("sweep(scales=[0.5, 0.5])", "scales"),
    "sweep/scales-nan": ("sweep(scales=[float('nan')])", "scale"),
    "sweep/widths-zero": ("sweep(widths=[0])", "widths"),
    "sweep/widths-fractional": ("sweep(widths=[2.5])", "widths"),
    "sweep/seeds-negative": ("sweep(seeds=[-1])", "seeds"),
    "sweep/t1-nan": ("sweep(t1=float('nan'))", "t1"),
    "sweep/rtol-negative": ("sweep(rtol=-1.0)", "rtol"),
    "sweep/atol-nan": ("sweep(atol=float('nan'))", "atol"),
    "sweep/max_steps-zero": ("sweep(max_steps=0)", "max_steps"),
    "sweep/steps-fractional": ("sweep(dynamics='descent', lr=0.01, steps=2.5)", "steps"),
    "sweep/lr-negative": ("sweep(dynamics='descent', lr=-0.01, steps=5)", "lr"),
    "sweep/chunk_size-zero": ("sweep(chunk_size=0)", "chunk_size"),
    "sweep/delta-one": ("sweep(delta=1.0)", "delta"),
    "sweep/key-string": ("sweep(key='seed')", "key"),
    "sweep/configs-duplicate": (
        "flowlin.sweep(problem, configs=[dict(width=3, scale=0.5, seed=0)] * 2, t1=0.1, "
        "progress=False)",
        "configs",
    ),
    "sweep/configs-missing-field": (
        "flowlin.sweep(problem, configs=[dict(width=3, scale=0.5)], t1=0.1, progress=False)",
        "configs",
    ),
    "sweep/problems-empty": ("flowlin.sweep([], widths=[3], scales=[0.5])", "problems"),
    "sweep/init-string": ("sweep(init='xavier')", "init"),
    "sweep/store_format": ("sweep(store_format='hdf5')", "store_format"),
    "sweep/paper-pairs": ("sweep(scales=[(0.5, 0.4)])", "init"),
    # -- check_bounds (types only) ---------------------------------------------------------
    "check_bounds/trajectory-none": ("CB(None, net, problem)", "trajectory"),
    "check_bounds/init-array": ("CB(traj(), W1, problem)", "init"),
    "check_bounds/problem-tuple": ("CB(traj(), net, (X, Y))", "problem"),
    # -- summarize_bounds ------------------------------------------------------------------
    "summarize_bounds/ds-array": ("flowlin.summarize_bounds(X)", "ds"),
    # -- the TOML schema -------------------------------------------------------------------
    "toml/t1-inf": ("load('t1 = 0.1', 't1 = inf')", "[dynamics].t1"),
    "toml/t1-nan": ("load('t1 = 0.1', 't1 = nan')", "[dynamics].t1"),
    "toml/scales-inf": ("load('scales = [0.5]', 'scales = [inf]')", "[init].scales"),
    "toml/scales-nan": ("load('scales = [0.5]', 'scales = [nan]')", "[init].scales"),
    "toml/noise-inf": ("load('n = 4', 'n = 4\\nnoise = inf')", "[problem].noise"),
    "toml/rtol-negative": ("load('t1 = 0.1', 't1 = 0.1\\nrtol = -1.0')", "[dynamics].rtol"),
    "toml/atol-nan": ("load('t1 = 0.1', 't1 = 0.1\\natol = nan')", "[dynamics].atol"),
    "toml/stop_at_loss-inf": (
        "load('saves = 3', 'saves = 3\\n[report]\\nstop_at_loss = inf')",
        "[report].stop_at_loss",
    ),
    "toml/widths-duplicate": ("load('widths = [3]', 'widths = [3, 3]')", "[init].widths"),
    "toml/seeds-duplicate": (
        "load('widths = [3]', 'widths = [3]\\nseeds = [1, 1]')",
        "[init].seeds",
    ),
    "toml/widths-zero": ("load('widths = [3]', 'widths = [0]')", "[init].widths"),
    "toml/D-not-above-n": ("load('D = 6', 'D = 4')", "[problem].D"),
    "toml/unknown-key": ("load('t1 = 0.1', 't1 = 0.1\\ntime = 3')", "time"),
    "toml/path-folder": ("flowlin.reproduce.config.load_config(tmp)", "{tmp}"),
    "toml/not-utf8": ("load(raw=b'title = \"\\xff\\xfe\"\\n')", "{tmp}/c.toml"),
    "toml/not-toml": ("load(raw=b'[problem\\n')", "TOML"),
    # -- the CLI ---------------------------------------------------------------------------
    "cli/sweep-folder": ("cli('sweep', tmp)", "{tmp}"),
    "cli/sweep-missing": ("cli('sweep', tmp / 'missing.toml')", "{tmp}/missing.toml"),
    "cli/sweep-not-utf8": (
        "cli('sweep', toml(raw=b'title = \"\\xff\"\\n', name='u.toml'))",
        "{tmp}/u.toml",
    ),
    "cli/sweep-inf": ("cli('sweep', toml('t1 = 0.1', 't1 = inf', name='i.toml'))", "[dynamics].t1"),
    "cli/sweep-widths-duplicate": (
        "cli('sweep', toml('widths = [3]', 'widths = [3, 3]', name='w.toml'))",
        "[init].widths",
    ),
    "cli/reproduce-target": ("cli('reproduce', 'fig9')", "TARGET"),
    "cli/demo-width-zero": ("cli('demo', '--width', '0')", "--width"),
    "cli/demo-width-huge": ("cli('demo', '--width', 10**12)", "--width"),
    "cli/sweep-out-a-file": ("cli('sweep', toml(), '--out', afile())", "--out"),
    "cli/demo-out-a-file": ("cli('demo', '--out', afile())", "--out"),
    "cli/reproduce-out-a-file": ("cli('reproduce', 'fig1', '--quick', '--out', afile())", "--out"),
    # refused by flowlin.sweep, after the file's own checks: an error line, not a traceback
    "cli/sweep-seed-above-int32": (
        "cli('sweep', toml('widths = [3]', 'widths = [3]\\nseeds = [4294967296]', name='s.toml'))",
        "seeds",
    ),
    "toml/factorization-noise-zero": (
        "load('kind = \"gaussian\"\\nn = 4\\nD = 6', "
        "'kind = \"factorization\"\\nn = 4\\nnoise = 0')",
        "[problem].noise",
    ),
    "toml/scale-pairs-duplicate": (
        "load('scales = [0.5]', 'kind = \"gaussian\"\\nscales = [[1, 2], [1.0, 2.0]]')",
        "[init].scales",
    ),
    "toml/seeds-bool": ("load('widths = [3]', 'widths = [3]\\nseeds = [1, true]')", "[init].seeds"),
    # -- found by the review of 2026-12-04 ---------------------------------------------------
    "sweep/problems-dtype-mix": ("flowlin.sweep([p32, problem], **grid)", "problems[1]"),
    "sweep/key-above-2**62": ("sweep(key=2**70)", "key"),
    "sweep/key-negative": ("sweep(key=-1)", "key"),
    "sweep/configs-unknown-key": (
        "flowlin.sweep(problem, configs=[dict(width=3, scale=0.5, seed=0, problm=1)], t1=0.1)",
        "configs[0]",
    ),
    "sweep/configs-a-dict": (
        "flowlin.sweep(problem, configs=dict(width=3, scale=0.5, seed=0), t1=0.1)",
        "configs",
    ),
    "sweep/configs-none-entry": ("flowlin.sweep(problem, configs=[None], t1=0.1)", "configs[0]"),
    "sweep/theory-string": ("sweep(theory='no')", "theory"),
    "sweep/progress-string": ("sweep(progress='no')", "progress"),
    "sweep/lr-with-flow": ("sweep(lr=0.1)", "lr"),
    "sweep/averaged-with-flow": ("sweep(averaged=True)", "averaged"),
    "sweep/rtol-with-descent": ("sweep(dynamics='descent', lr=0.1, steps=2, rtol=1e-6)", "rtol"),
    "sweep/solver-with-descent": (
        "sweep(dynamics='descent', lr=0.1, steps=2, solver=dfx.Tsit5())",
        "solver",
    ),
    "sweep/store-int": ("sweep(store=3)", "store"),
    "sweep/store-unwritable": ("sweep(store=str(afile() / 'sub' / 's.nc'))", "store"),
    "sweep/widths-nested": ("sweep(widths=[[3]])", "widths"),
    "theory.run_law/problem-other-D": (
        "flowlin.theory.run_law(traj(), 0.5, flowlin.problems.gaussian(key, n=4, D=7, m=1))",
        "problem",
    ),
    "Problem.loss/product-1d": ("problem.loss(np.asarray(net.product)[0])", "product"),
    "Problem.error/product-transposed": ("problem.error(np.asarray(net.product).T)", "product"),
    "Problem.null_part/W1-other-D": ("problem.null_part(np.ones((3, 5)))", "W1"),
    "init.gaussian/h-beyond-memory": ("init.gaussian(key, 6, 1, 2**40, 0.5, 0.5)", "h"),
    "init.paper/h-beyond-memory": ("init.paper(key, 6, 1, 2**40, 0.5)", "h"),
    "init.deep_gaussian/widths-beyond-memory": (
        "init.deep_gaussian(key, 6, 1, (2**20, 2**20))",
        "widths",
    ),
    "problems.gaussian/dtype-int": (
        "flowlin.problems.gaussian(key, 4, 6, 1, dtype='int32')",
        "dtype",
    ),
    "problems.factorization/dtype-unknown": (
        "flowlin.problems.factorization(key, dtype='floaty')",
        "dtype",
    ),
    "exact.scalar/u0-string": ("flowlin.exact.scalar(1.0, 'a', 0.1, 1.0)", "u0"),
    "exact.scalar/t-string": ("flowlin.exact.scalar('1', 0.1, 0.1, 1.0)", "t"),
    "exact.balanced_scalar/w0-complex": ("flowlin.exact.balanced_scalar(1.0, 1j, 1.0)", "w0"),
    "exact.asymptotic_rate_balanced/lam-vector": (
        "flowlin.exact.asymptotic_rate_balanced(np.eye(2), np.ones(2))",
        "lam",
    ),
    "exact.asymptotic_rate_balanced/Y_tilde-rank-deficient": (
        "flowlin.exact.asymptotic_rate_balanced(np.diag([1.0, 0.0]), 0.0)",
        "Y_tilde",
    ),
    "toml/descent-with-t1": (
        "load('t1 = 0.1', 'kind = \"descent\"\\nlr = 0.1\\nsteps = 2\\nt1 = 0.1')",
        "[dynamics].t1",
    ),
    "toml/flow-with-lr": ("load('t1 = 0.1', 't1 = 0.1\\nlr = 0.1')", "[dynamics].lr"),
    "toml/saves-huge": ("load('saves = 3', 'saves = 10000000000')", "[dynamics].saves"),
    **MORE_ROWS,  # the theory, GramInit, solver options, summarize_bounds: helpers_bad_inputs.py
}

RUNNER = textwrap.dedent(
    """
    import json, os, re, sys, traceback, warnings
    warnings.simplefilter("ignore")
    ROWS = json.loads(sys.argv[1])
    exec(compile(SETUP, "<setup>", "exec"))
    import flowlin as _fl
    package = os.path.dirname(os.path.abspath(_fl.__file__)) + os.sep

    def outcome(row_id, expr, arg):
        try:
            eval(expr)
            return "accepted", ""
        except Exception as e:  # noqa: BLE001 (classifying is the point)
            msg = str(e)
            last = traceback.extract_tb(e.__traceback__)[-1].filename
            if row_id.startswith("cli/"):
                ok = isinstance(e, CliRefused) and msg.startswith("exit 2:")
                where = "flowlin" if ok else last
            else:
                inside = os.path.abspath(last).startswith(package)
                ok = isinstance(e, (TypeError, ValueError)) and inside
                ok = ok and msg.startswith("`") and "`: " in msg
                where = last
            if not ok:
                return "dependency", f"{type(e).__name__} in {where}: {msg[:300]}"
            rest = msg.split("`: ", 1)[-1]
            if "{tmp}" in arg:  # a file: its path is the argument, where the call would be
                arg, rest = arg.format(tmp=tmp), msg
            named = re.search(r"(?<![A-Za-z0-9_])" + re.escape(arg) + r"(?![A-Za-z0-9_])", rest)
            return ("refused" if named else "unnamed"), f"{type(e).__name__}: {msg[:300]}"

    out = {}
    for row_id, (expr, arg) in ROWS.items():
        out[row_id] = outcome(row_id, expr, arg)
    print("RESULTS " + json.dumps(out))
    """
)


def run_table(rows=None, pythonpath=None) -> dict[str, list[str]]:
    """Every row's (outcome, message), from one fresh interpreter without the type hook."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    script = f"SETUP = {SETUP!r}\n{RUNNER}"
    rows = ROWS if rows is None else rows
    run = subprocess.run(
        [sys.executable, "-c", script, json.dumps(rows)],
        capture_output=True,
        text=True,
        env=env,
        cwd=os.path.dirname(os.path.abspath(__file__)),
    )
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULTS ")]
    assert run.returncode == 0 and lines, run.stderr[-3000:]
    return json.loads(lines[-1][len("RESULTS ") :])


@pytest.fixture(scope="module")
def table():
    return run_table()


def test_table_size():
    assert len(ROWS) >= 60
    groups = collections.Counter(r.split("/")[0].split(".")[0] for r in ROWS)
    for entry in ("Problem", "LinearNetwork", "init", "gradient_flow", "gradient_descent",
                  "sweep", "check_bounds", "toml", "cli"):  # fmt: skip
        assert groups[entry] >= 2, entry


@pytest.mark.parametrize("row", list(ROWS))
def test_bad_input_is_refused_by_name(table, row):
    outcome, message = table[row]
    assert outcome == "refused", (row, ROWS[row], outcome, message)


def test_a_checked_argument_is_named_with_the_call_made(table):
    """`init.paper` checks key, D and m itself: the message names `init.paper`, not the
    `init.gaussian` it delegates to."""
    for row in ("init.paper/D-zero", "init.paper/key-int"):
        assert "`flowlin.init.paper(...)`" in table[row][1], table[row]
    assert "(use jax.vmap for a batch), got shape (5, 6)" in table["LinearNetwork/call-batch"][1]


if __name__ == "__main__":
    result = run_table(pythonpath=sys.argv[1] if len(sys.argv) > 1 else None)
    for row, (outcome, message) in result.items():
        print(f"{outcome:10s} {row:48s} {message[:160]!r}")
    print(collections.Counter(o for o, _ in result.values()))
