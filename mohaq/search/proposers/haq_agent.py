"""HAQ's reinforcement-learning agent: DDPG with one continuous action per step.

A small torch implementation of the agent of HAQ (Wang et al., CVPR 2019):

* actor and critic are MLPs with two hidden layers (300 units in HAQ); the
  actor ends in a sigmoid (an action in [0, 1]); the critic adds a state branch
  and an action branch before its second layer;
* Adam with learning rates 1e-4 (actor) and 1e-3 (critic), target networks
  soft-updated with tau 0.01, discount 1;
* a replay memory of transitions; every step of an episode is stored with the
  episode's final reward (the reward only comes at the end), the last step as
  terminal; minibatches of 64 are drawn uniformly once the memory holds that many;
* rewards are centred by a moving average of minibatch means (factor 0.5), as
  HAQ's code does, so the critic learns differences rather than an offset;
* exploration draws a truncated normal around the actor's action, within [0, 1].

Randomness comes from a ``numpy.random.Generator`` the caller passes in
(exploration and minibatches) and from a seed that initialises the networks
without touching torch's global generator, so an agent restored from
:meth:`DDPGAgent.state_dict` continues exactly as the original would.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from statistics import NormalDist
from typing import Any

import numpy as np
import torch
from torch import nn

_STANDARD_NORMAL = NormalDist()


def truncated_normal(
    rng: np.random.Generator, mean: float, sigma: float, low: float = 0.0, high: float = 1.0
) -> float:
    """One draw of N(mean, sigma) truncated to [low, high], by inverting the CDF
    (one uniform per draw, so the generator advances the same way every time)."""
    if sigma <= 0:
        return float(min(max(mean, low), high))
    lower = _STANDARD_NORMAL.cdf((low - mean) / sigma)
    upper = _STANDARD_NORMAL.cdf((high - mean) / sigma)
    u = float(rng.uniform())
    if upper - lower < 1e-12:  # the whole mass beyond one bound
        return float(min(max(mean, low), high))
    p = min(max(lower + u * (upper - lower), 1e-12), 1 - 1e-12)
    return float(min(max(mean + sigma * _STANDARD_NORMAL.inv_cdf(p), low), high))


@contextmanager
def single_thread() -> Iterator[None]:
    """Runs torch on one thread inside the block. The networks are tiny: on two
    busy cores a minibatch update took 0.2-0.8 s with two threads and 20 ms
    with one (thread hand-offs dominate); the evaluator keeps its threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class Actor(nn.Module):
    """State -> action in [0, 1]."""

    def __init__(self, state_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(state_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
            nn.Sigmoid(),
        )

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net(state)


class Critic(nn.Module):
    """(state, action) -> value; state and action meet in the first hidden layer."""

    def __init__(self, state_dim: int, hidden: int) -> None:
        super().__init__()
        self.state_in = nn.Linear(state_dim, hidden)
        self.action_in = nn.Linear(1, hidden)
        self.rest = nn.Sequential(
            nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.rest(self.state_in(state) + self.action_in(action))


class ReplayMemory:
    """A ring buffer of transitions (state, action, reward, next state, terminal)."""

    def __init__(self, capacity: int, state_dim: int) -> None:
        self.capacity = capacity
        self.states = np.zeros((capacity, state_dim), dtype=np.float32)
        self.actions = np.zeros((capacity, 1), dtype=np.float32)
        self.rewards = np.zeros((capacity, 1), dtype=np.float32)
        self.next_states = np.zeros((capacity, state_dim), dtype=np.float32)
        self.terminals = np.zeros((capacity, 1), dtype=np.float32)
        self.position = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def append(
        self,
        state: np.ndarray,
        action: float,
        reward: float,
        next_state: np.ndarray,
        terminal: bool,
    ) -> None:
        i = self.position
        self.states[i], self.actions[i, 0], self.rewards[i, 0] = state, action, reward
        self.next_states[i], self.terminals[i, 0] = next_state, float(terminal)
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, ...]:
        rows = rng.integers(self.size, size=count)
        return (
            self.states[rows],
            self.actions[rows],
            self.rewards[rows].copy(),
            self.next_states[rows],
            self.terminals[rows],
        )


class DDPGAgent:
    """HAQ's DDPG agent (see the module docstring).

    Args:
        state_dim: features per state.
        hidden: units in each of the two hidden layers.
        actor_lr: Adam learning rate of the actor.
        critic_lr: Adam learning rate of the critic.
        tau: soft-update factor of the target networks.
        discount: discount of the next state's value.
        batch_size: transitions per update.
        memory_size: replay memory capacity (transitions).
        seed: initialises the networks (torch's global generator is left alone).
        moving_alpha: update factor of the reward baseline.
    """

    def __init__(
        self,
        state_dim: int,
        *,
        hidden: int = 300,
        actor_lr: float = 1e-4,
        critic_lr: float = 1e-3,
        tau: float = 0.01,
        discount: float = 1.0,
        batch_size: int = 64,
        memory_size: int = 1024,
        seed: int = 0,
        moving_alpha: float = 0.5,
    ) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.actor = Actor(state_dim, hidden)
            self.critic = Critic(state_dim, hidden)
        self.actor_target = copy.deepcopy(self.actor)
        self.critic_target = copy.deepcopy(self.critic)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=actor_lr)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=critic_lr)
        self.memory = ReplayMemory(memory_size, state_dim)
        self.tau = tau
        self.discount = discount
        self.batch_size = batch_size
        self.moving_alpha = moving_alpha
        self.moving_average: float | None = None
        self.updates = 0

    # -- acting ---------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, state: np.ndarray) -> float:
        """The actor's action for ``state`` (no exploration)."""
        with single_thread():
            return float(self.actor(torch.as_tensor(state, dtype=torch.float32)[None])[0, 0])

    def explore(self, state: np.ndarray, sigma: float, rng: np.random.Generator) -> float:
        """The actor's action with truncated-normal noise of width ``sigma``."""
        return truncated_normal(rng, self.act(state), sigma)

    # -- learning -------------------------------------------------------------------------
    def remember(self, states: np.ndarray, actions: np.ndarray, reward: float) -> None:
        """Stores an episode: step t goes from ``states[t]`` to ``states[t + 1]``
        with ``actions[t]``; every step gets the final ``reward``."""
        steps = len(actions)
        for t in range(steps):
            terminal = t == steps - 1
            following = states[t] if terminal else states[t + 1]
            self.memory.append(states[t], float(actions[t]), reward, following, terminal)

    def update(self, rng: np.random.Generator) -> bool:
        """One minibatch update of critic, actor and targets; False (nothing
        done) while the memory holds fewer transitions than a minibatch."""
        if len(self.memory) < self.batch_size:
            return False
        with single_thread():
            self._update(rng)
        self.updates += 1
        return True

    def _update(self, rng: np.random.Generator) -> None:
        states, actions, rewards, next_states, terminals = (
            torch.as_tensor(a) for a in self.memory.sample(rng, self.batch_size)
        )
        mean = float(rewards.mean())
        if self.moving_average is None:
            self.moving_average = mean
        else:
            self.moving_average += self.moving_alpha * (mean - self.moving_average)
        rewards = rewards - self.moving_average
        with torch.no_grad():
            following = self.critic_target(next_states, self.actor_target(next_states))
            target = rewards + self.discount * (1.0 - terminals) * following
        value_loss = nn.functional.mse_loss(self.critic(states, actions), target)
        self.critic_optimizer.zero_grad()
        value_loss.backward()
        self.critic_optimizer.step()
        policy_loss = -self.critic(states, self.actor(states)).mean()
        self.actor_optimizer.zero_grad()
        policy_loss.backward()
        self.actor_optimizer.step()
        with torch.no_grad():
            for target_net, net in (
                (self.actor_target, self.actor),
                (self.critic_target, self.critic),
            ):
                for target_param, param in zip(
                    target_net.parameters(), net.parameters(), strict=True
                ):
                    target_param.mul_(1.0 - self.tau).add_(param, alpha=self.tau)

    # -- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A deep copy of everything the agent learned (networks, optimizers,
        replay memory, reward baseline)."""
        return copy.deepcopy(
            {
                "actor": self.actor.state_dict(),
                "critic": self.critic.state_dict(),
                "actor_target": self.actor_target.state_dict(),
                "critic_target": self.critic_target.state_dict(),
                "actor_optimizer": self.actor_optimizer.state_dict(),
                "critic_optimizer": self.critic_optimizer.state_dict(),
                "memory": vars(self.memory),
                "moving_average": self.moving_average,
                "updates": self.updates,
            }
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = copy.deepcopy(state)
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.actor_target.load_state_dict(state["actor_target"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        vars(self.memory).update(state["memory"])
        self.moving_average = state["moving_average"]
        self.updates = state["updates"]
