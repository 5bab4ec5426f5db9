"""Callbacks for `PPO.learn`, in the style of Keras's (`keras.callbacks`) with Stable-Baselines3's built-ins.

A callback sees one training run through four hooks: `on_train_begin`, `on_rollout_end` (a rollout
collected, before its update), `on_update_end` (after each PPO update, with that update's logs) and
`on_train_end`. It stops training as a Keras callback does: `self.ppo.stop_training = True`, honoured
after the current update. The runner (`python -m unstable_ppo.run`) is built from these same
callbacks: its evaluations, checkpoints and TensorBoard curves are `EvalCallback`,
`CheckpointCallback` and `TensorBoard`.

Frequencies (`eval_freq`, `save_freq`) count env steps over all envs: with 8 envs and 128 steps a
rollout, `eval_freq=10_240` evaluates every 10 updates. Stable-Baselines3 counts calls of its
callback, one per vector step, so its `eval_freq=1280` with 8 envs is ours `10_240`. A callback
fires at the first update end at or past each multiple of its frequency.

Callbacks run in the order given, except the loggers (`TensorBoard`, `CSVLogger`, the progress
bar): they run after all others, so they record what the others added to the logs (an
`EvalCallback`'s `eval_mean_reward`, say).
"""

import csv
import os
import time
from typing import Callable

import numpy as np

from unstable_ppo.checkpoint import LATEST, save_checkpoint, write_atomically
from unstable_ppo.envs import as_vector_env
from unstable_ppo.summaries import TENSORBOARD_KEYS, TensorBoardLogger


class Callback:
    """Base class: override the hooks you need. `self.ppo` is the PPO being trained.

    `logs` is the dict of the update (see `PPO.learn`); a callback may add entries to it, which the
    loggers then record. Set `self.ppo.stop_training = True` to stop after the current update.
    """

    runs_last = False  # loggers: after every other callback, to record what those added

    def set_ppo(self, ppo) -> None:
        self.ppo = ppo

    def on_train_begin(self, logs: dict) -> None:
        """`logs`: `num_timesteps` (the PPO's step counter), `total_timesteps` (this `learn`'s target in whole
        rollouts) and `timesteps_done` (the part of it already done: a resumed run's steps, else 0)."""

    def on_rollout_end(self, update: int, logs: dict) -> None:
        """A rollout of update number `update` (1-based) was collected; `logs`: `num_timesteps`, `rollout_time`.

        Not called with `vectorization_mode="compiled"`, where rollout and update are one XLA program."""

    def on_update_end(self, update: int, logs: dict) -> None:
        """Update `update` (1-based, `ppo.num_updates`) is done; `logs` holds its losses and statistics."""

    def on_train_end(self, logs: dict) -> None:
        """Training ended (all steps done, or stopped); not called when an exception ends it."""

    _steps_before = 0  # the PPO's steps at the last `_due` check (train begin: set by CallbackList)

    def _due(self, freq: int) -> bool:
        """True when the update just ended passed a multiple of `freq` env steps (see the module's docstring).

        Called once per `on_update_end` by a callback with one frequency."""
        before, self._steps_before = self._steps_before, self.ppo.num_timesteps
        return bool(freq) and self.ppo.num_timesteps // freq > before // freq


class CallbackList(Callback):
    """Several callbacks as one: the loggers last, the others in their order."""

    def __init__(self, callbacks=()):
        callbacks = list(callbacks)
        for c in callbacks:
            if not isinstance(c, Callback):
                raise TypeError(f"callbacks must be unstable_ppo.callbacks.Callback instances, got "
                                f"{type(c).__name__} (wrap a function in LambdaCallback)")
        self.callbacks = [c for c in callbacks if not c.runs_last] + [c for c in callbacks if c.runs_last]

    def set_ppo(self, ppo):
        super().set_ppo(ppo)
        for c in self.callbacks:
            c.set_ppo(ppo)

    def on_train_begin(self, logs):
        for c in self.callbacks:  # frequencies count from the steps already taken (a resumed run)
            c._steps_before = self.ppo.num_timesteps
            c.on_train_begin(logs)

    def on_rollout_end(self, update, logs):
        for c in self.callbacks:
            c.on_rollout_end(update, logs)

    def on_update_end(self, update, logs):
        for c in self.callbacks:
            c.on_update_end(update, logs)

    def on_train_end(self, logs):
        for c in self.callbacks:
            c.on_train_end(logs)


class LambdaCallback(Callback):
    """A callback from plain functions, as Keras's: `LambdaCallback(on_update_end=lambda update, logs: ...)`."""

    def __init__(self, on_train_begin: Callable | None = None, on_rollout_end: Callable | None = None,
                 on_update_end: Callable | None = None, on_train_end: Callable | None = None):
        for name, fn in (("on_train_begin", on_train_begin), ("on_rollout_end", on_rollout_end),
                         ("on_update_end", on_update_end), ("on_train_end", on_train_end)):
            if fn is not None:
                setattr(self, name, fn)


class EvalCallback(Callback):
    """Evaluate the policy every `eval_freq` env steps; keep the best model. SB3's argument names.

    `eval_env`: an env id, a `gymnasium.Env` or a `VectorEnv`; default: evaluation copies of the model's own
    env id (for Atari: real score, whole games), built once per `learn`. `best_model_save_path`: a new best
    mean return is saved to `<best_model_save_path>/best_model` (`PPO.load` reads it), replaced atomically.
    `log_path`: the evaluations so far in `<log_path>/evaluations.npz` (`timesteps`, `results`, `ep_lengths`,
    as SB3 writes them). `callback_on_new_best` (e.g. `StopTrainingOnRewardThreshold`) runs after each new best.
    The results go into the update's logs as `eval_mean_reward`, `eval_std_reward` and `eval_mean_ep_length`.
    `eval_freq=0`: no periodic evaluation (call `evaluate()` yourself).
    """

    best_model_name = "best_model"

    def __init__(self, eval_env=None, eval_freq: int = 10_000, n_eval_episodes: int = 5,
                 best_model_save_path: str | os.PathLike | None = None, log_path: str | os.PathLike | None = None,
                 deterministic: bool = True, callback_on_new_best: Callback | None = None, seed: int | None = None,
                 max_episode_steps: int | None = None, verbose: int = 1):
        if not (isinstance(eval_freq, int) and eval_freq >= 0):
            raise ValueError(f"eval_freq must be an int >= 0 (env steps), got {eval_freq!r}")
        if not (isinstance(n_eval_episodes, int) and n_eval_episodes > 0):
            raise ValueError(f"n_eval_episodes must be an int > 0, got {n_eval_episodes!r}")
        self.eval_env = eval_env
        self.eval_freq = eval_freq
        self.n_eval_episodes = n_eval_episodes
        self.best_model_save_path = best_model_save_path
        self.log_path = log_path
        self.deterministic = deterministic
        self.callback_on_new_best = callback_on_new_best
        self.seed = seed
        self.max_episode_steps = max_episode_steps
        self.verbose = verbose
        self.best_mean_reward = -np.inf
        self.last_mean_reward = None
        self.evaluations = []  # [num_timesteps, mean return, std return] per evaluation
        self.evaluation_time = 0.0  # seconds spent evaluating
        self.last_line = None  # the last evaluation, as one line
        self._lengths = []  # per evaluation: the episodes' lengths (for evaluations.npz)
        self._returns = []
        self._env = None  # the vector env built here from an id (closed at train end)

    def set_ppo(self, ppo):
        super().set_ppo(ppo)
        if self.callback_on_new_best is not None:
            self.callback_on_new_best.set_ppo(ppo)

    def on_train_begin(self, logs):
        if self.eval_env is None or isinstance(self.eval_env, str):
            env_id = self.eval_env or self.ppo.env_id
            if env_id is None:
                raise ValueError("EvalCallback needs eval_env: the model does not know its env id")
            hp = self.ppo.hp
            self._env, _ = as_vector_env(env_id, min(self.n_eval_episodes, hp.num_envs), hp.vectorization_mode,
                                         hp.env_options(), training=False, max_episode_steps=self.max_episode_steps)

    def on_update_end(self, update, logs):
        if self._due(self.eval_freq):
            self.evaluate(logs)

    def on_train_end(self, logs):
        if self._env is not None:
            self._env.close()
            self._env = None

    def evaluate(self, logs: dict | None = None) -> dict:
        """Evaluate now: record the result, save a new best, add the figures to `logs`; returns the result."""
        ppo = self.ppo
        env = self._env if self._env is not None else self.eval_env
        start = time.perf_counter()
        result = ppo.evaluate(env, self.n_eval_episodes, deterministic=self.deterministic, seed=self.seed,
                              max_episode_steps=None if self._env is not None else self.max_episode_steps)
        seconds = time.perf_counter() - start
        self.evaluation_time += seconds
        mean, std = result["mean_return"], result["std_return"]
        mean_length = float(np.mean(result["lengths"]))
        self.last_mean_reward = mean
        self.evaluations.append([ppo.num_timesteps, mean, std])
        self._returns.append(result["returns"])
        self._lengths.append(result["lengths"])
        if logs is not None:
            logs.update(eval_mean_reward=mean, eval_std_reward=std, eval_mean_ep_length=mean_length)
        self.last_line = (f"eval at {ppo.num_timesteps} steps: mean_return={mean:.2f} std_return={std:.2f} "
                          f"mean_length={mean_length:.0f} ({seconds:.1f} s)")
        new_best = mean > self.best_mean_reward
        if new_best:
            self.best_mean_reward = mean
            if self.best_model_save_path is not None:
                self.save_best()
                self.last_line += " (new best, saved)"
            else:
                self.last_line += " (new best)"
        if self.log_path is not None:
            self._write_log()
        if self.verbose:
            print(self.last_line, flush=True)
        if new_best and self.callback_on_new_best is not None:
            self.callback_on_new_best.on_update_end(ppo.num_updates, dict(logs or {}, eval_mean_reward=mean))
        return result

    def save_best(self) -> None:
        """Write the best model, atomically (a checkpoint directory swapped in by one rename)."""
        save_checkpoint(self.ppo, os.fspath(self.best_model_save_path), self.best_model_name,
                        self.checkpoint_extra())

    def checkpoint_extra(self) -> dict | None:
        """JSON stored with the best model (`PPO.save`'s `extra`)."""
        return None

    def _write_log(self):
        os.makedirs(self.log_path, exist_ok=True)
        width = max(len(r) for r in self._returns)  # ragged when n_eval_episodes changed: pad with NaN

        def pad(rows):
            return np.array([list(r) + [np.nan] * (width - len(r)) for r in rows])

        write_atomically(os.path.join(self.log_path, "evaluations.npz"),
                         lambda tmp: np.savez(tmp, timesteps=np.array([e[0] for e in self.evaluations]),
                                              results=pad(self._returns), ep_lengths=pad(self._lengths)),
                         suffix=".npz")


class StopTrainingOnRewardThreshold(Callback):
    """Stop training once an evaluation's mean return reaches `reward_threshold`.

    As SB3's: pass it to `EvalCallback(callback_on_new_best=...)`. In the callback list after an
    `EvalCallback`, it reads the update's `eval_mean_reward` the same way.
    """

    def __init__(self, reward_threshold: float, verbose: int = 0):
        self.reward_threshold = reward_threshold
        self.verbose = verbose

    def on_update_end(self, update, logs):
        mean = logs.get("eval_mean_reward")
        if mean is not None and mean >= self.reward_threshold:
            self.ppo.stop_training = True
            if self.verbose:
                print(f"stopping training: the mean return {mean:.2f} reached the threshold "
                      f"{self.reward_threshold}", flush=True)


class CheckpointCallback(Callback):
    """Save the model every `save_freq` env steps, each save atomic.

    Into `<save_path>/<name_prefix>_<steps>_steps` (one directory per save, as SB3's), or with
    `latest_only=True` into `<save_path>/latest`, replaced at each save (`PPO.load(save_path)` reads it,
    as it reads a runner's model directory).
    """

    def __init__(self, save_freq: int, save_path: str | os.PathLike, name_prefix: str = "ppo",
                 latest_only: bool = False, verbose: int = 0):
        if not (isinstance(save_freq, int) and save_freq >= 0):
            raise ValueError(f"save_freq must be an int >= 0 (env steps), got {save_freq!r}")
        self.save_freq = save_freq
        self.save_path = os.fspath(save_path)
        self.name_prefix = name_prefix
        self.latest_only = latest_only
        self.verbose = verbose

    def on_update_end(self, update, logs):
        if self._due(self.save_freq):
            self.save()

    def save(self) -> str:
        """Save now; returns the checkpoint's path."""
        name = LATEST if self.latest_only else f"{self.name_prefix}_{self.ppo.num_timesteps}_steps"
        path = save_checkpoint(self.ppo, self.save_path, name, self.checkpoint_extra())
        if self.verbose:
            print(f"saved a checkpoint to {path}", flush=True)
        return path

    def checkpoint_extra(self) -> dict | None:
        """JSON stored with each checkpoint (`PPO.save`'s `extra`)."""
        return None


class TensorBoard(Callback):
    """TensorBoard curves in `log_dir`, keyed as SB3 keys them (`rollout/ep_rew_mean`, `train/approx_kl`...).

    The step of each point is the number of env steps so far. Written with the `tensorboard` package:
    no TensorFlow on the jax and torch backends.
    """

    runs_last = True

    def __init__(self, log_dir: str | os.PathLike):
        self.log_dir = os.fspath(log_dir)
        self._logger = None

    def write(self, logs: dict, step: int) -> None:
        """Write the scalars of `logs` known to TensorBoard (summaries.TENSORBOARD_KEYS) at `step`."""
        if self._logger is None:
            self._logger = TensorBoardLogger(self.log_dir)
        self._logger.write(logs, step)

    def on_update_end(self, update, logs):
        self.write(logs, self.ppo.num_timesteps)

    def on_train_end(self, logs):
        if logs:  # figures added at the end (a final evaluation)
            self.write(logs, self.ppo.num_timesteps)
        self.close()

    def close(self) -> None:
        if self._logger is not None:
            self._logger.close()
            self._logger = None


class CSVLogger(Callback):
    """One CSV row per update with SB3's `progress.csv` columns (`time/total_timesteps`, `rollout/ep_rew_mean`...).

    A column first seen later (an evaluation's) rewrites the file with the wider header, as SB3 does.
    `append=True` continues an existing file (a resumed run).
    """

    runs_last = True

    def __init__(self, filename: str | os.PathLike, append: bool = False):
        self.filename = os.fspath(filename)
        self.append = append
        self._rows = None
        self._start = None

    def on_train_begin(self, logs):
        self._start = time.perf_counter()
        self._rows = []
        if self.append and os.path.exists(self.filename):
            with open(self.filename, newline="") as f:
                self._rows = list(csv.DictReader(f))
        self._columns = list(self._rows[0]) if self._rows else []

    def on_update_end(self, update, logs):
        row = {"time/total_timesteps": self.ppo.num_timesteps, "time/iterations": update,
               "time/time_elapsed": round(time.perf_counter() - self._start, 3)}
        for name, (key, sign) in TENSORBOARD_KEYS.items():
            if name in logs:
                row[key] = sign * float(logs[name])
        new = [k for k in row if k not in self._columns]
        self._columns += new
        self._rows.append(row)
        os.makedirs(os.path.dirname(os.path.abspath(self.filename)), exist_ok=True)
        if new or len(self._rows) == 1:
            self._rewrite()
        else:
            with open(self.filename, "a", newline="") as f:
                csv.DictWriter(f, self._columns).writerow(row)

    def _rewrite(self):
        def write(tmp):
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, self._columns)
                writer.writeheader()
                writer.writerows(self._rows)

        write_atomically(self.filename, write, suffix=".csv")


class ProgressBar(Callback):
    """A tqdm progress bar over the env steps of `learn` (`learn(progress_bar=True)` adds one)."""

    runs_last = True

    def on_train_begin(self, logs):
        from tqdm.auto import tqdm

        self._bar = tqdm(total=logs["total_timesteps"], initial=logs["timesteps_done"], unit="steps",
                         dynamic_ncols=True)
        self._steps = self.ppo.num_timesteps

    def on_update_end(self, update, logs):
        self._bar.update(self.ppo.num_timesteps - self._steps)
        self._steps = self.ppo.num_timesteps
        if "ep_rew_mean" in logs:
            self._bar.set_postfix(ep_rew_mean=f"{logs['ep_rew_mean']:.1f}")

    def on_train_end(self, logs):
        self._bar.close()


class PrintLogs(Callback):
    """One summary line per update on stdout (`PPO(verbose=1)` adds one)."""

    runs_last = True

    def on_update_end(self, update, logs):
        print(summary_line(logs), flush=True)


SUMMARY_KEYS = ("num_timesteps", "ep_rew_mean", "ep_len_mean", "fps", "approx_kl", "clip_fraction", "kl", "kl_beta",
                "lr_multiplier", "entropy", "std", "value_loss", "explained_variance")


def summary_line(logs: dict) -> str:
    """An update's main figures on one line."""
    return " | ".join(f"{k} {logs[k]:.4g}" if isinstance(logs[k], float) else f"{k} {logs[k]}"
                      for k in SUMMARY_KEYS if k in logs)


def next_run_dir(log_dir: str | os.PathLike, name: str, continue_last: bool) -> str:
    """`<log_dir>/<name>_<n>` as SB3 names TensorBoard runs: n one more than the last (the last itself when
    a training continues with `reset_num_timesteps=False`)."""
    last = 0
    if os.path.isdir(log_dir):
        for entry in os.listdir(log_dir):
            stem, _, number = entry.rpartition("_")
            if stem == name and number.isdigit():
                last = max(last, int(number))
    return os.path.join(os.fspath(log_dir), f"{name}_{max(1, last if continue_last else last + 1)}")
