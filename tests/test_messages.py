"""flowlin's own messages for wrongly typed arguments.

Inside the test suite the jaxtyping/beartype import hook (conftest.py) checks every annotation
first, so a string where a method object belongs is refused by beartype before flowlin's own
check runs. Users have no such hook: they meet flowlin's message. These calls therefore run in
a fresh interpreter, without the hook, and each message must name the call and the argument.
"""

import json
import subprocess
import sys
import textwrap


SCRIPT = textwrap.dedent(
    """
    import json, jax
    jax.config.update("jax_enable_x64", True)
    import flowlin

    problem = flowlin.problems.gaussian(jax.random.key(0), n=4, D=6, m=1)
    net = flowlin.init.gaussian(jax.random.key(1), 6, 1, 3, 0.5, 0.5)
    grid = dict(widths=[3], scales=[0.5], progress=False)
    calls = {
        "flow_method": lambda: flowlin.gradient_flow(net, problem, 1.0, method="gram"),
        "gram_reconstruct": lambda: flowlin.Gram(reconstruct="yes"),
        "sweep_init": lambda: flowlin.sweep(problem, init="xavier", **grid),
        "sweep_sampling": lambda: flowlin.sweep(problem, sampling="both", **grid),
        "sweep_dynamics": lambda: flowlin.sweep(problem, dynamics="sgd", **grid),
        "sweep_method": lambda: flowlin.sweep(problem, method="euler", **grid),
        "sweep_executor": lambda: flowlin.sweep(problem, executor="dask", **grid),
        "ray_retries": lambda: flowlin.RayExecutor(max_retries=0.5),
        "ray_address": lambda: flowlin.RayExecutor(address=7),
    }
    out = {}
    for name, call in calls.items():
        try:
            call()
            out[name] = ["no error", ""]
        except Exception as e:  # noqa: BLE001 (the type is part of what is checked)
            out[name] = [type(e).__name__, str(e)]
    print(json.dumps(out))
    """
)

#: call → (exception type, what the message must say: the call and the argument).
EXPECTED = {
    "flow_method": ("TypeError", "`flowlin.gradient_flow(...)`: method must be a flow method"),
    "gram_reconstruct": ("TypeError", "`flowlin.Gram(reconstruct=...)`: reconstruct must be a"),
    "sweep_init": ("TypeError", "`flowlin.sweep(...)`: init must be one of"),
    "sweep_sampling": ("TypeError", "`flowlin.sweep(...)`: sampling must be one of"),
    "sweep_dynamics": ("TypeError", "`flowlin.sweep(...)`: dynamics must be one of"),
    "sweep_method": ("TypeError", "`flowlin.sweep(...)`: method must be one of"),
    "sweep_executor": ("TypeError", "`flowlin.sweep(...)`: executor must be one of"),
    "ray_retries": ("TypeError", "max_retries must be an int"),
    "ray_address": ("TypeError", "address must be a Ray cluster"),
}


def test_messages_without_the_type_hook():
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    for name, (kind, message) in EXPECTED.items():
        assert got[name][0] == kind, (name, got[name])
        assert message in got[name][1], (name, got[name])
