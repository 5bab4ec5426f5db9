"""Tiny gymnasium envs for tests: every space kind, a memory task, scripted rewards; cheap to step."""

import copy

import gymnasium as gym
import numpy as np
from gymnasium import spaces


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


class CueEnv(gym.Env):
    """A memory test: a ±1 cue shows on the first observation only; the last action must name it.

    Observation `[cue or 0, steps left / length]`; reward 1 for action `cue > 0` on the last
    of `length` steps, 0 otherwise. A policy without memory can only guess (return 0.5).
    """

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, length=4):
        self.length = length

    def _obs(self):
        cue = self.cue if self.t == 0 else 0.0
        return np.array([cue, (self.length - self.t) / self.length], np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.cue = float(self.np_random.choice([-1.0, 1.0]))
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        last = self.t >= self.length
        reward = float(last and int(action) == int(self.cue > 0))
        return self._obs(), reward, last, False, {}


class ScriptedRewardEnv(gym.Env):
    """Rewards follow a fixed script; observations are recorded so tests can see what the agent saw."""

    SCRIPT = (-300.0, -3.0, 0.0, 2.0, 150.0)

    def __init__(self, episode_length=1000):
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.episode_length = episode_length
        self.seen = []

    def _obs(self):
        obs = np.array([5.0 + 3.0 * self.np_random.normal(), -40.0 + 0.5 * self.t], np.float32)
        self.seen.append(obs)
        return obs

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward = self.SCRIPT[self.t % len(self.SCRIPT)]
        self.t += 1
        return self._obs(), reward, False, self.t >= self.episode_length, {}


class NeedsBox2D(gym.Env):
    """What making a Box2D env does on a machine without Box2D."""

    def __init__(self):
        raise gym.error.DependencyNotInstalled(
            'Box2D is not installed, you can install it by run `pip install swig` followed by '
            '`pip install "gymnasium[box2d]"`')


gym.register("NeedsBox2D-v0", entry_point=NeedsBox2D)


# Every kind of entry a Dict observation can hold, a nested Tuple among them (tests/test_dict_obs.py).
DICT_SPACE = spaces.Dict({
    "position": spaces.Box(-1.0, 1.0, (3,), np.float32),
    "grid": spaces.Box(0, 255, (6, 6, 2), np.uint8),
    "room": spaces.Discrete(3, start=1),
    "keys": spaces.MultiDiscrete([2, 3]),
    "flags": spaces.MultiBinary(2),
    "goal": spaces.Tuple([spaces.Box(-2.0, 2.0, (2,), np.float32), spaces.Discrete(2)]),
})
# Each env samples from its own copy of the space: one shared space's RNG would make an env's observations
# depend on which other envs share its process (in-process, gathering workers, Ray actors).
gym.register("DictSpaces-v0", entry_point=lambda: SpaceEnv(copy.deepcopy(DICT_SPACE), spaces.Discrete(3), 9))
gym.register("DictBox-v0", entry_point=lambda: SpaceEnv(copy.deepcopy(DICT_SPACE),
                                                         spaces.Box(-1.0, 1.0, (2,), np.float32), 9))
