"""Training: MSGD with early stopping and schedules (sgd.py), conjugate gradient (cg.py)."""
from .cg import fit_cg
from .result import FitResult
from .sgd import fit_sgd

__all__ = ["fit_sgd", "fit_cg", "FitResult"]
