"""Env failures as events, not crashes: every env tags what it raises with its index, and a supervised vector
env is rebuilt when one of its envs fails (the rules are in `unstable_ppo.faults`)."""

import copy
import logging
import multiprocessing
import warnings

import gymnasium as gym
import numpy as np
from gymnasium.vector import VectorWrapper
from gymnasium.vector.utils import iterate

from unstable_ppo.faults import EnvError, EnvFailure

logger = logging.getLogger("unstable_ppo")


class TagEnvErrors(gym.Wrapper):
    """Re-raise whatever the wrapped env raises as an `EnvError` that names the env."""

    def __init__(self, env, index):
        super().__init__(env)
        self.index = index

    def step(self, action):
        try:
            return self.env.step(action)
        except Exception as e:
            raise EnvError(f"env {self.index}: {type(e).__name__}: {e}", self.index) from e

    def reset(self, **kwargs):
        try:
            return self.env.reset(**kwargs)
        except Exception as e:
            raise EnvError(f"env {self.index}: {type(e).__name__} in reset: {e}", self.index) from e


class SupervisedVectorEnv(VectorWrapper):
    """A vector env that is rebuilt, not fatal, when one of its envs fails.

    `make_env()` builds the vector env (again). Every wait on a worker process is
    bounded by `timeout` seconds, so a hung worker is a failure, not a hang. After a
    failure the step returns the rebuilt envs' first observations, zero rewards and
    `truncated` everywhere, with the last good observations as `final_obs` (the
    value bootstrap of the cut episodes). The Monitor CSVs continue (append mode).
    """

    def __init__(self, make_env, max_restarts=10, timeout=60.0):
        super().__init__(make_env(False))
        self._make_env = make_env
        self.max_restarts = max_restarts
        self.timeout = timeout
        self.restarts = 0
        self._last_obs = None  # with copy=False a buffer of the env's: the failing step may have half-filled it
        # gymnasium reports a worker's error as three warnings, one a full traceback; the
        # one-line warning of `_failed` says the same, so keep the console readable.
        warnings.filterwarnings(
            "ignore", category=UserWarning,
            message=r"\x1b\[31mERROR: (Received the following error from Worker|Traceback|Raising the last)",
        )

    def reset(self, *, seed=None, options=None):
        try:
            obs, info = self._reset(seed=seed, options=options)
        except Exception as e:
            self._failed(e, "reset")
            obs, info = self._rebuild()
        self._last_obs = obs
        return obs, info

    def step(self, actions):
        try:
            if isinstance(self.env, gym.vector.AsyncVectorEnv):
                self.env.step_async(actions)
                result = self.env.step_wait(timeout=self.timeout)
            else:
                result = self.env.step(actions)
        except Exception as e:
            self._failed(e, "step")
            obs, info = self._rebuild()
            n = self.num_envs
            final_obs = np.empty(n, dtype=object)
            for i, row in enumerate(iterate(self.observation_space, self._last_obs)):
                final_obs[i] = copy.deepcopy(row)  # Dict/Tuple observations too
            info = {**info, "final_obs": final_obs, "_final_obs": np.ones(n, bool),
                    "env_restarted": np.ones(n, bool)}
            self._last_obs = obs
            return obs, np.zeros(n, np.float64), np.zeros(n, bool), np.ones(n, bool), info
        self._last_obs = result[0]
        return result

    def _reset(self, seed, options):
        if isinstance(self.env, gym.vector.AsyncVectorEnv):
            self.env.reset_async(seed=seed, options=options)
            return self.env.reset_wait(timeout=self.timeout)
        return self.env.reset(seed=seed, options=options)

    def _failed(self, error, during):
        self.restarts += 1
        which = self._failed_envs(error)
        what = f"{type(error).__name__}: {error}" if not isinstance(error, EnvError) else str(error)
        if isinstance(error, multiprocessing.TimeoutError):
            what = f"no answer within {self.timeout:g} s"
        where = f"env {', '.join(map(str, which))}" if which else "an env"
        if self.restarts > self.max_restarts:
            raise EnvFailure(
                f"{where} failed during {during} ({what.splitlines()[0]}): that is {self.restarts} env failures, "
                f"more than max_env_restarts={self.max_restarts}"
            ) from error
        logger.warning("%s failed during %s (%s): rebuilding the envs (failure %d of at most %d)",
                       where, during, what.splitlines()[0] if what else "", self.restarts, self.max_restarts)

    def _failed_envs(self, error):
        if isinstance(error, EnvError) and error.env_index is not None:
            return [error.env_index]
        if isinstance(error, multiprocessing.TimeoutError) and isinstance(self.env, gym.vector.AsyncVectorEnv):
            return [i for i, pipe in enumerate(self.env.parent_pipes) if pipe is not None and not pipe.poll(0)]
        processes = getattr(self.env, "processes", None)
        if processes:
            return [i for i, p in enumerate(processes) if not p.is_alive()]
        return []

    def close(self, **kwargs):
        """Close the envs; workers that are dead or do not answer are killed, not waited for."""
        if self.env.closed:
            return
        if isinstance(self.env, gym.vector.AsyncVectorEnv):
            if all(p.is_alive() for p in self.env.processes) and all(self.env.parent_pipes):
                try:
                    return self.env.close(timeout=self.timeout)
                except Exception:
                    pass
            self._kill()
            return
        return self.env.close(**kwargs)

    def _kill(self):
        env = self.env
        if not isinstance(env, gym.vector.AsyncVectorEnv):
            try:
                env.close()
            except Exception:  # a broken env may not close cleanly
                pass
            return
        for process in env.processes:  # SIGKILL: a stopped or hung worker ignores SIGTERM
            if process.is_alive():
                process.kill()
        try:
            env.close(terminate=True)
        except Exception:  # gymnasium waits for the pending step first, on a dead pipe: clean up here
            for pipe in env.parent_pipes:
                if pipe is not None:
                    pipe.close()
            for process in env.processes:
                process.join()
            env.closed = True

    def _rebuild(self):
        self._kill()
        self.env = self._make_env(True)
        try:
            return self._reset(seed=None, options=None)
        except Exception as e:  # failing again at once: count it, and try again while allowed
            self._failed(e, "reset after a rebuild")
            return self._rebuild()
