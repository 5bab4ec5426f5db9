"""Tiny gymnasium envs for tests: every space kind, cheap to step."""

import gymnasium as gym
import numpy as np


class SpaceEnv(gym.Env):
    """Random observations of `observation_space`; reward 1 when the action's first entry is 'high'."""

    def __init__(self, observation_space, action_space, episode_length=7):
        self.observation_space = observation_space
        self.action_space = action_space
        self.episode_length = episode_length

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.observation_space.seed(int(self.np_random.integers(2**31)))
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        assert self.action_space.contains(np.asarray(action, self.action_space.dtype)), action
        self.t += 1
        first = np.ravel(np.asarray(action, np.float64))[0] if np.ndim(action) else float(action)
        reward = float(first > 0)
        return self.observation_space.sample(), reward, False, self.t >= self.episode_length, {}
