"""Domain gap between two feature sets: MMD two-sample tests, proxy A-distance, Frechet and
CORAL distances, a summary of all of them, and a per-layer gap profile.

Shapes: source features `xs` (n, D), target features `xt` (m, D); numpy arrays or torch tensors.

Why several measures: each is blind to something. CORAL compares covariances only and cannot
see a pure mean shift (a pitfall measured in ADAPT 0.4.5's covariance distance); MMD with a
Gaussian kernel is a metric on distributions (characteristic kernel) and sees both means and
covariances; Frechet distance adds a mean term to the covariance term; the proxy A-distance
asks how separable the domains are for a linear classifier. `gap_summary` reports them all.

Modules: :mod:`.mmd` (MMD and its tests), :mod:`.distances` (proxy A-distance, Frechet,
CORAL, mean), :mod:`.summary` (``gap_summary``, per-layer profile, before / after). Every
public name is importable from here.
"""

from __future__ import annotations

from . import distances, mmd, summary
from .distances import coral_distance, frechet_distance, mean_distance, proxy_a_distance
from .mmd import (  # the private two are shared with the drift monitor's MMD
    LinearMMDResult,
    MMDResult,
    _mmd2_from_sums,
    _small_problem_threads,
    median_bandwidth,
    mmd2_unbiased,
    mmd_linear_test,
    mmd_test,
)
from .summary import compare_gaps, gap_summary, layer_gap_profile

__all__ = [
    "MMDResult",
    "LinearMMDResult",
    "median_bandwidth",
    "mmd2_unbiased",
    "mmd_test",
    "mmd_linear_test",
    "proxy_a_distance",
    "frechet_distance",
    "coral_distance",
    "mean_distance",
    "gap_summary",
    "layer_gap_profile",
    "compare_gaps",
    "distances",
    "mmd",
    "summary",
    "_mmd2_from_sums",
    "_small_problem_threads",
]
