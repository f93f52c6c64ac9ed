"""Portfolio selection: an LP (maximize expected return) at the low levels, then Markowitz QPs.

The solver path takes convex quadratic objectives (solvers.highs falls back to Pyomo's HiGHS
interface for them), but HiGHS has no mixed-integer QP, so the QP levels stay continuous and
grow by assets, caps and sector limits instead of integrality.
"""

from __future__ import annotations

import random

import numpy as np

from agent.synthesis.families.base import (
    Family,
    Theme,
    Variant,
    by_level,
    constraint,
    formulation,
    index_set,
    pick_theme,
    round_down,
    round_up,
    scalar,
    step_value,
    table,
    tidy,
    variable,
)
from solvers.ir import Formulation

PORTFOLIO_THEMES = (
    Theme(
        "a retirement fund allocating its money",
        {
            "assets": (
                "Government bonds",
                "Corporate bonds",
                "Blue chip stocks",
                "Small cap stocks",
                "Real estate",
                "Gold",
                "Emerging markets",
            )
        },
        {"owner": "the fund"},
    ),
    Theme(
        "a family saving for college",
        {
            "assets": (
                "Savings account",
                "Index fund",
                "Tech fund",
                "Municipal bonds",
                "Dividend fund",
                "Treasury bills",
                "Green energy fund",
            )
        },
        {"owner": "the family"},
    ),
    Theme(
        "a university endowment",
        {
            "assets": (
                "Global equities",
                "Private credit",
                "Timberland",
                "Hedge fund",
                "Infrastructure",
                "Cash",
                "Inflation bonds",
            )
        },
        {"owner": "the endowment"},
    ),
)
PORTFOLIO_KNOB = (
    "LP: 3 assets, maximize expected return, budget and a cap per asset",
    "LP: 4 assets, an average risk score limit",
    "QP: 4 assets, minimize variance (covariance matrix) for a target return, weights sum to one",
    "QP: 5 assets, a cap on each weight",
    "QP: 6 assets, sector limits, rebalancing from current holdings with a turnover limit",
)
SECTORS = ("Defensive", "Growth")


def _covariance(rng: random.Random, vol: np.ndarray) -> np.ndarray:
    """A positive definite covariance with 4-decimal entries (checked after rounding)."""
    n = len(vol)
    while True:
        loading = np.array([rng.uniform(0.2, 0.9) for _ in range(n)])
        corr = np.outer(loading, loading)
        np.fill_diagonal(corr, 1.0)
        cov = np.round(corr * np.outer(vol, vol), 4)
        if np.linalg.eigvalsh(cov).min() > 1e-5:
            return cov


def _portfolio(rng: random.Random, level: int, variant: Variant) -> tuple[str, Formulation]:
    theme = pick_theme(rng, PORTFOLIO_THEMES)
    owner = theme.word("owner")
    assets = theme.names(rng, "assets", by_level(level, (3, 4, 4, 5, 6)))
    sets = [index_set("Assets", assets, f"investments {owner} can buy")]
    if level <= 2:
        ret = {a: step_value(rng, 0.02, 0.12, 0.005) for a in assets}
        return theme.domain, _return_lp(rng, level, variant, sets, assets, ret, owner)
    # Riskier assets earn more on average, as they would in a real market.
    vol = np.array([rng.uniform(0.05, 0.30) for _ in assets])
    ret = {
        a: round_down(0.02 + 0.3 * v + rng.uniform(0.0, 0.02), 0.005)
        for a, v in zip(assets, vol, strict=True)
    }
    cov = _covariance(rng, vol)
    cap = step_value(rng, 0.4, 0.7, 0.05) if level >= 4 else 1.0
    # A reference portfolio: random weights within the cap; the target return is at most its return.
    weights = _capped_weights(rng, len(assets), cap)
    sector_of = {a: SECTORS[k % 2] for k, a in enumerate(assets)}
    sector_cap: dict[str, int | float] = {}
    if level >= 5:
        for s in SECTORS:
            held = sum(w for a, w in zip(assets, weights, strict=True) if sector_of[a] == s)
            sector_cap[s] = tidy(min(1.0, round(held + rng.uniform(0.05, 0.2), 2)))
    achieved = sum(ret[a] * w for a, w in zip(assets, weights, strict=True))
    target = round_down(achieved, 0.005)
    if variant == "infeasible":
        target = tidy(max(ret.values()) + 0.01)  # above every asset's return: no mix reaches it
    params = [
        table("expected_return", ["Assets"], ret, "expected yearly return of each asset (as a fraction)"),
        table(
            "covariance",
            ["Assets", "Assets"],
            {a: {b: tidy(cov[i, j]) for j, b in enumerate(assets)} for i, a in enumerate(assets)},
            "covariance of yearly returns between each pair of assets",
        ),
        scalar(
            "target_return", target, "smallest acceptable expected yearly return of the portfolio (fraction)"
        ),
    ]
    cons = [
        constraint("fully_invested", "sum(weight[a] for a in Assets) == 1", "all the money is invested"),
        constraint(
            "reach_target",
            "sum(expected_return[a] * weight[a] for a in Assets) >= target_return",
            "expected return at least the target",
        ),
    ]
    if level >= 4:
        params.append(scalar("max_weight", cap, "largest fraction of the money in one asset"))
        cons.append(
            constraint("weight_cap", "weight[a] <= max_weight", "diversification cap", [("a", "Assets")])
        )
    if level >= 5:
        sets.append(index_set("Sectors", list(SECTORS), "groups of assets"))
        member = {s: {a: 1 for a in assets if sector_of[a] == s} for s in SECTORS}
        params += [
            table(
                "in_sector",
                ["Sectors", "Assets"],
                member,
                "which assets belong to each sector (listed only)",
                default=0,
            ),
            table("sector_cap", ["Sectors"], sector_cap, "largest fraction of the money in each sector"),
        ]
        cons.append(
            constraint(
                "sector_limit",
                "sum(in_sector[s, a] * weight[a] for a in Assets) <= sector_cap[s]",
                "sector limits",
                [("s", "Sectors")],
            )
        )
    variables = [variable("weight", "fraction of the money put in each asset", ["Assets"])]
    if level >= 5:
        # Rebalancing: today's holdings (whole percents summing to 100) may only move so far.
        current = {a: c / 100 for a, c in zip(assets, _percent_split(rng, len(assets)), strict=True)}
        moved = sum(abs(w - current[a]) for a, w in zip(assets, weights, strict=True))
        params += [
            table("current", ["Assets"], current, "fraction of the money in each asset today"),
            scalar(
                "max_turnover",
                min(2.0, round_up(moved + 0.05, 0.05)),
                "largest total fraction bought plus sold",
            ),
        ]
        variables += [
            variable("buy", "fraction of the money moved into each asset", ["Assets"]),
            variable("sell", "fraction of the money moved out of each asset", ["Assets"]),
        ]
        cons += [
            constraint(
                "rebalance",
                "weight[a] == current[a] + buy[a] - sell[a]",
                "new weight = today's + bought - sold",
                [("a", "Assets")],
            ),
            constraint(
                "turnover", "sum(buy[a] + sell[a] for a in Assets) <= max_turnover", "limited trading"
            ),
        ]
    f = formulation(
        "portfolio",
        f"Minimum-risk portfolio for {theme.domain}",
        sets,
        params,
        variables,
        (
            "minimize",
            "sum(covariance[a, b] * weight[a] * weight[b] for a in Assets for b in Assets)",
            "variance of the portfolio's yearly return",
        ),
        cons,
        kind="quadratic",
    )
    return theme.domain, f


def _percent_split(rng: random.Random, n: int) -> list[int]:
    """n positive whole percents summing to 100."""
    cuts = sorted(rng.sample(range(1, 100), n - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, 100], strict=True)]


def _capped_weights(rng: random.Random, n: int, cap: float) -> list[float]:
    """Random weights summing to one with none above `cap` (cap * n >= 1)."""
    while True:
        raw = [rng.uniform(0.1, 1.0) for _ in range(n)]
        weights = [r / sum(raw) for r in raw]
        if max(weights) <= cap:
            return weights


def _return_lp(
    rng: random.Random,
    level: int,
    variant: Variant,
    sets: list,  # type: ignore[type-arg]
    assets: list[str],
    ret: dict[str, float | int],
    owner: str,
) -> Formulation:
    budget = step_value(rng, 50_000, 500_000, 10_000)
    cap = step_value(rng, 0.4, 0.6, 0.05)
    params = [
        table("expected_return", ["Assets"], ret, "expected yearly return of each asset (as a fraction)"),
        scalar("budget", budget, f"money {owner} invests ($)"),
        scalar("max_share", cap, "largest fraction of the budget in one asset"),
    ]
    cons = [
        constraint("spend_budget", "sum(invest[a] for a in Assets) <= budget", "no more than the budget"),
        constraint("share_cap", "invest[a] <= max_share * budget", "diversification cap", [("a", "Assets")]),
    ]
    if level >= 2:
        risk = {a: step_value(rng, 1, 9) for a in assets}
        lowest = min(risk.values())
        limit = (
            step_value(rng, lowest + 1, max(lowest + 1, 8)) if variant == "feasible" else max(1, lowest - 1)
        )
        params += [
            table("risk_score", ["Assets"], risk, "risk score of each asset (1 = safest)"),
            scalar("max_risk", limit, "highest allowed average risk score per dollar invested"),
        ]
        cons.append(
            constraint(
                "risk_limit",
                "sum(risk_score[a] * invest[a] for a in Assets) <= max_risk * budget",
                "average risk within the limit",
            )
        )
    if variant == "infeasible":
        # The money must all be invested, but the risk limit (below the safest asset's score, or
        # the caps at level 1) cannot be met by any full allocation.
        params.append(scalar("min_invested", budget, f"money {owner} must invest at least ($)"))
        cons.append(
            constraint(
                "invest_all", "sum(invest[a] for a in Assets) >= min_invested", "everything is invested"
            )
        )
        if level == 1:
            params[2] = scalar("max_share", tidy(round_down(0.9 / len(assets), 0.05)), params[2].description)
    return formulation(
        "portfolio",
        f"Return-maximizing portfolio for {theme_name(owner)}",
        sets,
        params,
        [variable("invest", "dollars put in each asset", ["Assets"])],
        ("maximize", "sum(expected_return[a] * invest[a] for a in Assets)", "expected yearly return ($)"),
        cons,
    )


def theme_name(owner: str) -> str:
    return owner.removeprefix("the ")


PORTFOLIO = Family(
    "portfolio",
    "Portfolio (LP, then mean-variance QP)",
    PORTFOLIO_KNOB,
    frozenset({"feasible", "infeasible"}),
    _portfolio,
)
