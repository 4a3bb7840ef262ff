"""Motion: trajectories integrated through the kinematic field, export, and ground-truth scoring."""
from .export import (
    compute_trajectories,
    parse_times,
    read_points,
    sample_dynamic_points,
    score_against_ground_truth,
    write_trajectories,
)
from .trajectory import integrate, kinematics_along, rk4_step

__all__ = ["compute_trajectories", "integrate", "kinematics_along", "parse_times", "read_points", "rk4_step",
           "sample_dynamic_points", "score_against_ground_truth", "write_trajectories"]
