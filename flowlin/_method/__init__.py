"""Flow methods: how `flowlin.gradient_flow` integrates (diffrax's `solver=` pattern).

Every method is a final subclass of `AbstractFlowMethod`; one routine (`_integrate.integrate`)
runs the solve for all of them. Strings name methods only at the TOML/CLI edge, through
`method_from_name`.
"""

from ._base import AbstractFlowMethod as AbstractFlowMethod
from ._full import FullWeights as FullWeights
from ._gram import Gram as Gram


#: The short names of the methods, as written in sweep TOML files and on the command line.
METHOD_NAMES: dict[str, type[AbstractFlowMethod]] = {"full": FullWeights, "gram": Gram}


def method_from_name(name: str) -> AbstractFlowMethod:
    """The method a short name stands for (`"full"` → `FullWeights()`, `"gram"` → `Gram()`)."""
    if name not in METHOD_NAMES:
        raise ValueError(f"unknown flow method {name!r}; choose one of {sorted(METHOD_NAMES)}")
    return METHOD_NAMES[name]()
