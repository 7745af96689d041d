"""More rows of the bad-input table (`tests/test_bad_inputs.py`, which merges them): the theory
functions and their laws, `GramInit`'s matrices, the solver options of `gradient_flow`, and
`summarize_bounds`' arguments. Same objects (`SETUP` there), same rule: refused by flowlin's own
code, naming the argument."""

LAW = "flowlin.theory.distance_law(net, 0.5, problem)"
LAWS = "flowlin.theory.DistanceLaw(jnp.ones((25, 1)), 3)"
SUMMARY = "flowlin.summarize_bounds(__import__('xarray').Dataset(), "

ROWS: dict[str, tuple[str, str]] = {
    # -- stds the dtype cannot hold (weights all zeros or subnormal noise) ---------------
    "init.paper/std-underflows": ("flowlin.init.paper(key, 6, 1, 10, 400.0)", "alpha"),
    "init.gaussian/std-subnormal": ("flowlin.init.gaussian(key, 6, 1, 10, 1e-320, 1.0)", "std1"),
    "init.deep_gaussian/scale-subnormal": (
        "flowlin.init.deep_gaussian(key, 6, 1, (4, 4), scale=1e-320)",
        "scale",
    ),
    "init.deep_gaussian/alpha-underflows": (
        "flowlin.init.deep_gaussian(key, 6, 1, (4, 4), alpha=1000.0)",
        "alpha",
    ),
    # -- gradient descent's step and optimizer, the wide-network bound's width -------------
    "gradient_descent/lr-underflows-float32": (
        "GD(jax.tree.map(lambda w: w.astype(np.float32), net), p32, 1e-50, 5)",
        "lr",
    ),
    "gradient_descent/line-search-optimizer": (
        "GD(net, problem, 0.1, 5, optimizer=__import__('optax').lbfgs())",
        "optimizer",
    ),
    "theory.wide_network_bound/h-inf": (
        "flowlin.theory.wide_network_bound(float('inf'), 0.5, 0.05, problem)",
        "h",
    ),
    "theory.wide_network_bound/h-bool": (
        "flowlin.theory.wide_network_bound(True, 0.5, 0.05, problem)",
        "h",
    ),
    "theory.wide_network_bound/h-string": (
        "flowlin.theory.wide_network_bound('4000', 0.5, 0.05, problem)",
        "h",
    ),
    "theory.wide_network_bound/h-fractional": (
        "flowlin.theory.wide_network_bound(2.5, 0.5, 0.05, problem)",
        "h",
    ),
    "theory.wide_network_bound/alpha-string": (
        "flowlin.theory.wide_network_bound(4000, '0.5', 0.05, problem)",
        "alpha",
    ),
    # -- solvers of several terms; a batch of problems passed whole ----------------------
    "gradient_flow/imex-solver": ("GF(net, problem, 0.1, solver=dfx.Sil3())", "solver"),
    "gradient_flow/batched-problem": (
        "GF(net, jax.vmap(lambda X, Y: flowlin.Problem(X, Y, rank=4))(jnp.stack([X, X]), "
        "jnp.stack([Y, Y])), 0.1)",
        "problem",
    ),
    "init.wishart/batched-problem": (
        "init.wishart(key, jax.vmap(lambda X, Y: flowlin.Problem(X, Y, rank=4))("
        "jnp.stack([X, X]), jnp.stack([Y, Y])), 3, 0.5, 0.5)",
        "problem",
    ),
    # -- the gap's law --------------------------------------------------------------------
    "theory.distance_law/std1-array": (
        "flowlin.theory.distance_law(net, jnp.array([0.5, 0.6]), problem)",
        "std1",
    ),
    "theory.distance_law/final-not-psd": (
        "flowlin.theory.distance_law(-np.asarray(net.W2 @ net.W2.T), 0.5, problem)",
        "final",
    ),
    "theory.distance_law/final-nan": (
        "flowlin.theory.distance_law(np.full((1, 1), np.nan), 0.5, problem)",
        "final",
    ),
    "theory.distance_law/m-mismatch": (
        "flowlin.theory.distance_law(init.gaussian(key, 6, 2, 3, 0.5, 0.5), 0.5, problem)",
        "final",
    ),
    "theory.DistanceLaw/weights-negative": (
        "flowlin.theory.DistanceLaw(jnp.array([-1.0]), 3)",
        "weights",
    ),
    "theory.DistanceLaw/weights-scalar": (
        "flowlin.theory.DistanceLaw(jnp.array(1.0), 3)",
        "weights",
    ),
    "theory.DistanceLaw/n_terms-zero": (
        "flowlin.theory.DistanceLaw(jnp.array([1.0]), 3, n_terms=0)",
        "n_terms",
    ),
    "theory.DistanceLaw/cdf-batch-mismatch": (f"{LAWS}.cdf(jnp.ones(4))", "d"),
    "theory.DistanceLaw/quantile-batch-mismatch": (f"{LAWS}.quantile(jnp.full(4, 0.5))", "p"),
    "theory.DistanceLaw/standardize-string": (f"{LAWS}.standardize('a')", "d"),
    "theory.DistanceLaw/no-weights": ("flowlin.theory.DistanceLaw(jnp.zeros((0,)), 3)", "weights"),
    "theory.DistanceLaw/n_terms-huge": (
        "flowlin.theory.DistanceLaw(jnp.ones(2), 3, n_terms=10**9)",
        "n_terms",
    ),
    "theory.law_fit/distances-negative": (
        f"flowlin.theory.law_fit(-np.ones(25), {LAWS})",
        "distances",
    ),
    "theory.law_fit/runlaw-with-laws": (
        "flowlin.theory.law_fit(flowlin.theory.run_law(traj(), 0.5, problem), Q)",
        "laws",
    ),
    "theory.DistanceLaw/quantile-above-1": (f"{LAW}.quantile(1.5)", "p"),
    "theory.DistanceLaw/quantile-nan": (f"{LAW}.quantile(float('nan'))", "p"),
    "theory.DistanceLaw/cdf-string": (f"{LAW}.cdf('a')", "d"),
    "theory.law_fit/laws-array": ("flowlin.theory.law_fit(np.ones(3), Q)", "laws"),
    "theory.law_fit/distances-count": (f"flowlin.theory.law_fit(np.ones(3), {LAWS})", "distances"),
    "theory.law_fit/usable-strings": (
        f"flowlin.theory.law_fit(np.ones(25), {LAWS}, usable=np.array(['no'] * 25))",
        "usable",
    ),
    "theory.law_fit/level-string": (
        f"flowlin.theory.law_fit(np.ones(25), {LAWS}, level='0.9')",
        "level",
    ),
    # -- theory: a norm, an integral, a singular value or a time is >= 0 -------------------
    "theory.rate_margin/error_norm-negative": (
        "flowlin.theory.rate_margin(net, problem, error_norm=-100.0)",
        "error_norm",
    ),
    "theory.distance_bound/error_integral-negative": (
        "flowlin.theory.distance_bound(net, problem, error_integral=-1.0)",
        "error_integral",
    ),
    "theory.instantaneous_rate_bound/sigma-negative": (
        "flowlin.theory.instantaneous_rate_bound(net, problem, product_min_singular_value=-5.0)",
        "product_min_singular_value",
    ),
    "theory.loss_envelope/t-negative": ("flowlin.theory.loss_envelope(-10.0, net, problem)", "t"),
    "theory.deep_loss_bound/t-negative": (
        "flowlin.theory.deep_loss_bound(-1.0, dnet, problem)",
        "t",
    ),
    "theory.quantities/width-fractional": (
        "flowlin.theory.quantities(net, problem, alpha=0.5, width=20.5)",
        "width",
    ),
    "theory.quantities/alpha-string": (
        "flowlin.theory.quantities(net, problem, alpha='0.5')",
        "alpha",
    ),
    "check_bounds/width-negative": ("CB(traj(), net, problem, alpha=0.5, width=-20)", "width"),
    "check_bounds/width-inf": ("CB(traj(), net, problem, alpha=0.5, width=float('inf'))", "width"),
    "check_bounds/width-array": ("CB(traj(), net, problem, alpha=0.5, width=jnp.ones(2))", "width"),
    # An init std the dtype holds only as 0 or a subnormal: the runs would start from zeros.
    "sweep/scale-underflows": ("sweep(widths=[4000], scales=[200.0])", "scales"),
    "sweep/scale-underflows-float32": (
        "flowlin.sweep(p32, widths=[3], scales=[100.0], t1=0.1, progress=False)",
        "scales",
    ),
    "sweep/std-subnormal": ("sweep(init='gaussian', scales=[(1e-320, 1.0)])", "scales"),
    # Seeds and widths are int32 on the device: larger ones would wrap (seed 2**32 = seed 0).
    "sweep/seed-above-int32": ("sweep(seeds=[0, 2**32])", "seeds"),
    "sweep/seed-count-above-int32": ("sweep(seeds=2**40)", "seeds"),
    "sweep/width-above-int32": ("sweep(widths=[3, 2**32 + 3])", "widths"),
    "sweep/seeds-bool": ("sweep(seeds=[1, True])", "seeds"),
    # A width the network was not drawn at: more than its rows, or fewer than its nonzero rows.
    "check_bounds/width-above-rows": ("CB(traj(), net, problem, alpha=0.5, width=4)", "width"),
    "check_bounds/width-below-used-rows": ("CB(traj(), net, problem, alpha=0.5, width=2)", "width"),
    "theory.quantities/width-above-rows": (
        "flowlin.theory.quantities(net, problem, alpha=0.5, width=10**6)",
        "width",
    ),
    "check_bounds/deep-trajectory-two-layer-init": (
        "CB(GD(dnet, problem, 0.01, 1), net, problem)",
        "init",
    ),
    # -- GramInit: Gram matrices are positive semidefinite ---------------------------------
    "GramInit/Q-not-psd": ("flowlin.GramInit(Q - 2 * np.abs(Q).sum() * np.eye(len(Q)), Q)", "Q"),
    "GramInit/K-negative": ("flowlin.GramInit(Q, -Q)", "K"),
    # -- gradient_flow: solver and step-size controller --------------------------------------
    "gradient_flow/euler-adaptive": ("GF(net, problem, 1.0, solver=dfx.Euler())", "solver"),
    "gradient_flow/constant-no-dt0": (
        "GF(net, problem, 1.0, solver=dfx.Euler(), stepsize_controller=dfx.ConstantStepSize())",
        "dt0",
    ),
    # -- summarize_bounds' arguments --------------------------------------------------------
    "summarize_bounds/confidence-above-1": (f"{SUMMARY}confidence=1.5)", "confidence"),
    "summarize_bounds/law_level-zero": (f"{SUMMARY}law_level=0)", "law_level"),
    "summarize_bounds/distance-missing": (f"{SUMMARY}distance='final_gap')", "distance"),
    # -- paths, keys, scales and counts ---------------------------------------------------
    "open_sweep/path-none": ("flowlin.open_sweep(None)", "path"),
    "open_sweep/not-netcdf": (
        "(tmp / 'bad.nc').write_text('x') and flowlin.open_sweep(tmp / 'bad.nc')",
        "bad.nc",
    ),
    "enable_compilation_cache/path-is-a-file": (
        "(tmp / 'f').write_text('x') and flowlin.enable_compilation_cache(tmp / 'f')",
        "path",
    ),
    "reproduce/out-is-a-file": (
        "(tmp / 'g').write_text('x') and flowlin.reproduce.reproduce('fig2', tmp / 'g')",
        "out",
    ),
    "reproduce/target-list": ("flowlin.reproduce.reproduce(['fig1'], tmp / 'o')", "target"),
    "reproduce/seed-float": ("flowlin.reproduce.reproduce('fig2', tmp / 'o', seed=1.5)", "seed"),
    "Problem/X-overflows": ("flowlin.Problem(X * 1e200, Y)", "X"),
    "Problem/X-underflows": ("flowlin.Problem(X * 1e-200, Y)", "X"),
    "gradient_descent/steps-2**31": ("GD(net, problem, 0.01, 2**31)", "steps"),
    "init.wishart/key-int": ("init.wishart(123, problem, 3, 0.5, 0.5)", "key"),
    "init.gaussian/key-batch": (
        "init.gaussian(jax.random.split(key, 3), 6, 1, 3, 0.5, 0.5)",
        "key",
    ),
    "init.gaussian/std1-array": ("init.gaussian(key, 6, 1, 3, jnp.array([0.5, 0.6]), 0.5)", "std1"),
    "init.paper/alpha-array": ("init.paper(key, 6, 1, 3, jnp.array([0.5, 0.3]))", "alpha"),
    "SaveAt/diagnostics-none": ("flowlin.SaveAt(diagnostics=None)", "diagnostics"),
    "theory.run_law/trajectory-none": ("flowlin.theory.run_law(None, 0.5, problem)", "trajectory"),
    "sweep/scales-number": ("sweep(scales=0.5)", "scales=[0.5]"),
    "sweep/scales-string": ("sweep(scales=['a'])", "scales"),
    "LocalExecutor/devices-int": ("flowlin.LocalExecutor(devices=2)", "devices"),
    "LocalExecutor/devices-str": ("flowlin.LocalExecutor(devices=['cpu'])", "devices"),
    "LocalExecutor/devices-twice": (
        "flowlin.LocalExecutor(devices=[jax.devices()[0]] * 2)",
        "devices",
    ),
    "RayExecutor/resources-CPU": ("flowlin.RayExecutor(resources={'CPU': 1})", "resources"),
    "sweep/ray-gpus-stop_at_loss": (
        "sweep(stop_at_loss=1e-3, executor=flowlin.RayExecutor(num_gpus=2))",
        "stop_at_loss",
    ),
    "problems.gaussian/key-int": ("flowlin.problems.gaussian(0, n=4, D=6, m=1)", "key"),
    "problems.whitened/key-int": ("flowlin.problems.whitened(0, n=4, D=6, m=1)", "key"),
    "problems.factorization/key-int": ("flowlin.problems.factorization(3)", "key"),
    "sweep/scales-under-jit": (
        "jax.jit(lambda s: flowlin.sweep(problem, widths=[3], scales=s))(jnp.array([0.5]))",
        "scales is traced",
    ),
    "sweep/under-jit": (
        "jax.jit(lambda p: flowlin.sweep(p, widths=[3], scales=[0.5]))(problem)",
        "jax.jit",
    ),
}
