"""Evaluation: playing whole episodes with a trained policy, and recording them as video.

`PPO.evaluate`, the runner's intermediate and final evaluations and `python -m unstable_ppo.play`
all come here. Evaluation envs keep the real score (for Atari: whole games, no reward clipping),
and the observation normalizer's statistics stay frozen.
"""

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from unstable_ppo.acting import acting_noise, buffer_actions, env_actions, policy_step
from unstable_ppo.envs import as_vector_env, autoreset_mode, make_vec_env


def evaluate(ppo, env=None, n_episodes: int = 10, deterministic: bool = True, seed: int | None = None,
             max_episode_steps: int | None = None) -> dict:
    """Play `n_episodes` whole episodes; returns `{"mean_return", "std_return", "returns", "lengths"}`.

    Episodes are split evenly over the vector env's copies, so short episodes are
    not over-counted. `env` defaults to fresh evaluation copies of the training
    env id (for Atari: real score, whole games), cut at `max_episode_steps` if given.
    """
    if not n_episodes > 0:
        raise ValueError(f"n_episodes must be > 0, got {n_episodes!r}")
    if env is None:
        if ppo.env_id is None:
            raise ValueError("evaluate() needs an env: this model does not know its env id")
        env = ppo.env_id
    built_here = isinstance(env, str)  # close what we build, never the caller's env
    vec, _ = as_vector_env(
        env, min(n_episodes, ppo.hp.num_envs), ppo.hp.vectorization_mode, ppo.hp.env_options(),
        training=False, max_episode_steps=max_episode_steps,
    )
    try:
        ppo.check_env(vec)
        return play_episodes(ppo, vec, n_episodes, deterministic, seed)
    finally:
        if built_here:
            vec.close()


def play_episodes(ppo, vec: VectorEnv, n_episodes: int, deterministic: bool, seed: int | None = None) -> dict:
    """`n_episodes` episodes of `ppo` on the vector env `vec`, split evenly over its copies.

    Episodes cut by an env failure (a restarted env) do not count. With gymnasium's NEXT_STEP
    autoreset the reset row after an episode's end is not part of either episode.
    """
    n = vec.num_envs
    targets = np.array([(n_episodes + i) // n for i in range(n)])
    done_count = np.zeros(n, int)
    ep_ret, ep_len = np.zeros(n), np.zeros(n, int)
    returns, lengths = [], []
    next_step = autoreset_mode(vec) == AutoresetMode.NEXT_STEP
    reset_row = np.zeros(n, bool)
    if seed is None and ppo.seed is not None:
        seed = ppo.seed + 10_000
    obs, _ = vec.reset(seed=seed)
    # Sampled actions come from an RNG of the evaluation's own: evaluating must not change the training
    # run (its RNG draws the rollouts' noise and the minibatches), nor depend on how far training got.
    rng = np.random.default_rng(seed)
    model = ppo.model
    act = model.make_act_function(deterministic=deterministic)
    state, starts = (model.initial_state(n), np.ones(n, np.float32)) if model.recurrent else (None, None)
    while (done_count < targets).any():
        obs = ppo.normalizer.obs(model.obs_layout.convert(obs))  # frozen statistics
        noise = acting_noise(rng, model, n, deterministic)
        packed_actions, _, _, state = policy_step(model, act, obs, noise, state, starts)
        actions = buffer_actions(ppo.action_space, model, packed_actions)
        obs, rewards, terminated, truncated, info = vec.step(env_actions(ppo.action_space, actions))
        if model.recurrent:  # as in the rollout: zero the state before each episode's first step
            starts = (terminated | truncated | reset_row).astype(np.float32)
        live = ~reset_row
        if "env_restarted" in info:  # episodes cut by an env failure do not count
            live &= ~info["env_restarted"]
            ep_ret[info["env_restarted"]], ep_len[info["env_restarted"]] = 0.0, 0
        ep_ret += rewards * live
        ep_len += live
        done = (terminated | truncated) & live
        for i in np.flatnonzero(done):
            if done_count[i] < targets[i]:
                returns.append(float(ep_ret[i]))
                lengths.append(int(ep_len[i]))
                done_count[i] += 1
            ep_ret[i], ep_len[i] = 0.0, 0
        reset_row = done if next_step else np.zeros(n, bool)
    return {
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "returns": returns,
        "lengths": lengths,
    }


def record_video(ppo, env_id: str, video_dir: str, max_episode_steps: int | None = None, seed: int | None = None,
                 episodes: int = 1, deterministic: bool = True) -> dict:
    """Play `episodes` episodes on one rendering env and write them as mp4 files to `video_dir`."""
    vec = make_vec_env(env_id, 1, "sync", ppo.hp.env_options().rendering("rgb_array"), training=False,
                       max_episode_steps=max_episode_steps, video_dir=video_dir, video_episodes=episodes)
    try:
        return evaluate(ppo, vec, episodes, deterministic=deterministic, seed=seed)
    finally:
        vec.close()
