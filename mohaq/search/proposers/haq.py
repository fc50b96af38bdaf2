"""HAQ: a reinforcement-learning agent searching precisions under a hardware budget.

After Wang et al., "HAQ: Hardware-Aware Automated Quantization with Mixed
Precision" (CVPR 2019), on this toolkit's genes and cost models:

* an episode walks the genes in layer order; at each step the DDPG agent
  (:mod:`~mohaq.search.proposers.haq_agent`) sees the gene's state (index,
  share of weight points, input and output sizes, parameters and MACs per frame
  of the product it belongs to, all min-max normalised over the model, and its
  previous action) and takes a continuous action a in [0, 1], mapped to choice
  ``floor(a x choices)`` of the sorted bit choices (HAQ's
  ``round(b_min - 0.5 + a (b_max - b_min + 1))`` over choice indices);
* the policy is then brought under the budget (HAQ's enforcement, with the
  step order of :mod:`~mohaq.search.proposers.haq_budget`), so every proposed
  assignment fits; the loop evaluates it as an ordinary record;
* the reward is ``lambda x (accuracy_quantized - accuracy_float)`` in percentage
  points, i.e. ``-lambda x 100 x (error - float_error)``; the float error is the
  error of the uniform assignment at the highest bit choice (16 bits, the
  first baseline the loop evaluates; PTQ at 16 bits is float to within
  noise); until that outcome arrives, the lowest error seen stands in;
* the first ``warmup_episodes`` episodes take uniform random actions and only
  fill the replay memory; afterwards the actor's action gets truncated-normal
  noise of width ``noise_sigma x noise_decay^(episode - warmup)``, and each
  stored step brings ``updates_per_step`` minibatch updates.

An episode that lands on an assignment already evaluated (or in flight) costs
no evaluation: its steps join the replay memory with the known outcome's
reward (or the one in flight, when it arrives) and the agent plays another
episode, with twice the exploration noise each time, up to ``max_replays``
times, so the evaluation budget goes to new assignments (the budget funnels
many policies into few assignments, and a converging agent repeats itself);
if all of them land on known assignments, an unseen neighbour within the
budget (one random gene changed, then enforced) is proposed instead. Minibatch updates, noise decay and warm-up count the episodes
proposed to the loop only, so the agent's compute per evaluation is bounded
(``genes x updates_per_step`` updates).

Sweep: ``sweep`` lists budget fractions searched one after another, each with
an equal share of the evaluation budget and a fresh agent (the agent's state
does not know the budget); the error model that orders the enforcement steps
is shared. The records of all budgets together trace an error/cost front
comparable with the multi-objective algorithms'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mohaq.search.objectives import ERROR
from mohaq.search.problem import SearchProblem
from mohaq.search.proposers.base import (
    AlgorithmOptions,
    Genes,
    Outcome,
    Proposer,
    ProposerContext,
)
from mohaq.search.proposers.haq_agent import DDPGAgent
from mohaq.search.proposers.haq_budget import (
    Budget,
    BudgetEnforcer,
    BudgetError,
    cheapest_assignment,
    check_budget_metric,
    resolve_budgets,
)
from mohaq.search.proposers.haq_sensitivity import AdditiveErrorModel
from mohaq.search.proposers.registry import AlgorithmError, register_proposer

if TYPE_CHECKING:
    from mohaq.search.callbacks import SearchCallback

#: The budget when none is given: HAQ's "half the 8-bit latency".
DEFAULT_FRACTION = 0.5


def _check(condition: bool, name: str, value: Any, allowed: str) -> None:
    if not condition:
        raise AlgorithmError(f"HAQ {name} must be {allowed}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class HAQ(AlgorithmOptions):
    """HAQ's DDPG agent under a hardware budget (one budget, or a sweep of budgets).

    Args:
        budget_metric: the platform metric the budget bounds (lower is better:
            latency_cycles, latency_s, energy, memory_mb, ... of the platform).
        budget_fraction: the budget as a fraction of the metric at uniform
            ``baseline_bits`` (0.5: half the 8-bit latency). Default 0.5 when
            neither budget_value nor sweep is given.
        budget_value: an absolute budget in the metric's unit, instead of a fraction.
        baseline_bits: the uniform precision a fraction refers to (a bit choice).
        sweep: fractions searched one after another, each with an equal share
            of the evaluation budget and a fresh agent: a front of budgets.
        warmup_episodes: episodes of uniform random actions that only fill the
            replay memory (in a sweep: per budget, at most half of its episodes).
        reward_lambda: HAQ's lambda: reward = lambda x accuracy change over float,
            in percentage points.
        noise_sigma: initial width of the truncated-normal exploration noise.
        noise_decay: factor applied to the noise width after each learning episode.
        hidden: units of the two hidden layers of actor and critic.
        actor_lr: Adam learning rate of the actor.
        critic_lr: Adam learning rate of the critic.
        tau: soft-update factor of the target networks.
        discount: discount factor (1: the reward comes at the end of an episode).
        batch_size: transitions per minibatch update.
        memory_per_step: replay memory capacity per step of an episode (per gene).
        updates_per_step: minibatch updates per stored step after the warm-up.
        max_replays: episodes played on already-evaluated assignments (stored
            with their known outcome) before a duplicate is proposed anyway.
    """

    budget_metric: str = "latency_cycles"
    budget_fraction: float | None = None
    budget_value: float | None = None
    baseline_bits: int = 8
    sweep: list[float] | None = None
    warmup_episodes: int = 20
    reward_lambda: float = 0.1
    noise_sigma: float = 0.5
    noise_decay: float = 0.99
    hidden: int = 300
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    tau: float = 0.01
    discount: float = 1.0
    batch_size: int = 64
    memory_per_step: int = 128
    updates_per_step: int = 1
    max_replays: int = 10

    def __post_init__(self) -> None:
        given = [
            name
            for name in ("budget_fraction", "budget_value", "sweep")
            if getattr(self, name) is not None
        ]
        if len(given) > 1:
            raise AlgorithmError(
                f"HAQ takes one of budget_fraction, budget_value and sweep; got {given}"
            )
        _check(
            isinstance(self.budget_metric, str) and bool(self.budget_metric),
            "budget_metric",
            self.budget_metric,
            "a metric name of the platform",
        )
        if self.budget_fraction is not None:
            _check(self.budget_fraction > 0, "budget_fraction", self.budget_fraction, "> 0")
        if self.budget_value is not None:
            _check(self.budget_value > 0, "budget_value", self.budget_value, "> 0")
        if self.sweep is not None:
            self.sweep = [float(f) for f in self.sweep]
            _check(
                bool(self.sweep) and all(f > 0 for f in self.sweep),
                "sweep",
                self.sweep,
                "a non-empty list of fractions > 0",
            )
            _check(
                len(set(self.sweep)) == len(self.sweep),
                "sweep",
                self.sweep,
                "a list without repeats",
            )
        for name in ("hidden", "batch_size", "memory_per_step", "baseline_bits"):
            _check(
                _is_int(getattr(self, name)) and getattr(self, name) >= 1,
                name,
                getattr(self, name),
                "an integer >= 1",
            )
        for name in ("warmup_episodes", "updates_per_step", "max_replays"):
            _check(
                _is_int(getattr(self, name)) and getattr(self, name) >= 0,
                name,
                getattr(self, name),
                "an integer >= 0",
            )
        for name in ("reward_lambda", "noise_sigma", "actor_lr", "critic_lr"):
            _check(getattr(self, name) > 0, name, getattr(self, name), "> 0")
        for name in ("noise_decay", "tau", "discount"):
            _check(0 < getattr(self, name) <= 1, name, getattr(self, name), "in (0, 1]")

    @property
    def fractions(self) -> list[float]:
        """The budgets as fractions of uniform ``baseline_bits`` (empty for budget_value)."""
        if self.sweep is not None:
            return list(self.sweep)
        if self.budget_value is not None:
            return []
        return [DEFAULT_FRACTION if self.budget_fraction is None else float(self.budget_fraction)]

    def callbacks(self) -> list[SearchCallback]:
        from mohaq.search.proposers.haq_report import BudgetReport

        return [BudgetReport(self)]


def step_features(problem: SearchProblem) -> np.ndarray:
    """Static state per gene, min-max normalised over the genes: index, share of
    weight points, input size, output size, parameters, MACs per frame of the
    matrix products the gene's points belong to (an activation belongs to the
    products it feeds; a state or operator point to its layer's)."""
    workload = problem.workload
    products = workload.matmul_weights()
    rows = []
    for index, gene in enumerate(problem.space.genes):
        found: dict[str, Any] = {}
        weights = 0
        for name in gene.points:
            point = workload.point(name)
            weights += point.kind == "weight"
            if point.kind == "weight" and point.macs_per_frame > 0:
                mine = [point]
            else:
                mine = [p for p in products if p.input_point == name] or [
                    p for p in products if p.layer == point.layer
                ]
            found.update({p.name: p for p in mine})
        feeds = list(found.values())
        rows.append(
            [
                index,
                weights / len(gene.points),
                max((p.in_features for p in feeds), default=0),
                sum(p.out_features for p in feeds),
                sum(p.params for p in feeds),
                sum(p.macs_per_frame for p in feeds),
            ]
        )
    table = np.asarray(rows, dtype=np.float64)
    low, high = table.min(axis=0), table.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    return ((table - low) / span).astype(np.float32)


@dataclass
class _Episode:
    """One walk over the genes and the assignment it led to."""

    segment: int
    states: np.ndarray
    actions: np.ndarray
    learn: bool  # past the warm-up: its steps bring updates
    genes: Genes
    replay: bool = False  # not proposed: its assignment was evaluated or in flight


@dataclass
class _Segment:
    """One budget of the sweep and its share of the episodes."""

    budget: Budget
    enforcer: BudgetEnforcer
    start: int
    length: int
    warmup: int


@register_proposer(
    "haq",
    options=HAQ,
    description="HAQ's DDPG agent under a hardware budget (budget_metric, budget_fraction "
    "or budget_value, or a sweep of budgets)",
)
class HAQProposer(Proposer):
    """HAQ behind ask/tell (see the module docstring).

    Raises:
        BudgetError: an unknown or maximised budget metric, or a budget that
            cannot be met (names the smallest achievable value), before any
            evaluation.
    """

    def __init__(self, options: HAQ, context: ProposerContext) -> None:
        super().__init__(options, context)
        problem = context.problem
        if ERROR not in problem.objectives.names:
            raise AlgorithmError("HAQ needs the error among the objectives (its reward)")
        self.error_index = problem.objectives.names.index(ERROR)
        check_budget_metric(problem, options.budget_metric)
        cheapest, cheapest_value = cheapest_assignment(problem, options.budget_metric)
        budgets = resolve_budgets(
            problem,
            metric=options.budget_metric,
            fractions=options.fractions,
            value=options.budget_value,
            baseline_bits=options.baseline_bits,
            cheapest=cheapest_value,
        )
        self.fallback = self._feasible_fallback(cheapest, budgets)
        self.model = AdditiveErrorModel(context.num_genes, problem.space.choices)
        self.features = step_features(problem)
        self.top = (context.num_choices - 1,) * context.num_genes
        planned = max(len(budgets), context.budget - len(problem.baseline_bits))
        self.segments: list[_Segment] = []
        for i, budget in enumerate(budgets):
            start, end = i * planned // len(budgets), (i + 1) * planned // len(budgets)
            self.segments.append(
                _Segment(
                    budget,
                    BudgetEnforcer(problem, budget, self.model, self.fallback),
                    start,
                    end - start,
                    options.warmup_episodes
                    if len(budgets) == 1
                    else min(options.warmup_episodes, (end - start) // 2),
                )
            )
        self.rng = np.random.default_rng(context.seed)
        self.agent: DDPGAgent | None = None
        self.agent_segment = -1
        self.episodes = 0  # episodes proposed to the loop
        self.known: dict[Genes, float] = {}
        self.float_error: float | None = None
        self.pending: dict[Genes, list[_Episode]] = {}  # asked, waiting for the outcome

    # -- budgets ----------------------------------------------------------------------------
    @property
    def budgets(self) -> list[Budget]:
        return [s.budget for s in self.segments]

    def _feasible_fallback(self, cheapest: Genes, budgets: list[Budget]) -> Genes:
        problem = self.context.problem
        candidate = cheapest if problem.is_feasible(cheapest) else problem.repair(cheapest)
        metric = self.options.budget_metric  # type: ignore[attr-defined]
        if candidate is None or not all(
            b.fits(problem.metrics(candidate)[metric]) for b in budgets
        ):
            raise BudgetError(
                f"the budget ({'; '.join(b.describe() for b in budgets)}) and the search's "
                f"constraints ({', '.join(c.describe() for c in problem.constraints) or 'platform'}) "
                "cannot be met together by lowering precisions; loosen one of them"
            )
        return candidate

    def _segment_index(self) -> int:
        index = 0
        for i, segment in enumerate(self.segments):
            if self.episodes >= segment.start:
                index = i
        return index

    # -- the agent --------------------------------------------------------------------------
    def _current_agent(self, segment: int) -> DDPGAgent:
        if self.agent is None or self.agent_segment != segment:
            options: HAQ = self.options  # type: ignore[assignment]
            seed = int(np.random.SeedSequence([self.context.seed, segment]).generate_state(1)[0])
            self.agent = DDPGAgent(
                self.features.shape[1] + 1,
                hidden=options.hidden,
                actor_lr=options.actor_lr,
                critic_lr=options.critic_lr,
                tau=options.tau,
                discount=options.discount,
                batch_size=options.batch_size,
                memory_size=options.memory_per_step * self.context.num_genes,
                seed=seed,
            )
            self.agent_segment = segment
        return self.agent

    def _play(self, retry: int = 0) -> _Episode:
        """One episode: an action per gene, mapped to choices and brought under the
        budget; the ``retry``-th replay after a duplicate explores with twice the
        noise each time (at most width 1)."""
        options: HAQ = self.options  # type: ignore[assignment]
        index = self._segment_index()
        segment = self.segments[index]
        agent = self._current_agent(index)
        played = self.episodes - segment.start
        warm = played < segment.warmup
        sigma = options.noise_sigma * options.noise_decay ** max(0, played - segment.warmup)
        sigma = min(1.0, sigma * 2.0**retry) if retry else sigma
        steps, width = self.features.shape
        states = np.zeros((steps, width + 1), dtype=np.float32)
        actions = np.zeros(steps, dtype=np.float32)
        previous = 1.0  # HAQ starts from the highest precision
        for t in range(steps):
            states[t, :width] = self.features[t]
            states[t, width] = previous
            action = (
                float(self.rng.uniform()) if warm else agent.explore(states[t], sigma, self.rng)
            )
            actions[t] = previous = action
        choices = self.context.num_choices
        raw = tuple(min(int(a * choices), choices - 1) for a in actions)
        genes = self._meet_constraints(segment.enforcer, segment.enforcer.enforce(raw))
        return _Episode(index, states, actions, not warm, genes)

    def _meet_constraints(self, enforcer: BudgetEnforcer, genes: Genes) -> Genes:
        """``genes`` (within the budget) also within the search's cheap constraints."""
        problem = self.context.problem
        for _ in range(3):
            if problem.is_feasible(genes):
                return genes
            repaired = problem.repair(genes)
            if repaired is None:
                break
            genes = enforcer.enforce(repaired)
        return genes if problem.is_feasible(genes) else self.fallback

    def _reference_error(self) -> float:
        if self.float_error is not None:
            return self.float_error
        return min(self.known.values(), default=0.0)

    def _learn(self, episode: _Episode, error: float) -> None:
        if episode.segment != self.agent_segment or self.agent is None:
            return  # its budget's agent is gone (an outcome that arrived late)
        options: HAQ = self.options  # type: ignore[assignment]
        reward = -options.reward_lambda * 100.0 * (error - self._reference_error())
        self.agent.remember(episode.states, episode.actions, reward)
        if episode.learn and not episode.replay:
            for _ in range(len(episode.actions) * options.updates_per_step):
                self.agent.update(self.rng)

    # -- ask/tell ---------------------------------------------------------------------------
    def ask(self, count: int) -> list[Genes]:
        options: HAQ = self.options  # type: ignore[assignment]
        asked = []
        for _ in range(count):
            episode = self._play()
            for retry in range(1, options.max_replays + 1):
                episode.replay = True
                if episode.genes in self.known:
                    self._learn(episode, self.known[episode.genes])
                elif episode.genes in self.pending:
                    self.pending[episode.genes].append(episode)
                else:
                    episode.replay = False
                    break
                episode = self._play(retry)
            genes = episode.genes
            if self._seen(genes):
                # Every replay landed on a known assignment: propose an unseen
                # neighbour within the budget instead (the agent does not learn
                # from it; the error model does).
                genes = self._neighbour(genes)
                self.pending.setdefault(genes, [])
            else:
                self.pending.setdefault(genes, []).append(episode)
            self.episodes += 1
            asked.append(genes)
        return asked

    def _seen(self, genes: Genes) -> bool:
        return genes in self.known or genes in self.pending

    def _neighbour(self, genes: Genes, tries: int = 50) -> Genes:
        """An unseen vector within the budget, one random gene changed and the
        result enforced; ``genes`` itself if none is found."""
        enforcer = self.segments[self._segment_index()].enforcer
        for _ in range(tries):
            trial = list(genes)
            trial[int(self.rng.integers(len(trial)))] = int(
                self.rng.integers(self.context.num_choices)
            )
            candidate = self._meet_constraints(enforcer, enforcer.enforce(tuple(trial)))
            if not self._seen(candidate):
                return candidate
        return genes

    def tell(self, genes: Genes, outcome: Outcome) -> None:
        error = float(outcome.losses[self.error_index])
        if outcome.genes not in self.known:
            self.known[outcome.genes] = error
            self.model.observe(outcome.genes, error)
        if outcome.genes == self.top:
            self.float_error = error
        for episode in self.pending.pop(genes, []):
            self._learn(episode, error)

    # -- persistence ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        # Episodes asked but not told are forgotten: the loop tells their
        # logged outcomes as not asked, which still teaches the error model.
        return {
            "rng": self.rng.bit_generator.state,
            "agent": None if self.agent is None else self.agent.state_dict(),
            "agent_segment": self.agent_segment,
            "episodes": self.episodes,
            "known": dict(self.known),
            "float_error": self.float_error,
            "model": self.model.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.episodes = state["episodes"]
        self.known = dict(state["known"])
        self.float_error = state["float_error"]
        self.model.load_state_dict(state["model"])
        self.agent, self.agent_segment = None, -1
        if state["agent"] is not None:
            self._current_agent(state["agent_segment"]).load_state_dict(state["agent"])
        self.pending = {}
