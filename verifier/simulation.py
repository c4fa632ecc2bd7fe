"""Seeded Monte Carlo of a provider population under a replication policy, to check docs/verification.md.

Honest providers, naive cheaters (always the same wrong hash, or each its own) and strategic cheaters (honest
until trusted to run alone, then wrong on a fraction of the tasks they run alone) take real tasks and
canaries; the real `plan`, `decide` and reputation `update` run on every task. A convicted cheater
re-enters at once as a fresh identity of the same kind (worst case: slashing never shrinks the cheating
fraction). Stdlib only.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field

from verifier.quorum import Decision, Verdict, decide
from verifier.replication import Plan, ReplicationPolicy, Standing, TrustLevel, fixed_plan, plan
from verifier.reputation import Outcome, ProviderRecord, ReputationParams, is_trusted, may_run_alone, update

HONEST, NAIVE, STRATEGIC = 0, 1, 2
OK = "ok"
CHANNEL = {Outcome.CANARY_FAIL: "canary", Outcome.SPOT_FAIL: "spot", Outcome.DISSENTED: "dissent"}


@dataclass(frozen=True)
class Population:
    """`naive`/`strategic`: fractions of providers of each cheating kind; `cheat_rate`: p of strategic ones;
    `colluding`: all wrong hashes are equal (worst case) rather than each its own."""

    providers: int = 200
    naive: float = 0.0
    strategic: float = 0.0
    cheat_rate: float = 0.1
    colluding: bool = True


@dataclass(frozen=True)
class SimConfig:
    """`fixed` = (k, quorum) for fixed replication, else the trust level applies. Figures count only tasks
    after `warmup` (the bootstrap, when nobody is trusted yet, is reported apart), in `batches` batches."""

    tasks: int = 100_000
    warmup: int = 20_000
    seed: int = 0
    fixed: tuple[int, int] | None = None
    trust_level: TrustLevel = TrustLevel.STANDARD
    policy: ReplicationPolicy = field(default_factory=ReplicationPolicy)
    reputation: ReputationParams = field(default_factory=ReputationParams)
    population: Population = field(default_factory=Population)
    batches: int = 20


@dataclass(slots=True)
class Tally:
    """Counts over a span of real tasks (canary runs are counted in `runs` too: they are overhead)."""

    tasks: int = 0
    accepted: int = 0
    failed: int = 0
    wrong: int = 0
    runs: int = 0

    @property
    def runs_per_accepted(self) -> float:
        return self.runs / self.accepted if self.accepted else float("nan")

    @property
    def wrong_rate(self) -> float:
        return self.wrong / self.accepted if self.accepted else float("nan")

    @property
    def fail_rate(self) -> float:
        return self.failed / self.tasks if self.tasks else float("nan")


@dataclass
class SimResult:
    """The measured span (`total`), its batches (for batch-means standard errors), the bootstrap span, and
    per-mechanism counts."""

    total: Tally
    batches: list[Tally]
    bootstrap: Tally
    caught: dict[str, int]
    cheats: int = 0
    spot_checks: int = 0
    escalations: int = 0
    canaries: int = 0
    theta: float = 0.0
    phi: float = 0.0
    honest_trusted: float = 0.0
    wrong_per_identity: list[int] = field(default_factory=list)

    def se(self, metric: str) -> float:
        """Batch-means standard error of a `Tally` rate such as `runs_per_accepted` (tasks within a batch
        correlate through the reputations, batches far less)."""
        values = [getattr(b, metric) for b in self.batches if b.accepted]
        return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")


class _World:
    """One run's mutable state: kinds, records, the trusted pool (O(1) add, remove, sample) and who may run
    alone (`solo`)."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        pop = cfg.population
        n = pop.providers
        n_naive, n_strategic = round(pop.naive * n), round(pop.strategic * n)
        self.kind = [NAIVE] * n_naive + [STRATEGIC] * n_strategic + [HONEST] * (n - n_naive - n_strategic)
        self.records = [ProviderRecord() for _ in range(n)]
        self.trusted = [False] * n
        self.solo = [False] * n
        self.solo_count = 0
        self.pool: list[int] = []
        self.pos: dict[int, int] = {}
        self.strategic_trusted = 0
        self.identity_wrong = [0] * n
        self.born = [0] * n
        self.wrong_serial = 0
        self.now = 0
        self.measuring = False
        self.result = SimResult(Tally(), [Tally() for _ in range(cfg.batches)], Tally(),
                                {"dissent": 0, "canary": 0, "spot": 0})

    # trusted pool (may check others) and solo flags (may run alone)
    def _set_trusted(self, slot: int, value: bool, solo: bool) -> None:
        if self.solo[slot] != solo:
            self.solo[slot] = solo
            self.solo_count += 1 if solo else -1
            if self.kind[slot] == STRATEGIC:
                self.strategic_trusted += 1 if solo else -1
        if self.trusted[slot] == value:
            return
        self.trusted[slot] = value
        if value:
            self.pos[slot] = len(self.pool)
            self.pool.append(slot)
        else:
            i = self.pos.pop(slot)
            last = self.pool.pop()
            if last != slot:
                self.pool[i] = last
                self.pos[last] = i

    def pick(self, count: int, used: set[int], trusted_only: bool) -> list[int]:
        """`count` distinct providers not in `used` (from the trusted pool when asked and big enough)."""
        rng = self.rng
        chosen: list[int] = []
        source = self.pool if trusted_only and len(self.pool) >= len(used) + count + 1 else None
        n = len(self.kind)
        while len(chosen) < count:
            slot = rng.choice(source) if source is not None else rng.randrange(n)
            if slot not in used:
                used.add(slot)
                chosen.append(slot)
        return chosen

    def answer(self, slot: int, alone: bool) -> str:
        kind = self.kind[slot]
        if kind == HONEST:
            return OK
        if kind == STRATEGIC:
            if not (alone and self.solo[slot] and self.rng.random() < self.cfg.population.cheat_rate):
                return OK
            if self.measuring:
                self.result.cheats += 1
        if self.cfg.population.colluding:
            return "bad"
        self.wrong_serial += 1
        return f"bad{self.wrong_serial}"

    def record(self, slot: int, outcome: Outcome) -> None:
        rec = update(self.records[slot], outcome, self.cfg.reputation)
        if outcome in CHANNEL and self.kind[slot] != HONEST:
            if self.measuring:
                self.result.caught[CHANNEL[outcome]] += 1
                if self.kind[slot] == STRATEGIC and self.born[slot] >= self.cfg.warmup:
                    self.result.wrong_per_identity.append(self.identity_wrong[slot])
            rec = ProviderRecord()  # slashed; the same kind re-enters as a fresh identity
            self.identity_wrong[slot] = 0
            self.born[slot] = self.now
        elif rec.slash_pending:
            rec = ProviderRecord(rec.good, rec.bad, rec.streak, rec.verified, rec.dissents, rec.caught, False)
        self.records[slot] = rec
        self._set_trusted(slot, is_trusted(rec, self.cfg.reputation), may_run_alone(rec, self.cfg.reputation))

    def settle(self, reveals: dict[str, str | None], quorum: int, max_replicas: int,
               trusted_only: bool, used: set[int]) -> tuple[Decision, int]:
        """Decide, escalating with visible (so never strategic-cheated) replicas; returns extra runs."""
        extra = 0
        while True:
            d = decide(reveals, quorum=quorum, max_replicas=max_replicas)
            if d.verdict is not Verdict.ESCALATE:
                return d, extra
            if self.measuring:
                self.result.escalations += 1
            for slot in self.pick(d.extra_replicas, used, trusted_only):
                reveals[str(slot)] = self.answer(slot, alone=False)
                extra += 1

    def canary(self, tally: Tally) -> None:
        slot = self.rng.randrange(len(self.kind))
        tally.runs += 1
        if self.measuring:
            self.result.canaries += 1
        ok = self.answer(slot, alone=True) == OK
        self.record(slot, Outcome.CANARY_PASS if ok else Outcome.CANARY_FAIL)

    def task(self, tally: Tally, fixed: Plan | None) -> None:
        cfg, rng = self.cfg, self.rng
        if fixed is None and cfg.policy.canary_rate and rng.random() < cfg.policy.canary_rate:
            self.canary(tally)
        primary = rng.randrange(len(self.kind))
        if fixed is not None:
            pl = fixed
        else:
            pool = len(self.pool) - (1 if self.trusted[primary] else 0)
            pl = plan(Standing(cfg.trust_level, primary_trusted=self.trusted[primary],
                               primary_solo=self.solo[primary], trusted_pool=pool, spot_draw=rng.random()),
                      policy=cfg.policy)
        used = {primary}
        replicas = [primary, *self.pick(pl.k - 1, used, pl.partners_trusted)]
        alone = pl.k == 1
        reveals: dict[str, str | None] = {str(s): self.answer(s, alone and s == primary) for s in replicas}
        d, extra = self.settle(reveals, pl.quorum, pl.max_replicas, pl.partners_trusted, used)
        runs = pl.k + extra
        spot = d.verdict is Verdict.ACCEPTED and pl.spot_check
        if spot:
            (checker,) = self.pick(1, used, True)
            reveals[str(checker)] = self.answer(checker, alone=True)
            d, extra = self.settle(reveals, 2, 2 + cfg.policy.extra_replicas, True, used)
            runs += 1 + extra
            if self.measuring:
                self.result.spot_checks += 1
        tally.tasks += 1
        tally.runs += runs
        if d.verdict is not Verdict.ACCEPTED:
            tally.failed += 1
            return
        tally.accepted += 1
        if d.accepted_hash != OK:
            tally.wrong += 1
            if self.kind[primary] == STRATEGIC:
                self.identity_wrong[primary] += 1
        if pl.k == 1 and not spot:
            return  # nobody checked it: no verified outcome for anyone
        first = {str(primary), str(checker)} if spot else set()
        for name in d.agreeing:
            self.record(int(name), Outcome.SPOT_PASS if name in first else Outcome.AGREED)
        for name in d.dissenting:
            self.record(int(name), Outcome.SPOT_FAIL if name in first else Outcome.DISSENTED)

    def run(self) -> SimResult:
        cfg, res = self.cfg, self.result
        fixed = fixed_plan(*cfg.fixed, policy=cfg.policy) if cfg.fixed else None
        measured = cfg.tasks
        per_batch = max(1, measured // cfg.batches)
        theta_sum = phi_sum = honest_sum = 0.0
        n_strategic = sum(1 for k in self.kind if k == STRATEGIC)
        n_honest = sum(1 for k in self.kind if k == HONEST)
        for t in range(cfg.warmup + measured):
            self.now = t
            self.measuring = t >= cfg.warmup
            if not self.measuring:
                self.task(res.bootstrap, fixed)
                continue
            self.task(res.batches[min((t - cfg.warmup) // per_batch, cfg.batches - 1)], fixed)
            if fixed is not None:
                continue
            if n_strategic:
                theta_sum += self.strategic_trusted / n_strategic
            if self.solo_count:
                phi_sum += self.strategic_trusted / self.solo_count
            if n_honest:
                honest_sum += (self.solo_count - self.strategic_trusted) / n_honest
        res.theta, res.phi, res.honest_trusted = (x / measured for x in (theta_sum, phi_sum, honest_sum))
        for b in res.batches:
            for name in ("tasks", "accepted", "failed", "wrong", "runs"):
                setattr(res.total, name, getattr(res.total, name) + getattr(b, name))
        return res


def simulate(cfg: SimConfig) -> SimResult:
    """Run `cfg.warmup + cfg.tasks` real tasks (plus canaries) and return the measured figures."""
    return _World(cfg).run()
