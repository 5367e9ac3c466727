"""Vectorised continuous-time simulation core behind :mod:`churnguard.features.demo_data`.

Time is a float number of days since the generator's ``start`` date (midnight, naive UTC).
Everything here is pure numpy: no loop over customers or days, only over the (few dozen)
campaign dates, which must be processed in order because targeting depends on the state then.

The latent process per customer (see ``demo_data`` docs for the story):

* stages ``ACTIVE -> DECLINING -> DEAD`` form a continuous-time Markov chain; the
  active->declining hazard is ``h_i(t) = h0_i * exp(beta_c * C_180(t) + beta_t * T_90(t))
  * prod(campaign factors)``, piecewise constant between complaint/ticket/campaign
  breakpoints, and the time spent declining is Exp(mean ``declining_mean_days``);
* complaints and support tickets are exogenous homogeneous Poisson processes, emitted while
  the customer is alive;
* purchases and interactions are non-homogeneous Poisson processes whose rate depends on the
  stage (and, for purchases, on the calendar season).

The same :func:`simulate_forward` function runs the generator (from each signup) and the
oracle (from an arbitrary cutoff), which is what makes the oracle the true probability.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

F8 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int64]
B1 = npt.NDArray[np.bool_]

ACTIVE, DECLINING, DEAD = 0, 1, 2
STAGES = ("active", "declining", "dead")
SECONDS_PER_DAY = 86_400

SEGMENTS = ("consumer", "smb", "enterprise")
REGIONS = ("north_america", "europe", "apac", "latam")
CHANNELS = ("organic", "paid_search", "social", "referral", "affiliate")
ACTIONS = (
    "care_email",
    "exclusive_offer",
    "loyalty_bonus",
    "satisfaction_survey",
    "vip_outreach",
    "winback_offer",
)
# Interaction streams generated from the stage path (complaints/tickets are separate processes).
INTERACTIONS = ("login", "email_open", "email_click", "web_visit")


def _effects(**kw: tuple[float, float, float, float]) -> dict[str, dict[str, float]]:
    return {
        k: {"share": v[0], "purchase_rate": v[1], "hazard": v[2], "order_value": v[3]}
        for k, v in kw.items()
    }


@dataclass(frozen=True)
class SimParams:
    """Every generator parameter; serialised verbatim into ``ground_truth/params.json``."""

    version: str = "1"
    chunk_size: int = 50_000
    # Acquisition: exponential growth plus a yearly cycle (January and September peaks).
    acquisition_growth_per_year: float = 0.5
    acquisition_seasonality: float = 0.2
    first_purchase_prob: float = 0.7
    # BG/NBD-style heterogeneity (Fader, Hardie & Lee 2005, "Counting your customers the easy
    # way"): purchase rate lambda_i ~ Gamma(r, alpha) while active.
    purchase_rate_shape: float = 0.6
    purchase_rate_mean: float = 0.06
    season_peak: float = 0.6
    season_dip: float = 0.25
    # Gamma-Gamma spend (Fader, Hardie & Lee 2005, "RFM and CLV"): per-order value
    # z ~ Gamma(p, nu_i), nu_i ~ Gamma(q, gamma), so the customer mean p/nu_i is skewed.
    order_value_p: float = 4.0
    order_value_q: float = 3.0
    order_value_mean: float = 60.0
    items_per_order_extra: float = 0.6
    refund_prob: float = 0.025
    refund_delay_days: tuple[float, float] = (2.0, 14.0)
    # Active->declining hazard: h0_i ~ Gamma(shape, mean/shape), times effects and
    # (lambda_i / mean)^elasticity (engaged buyers churn less).
    hazard_shape: float = 2.0
    hazard_mean: float = 1.0 / 450.0
    hazard_purchase_elasticity: float = -0.3
    declining_mean_days: float = 60.0
    beta_complaint: float = 0.7
    complaint_window_days: float = 180.0
    beta_ticket: float = 0.25
    ticket_window_days: float = 90.0
    # Friction f_i ~ Gamma(shape, 1/shape) scales complaint and ticket rates.
    friction_shape: float = 0.5
    complaint_rate_mean: float = 1.0 / 700.0
    ticket_rate_mean: float = 1.0 / 250.0
    # Interaction base rates (per day, while active) and their link to purchase rate.
    interaction_rates: dict[str, float] = field(
        default_factory=lambda: {
            "login": 0.09,
            "email_open": 0.05,
            "email_click": 0.012,
            "web_visit": 0.055,
        }
    )
    pages_per_visit: float = 4.0
    engagement_elasticity: float = 0.6
    engagement_noise_sd: float = 0.4
    # Stage multipliers: the degradation period hits interactions harder than purchases.
    declining_multipliers: dict[str, float] = field(
        default_factory=lambda: {
            "purchase": 0.5,
            "login": 0.25,
            "email_open": 0.5,
            "email_click": 0.25,
            "web_visit": 0.25,
        }
    )
    dead_multipliers: dict[str, float] = field(
        default_factory=lambda: {
            "purchase": 0.0,
            "login": 0.0,
            "email_open": 0.1,
            "email_click": 0.0,
            "web_visit": 0.0,
        }
    )
    segments: dict[str, dict[str, float]] = field(
        default_factory=lambda: _effects(
            consumer=(0.75, 1.0, 1.0, 1.0),
            smb=(0.20, 1.3, 0.8, 2.5),
            enterprise=(0.05, 1.6, 0.6, 8.0),
        )
    )
    regions: dict[str, dict[str, float]] = field(
        default_factory=lambda: _effects(
            north_america=(0.40, 1.1, 0.9, 1.1),
            europe=(0.30, 1.0, 0.9, 1.0),
            apac=(0.20, 0.9, 1.1, 0.9),
            latam=(0.10, 0.8, 1.3, 0.7),
        )
    )
    channels: dict[str, dict[str, float]] = field(
        default_factory=lambda: _effects(
            organic=(0.35, 1.1, 0.85, 1.0),
            paid_search=(0.25, 0.9, 1.15, 1.0),
            social=(0.15, 0.8, 1.4, 0.9),
            referral=(0.15, 1.2, 0.7, 1.1),
            affiliate=(0.10, 0.85, 1.3, 0.95),
        )
    )
    # Retention campaigns: monthly, on the 1st at 10:00, from two months after start.
    campaign_first_month_offset: int = 2
    campaign_hour: float = 10.0
    min_tenure_days: float = 30.0
    recontact_days: float = 60.0
    treated_share: float = 0.8
    effect_days: float = 120.0
    risk_noise_sd: float = 0.6
    risk_threshold: float = 2.0
    vip_daily_value: float = 25.0
    # Per action: base hazard multiplier for treated customers (< 1) and base probability that
    # a declining customer reverts to active. Heterogeneity: see :func:`true_effect`.
    action_hazard_multiplier: dict[str, float] = field(
        default_factory=lambda: {
            "care_email": 0.75,
            "exclusive_offer": 0.6,
            "loyalty_bonus": 0.85,
            "satisfaction_survey": 0.9,
            "vip_outreach": 0.5,
            "winback_offer": 0.7,
        }
    )
    action_revert_prob: dict[str, float] = field(
        default_factory=lambda: {
            "care_email": 0.1,
            "exclusive_offer": 0.2,
            "loyalty_bonus": 0.05,
            "satisfaction_survey": 0.05,
            "vip_outreach": 0.35,
            "winback_offer": 0.3,
        }
    )
    segment_response: dict[str, float] = field(
        default_factory=lambda: {"consumer": 1.0, "smb": 0.8, "enterprise": 1.3}
    )
    action_value_response: dict[str, float] = field(
        default_factory=lambda: {
            "care_email": 0.0,
            "exclusive_offer": -0.2,
            "loyalty_bonus": 0.3,
            "satisfaction_survey": 0.0,
            "vip_outreach": 0.5,
            "winback_offer": 0.0,
        }
    )

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self)
        d["refund_delay_days"] = list(self.refund_delay_days)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SimParams:
        d = dict(d)
        d["refund_delay_days"] = tuple(d["refund_delay_days"])
        return cls(**d)


# ---------------------------------------------------------------------------------------------
# Calendar helpers


def season_by_day(start: date, n_days: int, params: SimParams) -> F8:
    """Purchase seasonality per calendar day (piecewise constant within a day).

    A Gaussian bump centred on early December (holiday shopping) and a dip in late July.
    """
    days = np.arange(n_days, dtype=np.int64)
    dt = np.datetime64(start, "D") + days
    doy = (dt - dt.astype("datetime64[Y]")).astype(np.int64).astype(np.float64)
    peak = np.exp(-0.5 * ((doy - 338.0) / 18.0) ** 2)
    dip = np.exp(-0.5 * ((doy - 205.0) / 30.0) ** 2)
    return 1.0 + params.season_peak * peak - params.season_dip * dip


def season_integral(season: F8, t: F8) -> F8:
    """Integral of the daily-piecewise-constant season from 0 to ``t`` (exact)."""
    cum = np.concatenate([[0.0], np.cumsum(season)])
    k = np.floor(t).astype(np.int64)
    k = np.clip(k, 0, len(season) - 1)
    return cum[k] + season[k] * (t - k)


def campaign_times(start: date, t_from: float, t_to: float, params: SimParams) -> F8:
    """Campaign times (days since start) in ``(t_from, t_to)``: the 1st of each month."""
    first = np.datetime64(start, "M") + params.campaign_first_month_offset
    last = np.datetime64(start + timedelta(days=int(np.ceil(t_to)) + 1), "M") + 1
    months = np.arange(first, last, dtype="datetime64[M]")
    days = (months.astype("datetime64[D]") - np.datetime64(start, "D")).astype(np.float64)
    t = days + params.campaign_hour / 24.0
    return t[(t > t_from) & (t < t_to)]


def to_seconds_grid(t: F8) -> F8:
    """Round times up to whole seconds so that stored timestamps equal the simulated times."""
    return np.ceil(t * SECONDS_PER_DAY) / SECONDS_PER_DAY


# ---------------------------------------------------------------------------------------------
# Latent customer parameters


@dataclass
class Latent:
    """Per-customer latent parameters (one row per simulated customer)."""

    signup: F8
    segment: I8
    region: I8
    channel: I8
    purchase_rate: F8
    log_hazard: F8
    mean_order_value: F8
    friction: F8
    complaint_rate: F8
    ticket_rate: F8
    interaction_rates: F8  # shape (n, len(INTERACTIONS))

    def __len__(self) -> int:
        return len(self.signup)

    def take(self, idx: I8) -> Latent:
        return Latent(**{k: v[idx] for k, v in self.__dict__.items()})

    @property
    def daily_value(self) -> F8:
        return self.purchase_rate * self.mean_order_value


def _category_table(spec: dict[str, dict[str, float]], key: str) -> F8:
    return np.array([v[key] for v in spec.values()], dtype=np.float64)


def draw_latent(
    rng: np.random.Generator,
    signup: F8,
    params: SimParams,
    *,
    region: int | None = None,
    channel: int | None = None,
) -> Latent:
    """Draw heterogeneous latent parameters for customers who sign up at ``signup``.

    ``region``/``channel``: every customer comes from that region/channel (codes into
    :data:`REGIONS`/:data:`CHANNELS`; an acquisition push), with its effects; the draws are
    made as usual, so the rest of the stream is the same.
    """
    n = len(signup)
    seg = rng.choice(len(SEGMENTS), n, p=_category_table(params.segments, "share"))
    reg = rng.choice(len(REGIONS), n, p=_category_table(params.regions, "share"))
    ch = rng.choice(len(CHANNELS), n, p=_category_table(params.channels, "share"))
    if region is not None:
        reg = np.full(n, region, np.int64)
    if channel is not None:
        ch = np.full(n, channel, np.int64)

    def eff(key: str) -> F8:
        return (
            _category_table(params.segments, key)[seg]
            * _category_table(params.regions, key)[reg]
            * _category_table(params.channels, key)[ch]
        )

    r = params.purchase_rate_shape
    lam0 = rng.gamma(r, params.purchase_rate_mean / r, n)
    lam = lam0 * eff("purchase_rate")
    rel = np.clip(lam0 / params.purchase_rate_mean, 0.1, 10.0)
    hs = params.hazard_shape
    h0 = rng.gamma(hs, params.hazard_mean / hs, n) * eff("hazard")
    h0 = h0 * rel**params.hazard_purchase_elasticity
    # Gamma-Gamma: nu_i ~ Gamma(q, scale), customer mean = p / nu_i; scale set so E[mean] matches.
    p, q = params.order_value_p, params.order_value_q
    nu = rng.gamma(q, 1.0, n) * (p / (params.order_value_mean * (q - 1.0)))
    mov = p / nu * eff("order_value")
    fs = params.friction_shape
    friction = rng.gamma(fs, 1.0 / fs, n)
    engagement = rel**params.engagement_elasticity * np.exp(
        rng.normal(-0.5 * params.engagement_noise_sd**2, params.engagement_noise_sd, n)
    )
    base = np.array([params.interaction_rates[k] for k in INTERACTIONS])
    noise = rng.gamma(4.0, 0.25, (n, len(INTERACTIONS)))
    rates = engagement[:, None] * base[None, :] * noise
    return Latent(
        signup=signup,
        segment=seg.astype(np.int64),
        region=reg.astype(np.int64),
        channel=ch.astype(np.int64),
        purchase_rate=lam,
        log_hazard=np.log(h0),
        mean_order_value=mov,
        friction=friction,
        complaint_rate=params.complaint_rate_mean * friction,
        ticket_rate=params.ticket_rate_mean * friction,
        interaction_rates=rates,
    )


def true_effect(
    params: SimParams, action: I8, segment: I8, daily_value: F8, n_complaints_90: I8
) -> tuple[F8, F8]:
    """The known heterogeneous effect of a treated retention contact.

    Returns ``(hazard_multiplier, revert_prob)``: the active->declining hazard is multiplied by
    ``hazard_multiplier`` for ``effect_days`` and a declining customer reverts to active with
    ``revert_prob``. On the log scale, the base effect of the action is scaled by the segment's
    responsiveness, by value (VIP outreach and loyalty bonuses work better on high-value
    customers, discounts slightly worse) and by recent complaints (a care email works better
    after complaints, any other action worse: an offer does not fix a grievance).
    """
    base = np.log(np.array([params.action_hazard_multiplier[a] for a in ACTIONS]))[action]
    seg_resp = np.array([params.segment_response[s] for s in SEGMENTS])[segment]
    val_resp = np.array([params.action_value_response[a] for a in ACTIONS])[action]
    val_z = np.clip(np.log(np.maximum(daily_value, 1e-9) / params.vip_daily_value), -2.0, 2.0)
    val_mod = np.clip(1.0 + val_resp * val_z / 2.0, 0.3, 2.0)
    nc = np.minimum(n_complaints_90, 3).astype(np.float64)
    is_care = action == ACTIONS.index("care_email")
    compl_mod = np.where(is_care, 1.0 + 0.5 * nc, 1.0 / (1.0 + 0.3 * nc))
    scale = seg_resp * val_mod * compl_mod
    mult = np.exp(base * scale)
    revert = np.array([params.action_revert_prob[a] for a in ACTIONS])[action]
    revert = np.clip(revert * scale, 0.0, 0.9)
    return mult, revert


# ---------------------------------------------------------------------------------------------
# Core: first passage of a piecewise-constant hazard


def first_passage(
    t_from: F8, t_to: F8, log_h_from: F8, ev_i: I8, ev_t: F8, ev_d: F8, e: F8
) -> F8:
    """First time after ``t_from`` at which the integrated hazard reaches ``e`` (Exp(1) draws).

    Customer ``j`` has log-hazard ``log_h_from[j]`` at ``t_from[j]``; it jumps by ``ev_d`` at the
    breakpoints ``ev_t`` (customer ``ev_i``). Cumulative hazards of all customers are laid end to
    end in one global cumsum, so the crossing of every customer is found by one searchsorted.
    Returns ``inf`` where the hazard is not exhausted before ``t_to``.
    """
    m = len(t_from)
    if m == 0:
        return np.empty(0)
    keep = (ev_t > t_from[ev_i]) & (ev_t < t_to[ev_i])
    gi = np.concatenate([np.arange(m, dtype=np.int64), ev_i[keep]])
    st = np.concatenate([t_from, ev_t[keep]])
    dl = np.concatenate([np.zeros(m), ev_d[keep]])
    order = np.lexsort((st, gi))
    gi, st, dl = gi[order], st[order], dl[order]
    counts = np.bincount(gi, minlength=m)
    first = np.cumsum(counts) - counts
    last = first + counts - 1
    en = np.empty_like(st)
    en[:-1] = st[1:]
    en[last] = t_to
    cs = np.cumsum(dl)
    log_h = log_h_from[gi] + cs - np.repeat(cs[first], counts)
    h = np.exp(log_h)
    inc = h * np.maximum(en - st, 0.0)
    cum = np.cumsum(inc)
    before = np.where(first > 0, cum[np.maximum(first - 1, 0)], 0.0)
    target = before + e
    pos = np.maximum(np.searchsorted(cum, target, side="left"), first)
    hit = pos <= last
    tau = np.full(m, np.inf)
    p = pos[hit]
    tau[hit] = st[p] + (target[hit] - (cum[p] - inc[p])) / h[p]
    tau[hit] = np.clip(tau[hit], st[p], en[p])
    return tau


# ---------------------------------------------------------------------------------------------
# Forward simulation


@dataclass
class StartState:
    """State of each simulated customer at its own start time ``t0`` (signup or cutoff).

    ``hz_*`` are log-hazard breakpoints already known at ``t0`` (complaints, tickets and treated
    contacts before ``t0``, each with its later expiry); ``compl_t``/``tick_t`` are complaint and
    ticket times before ``t0`` (only the recent ones matter for targeting).
    """

    t0: F8
    stage: I8
    dead_since: F8
    last_contact: F8
    hz_i: I8
    hz_t: F8
    hz_d: F8
    compl_i: I8
    compl_t: F8
    tick_i: I8
    tick_t: F8

    @classmethod
    def fresh(cls, t0: F8) -> StartState:
        n = len(t0)
        ei, ef = np.empty(0, np.int64), np.empty(0)
        return cls(
            t0=t0,
            stage=np.zeros(n, np.int64),
            dead_since=np.full(n, np.inf),
            last_contact=np.full(n, -np.inf),
            hz_i=ei,
            hz_t=ef,
            hz_d=ef,
            compl_i=ei,
            compl_t=ef,
            tick_i=ei,
            tick_t=ef,
        )


@dataclass
class ForwardResult:
    """Simulated future on ``[t0, t_end)``."""

    seg_i: I8
    seg_stage: I8
    seg_from: F8
    seg_to: F8
    compl_i: I8
    compl_t: F8
    tick_i: I8
    tick_t: F8
    contact_i: I8
    contact_t: F8
    contact_action: I8
    contact_treated: B1
    contact_stage: I8
    contact_mult: F8
    contact_revert_prob: F8
    contact_reverted: B1
    final_decline: F8
    final_death: F8


def _poisson_times(
    rng: np.random.Generator, rate: F8, t_from: F8, t_to: F8
) -> tuple[I8, F8]:
    n = rng.poisson(rate * np.maximum(t_to - t_from, 0.0))
    idx = np.repeat(np.arange(len(rate), dtype=np.int64), n)
    t = t_from[idx] + rng.random(len(idx)) * (t_to - t_from)[idx]
    t = to_seconds_grid(t)
    ok = t < t_to[idx]
    return idx[ok], t[ok]


def _window_counts(n: int, ev_i: I8, ev_t: F8, lo: F8, hi: F8) -> I8:
    """Per-customer number of events with ``lo[i] < t <= hi[i]``."""
    m = (ev_t > lo[ev_i]) & (ev_t <= hi[ev_i])
    return np.bincount(ev_i[m], minlength=n).astype(np.int64)


def simulate_forward(
    rng: np.random.Generator,
    lat: Latent,
    state: StartState,
    t_end: F8,
    campaigns: F8,
    params: SimParams,
) -> ForwardResult:
    """Simulate stages, complaints, tickets and retention contacts on ``[t0, t_end)``.

    Exact: the hazard is piecewise constant between breakpoints, the decline time is the first
    passage of its integral over an Exp(1) draw, and at each campaign the treated customers'
    futures are re-drawn from the campaign time with the new hazard (memorylessness).
    """
    n = len(lat)
    t0 = state.t0
    # Exogenous complaint / ticket streams over the whole window (truncated at death at the end).
    ci, ct = _poisson_times(rng, lat.complaint_rate, t0, t_end)
    ki, kt = _poisson_times(rng, lat.ticket_rate, t0, t_end)
    bc, bt = params.beta_complaint, params.beta_ticket
    hz_i = [state.hz_i, ci, ci, ki, ki]
    hz_t = [state.hz_t, ct, ct + params.complaint_window_days, kt, kt + params.ticket_window_days]
    hz_d = [
        state.hz_d,
        np.full(len(ci), bc),
        np.full(len(ci), -bc),
        np.full(len(ki), bt),
        np.full(len(ki), -bt),
    ]
    ev_i, ev_t, ev_d = np.concatenate(hz_i), np.concatenate(hz_t), np.concatenate(hz_d)
    all_ci = np.concatenate([state.compl_i, ci])
    all_ct = np.concatenate([state.compl_t, ct])
    all_ki = np.concatenate([state.tick_i, ki])
    all_kt = np.concatenate([state.tick_t, kt])

    def log_h_at(sel: I8, t: F8) -> F8:
        # log-hazard just after time t (breakpoints at or before t included).
        tt = np.full(n, -np.inf)
        tt[sel] = t
        m = ev_t <= tt[ev_i]
        off = np.bincount(ev_i[m], weights=ev_d[m], minlength=n)
        return lat.log_hazard[sel] + off[sel]

    def draw_decline(sel: I8, t_from: F8) -> F8:
        mask = np.full(n, -1, np.int64)
        mask[sel] = np.arange(len(sel))
        m = mask[ev_i] >= 0
        return first_passage(
            t_from,
            t_end[sel],
            log_h_at(sel, t_from),
            mask[ev_i[m]],
            ev_t[m],
            ev_d[m],
            rng.exponential(1.0, len(sel)),
        )

    mu = params.declining_mean_days
    active_from = t0.copy()
    decline = np.full(n, np.inf)
    death = np.full(n, np.inf)
    st0 = state.stage
    a = np.flatnonzero(st0 == ACTIVE)
    decline[a] = draw_decline(a, t0[a])
    death[a] = decline[a] + rng.exponential(mu, len(a))
    d1 = np.flatnonzero(st0 == DECLINING)
    decline[d1] = t0[d1]
    death[d1] = t0[d1] + rng.exponential(mu, len(d1))
    d2 = np.flatnonzero(st0 == DEAD)
    decline[d2] = state.dead_since[d2]
    death[d2] = state.dead_since[d2]
    dead_since = np.where(st0 == DEAD, state.dead_since, death)

    arch_i: list[I8] = []
    arch_s: list[I8] = []
    arch_f: list[F8] = []
    arch_t: list[F8] = []
    contacts: list[tuple[I8, F8, I8, B1, I8, F8, F8, B1]] = []
    last_contact = state.last_contact.copy()

    for d in campaigns:
        dd = np.full(n, d)
        elig = (
            (lat.signup <= d - params.min_tenure_days)
            & (t0 < d)
            & (t_end > d)
            & (d - last_contact >= params.recontact_days)
        )
        if not elig.any():
            continue
        stage = np.where(d < decline, ACTIVE, np.where(d < death, DECLINING, DEAD))
        alive_to = np.minimum(dd, death)
        nc90 = _window_counts(n, all_ci, all_ct, dd - 90.0, alive_to)
        nt90 = _window_counts(n, all_ki, all_kt, dd - 90.0, alive_to)
        idx = np.flatnonzero(elig)
        u = rng.random((len(idx), 6))
        risk = (
            log_h_at(idx, dd[idx])
            - np.log(params.hazard_mean)
            + rng.normal(0.0, params.risk_noise_sd, len(idx))
            + 1.5 * (stage[idx] == DECLINING)
        )
        st = stage[idx]
        value = lat.daily_value[idx]
        tenure = d - lat.signup[idx]
        since_death = d - dead_since[idx]
        rules = [
            ("care_email", (nc90[idx] >= 1) & (u[:, 0] < 0.7)),
            (
                "winback_offer",
                ((st == DECLINING) & (u[:, 1] < 0.4))
                | ((st == DEAD) & (since_death < 180.0) & (u[:, 1] < 0.15)),
            ),
            ("vip_outreach", (value >= params.vip_daily_value) & (risk > 1.0) & (u[:, 2] < 0.6)),
            ("exclusive_offer", (risk > params.risk_threshold) & (u[:, 3] < 0.5)),
            ("satisfaction_survey", (nt90[idx] >= 1) & (u[:, 4] < 0.2)),
            ("loyalty_bonus", (tenure >= 365.0) & (st == ACTIVE) & (u[:, 5] < 0.03)),
        ]
        action = np.full(len(idx), -1, np.int64)
        for name, cond in rules:
            action = np.where((action < 0) & cond, ACTIONS.index(name), action)
        tg = action >= 0
        if not tg.any():
            continue
        ti, ta, tst = idx[tg], action[tg], st[tg]
        treated = rng.random(len(ti)) < params.treated_share
        mult, prev = true_effect(params, ta, lat.segment[ti], lat.daily_value[ti], nc90[ti])
        rev_draw = rng.random(len(ti))
        reverted = treated & (tst == DECLINING) & (rev_draw < prev)
        last_contact[ti] = d
        # Treated contacts change the hazard for effect_days from d.
        tr = ti[treated]
        lm = np.log(mult[treated])
        ev_i = np.concatenate([ev_i, tr, tr])
        ev_t = np.concatenate([ev_t, np.full(len(tr), d), np.full(len(tr), d + params.effect_days)])
        ev_d = np.concatenate([ev_d, lm, -lm])
        # Reverting customers: archive their finished active/declining spells.
        rv = ti[reverted]
        if len(rv):
            arch_i += [rv, rv]
            arch_s += [np.full(len(rv), ACTIVE), np.full(len(rv), DECLINING)]
            arch_f += [active_from[rv], decline[rv]]
            arch_t += [decline[rv], np.full(len(rv), d)]
            active_from[rv] = d
        redraw = np.concatenate([ti[treated & (tst == ACTIVE)], rv])
        if len(redraw):
            decline[redraw] = draw_decline(redraw, np.full(len(redraw), d))
            death[redraw] = decline[redraw] + rng.exponential(mu, len(redraw))
            dead_since[redraw] = death[redraw]
        contacts.append((ti, np.full(len(ti), d), ta, treated, tst, mult, prev, reverted))

    # Final stage path on [t0, t_end).
    ii = np.arange(n, dtype=np.int64)
    seg_i = np.concatenate([*arch_i, ii, ii, ii])
    seg_s = np.concatenate(
        [*arch_s, np.full(n, ACTIVE), np.full(n, DECLINING), np.full(n, DEAD)]
    ).astype(np.int64)
    seg_f = np.concatenate([*arch_f, active_from, decline, death])
    seg_t = np.concatenate([*arch_t, decline, death, np.full(n, np.inf)])
    seg_f = np.maximum(seg_f, t0[seg_i])
    seg_t = np.minimum(seg_t, t_end[seg_i])
    ok = seg_t > seg_f
    order = np.lexsort((seg_f[ok], seg_i[ok]))
    seg_i, seg_s, seg_f, seg_t = (x[ok][order] for x in (seg_i, seg_s, seg_f, seg_t))

    alive_c = ct < death[ci]
    alive_k = kt < death[ki]
    if contacts:
        cols = [np.concatenate([c[k] for c in contacts]) for k in range(8)]
    else:
        cols = [np.empty(0, t) for t in (np.int64, float, np.int64, bool, np.int64, float, float,
                                         bool)]
    return ForwardResult(
        seg_i=seg_i,
        seg_stage=seg_s,
        seg_from=seg_f,
        seg_to=seg_t,
        compl_i=ci[alive_c],
        compl_t=ct[alive_c],
        tick_i=ki[alive_k],
        tick_t=kt[alive_k],
        contact_i=cols[0].astype(np.int64),
        contact_t=cols[1].astype(np.float64),
        contact_action=cols[2].astype(np.int64),
        contact_treated=cols[3].astype(bool),
        contact_stage=cols[4].astype(np.int64),
        contact_mult=cols[5].astype(np.float64),
        contact_revert_prob=cols[6].astype(np.float64),
        contact_reverted=cols[7].astype(bool),
        final_decline=decline,
        final_death=death,
    )


def stage_multiplier(params: SimParams, stream: str) -> F8:
    """Rate multiplier of a stream per stage, indexed by stage code."""
    return np.array(
        [1.0, params.declining_multipliers[stream], params.dead_multipliers[stream]]
    )


def purchase_hazard_integral(
    lat: Latent, res: ForwardResult, season: F8, lo: F8, hi: F8, params: SimParams
) -> F8:
    """Per customer, the integral of the purchase rate over its path within ``[lo, hi)``.

    ``exp(-integral)`` is the probability of no purchase given the path (Poisson process).
    """
    n = len(lat)
    i = res.seg_i
    a = np.maximum(res.seg_from, lo[i])
    b = np.minimum(res.seg_to, hi[i])
    ok = b > a
    m = stage_multiplier(params, "purchase")[res.seg_stage]
    w = np.where(
        ok, lat.purchase_rate[i] * m * (season_integral(season, b) - season_integral(season, a)), 0
    )
    return np.bincount(i, weights=w, minlength=n).astype(np.float64)


def sample_purchases(
    rng: np.random.Generator, lat: Latent, res: ForwardResult, season: F8, params: SimParams
) -> tuple[I8, F8]:
    """Purchase times by thinning: candidates at the max seasonal rate, kept w.p. rate/max."""
    i = res.seg_i
    m = stage_multiplier(params, "purchase")[res.seg_stage]
    smax = float(season.max())
    lam = lat.purchase_rate[i] * m * smax
    n = rng.poisson(lam * (res.seg_to - res.seg_from))
    k = np.repeat(np.arange(len(i)), n)
    t = res.seg_from[k] + rng.random(len(k)) * (res.seg_to - res.seg_from)[k]
    day = np.minimum(np.floor(t).astype(np.int64), len(season) - 1)
    keep = rng.random(len(k)) * smax < season[day]
    return i[k[keep]], t[keep]


def sample_interactions(
    rng: np.random.Generator, lat: Latent, res: ForwardResult, params: SimParams
) -> tuple[I8, F8, I8]:
    """Interaction times per stream (homogeneous within a stage spell).

    Returns ``(customer, time, stream index into INTERACTIONS)``.
    """
    i = res.seg_i
    mult = np.stack([stage_multiplier(params, s)[res.seg_stage] for s in INTERACTIONS], axis=1)
    rate = lat.interaction_rates[i] * mult
    length = (res.seg_to - res.seg_from)[:, None]
    n = rng.poisson(rate * length).ravel()
    flat = np.repeat(np.arange(len(n)), n)
    k, stream = np.divmod(flat, len(INTERACTIONS))
    t = res.seg_from[k] + rng.random(len(k)) * (res.seg_to - res.seg_from)[k]
    return i[k], t, stream.astype(np.int64)
