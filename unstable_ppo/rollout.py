"""Experience collection: the vector env stepped with the compiled acting function.

`RolloutCollector.collect` is step 1 of a PPO iteration (Schulman et al., 2017,
Algorithm 1): `num_steps` steps of `num_envs` envs into a numpy `RolloutBuffer`, then
GAE(λ). It keeps what carries over from one rollout to the next (the last observation,
done flags and LSTM state), so `PPO` only drives it; the Ray gathering actors run the
same collector on their own share of the envs.
"""

from collections import deque

import numpy as np
from gymnasium.vector import AutoresetMode

from unstable_ppo.acting import action_layout, buffer_actions, draw_noise, env_actions, policy_step
from unstable_ppo.buffer import RolloutBuffer
from unstable_ppo.envs import autoreset_mode
from unstable_ppo.faults import check_finite
from unstable_ppo.normalize import transform_reward


class RolloutCollector:
    """Collects rollouts from `env` (a `VectorEnv`) with `model`, normalizing with `normalizer`.

    `hp` is the run's `Hyperparameters`; `rng` the run's sampling RNG (shared with the
    update's minibatch shuffling, so the draw order is the run's). Finished episodes'
    returns and lengths go into `episode_returns` / `episode_lengths`.
    `noise_columns=(first, total)`: this collector steps envs `first..first+num_envs-1`
    of a run with `total` envs, and keeps those columns of the whole run's noise (Ray actors).
    """

    def __init__(self, env, model, normalizer, hp, rng, action_space, seed=None, episode_returns=None,
                 episode_lengths=None, noise_columns=None):
        self.env, self.model, self.normalizer, self.hp, self.rng = env, model, normalizer, hp, rng
        self.action_space = action_space
        self.seed = seed
        self.episode_returns = deque(maxlen=100) if episode_returns is None else episode_returns
        self.episode_lengths = deque(maxlen=100) if episode_lengths is None else episode_lengths
        self.noise_columns = noise_columns
        self.last_obs = None  # raw (normalized when used); None: reset before the next rollout
        self.last_done = None
        self.last_state = None  # recurrent: the state each env acts from next ...
        self.last_starts = None  # ... and whether to zero it first

    def make_buffer(self):
        """An empty `RolloutBuffer` for this collector's rollouts."""
        hp = self.hp
        layout = self.model.obs_layout
        return RolloutBuffer(hp.num_steps, hp.num_envs, layout.shapes(), layout.dtypes(),
                             *action_layout(self.action_space, self.model),
                             state_size=self.model.state_size)

    def draw_noise(self, shape):
        if self.noise_columns is None:
            return draw_noise(self.rng, self.model, shape)
        first, total = self.noise_columns
        full = draw_noise(self.rng, self.model, (*shape[:-2], total, shape[-1]))
        return np.ascontiguousarray(full[..., first : first + shape[-2], :])

    def rollout_noise(self):
        """The rollout's sampling noise and the row each step uses: `(noise, index)`.

        A fresh draw every step, except gSDE's exploration matrices: drawn every
        `sde_sample_freq` steps (-1: once, at the rollout's start), as Stable-Baselines3 does.
        """
        hp = self.hp
        period = (hp.sde_sample_freq if hp.sde_sample_freq > 0 else hp.num_steps) if hp.use_sde else 1
        index = np.arange(hp.num_steps) // period
        return self.draw_noise((index[-1] + 1, hp.num_envs, self.model.noise_size)), index

    def reset(self):
        """Reset the envs (seeded `seed + i` for env i, if seeded) and start fresh episodes."""
        num_envs = self.hp.num_envs
        seed = None
        if self.seed is not None:
            seed = [self.seed + i for i in range(num_envs)]
            self.action_space.seed(self.seed)
        obs, _ = self.env.reset(seed=seed)
        self.last_obs = self.model.obs_layout.convert(obs)
        self.last_done = np.zeros(num_envs, bool)
        self.last_state = self.model.initial_state(num_envs)
        self.last_starts = np.ones(num_envs, np.float32)
        self.normalizer.observe_obs(self.last_obs)

    def collect(self, buffer, rollout_number):
        """Fill `buffer` with one rollout and its advantages; returns the steps taken.

        The buffer holds observations as the network saw them (normalized, with
        `normalize_obs`) and rewards as the loss sees them (transformed, scaled).
        `rollout_number` (1-based) only names the rollout in error messages.
        """
        hp, model, norm = self.hp, self.model, self.normalizer
        T, N = hp.num_steps, hp.num_envs
        act = model.make_act_function()
        recurrent = model.recurrent
        state, starts = self.last_state, self.last_starts
        noise, noise_index = self.rollout_noise()
        next_step = autoreset_mode(self.env) == AutoresetMode.NEXT_STEP
        layout = model.obs_layout
        obs, last_done = self.last_obs, self.last_done
        final_obs, final_rows, final_states = [], [], []
        buffer.final_value_set[:] = False
        buffer.next_values[:] = 0.0
        for t in range(T):
            buffer.store_obs(t, norm.obs(obs))
            if recurrent:
                buffer.states[t], buffer.episode_starts[t] = state, starts
            actions, values, log_probs, state = policy_step(model, act, buffer.obs_row(t), noise[noise_index[t]],
                                                           state, starts)
            actions = buffer_actions(self.action_space, model, actions)
            buffer.actions[t] = actions
            buffer.values[t] = values
            buffer.log_probs[t] = log_probs
            if next_step:
                buffer.mask[t] = ~last_done
            obs, rewards, terminated, truncated, info = self.env.step(env_actions(self.action_space, actions))
            obs = layout.convert(obs)
            for floats in layout.float_arrays(obs):  # pixels and indices cannot be NaN
                check_finite("observation", floats, f"at step {t} of rollout {rollout_number}")
            check_finite("reward", rewards, f"at step {t} of rollout {rollout_number}")
            norm.observe_obs(obs)
            live = ~last_done if next_step else None
            rewards = transform_reward(rewards, hp.reward_transform, hp.reward_scale)
            buffer.rewards[t] = norm.scale_rewards(rewards, terminated | truncated, live)
            buffer.terminated[t] = terminated
            if recurrent:
                # Zero the state before an episode's first observation: the next row after
                # a done (SAME_STEP), or the row after the reset row (NEXT_STEP).
                starts = (terminated | truncated | (last_done if next_step else False)).astype(np.float32)
            last_done = terminated | truncated
            buffer.dones[t] = last_done
            if last_done.any():
                self._record_episodes(info)
                if not next_step:
                    buffer.final_value_set[t] = last_done
                    for i in np.flatnonzero(truncated & ~terminated):
                        final_obs.append(info["final_obs"][i])
                        final_rows.append((t, i))
                        if recurrent:
                            final_states.append(state[i])  # the episode's state after its last step
        self.last_obs, self.last_done = obs, last_done
        if recurrent:
            self.last_state, self.last_starts = state, starts
        last_values = policy_step(model, act, norm.obs(obs), noise[0], state, starts)[1]
        if final_obs:
            values = self.values(norm.obs(layout.stack(final_obs)),
                                 np.asarray(final_states) if recurrent else None)
            for (t, i), v in zip(final_rows, values):
                buffer.next_values[t, i] = v
        if not next_step:
            buffer.mask[:] = 1.0
        buffer.finish(last_values, hp.gamma, hp.gae_lambda)
        return T * N

    def values(self, obs, states=None):
        """V(obs) for a few observations (truncated episodes' last ones), through the rollout's acting call.

        Padded to `num_envs` rows so no new shape is compiled; the sampled actions
        are discarded. A recurrent model continues from `states` (no episode start).
        """
        N = self.hp.num_envs
        act = self.model.make_act_function()

        def padded(x):
            out = np.zeros((N, *x.shape[1:]), x.dtype)
            out[: len(x)] = x
            return out

        out = []
        layout = self.model.obs_layout
        noise = np.full((N, self.model.noise_size), 0.5, np.float32)
        count = layout.batch_size(obs)
        for start in range(0, count, N):
            chunk = layout.map(lambda x: padded(x[start : start + N]), obs)
            state = None if states is None else padded(states[start : start + N])
            step = policy_step(self.model, act, chunk, noise, state, np.zeros(N, np.float32))
            out.append(step[1][: min(N, count - start)])
        return np.concatenate(out)

    def _record_episodes(self, info):
        """Finished episodes, from a vector-level recorder or (SAME_STEP) each env's Monitor."""
        for source in (info, info.get("final_info", {})):
            episode = source.get("episode")
            if episode is None:
                continue
            for i in np.flatnonzero(source["_episode"]):
                self.episode_returns.append(float(episode["r"][i]))
                self.episode_lengths.append(int(episode["l"][i]))
            return
