"""`envs.SyncEnvs` steps exactly like gymnasium's SyncVectorEnv (SAME_STEP autoreset, no copies)."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from tests.envs import SpaceEnv
from unstable_ppo.envs import SyncEnvs
from unstable_ppo.faults import EnvError, TagEnvErrors
from unstable_ppo.monitor import Monitor


class _StepInfo(gym.Wrapper):
    """Puts the step count in every info dict (reset's too)."""

    def reset(self, **kwargs):
        self.t = 0
        return self.env.reset(**kwargs)[0], {"t_env": 0}

    def step(self, action):
        self.t += 1
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, {**info, "t_env": self.t}


def _dict_obs_env():  # a space per env: SpaceEnv seeds and samples its own space
    return _StepInfo(SpaceEnv(spaces.Dict({"a": spaces.Box(-1, 1, (2,)), "b": spaces.Discrete(3)}), spaces.Discrete(2),
                    episode_length=5))


def _pair(make_env, n):
    fns = [lambda i=i: TagEnvErrors(Monitor(make_env()), i) for i in range(n)]
    ours = SyncEnvs(fns)
    theirs = gym.vector.SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP, copy=False)
    return ours, theirs


def _same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            if key != "t":  # Monitor's wall-clock seconds
                _same(a[key], b[key])
    elif isinstance(a, tuple) or (isinstance(a, np.ndarray) and a.dtype == object):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("make_env", [lambda: gym.make("CartPole-v1"),
                                      _dict_obs_env],
                         ids=["cartpole", "dict_obs"])
def test_sync_envs_step_like_gymnasium(make_env):
    ours, theirs = _pair(make_env, 3)
    for env in (ours, theirs):
        env.action_space.seed(0)
    _same(ours.reset(seed=0), theirs.reset(seed=0))
    episodes = 0
    for _ in range(120):
        actions = ours.action_space.sample()
        a, b = ours.step(actions), theirs.step(actions)
        _same(a, b)
        episodes += int(a[2].sum() + a[3].sum())
    assert episodes >= 3  # autoresets were compared too


def test_sync_envs_tag_step_errors_with_the_env_index():
    class Broken(gym.Wrapper):
        def step(self, action):
            raise ValueError("boom")

    env = SyncEnvs([lambda: TagEnvErrors(Monitor(gym.make("CartPole-v1")), 0),
                    lambda: TagEnvErrors(Broken(gym.make("CartPole-v1")), 1)])
    env.reset(seed=0)
    with pytest.raises(EnvError, match=r"^env 1: ValueError: boom$") as error:
        env.step(np.array([0, 1]))
    assert error.value.env_index == 1
