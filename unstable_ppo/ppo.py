"""The Python API: `PPO(env, ...)`, `.learn`, `.predict`, `.evaluate`, `.save`, `PPO.load`.

One PPO iteration (Schulman et al., 2017, Algorithm 1):

1. `collect_rollout`: `num_steps` steps of `num_envs` envs with the compiled acting
   function, into a numpy `RolloutBuffer`; GAE(λ) on top.
2. `update`: `num_epochs` passes of shuffled minibatches through the backend's
   compiled epoch function (the model's `train_step` on TensorFlow and JAX; on torch
   a traced loss, `backward()` and the optimizer step), stopping early when the
   approximate KL passes `target_kl`.

The first reference code's options ride on this loop: the adaptive KL-penalty loss
(`use_kl_loss`; β and a learning-rate multiplier servoed after every update),
an out-of-bounds penalty on the Gaussian mean (`eta`), reward transforms, and
running observation/reward normalization whose statistics live in this object.
"""

import dataclasses
import math
import os
from typing import Any, Callable
import time
import zipfile
from collections import deque

import gymnasium as gym
import keras
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from unstable_ppo import __version__
from unstable_ppo.backend import BACKEND
from unstable_ppo import evaluation
from unstable_ppo.buffer import RolloutBuffer, sequence_minibatches
from unstable_ppo.checkpoint import (  # noqa: F401  (FORMAT_VERSION: read here by tests and tools)
    FORMAT_VERSION,
    META_FILE,
    MODEL_FILE,
    _metadata_field,
    _one_line,
    read_metadata,
    write_atomically,
    write_json_atomically,
)
from unstable_ppo.config import Hyperparameters, LossConfig, group_values
from unstable_ppo.envs import as_vector_env, autoreset_mode
from unstable_ppo.faults import check_finite, check_finite_logs, check_finite_weights
from unstable_ppo.distributions import make_distribution
from unstable_ppo.losses import adapt_kl_penalty
from unstable_ppo.networks import ActorCritic
from unstable_ppo.normalize import Normalizer, transform_reward
from unstable_ppo.spaces import (
    check_action_space,
    check_observation_space,
    space_from_json,
    space_to_json,
    spaces_match,
)


# What the API takes as an env: an id, one gymnasium env, or a vector env.
EnvLike = str | gym.Env | gym.vector.VectorEnv


class PPO:
    """Proximal Policy Optimization with a Keras 3 actor-critic, on any Keras backend.

    `env`: a gymnasium env id, a `gymnasium.Env` or a `VectorEnv`. An id is built
    into `num_envs` copies (each writing a Monitor CSV into `monitor_dir`, if given);
    a `VectorEnv` brings its own `num_envs`.
    """

    def __init__(self, env: EnvLike | None, seed: int | None = None, verbose: int = 0,
                 monitor_dir: str | os.PathLike | None = None, **hyperparameters: Any) -> None:
        unknown = set(hyperparameters) - {f.name for f in dataclasses.fields(Hyperparameters)}
        if unknown:
            raise TypeError(f"unknown PPO argument(s): {', '.join(sorted(unknown))}")
        self.hp = Hyperparameters(**hyperparameters)
        self.hp.hidden_sizes = tuple(self.hp.hidden_sizes)
        self.hp.lstm_head_sizes = tuple(self.hp.lstm_head_sizes)
        if isinstance(env, gym.vector.VectorEnv):
            self.hp.num_envs = env.num_envs
        elif isinstance(env, gym.Env):
            self.hp.num_envs = 1
        self.seed = seed
        self.verbose = verbose
        self.num_timesteps = 0
        self.num_updates = 0
        self.episode_returns = deque(maxlen=100)
        self.episode_lengths = deque(maxlen=100)
        self.logs = {}
        self.run_info = {}  # what the runner stored with a loaded checkpoint
        self.lr_multiplier = 1.0  # the KL loss's servo on the learning rate
        self.normalizer = None
        self.rng = np.random.default_rng(seed)
        if seed is not None:
            keras.utils.set_random_seed(seed)

        self.env, self.env_id = (None, None)
        if env is None or isinstance(env, str):
            self.hp.validate()  # before building envs from an id
        if env is not None:
            self.env, self.env_id = as_vector_env(
                env, self.hp.num_envs, self.hp.vectorization_mode, monitor_dir=monitor_dir,
                gather_per_worker=self.hp.gather_per_worker,
            )
            self.observation_space = self.env.single_observation_space
            self.action_space = self.env.single_action_space
            check_observation_space(self.observation_space)
            check_action_space(self.action_space)
            self.hp.validate()
            self.hp.check_spaces(self.observation_space, self.action_space)
            self.model = ActorCritic(
                self.observation_space, self.action_space, **group_values(self.hp, "network"), seed=seed
            )
            self.model.kl_beta.assign(self.hp.init_beta)
            self._compile()
            self._make_normalizer()
        self._last_obs = None
        self.gatherer = None  # Ray actors that collect the rollouts instead (`ray_gather.RayGatherer`)

    # -- setup -------------------------------------------------------------------

    def _compile(self):
        hp = self.hp
        self.model.compile(
            optimizer=keras.optimizers.Adam(
                learning_rate=hp.lr, epsilon=1e-5, global_clipnorm=hp.max_grad_norm
            ),
            loss_config=LossConfig(**group_values(hp, "loss")),
            sequence_length=hp.timestep_size if hp.recurrent else 1,
        )

    def _make_normalizer(self):
        hp = self.hp
        self.normalizer = Normalizer(
            self.observation_space.shape, hp.num_envs, hp.gamma, hp.normalize_obs, hp.normalize_reward
        )

    @property
    def kl_beta(self):
        """β of the KL loss, as held by the model's variable."""
        return float(keras.ops.convert_to_numpy(self.model.kl_beta))

    def _obs_dtype(self):
        return np.dtype(self.model.obs_dtype)

    def _action_layout(self):
        """(shape, dtype) of one action as the buffer stores it."""
        if isinstance(self.action_space, spaces.Discrete):
            return (), np.int32
        dtype = np.float32 if self.model.continuous else np.int32
        return (self.model.action_size,), dtype

    def _from_model_actions(self, packed_actions):
        """`(batch, action_size)` floats from the acting function -> buffer layout."""
        if isinstance(self.action_space, spaces.Discrete):
            return packed_actions[:, 0].astype(np.int32)
        if self.model.continuous:
            return packed_actions
        return packed_actions.astype(np.int32)

    def _to_env_actions(self, actions):
        """Model actions -> what the env takes: bounds clipped, `start` offsets added."""
        space = self.action_space
        if isinstance(space, spaces.Box):
            actions = actions.reshape((-1, *space.shape))
            return np.clip(actions, space.low, space.high).astype(space.dtype, copy=False)
        if isinstance(space, spaces.Discrete):
            return actions.astype(np.int64) + int(space.start)
        if isinstance(space, spaces.MultiDiscrete):
            return actions.reshape((-1, *space.shape)).astype(space.dtype) + space.start
        return actions.reshape((-1, *space.shape)).astype(space.dtype)

    def make_buffer(self):
        """An empty `RolloutBuffer` for this PPO's rollouts."""
        hp = self.hp
        return RolloutBuffer(hp.num_steps, hp.num_envs, self.observation_space.shape, self._obs_dtype(),
                             *self._action_layout(), state_size=self.model.state_size)

    @property
    def recurrent(self):
        return self.model.recurrent

    def initial_state(self, n: int = 1) -> np.ndarray:
        """The LSTM state to start `n` episodes from, for `predict(obs, state, episode_start)`."""
        if not self.recurrent:
            raise ValueError("initial_state: this model is not recurrent")
        return self.model.initial_state(n)

    def _draw_noise(self, shape):
        if self.model.continuous:
            return self.rng.standard_normal(shape, dtype=np.float32)
        return self.rng.uniform(1e-6, 1.0 - 1e-6, shape).astype(np.float32)

    def policy_step(self, act, obs, noise, state=None, starts=None):
        """One compiled acting call: `(actions, values, log_probs, next_state)`.

        Every acting site (the rollout, the value bootstrap, `predict`, evaluation) goes
        through here, so the recurrent case is handled once: a recurrent model reads the
        LSTM `state` and the episode `starts` (its state is zeroed where one begins); a
        feed-forward one returns `next_state=None`. `obs` is as the network sees it
        (normalized); the actions are the model's (packed) ones.
        """
        if self.recurrent:
            return act(obs, noise, state, starts)
        return (*act(obs, noise), None)

    # -- rollouts ----------------------------------------------------------------

    def _reset(self):
        seed = None
        if self.seed is not None:
            seed = [self.seed + i for i in range(self.hp.num_envs)]
            self.action_space.seed(self.seed)
        obs, _ = self.env.reset(seed=seed)
        self._last_obs = np.asarray(obs, self._obs_dtype())  # raw: normalized when used
        self._last_done = np.zeros(self.hp.num_envs, bool)
        # Recurrent acting: the state each env acts from next, and whether to zero it first.
        self._last_state = self.model.initial_state(self.hp.num_envs)
        self._last_starts = np.ones(self.hp.num_envs, np.float32)
        self.normalizer.observe_obs(self._last_obs)

    def collect_rollout(self, buffer):
        """Fill `buffer` with one rollout and its advantages; returns the steps taken.

        The buffer holds observations as the network saw them (normalized, with
        `normalize_obs`) and rewards as the loss sees them (transformed, scaled).
        """
        T, N = self.hp.num_steps, self.hp.num_envs
        norm = self.normalizer
        act = self.model.make_act_function()
        recurrent = self.recurrent
        state, starts = self._last_state, self._last_starts
        noise = self._draw_noise((T, N, self.model.noise_size))
        next_step = autoreset_mode(self.env) == AutoresetMode.NEXT_STEP
        obs_dtype = self._obs_dtype()
        check_obs = np.dtype(obs_dtype).kind == "f"  # pixels (uint8) cannot be NaN
        obs, last_done = self._last_obs, self._last_done
        final_obs, final_rows, final_states = [], [], []
        buffer.final_value_set[:] = False
        buffer.next_values[:] = 0.0
        for t in range(T):
            buffer.obs[t] = norm.obs(obs)
            if recurrent:
                buffer.states[t], buffer.episode_starts[t] = state, starts
            actions, values, log_probs, state = self.policy_step(act, buffer.obs[t], noise[t], state, starts)
            actions = self._from_model_actions(actions)
            buffer.actions[t] = actions
            buffer.values[t] = values
            buffer.log_probs[t] = log_probs
            if next_step:
                buffer.mask[t] = ~last_done
            obs, rewards, terminated, truncated, info = self.env.step(self._to_env_actions(actions))
            obs = np.asarray(obs, obs_dtype)
            if check_obs:
                check_finite("observation", obs, f"at step {t} of rollout {self.num_updates + 1}")
            check_finite("reward", rewards, f"at step {t} of rollout {self.num_updates + 1}")
            norm.observe_obs(obs)
            live = ~last_done if next_step else None
            rewards = transform_reward(rewards, self.hp.reward_transform, self.hp.reward_scale)
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
        self._last_obs, self._last_done = obs, last_done
        if recurrent:
            self._last_state, self._last_starts = state, starts
        last_values = self.policy_step(act, norm.obs(obs), noise[0], state, starts)[1]
        if final_obs:
            values = self._values(norm.obs(np.asarray(final_obs, obs_dtype)),
                                  np.asarray(final_states) if recurrent else None)
            for (t, i), v in zip(final_rows, values):
                buffer.next_values[t, i] = v
        if not next_step:
            buffer.mask[:] = 1.0
        buffer.finish(last_values, self.hp.gamma, self.hp.gae_lambda)
        return T * N

    def _values(self, obs, states=None):
        """V(obs) for a few observations, through the rollout's own compiled acting call.

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
        noise = np.full((N, self.model.noise_size), 0.5, np.float32)
        for start in range(0, len(obs), N):
            chunk = obs[start : start + N]
            state = None if states is None else padded(states[start : start + N])
            out.append(self.policy_step(act, padded(chunk), noise, state, np.zeros(N, np.float32))[1][: len(chunk)])
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

    # -- updates -----------------------------------------------------------------

    def update(self, buffer):
        """`num_epochs` epochs of minibatch updates; returns the logs of the update.

        With the KL loss, the old policy's parameters are computed once, before the first
        epoch (the weights are still the acting ones). After each epoch the KL(old || new)
        over the whole rollout is measured, as the TF1 reference code did: above 4·kl_target the update
        stops, and the last value drives β and the learning-rate multiplier (`logs["kl"]`).
        """
        hp = self.hp
        numpy_batch = buffer.training_batch()
        if hp.use_kl_loss:
            numpy_batch["old_params"] = self._policy_params(numpy_batch)
        self.model.worker_num = hp.worker_num  # data-parallel learners (JAX)
        batch = self.model.prepare_batch(numpy_batch)  # to the device once, not per epoch
        rows = hp.num_envs * hp.num_steps
        num_minibatches = rows // hp.batch_size
        update_epoch = self.model.make_update_function()
        epoch_logs = []
        for _ in range(hp.num_epochs):
            if self.recurrent:  # whole env sequences, never mixing envs or crossing the rollout
                indices = sequence_minibatches(self.rng, rows, hp.timestep_size, hp.batch_size)
            else:
                indices = self.rng.permutation(rows)[: num_minibatches * hp.batch_size]
                indices = indices.reshape(num_minibatches, hp.batch_size)
            epoch_logs.append(update_epoch(batch, indices))
            if hp.use_kl_loss:
                kl = self._rollout_kl(numpy_batch)
                if kl > 4.0 * hp.kl_target:
                    break
            if hp.target_kl is not None and epoch_logs[-1]["approx_kl"] > hp.target_kl:
                break
        logs = {k: float(np.mean([e[k] for e in epoch_logs])) for k in epoch_logs[0]}
        check_finite_logs(logs, self.num_updates + 1)
        logs["epochs"] = len(epoch_logs)
        if hp.use_kl_loss:
            beta, self.lr_multiplier = adapt_kl_penalty(kl, hp.kl_target, self.kl_beta, self.lr_multiplier)
            self.model.kl_beta.assign(beta)
            logs.update(kl=kl, kl_beta=beta, lr_multiplier=self.lr_multiplier)
        return logs

    def _policy_params(self, batch, chunk=4096):
        """The policy head's output (distribution parameters) for a rollout's rows, as numpy.

        Recurrent rows are run as the training sequences are, so chunks hold whole sequences.
        """
        chunk -= chunk % self.model.sequence_length
        out = []
        for i in range(0, len(batch["obs"]), chunk):
            part = {k: v[i : i + chunk] for k, v in batch.items()}  # numpy views; the model reads what it needs
            out.append(keras.ops.convert_to_numpy(self.model.batch_outputs(part)[0]))
        return np.concatenate(out).astype(np.float32)

    def _rollout_kl(self, batch):
        """Mean KL(old || current) of the action distributions over the rollout's valid rows."""
        old = make_distribution(self.action_space, keras.ops.convert_to_tensor(batch["old_params"]))
        new_params = keras.ops.convert_to_tensor(self._policy_params(batch))
        new = make_distribution(self.action_space, new_params)
        kl = keras.ops.convert_to_numpy(old.kl(new))
        mask = batch["mask"] > 0
        return float(np.mean(kl[mask])) if mask.any() else 0.0

    def learn(self, total_timesteps: int, callback: Callable[["PPO", dict], bool | None] | None = None,
              progress_bar: bool = False, reset_num_timesteps: bool = True) -> "PPO":
        """Train for at least `total_timesteps` env steps (whole rollouts).

        `callback(ppo, logs)` runs after every update; returning False stops training.
        With `reset_num_timesteps=False`, `total_timesteps` counts the steps already
        taken too (a resumed run): training continues up to it, and the learning
        rate schedule continues where it stopped.
        """
        if self.env is None:
            raise ValueError("this PPO has no env to learn from: pass one to PPO(...) or PPO.load(..., env=...)")
        if not total_timesteps > 0:
            raise ValueError(f"total_timesteps must be > 0, got {total_timesteps!r}")
        hp = self.hp
        rollout = hp.num_envs * hp.num_steps
        num_updates = math.ceil(total_timesteps / rollout)
        first_update = 0 if reset_num_timesteps else min(self.num_updates, num_updates)
        buffer = self.make_buffer()
        if self._last_obs is None:
            self._reset()
        bar = None
        if progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=num_updates * rollout, initial=first_update * rollout, unit="steps",
                       dynamic_ncols=True)
        start = time.perf_counter()
        for update in range(first_update, num_updates):
            remaining = 1.0 - update / num_updates  # the linear schedules' factor
            if hp.anneal_lr or hp.use_kl_loss:
                schedule = remaining if hp.anneal_lr else 1.0
                self.model.optimizer.learning_rate = hp.lr * schedule * self.lr_multiplier
            if hp.anneal_clip_range:
                self.model.clip_epsilon.assign(hp.clip_range * remaining)
            t0 = time.perf_counter()
            self.num_timesteps += (self.gatherer or self).collect_rollout(buffer)
            t1 = time.perf_counter()
            logs = self.update(buffer)
            t2 = time.perf_counter()
            self.num_updates += 1
            logs.update(
                learning_rate=float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
                clip_range=float(keras.ops.convert_to_numpy(self.model.clip_epsilon)),
                rollout_time=t1 - t0,
                update_time=t2 - t1,
                fps=(update + 1 - first_update) * rollout / (t2 - start),
                num_timesteps=self.num_timesteps,
            )
            if self.episode_returns:
                logs["ep_rew_mean"] = float(np.mean(self.episode_returns))
                logs["ep_len_mean"] = float(np.mean(self.episode_lengths))
            self.logs = logs
            if bar is not None:
                bar.update(rollout)
                if "ep_rew_mean" in logs:
                    bar.set_postfix(ep_rew_mean=f"{logs['ep_rew_mean']:.1f}")
            if self.verbose:
                print(self._summary(logs), flush=True)
            if callback is not None and callback(self, logs) is False:
                break
        if bar is not None:
            bar.close()
        return self

    @staticmethod
    def _summary(logs):
        keys = ("num_timesteps", "ep_rew_mean", "ep_len_mean", "fps", "approx_kl",
                "clip_fraction", "kl", "kl_beta", "lr_multiplier", "entropy", "std", "value_loss",
                "explained_variance")
        return " | ".join(
            f"{k} {logs[k]:.4g}" if isinstance(logs[k], float) else f"{k} {logs[k]}"
            for k in keys if k in logs
        )

    # -- using a policy ----------------------------------------------------------

    def predict(self, obs: np.ndarray, state: np.ndarray | None = None, episode_start: np.ndarray | None = None,
                deterministic: bool = True) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Actions for one observation or a batch of them, in the env's format.

        A recurrent model needs the LSTM state too (`initial_state(n)` to begin) and
        `episode_start` (true where an episode begins: the state is zeroed there, default
        all false); it returns `(actions, next_state)`.
        """
        if self.recurrent and state is None:
            raise ValueError("this model is recurrent: pass state= (ppo.initial_state(n) to start) and "
                             "episode_start=; predict then returns (actions, next_state)")
        if not self.recurrent and (state is not None or episode_start is not None):
            raise ValueError("this model is not recurrent: it takes no state or episode_start")
        obs = np.asarray(obs, self._obs_dtype())
        single = obs.shape == tuple(self.observation_space.shape)
        if single:
            obs = obs[None]
        elif obs.shape[1:] != tuple(self.observation_space.shape):
            raise ValueError(
                f"observation shape {obs.shape} does not match the model's observation space "
                f"{tuple(self.observation_space.shape)} (or a batch of it)"
            )
        act = self.model.make_act_function(deterministic=deterministic)
        noise = self._draw_noise((len(obs), self.model.noise_size))
        if not self.recurrent:
            actions = self._to_env_actions(self._from_model_actions(self.policy_step(act, self.normalizer.obs(obs),
                                                                                     noise)[0]))
            return actions[0] if single else actions
        state = np.asarray(state, np.float32)
        given_shape = state.shape
        if single and state.ndim == 1:
            state = state[None]
        if state.shape != (len(obs), self.model.state_size):
            raise ValueError(f"state has shape {given_shape}; this model needs ({len(obs)}, "
                             f"{self.model.state_size}) for {len(obs)} observation(s)")
        starts = np.zeros(len(obs), np.float32) if episode_start is None else (
            np.asarray(episode_start, np.float32).reshape(len(obs)))
        packed_actions, _, _, next_state = self.policy_step(act, self.normalizer.obs(obs), noise, state, starts)
        actions = self._to_env_actions(self._from_model_actions(packed_actions))
        return (actions[0] if single else actions), next_state.reshape(given_shape)

    def evaluate(self, env: EnvLike | None = None, n_episodes: int = 10, deterministic: bool = True,
                 seed: int | None = None, max_episode_steps: int | None = None) -> dict:
        """Play `n_episodes` whole episodes; returns `{"mean_return", "std_return", "returns", "lengths"}`.

        `env` defaults to fresh evaluation copies of the training env id (for Atari: real
        score, whole games), cut at `max_episode_steps` if given (see `unstable_ppo.evaluation`).
        """
        return evaluation.evaluate(self, env, n_episodes, deterministic, seed, max_episode_steps)

    def set_env(self, env: EnvLike) -> None:
        """Train a loaded model on `env` (an id, a `gym.Env` or a `VectorEnv` with the model's spaces).

        The number of envs may differ from the saved run's; the next `learn` starts
        from a fresh reset of `env`.
        """
        vec, env_id = as_vector_env(env, self.hp.num_envs, self.hp.vectorization_mode,
                                    gather_per_worker=self.hp.gather_per_worker)
        try:
            self.check_env(vec)
        except ValueError:
            if isinstance(env, str):
                vec.close()
            raise
        self.env = vec
        self.hp.num_envs = vec.num_envs
        self.env_id = env_id or self.env_id
        self._last_obs = None
        normalizer = getattr(self, "normalizer", None)
        if normalizer is not None and len(normalizer.returns) != vec.num_envs:
            normalizer.returns = np.zeros(vec.num_envs, np.float64)  # per-env discounted returns start afresh

    def check_env(self, env):
        """Raise a one-line error if `env` does not fit this model's spaces."""
        obs_space = getattr(env, "single_observation_space", env.observation_space)
        act_space = getattr(env, "single_action_space", env.action_space)
        for what, ours, theirs in (
            ("observation", self.observation_space, obs_space),
            ("action", self.action_space, act_space),
        ):
            try:
                same = spaces_match(ours, theirs)
            except ValueError:
                same = False
            if not same:
                raise ValueError(f"the env's {what} space {theirs} does not match the model's {ours}")

    # -- saving ------------------------------------------------------------------

    def save(self, path: str | os.PathLike, extra: dict | None = None) -> str | os.PathLike:
        """Write `path/model.keras` (architecture, weights, optimizer) and `path/ppo.json`.

        Each file is written to a temporary name and renamed into place, so an
        interrupted save never leaves a half-written file under the real name.
        `ppo.json` also holds the counters and the sampling RNG's state, so training
        can resume; `extra` (JSON) is stored under "run" (the runner keeps its flags there).
        Non-finite weights are refused (`NonFiniteError`) before anything is written.
        """
        check_finite_weights(self.model)
        os.makedirs(path, exist_ok=True)
        write_atomically(os.path.join(path, MODEL_FILE), self.model.save, suffix=".keras")
        meta = {
            "format": "unstable_ppo",
            "format_version": FORMAT_VERSION,
            "unstable_ppo_version": __version__,
            "keras_backend": BACKEND,
            "env_id": self.env_id,
            "seed": self.seed,
            "observation_space": space_to_json(self.observation_space),
            "action_space": space_to_json(self.action_space),
            "hyperparameters": self.hp.to_json(),
            "num_timesteps": self.num_timesteps,
            "num_updates": self.num_updates,
            "rng_state": _jsonable(self.rng.bit_generator.state),
            "normalizer": self.normalizer.to_json() if self.normalizer.active else None,
            "kl_adaptation": {"kl_beta": self.kl_beta, "lr_multiplier": self.lr_multiplier},
            "run": extra or {},
        }
        write_json_atomically(os.path.join(path, META_FILE), meta)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, env: EnvLike | None = None, seed: int | None = None, verbose: int = 0,
             best: bool = False) -> "PPO":
        """A saved PPO. Nothing in the files can run code: JSON, and Keras in safe mode.

        `path` is a directory written by `save`, or a run's model directory, whose
        `latest` checkpoint is loaded (`best=True`: its `best` one). Pass `env` to keep
        training or to evaluate on a specific env; it must have the saved spaces.
        A missing, damaged, foreign or too new file is a one-line `ValueError` or
        `FileNotFoundError` that names the file.
        """
        from unstable_ppo.checkpoint import resolve_checkpoint

        path = resolve_checkpoint(path, best=best)
        meta_path = os.path.join(path, META_FILE)
        model_path = os.path.join(path, MODEL_FILE)
        for p in (meta_path, model_path):
            if not os.path.isfile(p):
                raise FileNotFoundError(f"not an unstable_ppo model directory: {p} is missing")
        meta = read_metadata(meta_path)
        for key in ("hyperparameters", "observation_space", "action_space"):
            if key not in meta:
                raise ValueError(f"corrupt model metadata {meta_path}: {key!r} is missing")
        model = _load_actor_critic(model_path)

        def field(name):
            return _metadata_field(meta_path, name)

        with field("seed"):
            saved_seed = meta.get("seed")
            if saved_seed is not None and (isinstance(saved_seed, bool) or not isinstance(saved_seed, int)):
                raise ValueError(f"{saved_seed!r} is not an integer")
        with field("hyperparameters"):
            hp = meta["hyperparameters"]
            if not isinstance(hp, dict):
                raise ValueError(f"expected an object, got {type(hp).__name__}")
            # How the saved run split its work is no part of the model: this machine may have fewer devices.
            hp = {k: v for k, v in hp.items() if k not in ("gather_per_worker", "worker_num")}
            self = cls(None, seed=seed if seed is not None else saved_seed, verbose=verbose, **hp)
        self.model = model
        for name, attribute in (("observation_space", "observation_space"), ("action_space", "action_space")):
            with field(name):
                if not isinstance(meta[name], dict):
                    raise ValueError(f"expected an object, got {type(meta[name]).__name__}")
                space = space_from_json(meta[name])
                (check_observation_space if name == "observation_space" else check_action_space)(space)
                if not spaces_match(space, getattr(model, attribute)):
                    raise ValueError(f"{space} does not match the {getattr(model, attribute)} of {model_path}")
                setattr(self, attribute, space)
        with field("hyperparameters"):
            self.hp.check_spaces(self.observation_space, self.action_space)
            for name in ("recurrent", "hidden_layer_size", "shared_lstm", "lstm_head_sizes"):
                if self.hp.recurrent and getattr(self.hp, name) != getattr(model, name):
                    raise ValueError(f"{name}={getattr(self.hp, name)!r} does not match the model's "
                                     f"{getattr(model, name)!r} in {model_path}")
            if self.hp.recurrent != model.recurrent:
                raise ValueError(f"recurrent={self.hp.recurrent!r} does not match the model's "
                                 f"{model.recurrent!r} in {model_path}")
        with field("env_id"):
            self.env_id = meta.get("env_id")
            if self.env_id is not None and not isinstance(self.env_id, str):
                raise ValueError(f"{self.env_id!r} is not a string")
        for name in ("num_timesteps", "num_updates"):
            with field(name):
                value = meta.get(name, 0)
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"{value!r} is not a count")
                setattr(self, name, value)
        with field("run"):
            self.run_info = meta.get("run") or {}
            if not isinstance(self.run_info, dict):
                raise ValueError(f"expected an object, got {type(self.run_info).__name__}")
        with field("kl_adaptation"):
            kl_adaptation = meta.get("kl_adaptation") or {}
            self.lr_multiplier = float(kl_adaptation.get("lr_multiplier", 1.0))
            if not (math.isfinite(self.lr_multiplier) and self.lr_multiplier > 0):
                raise ValueError(f"lr_multiplier {self.lr_multiplier!r} is not a positive number")
        rng_state = meta.get("rng_state")
        if seed is None and rng_state is not None:
            with field("rng_state"):
                if not isinstance(rng_state, dict):
                    raise ValueError(f"expected an object, got {type(rng_state).__name__}")
                # A state of another bit generator (another numpy's default) is ignored: the fresh one is kept.
                if rng_state.get("bit_generator") == type(self.rng.bit_generator).__name__:
                    self.rng.bit_generator.state = rng_state
        if env is not None:
            try:
                self.set_env(env)
            except ValueError as e:
                raise ValueError(f"cannot use the model in {path} on this env: {e}") from None
        self._make_normalizer()
        with field("normalizer"):
            data = meta.get("normalizer")
            if data is not None and not isinstance(data, dict):
                raise ValueError(f"expected an object, got {type(data).__name__}")
            if self.normalizer.active:
                if not data:
                    raise ValueError("missing, but normalize_obs or normalize_reward is on")
                self.normalizer.load_json(data, self.observation_space.shape)
        return self


def _load_actor_critic(model_path):
    """The ActorCritic in a `.keras` file, deserialized in Keras's safe mode (no Python code, no pickle)."""
    if not zipfile.is_zipfile(model_path):
        raise ValueError(f"corrupt or foreign model file {model_path}: not a .keras (zip) archive, "
                         f"or a truncated one")
    try:
        model = keras.models.load_model(
            model_path, custom_objects={"ActorCritic": ActorCritic}, safe_mode=True
        )
    except Exception as e:  # Keras raises many types for a bad archive
        raise ValueError(f"corrupt or foreign model file {model_path}: {_one_line(e)}") from None
    if not isinstance(model, ActorCritic):
        raise ValueError(f"{model_path} holds a {type(model).__name__}, not an unstable_ppo ActorCritic")
    return model


def _jsonable(state):
    """numpy's bit-generator state, as plain JSON types."""
    if isinstance(state, dict):
        return {k: _jsonable(v) for k, v in state.items()}
    if isinstance(state, np.integer):
        return int(state)
    return state
