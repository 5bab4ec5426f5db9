"""The standard Atari pipeline (Mnih et al., 2015; Machado et al., 2018), from gymnasium's wrappers.

Training envs: noop reset (up to 30), max-and-skip 4, 84x84 grayscale (gymnasium's
`AtariPreprocessing`), a life loss ends the episode for the learner but not the
game (`EpisodicLife`), FIRE after every reset where the game needs it (`FireReset`),
reward sign clipping, and a 4-frame stack. Evaluation envs drop the two training
tricks, so they score the real, unclipped game over full games. The Monitor sits
under everything and always records the real game.

`vectorization_mode="ale"` builds the same pipeline with ale-py's C++
`AtariVectorEnv` (threaded, ~1.7x faster than the Python wrappers); a thin vector
wrapper adds the reward clipping, episode statistics and Monitor files on top.
"""

import os
import time

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorWrapper
from gymnasium.wrappers import (
    AtariPreprocessing,
    FrameStackObservation,
    TransformReward,
)

from unstable_ppo.envs.families import EnvFamily, register_family
from unstable_ppo.envs.monitor import Monitor, MonitorFile

NOOP_MAX = 30
FRAME_SKIP = 4
SCREEN_SIZE = 84
FRAME_STACK = 4


def is_atari(env_id):
    """Whether `env_id` is an ALE game (`BreakoutNoFrameskip-v4`, `ALE/Breakout-v5`, ...)."""
    try:
        import ale_py  # late: loading the emulator costs ~0.2 s, paid only when an id is checked

        gym.register_envs(ale_py)
    except ImportError:
        return False
    try:
        spec = gym.spec(env_id)
    except gym.error.Error:
        return False
    return "ale_py" in str(spec.entry_point)


class EpisodicLife(gym.Wrapper):
    """A lost life is `terminated` for the learner; the game itself goes on until it is over.

    `reset` after a life loss is a no-op step, not a new game, so the value function
    learns that losing a life is bad without games being cut short.
    """

    def __init__(self, env):
        super().__init__(env)
        self.lives = 0
        self.game_over = True

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs):
        if self.game_over:
            obs, info = self.env.reset(**kwargs)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self.game_over = False
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info


class FireReset(gym.Wrapper):
    """Press FIRE after a reset, for games that wait for it (Breakout's ball never comes otherwise)."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        for action in (1, 2):  # FIRE, then UP, as the DQN code does
            obs, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        return obs, info


def needs_fire(env):
    meanings = env.unwrapped.get_action_meanings()
    return len(meanings) >= 3 and meanings[1] == "FIRE"


def make_atari_env(env_id, training=True, monitor_file=None, monitor_append=False, **env_kwargs):
    """One preprocessed Atari env; `training=False` gives the evaluation pipeline."""
    spec = gym.spec(env_id)
    kwargs = dict(env_kwargs)
    if spec.kwargs.get("frameskip", 1) != 1:  # ALE/...-v5 skip inside ALE; we skip (and max) here
        kwargs.setdefault("frameskip", 1)
    env = gym.make(env_id, **kwargs)
    env = Monitor(env, monitor_file, append=monitor_append)
    env = AtariPreprocessing(
        env, noop_max=NOOP_MAX, frame_skip=FRAME_SKIP, screen_size=SCREEN_SIZE,
        terminal_on_life_loss=False, grayscale_obs=True, scale_obs=False,
    )
    if training:
        env = EpisodicLife(env)
    if needs_fire(env):
        env = FireReset(env)
    if training:
        env = TransformReward(env, np.sign)
    return FrameStackObservation(env, FRAME_STACK)


def make_ale_vector_env(env_id, num_envs, training=True, monitor_dir=None, monitor_append=False,
                        max_episode_steps=None):
    """The same pipeline on ale-py's C++ `AtariVectorEnv`, with SAME_STEP autoreset."""
    from ale_py.vector_env import AtariVectorEnv  # late, like ale_py in is_atari

    spec = gym.spec(env_id)
    max_frames = spec.kwargs.get("max_num_frames_per_episode", 108_000)
    if max_episode_steps is not None:
        max_frames = min(max_frames, max_episode_steps * FRAME_SKIP)
    env = AtariVectorEnv(
        spec.kwargs["game"],
        num_envs,
        repeat_action_probability=spec.kwargs.get("repeat_action_probability", 0.0),
        full_action_space=spec.kwargs.get("full_action_space", False),
        max_num_frames_per_episode=max_frames,
        autoreset_mode=AutoresetMode.SAME_STEP,
        img_height=SCREEN_SIZE, img_width=SCREEN_SIZE, grayscale=True,
        stack_num=FRAME_STACK, frameskip=FRAME_SKIP, maxpool=True, noop_max=NOOP_MAX,
        episodic_life=False, life_loss_info=training, reward_clipping=False, use_fire_reset=True,
    )
    env.spec = spec
    return AleEpisodes(env, env_id, clip_rewards=training, monitor_dir=monitor_dir, monitor_append=monitor_append)


class AleEpisodes(VectorWrapper):
    """Real-game episode statistics, Monitor CSVs and reward clipping for `AtariVectorEnv`.

    With `life_loss_info`, ALE reports a lost life as `terminated` without resetting;
    a game is over when its frame counter starts again (the SAME_STEP autoreset).
    """

    def __init__(self, env, env_id, clip_rewards, monitor_dir=None, monitor_append=False):
        super().__init__(env)
        self.records_episodes = True
        self.clip_rewards = clip_rewards
        n = env.num_envs
        self._return, self._length = np.zeros(n), np.zeros(n, np.int64)
        self._frame = np.zeros(n, np.int64)
        self._files = [
            MonitorFile(os.path.join(monitor_dir, f"{i}.monitor.csv"), env_id, monitor_append)
            for i in range(n)
        ] if monitor_dir is not None else []
        self.t_start = self._files[0].t_start if self._files else time.time()

    def reset(self, *, seed=None, options=None):
        if isinstance(seed, (list, tuple)):  # gymnasium's per-env seeds; ALE seeds env i with seed + i
            seed = seed[0]
        obs, info = self.env.reset(seed=seed, options=options)
        self._return[:], self._length[:] = 0.0, 0
        self._frame = np.asarray(info["episode_frame_number"], np.int64).copy()
        return obs, info

    def step(self, actions):
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        self._return += rewards
        self._length += FRAME_SKIP
        frame = np.asarray(info["episode_frame_number"], np.int64)
        game_over = (terminated | truncated) & (frame < self._frame)
        self._frame = frame.copy()
        if game_over.any():
            now = time.time() - self.t_start
            info = dict(info)
            info["episode"] = {
                "r": np.where(game_over, self._return, 0.0),
                "l": np.where(game_over, self._length, 0),
                "t": np.full(len(game_over), now),
            }
            info["_episode"] = game_over
            for i in np.flatnonzero(game_over):
                if self._files:
                    self._files[i].write_episode({"r": self._return[i], "l": self._length[i], "t": now})
                self._return[i], self._length[i] = 0.0, 0
        if self.clip_rewards:
            rewards = np.sign(rewards)
        return obs, rewards, terminated, truncated, info

    def close(self, **kwargs):
        for f in self._files:
            f.close()
        return super().close(**kwargs)


class AtariFamily(EnvFamily):
    """ALE games: the standard Atari pipeline on gymnasium's wrappers, or ale-py's C++ vector env ("ale")."""

    name = "atari"
    description = "an Atari env id"
    native_modes = ("ale",)
    flagfile = "atari.flags"

    def takes(self, env_id):
        return is_atari(env_id)

    def check(self, env_id, options, vectorization_mode, video_dir=None):
        if vectorization_mode == "ale" and (options.env_kwargs or video_dir):
            raise ValueError("vectorization_mode 'ale' takes no env_kwargs or video_dir: use 'sync'")
        if options.time_feature:
            raise ValueError(f"time_feature appends the time to vector observations: {env_id}'s are Atari frames")

    def make_env(self, env_id, training, monitor_file, monitor_append, options):
        return make_atari_env(env_id, training, monitor_file, monitor_append, **(options.env_kwargs or {}))

    def make_native_vector_env(self, env_id, num_envs, training, monitor_dir, monitor_append, max_episode_steps,
                               options):
        return make_ale_vector_env(env_id, num_envs, training, monitor_dir, monitor_append, max_episode_steps)

    def preprocessing(self, env_id):
        return {
            "pipeline": "atari (evaluation): gymnasium AtariPreprocessing + FIRE at reset + FrameStackObservation",
            "noop_max": NOOP_MAX, "frame_skip": FRAME_SKIP, "screen_size": SCREEN_SIZE,
            "grayscale": True, "fire_reset": True, "frame_stack": FRAME_STACK,
            "terminal_on_life_loss": False, "reward_clipping": False,
        }


register_family(AtariFamily())
