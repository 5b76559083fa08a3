"""The calibration: the report's verdict code on simulated A/A data sets keeps the family-wise
false-positive rate at or below 5%, and its power grows with the planted effect."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tunebench.analysis import calibration as C


def family(m=60, n=12, seed=0) -> list[C.Spec]:
    """A family shaped like the post's: single arms and arm sets, counts, a few
    non-inferiority contrasts, interactions and stated magnitudes."""
    rng = np.random.default_rng(seed)
    return [C.Spec(n=n, k_treatment=int(rng.choice([1, 1, 4])), k_control=int(rng.choice([1, 1, 5])), selection=4,
                   count=bool(rng.random() < 0.3), expected=int(rng.choice([1, -1])),
                   margin=0.01 if rng.random() < 0.15 else 0.0, stated=0.28 if j < 2 else None,
                   equivalence=0.01, minus=bool(rng.random() < 0.05), sd=0.01) for j in range(m)]


def test_the_a_a_false_positive_rate_is_at_most_five_percent():
    rate = C.aa_rate(family(), S=1000, seed=0)
    lo, hi = rate["familywise_ci"]
    assert lo <= 0.05, rate  # the interval does not lie above 5%
    assert rate["per_contrast"] <= rate["familywise"]


def test_small_families_and_few_seeds_stay_calibrated():
    rate = C.aa_rate(family(m=6, n=5, seed=1), S=1000, seed=1)
    assert rate["familywise_ci"][0] <= 0.05, rate


def test_power_grows_with_the_planted_effect():
    curve = C.power_curve(family(m=20), S=200, seed=2, deltas=(0.5, 3.0))
    assert list(curve["delta_sd"]) == [0.5, 3.0]
    assert curve["power"].iloc[1] > curve["power"].iloc[0] + 0.3


def test_specs_come_from_the_judged_primary_contrasts():
    rows = pd.DataFrame([
        {"primary": True, "n": 12, "source": "post", "treatment_values": list(np.arange(12.0)),
         "control_values": list(np.zeros(12)), "treatment_arms": 4, "control_arms": 1, "selection_seeds": 4,
         "count": False,
         "expected": 1, "margin": np.nan, "stated": np.nan, "equivalence": 0.01, "interaction": False},
        {"primary": False, "n": 12, "source": "post", "treatment_values": [0.0] * 12, "control_values": [0.0] * 12,
         "treatment_arms": 1, "control_arms": 1, "count": True, "expected": -1, "margin": np.nan, "stated": np.nan,
         "equivalence": 0.5, "interaction": False},
    ])
    specs = C.specs(rows)
    assert list(specs) == ["post"] and len(specs["post"]) == 1
    s = specs["post"][0]
    assert (s.k_treatment, s.k_control, s.selection, s.count, s.expected) == (4, 1, 4, False, 1)
    assert s.sd == np.std(np.arange(12.0), ddof=1)
