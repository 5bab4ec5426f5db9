"""Envs that fail on purpose, for the fault-injection tests and `benchmarks/faults.py`.

Usable by id in the runner as `tests.helpers.fault_envs:FaultyCartPole-v0`. What fails, and
when, comes from environment variables, so that async worker processes and runner
subprocesses see the same settings:

- `FAULT_RAISE_EVERY=N`: every env raises `RuntimeError` on every N-th step since it
  was built (`FAULT_RAISE_ENV=i`: only env i of an async vector env, or the i-th
  env built in a process).
- `FAULT_BUDGET=path:K`: at most K raises in all, counted in file `path` across
  processes (so that, say, the final evaluation runs clean).
- `FAULT_NAN_AT=N`: the N-th step returns a NaN reward (`FAULT_NAN_IN=obs`: a NaN
  observation instead).
"""

import itertools
import multiprocessing
import os

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control import CartPoleEnv

_built = itertools.count()


class FaultyCartPole(CartPoleEnv):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Env i of an async vector env lives in the process "Worker<AsyncVectorEnv>-i".
        worker = multiprocessing.current_process().name
        self.index = int(worker.rsplit("-", 1)[1]) if worker.startswith("Worker<") else next(_built)
        self.steps = 0
        self.raise_every = int(os.environ.get("FAULT_RAISE_EVERY", "0"))
        only = os.environ.get("FAULT_RAISE_ENV")
        if only is not None and int(only) != self.index:
            self.raise_every = 0
        self.nan_at = int(os.environ.get("FAULT_NAN_AT", "0"))
        self.nan_in = os.environ.get("FAULT_NAN_IN", "reward")

    def step(self, action):
        self.steps += 1
        if self.raise_every and self.steps % self.raise_every == 0 and _spend_budget():
            raise RuntimeError(f"injected failure at step {self.steps}")
        obs, reward, terminated, truncated, info = super().step(action)
        if self.nan_at and self.steps == self.nan_at:
            if self.nan_in == "obs":
                obs = np.array(obs, copy=True)
                obs[0] = np.nan
            else:
                reward = float("nan")
        return obs, reward, terminated, truncated, info


def _spend_budget():
    budget = os.environ.get("FAULT_BUDGET")
    if not budget:
        return True
    path, limit = budget.rsplit(":", 1)
    with open(path, "a+") as f:
        f.seek(0)
        if len(f.read()) >= int(limit):
            return False
        f.write("x")
    return True


gym.register("FaultyCartPole-v0", entry_point=FaultyCartPole, max_episode_steps=500)
