"""Memory tasks: classic-control envs with the velocities taken out of the observation.

Without velocities the state is only partly observed: a feed-forward policy sees
where the pole or pendulum is, not where it is going, and must guess; a recurrent
policy can infer the velocity from consecutive observations. This is the standard
check that a recurrent PPO remembers (sb3-contrib benchmarks RecurrentPPO on it).

    CartPoleNoVel-v1   CartPole-v1 observing [x, θ]        (500 steps, solved at 475)
    PendulumNoVel-v1   Pendulum-v1 observing [cos θ, sin θ] (200 steps)

Importing `unstable_ppo` registers both ids with gymnasium.
"""

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class NoVelocity(gym.ObservationWrapper):
    """Keep only the observation entries at `keep` (the positions, not the velocities)."""

    def __init__(self, env, keep):
        super().__init__(env)
        self.keep = np.asarray(keep, np.int64)
        box = env.observation_space
        self.observation_space = spaces.Box(box.low[self.keep], box.high[self.keep], dtype=box.dtype)

    def observation(self, observation):
        return observation[self.keep]


def cartpole_no_velocity(**kwargs):
    from gymnasium.envs.classic_control import CartPoleEnv  # late: registering the ids loads no env code

    return NoVelocity(CartPoleEnv(**kwargs), keep=[0, 2])  # x, θ (drops ẋ, θ̇)


def pendulum_no_velocity(**kwargs):
    from gymnasium.envs.classic_control import PendulumEnv  # late, as above

    return NoVelocity(PendulumEnv(**kwargs), keep=[0, 1])  # cos θ, sin θ (drops θ̇)


MEMORY_TASKS = {
    "CartPoleNoVel-v1": dict(entry_point=f"{__name__}:cartpole_no_velocity", max_episode_steps=500,
                             reward_threshold=475.0),
    "PendulumNoVel-v1": dict(entry_point=f"{__name__}:pendulum_no_velocity", max_episode_steps=200),
}


def register():
    for env_id, spec in MEMORY_TASKS.items():
        if env_id not in gym.registry:
            gym.register(env_id, **spec)


register()
