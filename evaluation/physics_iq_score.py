"""The three Physics-IQ score variants, side by side, over scenarios x views of `ViewMetrics`.

- original (the paper's `calculate_iq_score`): dataset means S_st, S_sp, S_wsp, S_mse; variances per view
  (mean over all frames of all scenarios), averaged over views and rounded (st, mse, wsp to 4 decimals, sp to 5);
  score = round(clip(100 * [(S_st/V_st + S_sp/V_sp + S_wsp/V_wsp)/3 - (S_mse - V_mse)], 0, 100), 2).
  `original_unrounded` is the same formula in the newer IQTable form (variances as per-scenario means, not rounded).
- stable (the newer code's primary score): clip((clip(st) + clip(sp) + clip(wsp))/3 - clip(S_mse - V_mse)),
  with dataset-level ratios st = S_st/V_st etc.
- verified (per scenario x view row): r = metric/(variance + 1e-8) for the IoUs, (v_mse + 1e-8)/mse for MSE,
  each clipped to [0, 1], averaged over the four, then over rows.

Per-frame values are rounded to 4 decimals first, as upstream does when it reads its CSV back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from vidmill.evaluation.physics_iq import ViewMetrics

VIEWS = ("perspective-left", "perspective-center", "perspective-right")
RATIO_EPS = 1e-8
LIST_FIELDS = ("spatiotemporal_iou", "mse", "var_spatiotemporal_iou", "var_mse")

Scenario = Mapping[str, ViewMetrics]  # view name -> metrics


def _clip(x: float) -> float:
    return float(np.clip(x, 0.0, 1.0))


def _rounded(values: Sequence[float]) -> list[float]:
    return [round(float(v), 4) for v in values]


def _lists(scenarios: Sequence[Scenario], field: str, view: str) -> list[list[float]]:
    return [_rounded(getattr(s[view], field)) for s in scenarios]


def _scenario_frame_mean(s: Scenario, field: str) -> float:
    """Mean over all frames of the three views concatenated (rounded values)."""
    return float(np.mean(np.concatenate([_rounded(getattr(s[v], field)) for v in VIEWS])))


def _scenario_view_mean(s: Scenario, field: str) -> float:
    return float(np.mean([getattr(s[v], field) for v in VIEWS]))


def dataset_means(scenarios: Sequence[Scenario]) -> dict[str, float]:
    """S_* (generated vs take 1) and the IQTable-form variances (mean over scenarios, not rounded)."""
    out = {}
    for name, field in (("st", "spatiotemporal_iou"), ("mse", "mse"), ("var_st", "var_spatiotemporal_iou"),
                        ("var_mse", "var_mse")):
        out[name] = float(np.mean([_scenario_frame_mean(s, field) for s in scenarios]))
    for name, field in (("sp", "spatial_iou"), ("wsp", "weighted_spatial_iou"), ("var_sp", "var_spatial_iou"),
                        ("var_wsp", "var_weighted_spatial_iou")):
        out[name] = float(np.mean([_scenario_view_mean(s, field) for s in scenarios]))
    return out


def original_variances(scenarios: Sequence[Scenario]) -> dict[str, float]:
    """calculate_iq_score's variances: per view the mean over all frames of all scenarios, mean over views, rounded."""
    def frames_mean(field: str) -> float:
        return float(np.mean([np.mean(np.concatenate(_lists(scenarios, field, v))) for v in VIEWS]))

    def scalar_mean(field: str) -> float:
        return float(np.mean([np.mean([getattr(s[v], field) for s in scenarios]) for v in VIEWS]))

    return {"var_st": round(frames_mean("var_spatiotemporal_iou"), 4), "var_mse": round(frames_mean("var_mse"), 4),
            "var_sp": round(scalar_mean("var_spatial_iou"), 5),
            "var_wsp": round(scalar_mean("var_weighted_spatial_iou"), 4)}


def _div(a: float, b: float) -> float:
    """a / b with IEEE semantics (a zero variance gives inf or nan, as NumPy does upstream, never an exception)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(a) / np.float64(b))


def raw_score(m: Mapping[str, float], v: Mapping[str, float]) -> float:
    """(S_st/V_st + S_sp/V_sp + S_wsp/V_wsp)/3 - (S_mse - V_mse), unclipped, on the 0-1 scale."""
    ratios = _div(m["st"], v["var_st"]) + _div(m["sp"], v["var_sp"]) + _div(m["wsp"], v["var_wsp"])
    return ratios / 3 - (m["mse"] - v["var_mse"])


def original_score(scenarios: Sequence[Scenario]) -> dict:
    m, v = dataset_means(scenarios), original_variances(scenarios)
    raw = raw_score(m, v)
    return {"score": round(max(min(raw * 100, 100.0), 0.0), 2), "raw": raw, "variances": v}


def original_unrounded_score(scenarios: Sequence[Scenario]) -> dict:
    m = dataset_means(scenarios)
    raw = raw_score(m, m)
    return {"score": round(_clip(raw) * 100, 2), "fraction": _clip(raw), "raw": raw}


def stable_score(scenarios: Sequence[Scenario]) -> dict:
    m = dataset_means(scenarios)
    parts = {"spatiotemporal": _div(m["st"], m["var_st"]), "spatial": _div(m["sp"], m["var_sp"]),
             "weighted_spatial": _div(m["wsp"], m["var_wsp"]), "mse": m["mse"] - m["var_mse"]}
    value = _clip((_clip(parts["spatiotemporal"]) + _clip(parts["spatial"]) + _clip(parts["weighted_spatial"])) / 3
                  - _clip(parts["mse"]))
    return {"score": round(value * 100, 2), "fraction": value, "components": parts}


def verified_row(vm: ViewMetrics) -> dict[str, float]:
    """One scenario x view row: the four clipped ratios and their mean."""
    st, vst = np.mean(_rounded(vm.spatiotemporal_iou)), np.mean(_rounded(vm.var_spatiotemporal_iou))
    mse, vmse = np.mean(_rounded(vm.mse)), np.mean(_rounded(vm.var_mse))
    with np.errstate(divide="ignore"):
        mse_ratio = np.float64(mse) / (vmse + RATIO_EPS)
        r = {"spatial": vm.spatial_iou / (vm.var_spatial_iou + RATIO_EPS),
             "weighted_spatial": vm.weighted_spatial_iou / (vm.var_weighted_spatial_iou + RATIO_EPS),
             "spatiotemporal": st / (vst + RATIO_EPS),
             "mse": np.float64(1.0) / mse_ratio if mse_ratio != 0 else np.inf}
    r = {k: _clip(x) for k, x in r.items()}
    r["mean"] = float(np.mean(list(r.values())))
    return r


def verified_score(scenarios: Sequence[Scenario]) -> dict:
    rows = [verified_row(s[v]) for s in scenarios for v in VIEWS]
    value = float(np.mean([r["mean"] for r in rows]))
    comps = {k: float(np.mean([r[k] for r in rows])) for k in ("spatial", "weighted_spatial", "spatiotemporal", "mse")}
    return {"score": round(value * 100, 2), "fraction": value, "components": comps}


def all_scores(scenarios: Sequence[Scenario]) -> dict:
    """The three variants (plus the unrounded original) side by side; scores on the 0-100 scale."""
    if not scenarios:
        raise ValueError("no scored scenarios")
    return {"original": original_score(scenarios), "original_unrounded": original_unrounded_score(scenarios),
            "stable": stable_score(scenarios), "verified": verified_score(scenarios),
            "means": dataset_means(scenarios)}
