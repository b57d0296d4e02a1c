"""The influence engine: parameter spaces, gradients, curvature products and solvers.

Knows nothing about recommendation; works on any ``torch.nn.Module`` whose trainable
parameters are the ones to edit. See :mod:`rec_eraser.core.engine` for the sign
convention.
"""

from rec_eraser.core.calibration import Calibration, CalibrationConfig, calibrate_scale
from rec_eraser.core.config import SolverConfig, SolverConfigError
from rec_eraser.core.curvature import CurvatureOperator, OutputLoss, deterministic_mode
from rec_eraser.core.damping import DampingError, auto_damping
from rec_eraser.core.edits import Edit, Removal, Replacement
from rec_eraser.core.ekfac import EKFAC
from rec_eraser.core.engine import InfluenceEngine, SolverReport, Update
from rec_eraser.core.fisher import EmpiricalFisher, KnownRow
from rec_eraser.core.linear_capture import UnsupportedCurvatureError
from rec_eraser.core.lowrank import LowRankGaussNewton
from rec_eraser.core.operators import DampedOperator, top_eigenvalue
from rec_eraser.core.params import ParameterSpace
from rec_eraser.core.solver_registry import SolveProblem, register_solver, solver_names, solver_parallelism
from rec_eraser.core.solvers import Solution, SolverError, qp_gradient

__all__ = [
    "SolveProblem",
    "Solution",
    "SolverConfigError",
    "Calibration",
    "CalibrationConfig",
    "CurvatureOperator",
    "DampedOperator",
    "DampingError",
    "EKFAC",
    "Edit",
    "EmpiricalFisher",
    "InfluenceEngine",
    "KnownRow",
    "LowRankGaussNewton",
    "OutputLoss",
    "ParameterSpace",
    "Removal",
    "Replacement",
    "SolverConfig",
    "SolverError",
    "SolverReport",
    "UnsupportedCurvatureError",
    "Update",
    "auto_damping",
    "calibrate_scale",
    "deterministic_mode",
    "qp_gradient",
    "register_solver",
    "solver_names",
    "solver_parallelism",
    "top_eigenvalue",
]
