"""The papers' printed numbers and settings, in one place (docs/theory.md §5).

Min, Tarmoun, Vidal & Mallada, "On the Explicit Role of Initialization on the Convergence and
Implicit Bias of Overparametrized Linear Networks" (ICML 2021) and its extended version (v2).
The reproduction prints these beside its own numbers; the tests import them from here as
external oracle values (each test states its own tolerance).
"""

#: ICML Fig. 2 legend: the imbalance constant c printed for each init (σ_U, σ_V).
PAPER_C: dict[tuple[float, float], float] = {(0.1, 0.1): 6.02, (0.5, 0.02): 39.6, (0.05, 0.2): 20.1}
#: ICML Fig. 1: ‖Θ(t_f) − Θ̂‖_F at α = 1/2, read off the plot, by width h.
PAPER_DISTANCE: dict[int, float] = {500: 0.8, 10_000: 0.2}
#: ICML Theorem 2 at α = 1/2: the distance falls as h^(−1/2) (slope of log distance vs log h).
PAPER_SLOPE = -0.5

#: ICML Fig. 1 stops gradient descent when the averaged loss (1/n)‖Y − XW1ᵀW2ᵀ‖² < 1e-8 ...
FIG1_AVERAGED_LOSS_STOP = 1e-8
#: ... with step η = 5e-3 on the averaged loss.
FIG1_LR = 5e-3
#: ICML Fig. 2: gradient descent with η = 5e-4 on the averaged loss, 15 000 iterations.
FIG2_LR, FIG2_STEPS = 5e-4, 15_000
#: v2 Figs. 2–5: gradient descent with η = 0.05 (the paper's units), 15 000 iterations.
V2_LR, V2_STEPS = 0.05, 15_000
