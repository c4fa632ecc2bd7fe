"""Closed forms for what a replication policy costs and how often it accepts a wrong result.

docs/verification.md derives each formula; the simulation (verifier/simulation.py) checks them. Fixed k is
computed exactly by enumerating replica draws through the same `quorum.decide` rule the verifier uses, so
escalation is counted the way it really happens; the adaptive figures are steady-state renewal arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

from hashgrid.errors import InvalidInput
from verifier.quorum import Verdict, decide


@dataclass(frozen=True)
class FixedKFigures:
    """Per task: probability a wrong hash is accepted, that the task fails, expected replica-runs."""

    p_wrong: float
    p_fail: float
    runs_per_task: float

    @property
    def runs_per_accepted(self) -> float:
        return self.runs_per_task / (1.0 - self.p_fail)

    @property
    def wrong_per_accepted(self) -> float:
        return self.p_wrong / (1.0 - self.p_fail)


def fixed_k(f: float, k: int, quorum: int, *, max_replicas: int | None = None,
            colluding: bool = True) -> FixedKFigures:
    """Fixed k replicas drawn from a large population with a fraction `f` of naive cheaters.

    `colluding`: every cheater returns the same wrong hash (worst case); otherwise each wrong hash is its own.
    Escalation adds the replicas `decide` asks for, up to `max_replicas` (default k: no escalation).
    """
    if not 0.0 <= f <= 1.0:
        raise InvalidInput(f"f must be in [0, 1], got {f}", f=f)
    limit = k if max_replicas is None else max_replicas
    totals = [0.0, 0.0, 0.0]  # p_wrong, p_fail, expected runs

    def walk(hashes: list[str], prob: float, todo: int) -> None:
        if todo:
            wrong = "bad" if colluding else f"bad{len(hashes)}"
            walk([*hashes, "ok"], prob * (1.0 - f), todo - 1)
            if f > 0.0:
                walk([*hashes, wrong], prob * f, todo - 1)
            return
        d = decide({str(i): h for i, h in enumerate(hashes)}, quorum=quorum, max_replicas=limit)
        if d.verdict is Verdict.ESCALATE:
            walk(hashes, prob, d.extra_replicas)
            return
        totals[2] += prob * len(hashes)
        if d.verdict is Verdict.FAILED:
            totals[1] += prob
        elif d.accepted_hash != "ok":
            totals[0] += prob

    walk([], 1.0, k)
    return FixedKFigures(*totals)


def k3q2_wrong(f: float) -> float:
    """P(wrong accepted) for k=3, q=2 and colluding cheaters: at least two of three replicas cheat."""
    return 3 * f * f * (1 - f) + f**3


@dataclass(frozen=True)
class AdaptiveFigures:
    """Steady state of the `standard` trust level (all tasks are accepted there; nothing fails).

    `theta`: fraction of the time a strategic cheater's slot is trusted; `phi`: share of the trusted pool that
    is a strategic cheater; `wrong_rate`: wrong results accepted per accepted task; `wrong_per_identity`:
    wrong results one strategic identity gets accepted before it is caught; `p_caught_per_cheat`.
    """

    runs_per_accepted: float
    wrong_rate: float
    theta: float = 0.0
    phi: float = 0.0
    wrong_per_identity: float = 0.0
    p_caught_per_cheat: float = 0.0
    cheats_per_identity: float = 0.0


def adaptive_naive(f: float, s: float, c: float) -> AdaptiveFigures:
    """A fraction `f` of naive cheaters (always wrong), spot-check rate `s`, canaries `c` per real task.

    No naive cheater is ever trusted (it dissents on its first checked task), so a trusted primary is honest
    and runs alone (+ s for the spot check); an untrusted one runs with a trusted partner, disagrees, and one
    trusted escalation replica settles it (3 runs). Every accepted hash had an honest trusted vote: no wrong.
    """
    return AdaptiveFigures(runs_per_accepted=(1 - f) * (1 + s) + 3 * f + c, wrong_rate=0.0)


def adaptive_strategic(f: float, s: float, c: float, p: float, trust_streak: int,
                       solo_streak: int | None = None, *, iterations: int = 200) -> AdaptiveFigures:
    """A fraction `f` of strategic cheaters: honest until trusted to run alone, then wrong on a fraction `p`
    of the tasks they run alone (their own tasks, canaries and spot-check re-runs all look alike), honest
    whenever other replicas are visible. A caught identity re-enters at once as a fresh one (worst case).

    Per real task and provider (N providers): own tasks 1/N, canaries c/N. Probation has two legs: up to
    `trust_streak` clean outcomes at rate (1+c)/N, then (trusted to check, so also partnering the fraction
    1-S of tasks whose primary may not run alone and spot-checking the s·S that do, spread over the share v
    of providers trusted to check) up to `solo_streak` at rate (1 + c + (1-S+sS)/v)/N. A solo cheater is
    caught at rate p·(c + s(1-φ_v·p) + (sS/v)(1-φp))/N; θ, S and v are solved as a fixed point.
    """
    if not 0 < p <= 1:
        raise InvalidInput(f"p must be in (0, 1], got {p}", p=p)
    solo = trust_streak if solo_streak is None else solo_streak
    theta, v = 0.0, 1.0 - f
    share = 1.0 - f  # S: share of providers that may run alone
    phi = phi_v = catch = 0.0
    for _ in range(iterations):
        share = 1 - f + f * theta
        phi, phi_v = f * theta / share, f * theta / v
        catch = c + s * (1 - phi_v * p) + s * share / v * (1 - phi * p)
        first = trust_streak / (1 + c)
        second = (solo - trust_streak) / (1 + c + (1 - share + s * share) / v)
        trusted_time = 1 / (p * catch)
        life = first + second + trusted_time
        theta = trusted_time / life
        v = 1 - f * first / life
    alone_wrong = 1 - s + s * phi_v * p
    mismatch = phi * p * (1 - phi_v * p) + (1 - phi * p) * phi_v * p
    runs = share * (1 + s + s * mismatch) + 2 * (1 - share) + c
    alone_runs = 1 + c + s * share / v
    return AdaptiveFigures(
        runs_per_accepted=runs,
        wrong_rate=f * theta * p * alone_wrong,
        theta=theta,
        phi=phi,
        wrong_per_identity=alone_wrong / catch,
        p_caught_per_cheat=catch / alone_runs,
        cheats_per_identity=alone_runs / catch,
    )


@dataclass(frozen=True)
class CheatEconomics:
    """What one cheat costs a strategic provider in expectation, against what it gains."""

    expected_loss_per_cheat: float
    gain_per_cheat: float
    break_even_slash: float

    @property
    def deterred(self) -> bool:
        return self.expected_loss_per_cheat > self.gain_per_cheat


def cheat_economics(p_caught_per_cheat: float, slashed: float, gain_per_cheat: float) -> CheatEconomics:
    """Expected loss = P(caught per cheat) × slashed stake; cheating pays only if that is below the gain (the
    compute it skipped, at most the run's price). `break_even_slash` is the slash at which it stops paying."""
    return CheatEconomics(p_caught_per_cheat * slashed, gain_per_cheat, gain_per_cheat / p_caught_per_cheat)
