"""The Python API: `PPO(env, ...)`, `.learn`, `.predict`, `.evaluate`, `.save`, `PPO.load`.

One PPO iteration (Schulman et al., 2017, Algorithm 1):

1. `collect_rollout`: `num_steps` steps of `num_envs` envs with the compiled acting
   function, into a numpy `RolloutBuffer`; GAE(λ) on top (`rollout.RolloutCollector`).
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
import inspect
import math
import os
import time
from collections import deque
from typing import Any

import gymnasium as gym
import keras
import numpy as np

from unstable_ppo import backend, evaluation, saving
from unstable_ppo.acting import predict
from unstable_ppo.callbacks import Callback, CallbackList, PrintLogs, ProgressBar, TensorBoard, next_run_dir
from unstable_ppo.buffer import RolloutBuffer, sequence_minibatches
from unstable_ppo.config import Hyperparameters, LossConfig, group_values, settings
from unstable_ppo.distributions import make_distribution
from unstable_ppo.envs import as_vector_env
from unstable_ppo.faults import check_finite_logs
from unstable_ppo.losses import adapt_kl_penalty, anneal_coefficients
from unstable_ppo.model import ActorCritic
from unstable_ppo.normalize import Normalizer
from unstable_ppo.rollout import RolloutCollector
from unstable_ppo.spaces import check_action_space, check_observation_space, spaces_match


def build_model(hp: Hyperparameters, observation_space, action_space, seed: int | None = None,
                **encoders) -> ActorCritic:
    """A fresh actor-critic for `hp`, compiled with its optimizer and loss settings.

    `encoders`: `encoder=`, or `policy_encoder=` and `value_encoder=` (Keras layers, or their saved configuration).
    """
    model = ActorCritic(observation_space, action_space, **group_values(hp, "network"), seed=seed, **encoders)
    model.kl_beta.assign(hp.init_beta)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=hp.lr, epsilon=1e-5, global_clipnorm=hp.max_grad_norm),
        loss_config=LossConfig(**group_values(hp, "loss")),
        sequence_length=hp.timestep_size if hp.recurrent else 1,
    )
    return model


# What the API takes as an env: an id, one gymnasium env, or a vector env.
EnvLike = str | gym.Env | gym.vector.VectorEnv


class PPO:
    """Proximal Policy Optimization with a Keras 3 actor-critic, on any Keras backend.

    `env`: a gymnasium env id, a `gymnasium.Env` or a `VectorEnv`. An id is built
    into `num_envs` copies (each writing a Monitor CSV into `monitor_dir`, if given);
    a `VectorEnv` brings its own `num_envs`. Dict and Tuple observations are encoded entry by entry.
    `env_kwargs` (gymnasium.make's arguments) build an id's envs; an env already built is taken as
    it is, and `env_kwargs` then say how `evaluate()` and play rebuild it from its id.

    `verbose=1` prints a summary line per update; `tensorboard_log`: a directory for TensorBoard curves
    (one `PPO_<n>` run per `learn`, keyed as Stable-Baselines3 keys them).

    `encoder`: a Keras layer of your own in place of the built-in observation encoder (for
    both networks; `policy_encoder` and `value_encoder` for one each). It maps the observation
    (a dict of entries for Dict/Tuple spaces) to `(batch, features)`; the MLP torso follows.
    Its class must be registered (`keras.saving.register_keras_serializable`), so that
    `model.keras` holds it as configuration and loads it in safe mode on any backend.
    """

    def __init__(self, env: EnvLike | None, seed: int | None = None, verbose: int = 0,
                 monitor_dir: str | os.PathLike | None = None, encoder: keras.layers.Layer | None = None,
                 policy_encoder: keras.layers.Layer | None = None, value_encoder: keras.layers.Layer | None = None,
                 tensorboard_log: str | os.PathLike | None = None, **hyperparameters: Any) -> None:
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
        self.tensorboard_log = tensorboard_log
        self.stop_training = False  # a callback sets it to stop `learn` after the current update
        self.num_timesteps = 0
        self.num_updates = 0
        self.episode_returns = deque(maxlen=100)
        self.episode_lengths = deque(maxlen=100)
        self.logs = {}
        self.run_info = {}  # what the runner stored with a loaded checkpoint
        self.lr_multiplier = 1.0  # the KL loss's servo on the learning rate
        self.normalizer = None
        self.collector = None  # steps `env`; made with the env
        self.rng = np.random.default_rng(seed)
        if seed is not None:
            backend.set_random_seed(seed)

        if env is None and (encoder or policy_encoder or value_encoder) is not None:
            raise ValueError("an encoder needs an env to build the network for: pass env=")
        self.env, self.env_id = (None, None)
        if env is None or isinstance(env, str):
            self.hp.validate()  # before building envs from an id
        if env is not None:
            self.env, self.env_id = as_vector_env(
                env, self.hp.num_envs, self.hp.vectorization_mode, self.hp.env_options(), monitor_dir=monitor_dir,
                gather_per_worker=self.hp.gather_per_worker,
            )
            self.observation_space = self.env.single_observation_space
            self.action_space = self.env.single_action_space
            check_observation_space(self.observation_space)
            check_action_space(self.action_space)
            self.hp.validate()
            self.hp.check_spaces(self.observation_space, self.action_space)
            self.model = build_model(self.hp, self.observation_space, self.action_space, seed, encoder=encoder,
                                     policy_encoder=policy_encoder, value_encoder=value_encoder)
            self._make_normalizer()
            self._make_collector()
        self.gatherer = None  # Ray actors that collect the rollouts instead (`ray_gather.RayGatherer`)
        self.compiled = None  # the compiled trainer, with vectorization_mode="compiled" (`unstable_ppo.compiled`)
        if self.env is not None:
            self._make_compiled_trainer()

    # -- setup -------------------------------------------------------------------

    def _make_normalizer(self):
        hp = self.hp
        self.normalizer = Normalizer(
            self.model.obs_layout.normalizer_shape(), hp.num_envs, hp.gamma, hp.normalize_obs, hp.normalize_reward
        )
        if self.collector is not None:
            self.collector.normalizer = self.normalizer

    def _make_compiled_trainer(self):
        """With vectorization_mode="compiled", the trainer that runs each iteration as one XLA program."""
        if self.hp.vectorization_mode != "compiled":
            self.compiled = None
            return
        env_id = getattr(self.env, "compiled_env_id", None)
        if env_id is None:
            raise ValueError("vectorization_mode 'compiled' trains on a gymnax env id (gymnax/<EnvId>), not on "
                             "an env built elsewhere")
        from unstable_ppo.compiled import CompiledTrainer  # late: it imports jax

        seed = None if self.seed is None else self.seed + self.num_updates  # a resumed run draws afresh
        self.compiled = CompiledTrainer(self, env_id, seed, monitor_files=getattr(self.env, "monitor_files", None))

    def _make_collector(self):
        """A fresh collector for `self.env`: the next `learn` starts from a reset."""
        self.collector = RolloutCollector(self.env, self.model, self.normalizer, self.hp, self.rng,
                                          self.action_space, self.seed, self.episode_returns, self.episode_lengths)

    @property
    def kl_beta(self):
        """β of the KL loss, as held by the model's variable."""
        return float(keras.ops.convert_to_numpy(self.model.kl_beta))

    def make_buffer(self) -> RolloutBuffer:
        """An empty `RolloutBuffer` for this PPO's rollouts."""
        return self.collector.make_buffer()

    def collect_rollout(self, buffer: RolloutBuffer) -> int:
        """Fill `buffer` with one rollout and its advantages (see `RolloutCollector.collect`)."""
        return self.collector.collect(buffer, self.num_updates + 1)

    @property
    def recurrent(self):
        return self.model.recurrent

    def initial_state(self, n: int = 1) -> np.ndarray:
        """The LSTM state to start `n` episodes from, for `predict(obs, state, episode_start)`."""
        if not self.recurrent:
            raise ValueError("initial_state: this model is not recurrent")
        return self.model.initial_state(n)

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
        for i in range(0, len(batch["mask"]), chunk):
            # numpy views; the model reads what it needs
            part = {k: keras.tree.map_structure(lambda a: a[i : i + chunk], v) for k, v in batch.items()}
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

    def learn(self, total_timesteps: int, callbacks: list[Callback] | None = None, progress_bar: bool = False,
              reset_num_timesteps: bool = True, tb_log_name: str = "PPO") -> "PPO":
        """Train for at least `total_timesteps` env steps (whole rollouts).

        `callbacks`: `unstable_ppo.callbacks.Callback`s (evaluation, checkpoints, TensorBoard, CSV, early
        stopping, your own); one that sets `ppo.stop_training = True` stops training after that update.
        `progress_bar`: a tqdm bar over the steps. With `tensorboard_log` set on the PPO, curves go to
        `<tensorboard_log>/<tb_log_name>_<n>`, a new n per `learn` as in Stable-Baselines3.
        With `reset_num_timesteps=False`, `total_timesteps` counts the steps already
        taken too (a resumed run): training continues up to it, and the learning
        rate schedule continues where it stopped.

        The logs each update passes to `on_update_end`: the losses and statistics of the update
        (`policy_loss`, `value_loss`, `entropy`, `approx_kl`, `clip_fraction`, `explained_variance`...),
        `learning_rate`, `clip_range`, `rollout_time`, `update_time`, `fps`, `num_timesteps`, and
        `ep_rew_mean`/`ep_len_mean` over the last 100 training episodes once there are any.
        """
        if self.env is None:
            raise ValueError("this PPO has no env to learn from: pass one to PPO(...) or PPO.load(..., env=...)")
        if not total_timesteps > 0:
            raise ValueError(f"total_timesteps must be > 0, got {total_timesteps!r}")
        hp = self.hp
        rollout = hp.num_envs * hp.num_steps
        num_updates = math.ceil(total_timesteps / rollout)
        first_update = 0 if reset_num_timesteps else min(self.num_updates, num_updates)
        callbacks = CallbackList(self._default_callbacks(callbacks, progress_bar, reset_num_timesteps, tb_log_name))
        callbacks.set_ppo(self)
        buffer = None
        if self.compiled is None:  # the compiled trainer steps envs of its own
            buffer = self.make_buffer()
            if self.collector.last_obs is None:
                self.collector.reset()
        self.stop_training = False
        callbacks.on_train_begin({"num_timesteps": self.num_timesteps, "total_timesteps": num_updates * rollout,
                                  "timesteps_done": first_update * rollout})
        start = time.perf_counter()
        for update in range(first_update, num_updates):
            remaining = 1.0 - update / num_updates  # the linear schedules' factor
            if hp.anneal_lr or hp.use_kl_loss:
                schedule = remaining if hp.anneal_lr else 1.0
                self.model.optimizer.learning_rate = hp.lr * schedule * self.lr_multiplier
            anneal_coefficients(self.model, hp, remaining)
            t0 = time.perf_counter()
            if self.compiled is not None:  # rollout and update in one program: no rollout_end in between
                logs, episodes = self.compiled.update(update, num_updates)
                self.num_timesteps += rollout
                for episode_return, episode_length in episodes:
                    self.episode_returns.append(episode_return)
                    self.episode_lengths.append(episode_length)
                t1 = t2 = time.perf_counter()
            else:
                self.num_timesteps += (self.gatherer or self).collect_rollout(buffer)
                t1 = time.perf_counter()
                callbacks.on_rollout_end(self.num_updates + 1,
                                         {"num_timesteps": self.num_timesteps, "rollout_time": t1 - t0})
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
            callbacks.on_update_end(self.num_updates, logs)
            if self.stop_training:
                break
        callbacks.on_train_end({})
        return self

    def _default_callbacks(self, callbacks, progress_bar, reset_num_timesteps, tb_log_name):
        """The caller's callbacks, then the loggers `learn`'s own arguments and the PPO's settings ask for."""
        if callbacks is not None and not isinstance(callbacks, (list, tuple)):
            raise TypeError(f"callbacks must be a list of Callback, got {type(callbacks).__name__}")
        callbacks = list(callbacks or [])
        if progress_bar:
            callbacks.append(ProgressBar())
        if self.verbose:
            callbacks.append(PrintLogs())
        if self.tensorboard_log is not None:
            callbacks.append(TensorBoard(next_run_dir(self.tensorboard_log, tb_log_name,
                                                      continue_last=not reset_num_timesteps)))
        return callbacks

    # -- using a policy ----------------------------------------------------------

    def predict(self, obs: np.ndarray, state: np.ndarray | None = None, episode_start: np.ndarray | None = None,
                deterministic: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """`(actions, state)` for one observation or a batch of them, actions in the env's format.

        As Stable-Baselines3's `predict`: sampled actions unless `deterministic`; a feed-forward
        model returns state None (and ignores `episode_start`); a recurrent one takes the state
        it returned last (None: zeros, a fresh start) and `episode_start` (true where an episode
        begins: the state is zeroed there; default all false).
        """
        return predict(self.model, self.normalizer, self.observation_space, self.action_space, self.rng, obs, state,
                       episode_start, deterministic)

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
        hp = self.hp
        vec, env_id = as_vector_env(env, hp.num_envs, hp.vectorization_mode, hp.env_options(),
                                    gather_per_worker=hp.gather_per_worker)
        try:
            self.check_env(vec)
        except ValueError:
            if isinstance(env, str):
                vec.close()
            raise
        self.env = vec
        self.hp.num_envs = vec.num_envs
        self.env_id = env_id or self.env_id
        normalizer = getattr(self, "normalizer", None)
        if normalizer is not None and len(normalizer.returns) != vec.num_envs:
            normalizer.returns = np.zeros(vec.num_envs, np.float64)  # per-env discounted returns start afresh
        self._make_collector()
        self._make_compiled_trainer()

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
        return saving.save(self, path, extra)

    def export(self, path: str | os.PathLike, format: str = "onnx", overwrite: bool = False) -> str | os.PathLike:
        """Write the deterministic policy to `path` as "onnx", "tf_saved_model" or "litert", with a
        `policy.json` beside it, to run without this package (see `unstable_ppo.export`)."""
        from unstable_ppo.export.api import export  # late: TensorFlow and the exporters load only when used

        return export(self, path, format, overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike, env: EnvLike | None = None, seed: int | None = None, verbose: int = 0,
             best: bool = False, tensorboard_log: str | os.PathLike | None = None) -> "PPO":
        """A saved PPO. Nothing in the files can run code: JSON, and Keras in safe mode.

        `path` is a directory written by `save`, or a run's model directory, whose
        `latest` checkpoint is loaded (`best=True`: its `best` one). Pass `env` to keep
        training or to evaluate on a specific env; it must have the saved spaces.
        A missing, damaged, foreign or too new file is a one-line `ValueError` or
        `FileNotFoundError` that names the file. `verbose` and `tensorboard_log` are as in `PPO(...)`.
        """
        return saving.load(cls, path, env, seed, verbose, best, tensorboard_log)


def _every_setting_a_keyword(cls):
    """Each setting of the table (config.py) becomes a keyword argument of `PPO`'s signature and a line
    of its docstring, so `help(PPO)`, `inspect.signature` and IPython/Jupyter completion show them,
    with no second list to keep in step with the table."""
    init = cls.__init__
    base = inspect.signature(init)
    params = [p for p in base.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
               for f in settings()]
    init.__signature__ = base.replace(parameters=params)
    rows = "\n".join(f"    - `{f.name}={f.default!r}`: {f.metadata['help']}" for f in settings())
    cls.__doc__ += (f"\n    Settings: keyword arguments (the runner's flags of the same names; the defaults are "
                    f"the reference code's Atari settings):\n\n{rows}\n")
    return cls


_every_setting_a_keyword(PPO)
