"""Experience-gathering workers on one machine: `num_envs` envs stepped in M processes.

`GatherVectorEnv` is one gymnasium `VectorEnv` of `num_envs` envs whose copies live
in M worker processes, each stepping an in-process `SyncVectorEnv` of num_envs/M
of them. It is the middle ground between "sync" (every env in the learner's
process, no parallelism) and "async" (one process per env: a pipe round trip per
env and step, which costs more than a cheap env's step). The learner sends each
worker its slice of the actions, the workers step their envs concurrently, and the
observations come back through shared memory (gymnasium's `create_shared_memory`),
so only rewards, flags and infos cross the pipes.

It behaves like the in-process vector env `make_vec_env` builds: SAME_STEP
autoreset, `info["final_obs"]`, the Monitors' `info["episode"]`, env `i` seeded
with `seed + i`. Env `i` is the same env with the same seed whichever worker holds
it, so a seeded rollout does not depend on M.

A worker's failure is reported like an `AsyncVectorEnv`'s: an exception in an env
is re-raised here (an `EnvError` naming the env), a dead worker is an `EnvError`
naming its envs, and a worker that does not answer within `timeout` seconds is a
`multiprocessing.TimeoutError`; `supervisor.SupervisedVectorEnv` rebuilds on any of them.
"""

import multiprocessing
import sys
import traceback

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import (
    CloudpickleWrapper,
    batch_space,
    create_shared_memory,
    iterate,
    read_from_shared_memory,
    write_to_shared_memory,
)

from unstable_ppo.faults import EnvError


def split_envs(num_envs, num_workers):
    """The env indices of each worker: contiguous, equal blocks (`config.check_split` has checked the split)."""
    size = num_envs // num_workers
    return [list(range(w * size, (w + 1) * size)) for w in range(num_workers)]


class GatherVectorEnv(VectorEnv):
    """`num_envs` envs in `len(make_workers)` processes; looks like one SAME_STEP `VectorEnv`.

    `make_workers[w]()` builds worker w's vector env (SAME_STEP autoreset) of the
    envs `indices[w]`; `make_probe()` builds one env in this process for the spaces
    (it must write no files). `timeout` bounds every wait for a worker. The workers
    start from a fork server, not a fork of this process: a fork of a process running
    JAX's or TensorFlow's threads can deadlock.
    """

    def __init__(self, make_workers, indices, make_probe, timeout=60.0, context="forkserver"):
        self.indices = [list(block) for block in indices]
        self.num_envs = sum(len(block) for block in self.indices)
        self.timeout = timeout
        probe = make_probe()
        try:
            self.single_observation_space = probe.observation_space
            self.single_action_space = probe.action_space
            self.metadata = dict(probe.metadata)
            self.render_mode = probe.render_mode
        finally:
            probe.close()
        self.metadata["autoreset_mode"] = AutoresetMode.SAME_STEP
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        ctx = multiprocessing.get_context(context)
        self._shared_obs = create_shared_memory(self.single_observation_space, n=self.num_envs, ctx=ctx)
        self._obs = read_from_shared_memory(self.single_observation_space, self._shared_obs, n=self.num_envs)
        self.pipes, self.workers = [], []
        for w, (make, block) in enumerate(zip(make_workers, self.indices)):
            parent, child = ctx.Pipe()
            process = ctx.Process(
                target=_worker, name=f"gather-worker-{w}", daemon=True,
                args=(CloudpickleWrapper(make), child, parent, self._shared_obs, block[0] - self.indices[0][0],
                      self.single_observation_space),
            )
            process.start()
            child.close()
            self.pipes.append(parent)
            self.workers.append(process)
        self.closed = False
        for w in range(len(self.workers)):
            self._receive(w, "start")

    # -- the VectorEnv API -----------------------------------------------------------

    def reset(self, *, seed=None, options=None):
        if isinstance(seed, (int, np.integer)):
            seed = [int(seed) + i for i in range(self.num_envs)]  # SyncVectorEnv's rule: env i gets seed + i
        for w, block in enumerate(self.indices):
            first = block[0] - self.indices[0][0]
            chunk = None if seed is None else list(seed[first : first + len(block)])
            self._send(w, ("reset", {"seed": chunk, "options": options}), "reset")
        infos = [self._receive(w, "reset") for w in range(len(self.workers))]
        return self._obs.copy(), self._merge_infos(infos)

    def step(self, actions):
        actions = np.asarray(actions) if not isinstance(actions, (tuple, dict)) else actions
        for w, block in enumerate(self.indices):
            first = block[0] - self.indices[0][0]
            self._send(w, ("step", actions[first : first + len(block)]), "step")
        results = [self._receive(w, "step") for w in range(len(self.workers))]
        rewards = np.concatenate([r[0] for r in results])
        terminated = np.concatenate([r[1] for r in results])
        truncated = np.concatenate([r[2] for r in results])
        return self._obs.copy(), rewards, terminated, truncated, self._merge_infos([r[3] for r in results])

    def close_extras(self, **kwargs):
        """Ask each worker to close its envs; kill the ones that are dead or do not answer."""
        for w, (pipe, process) in enumerate(zip(self.pipes, self.workers)):
            try:
                if process.is_alive():
                    pipe.send(("close", None))
                    if pipe.poll(min(self.timeout, 10.0)):
                        pipe.recv()
            except (OSError, EOFError):
                pass
            process.join(timeout=1.0)
            if process.is_alive():
                process.kill()
                process.join()
            pipe.close()

    # -- plumbing --------------------------------------------------------------------

    def _envs(self, w):
        block = self.indices[w]
        return f"envs {block[0]}-{block[-1]}" if len(block) > 1 else f"env {block[0]}"

    def _died(self, w, during):
        self.workers[w].join(timeout=1.0)
        return EnvError(f"gathering worker {w} ({self._envs(w)}) died during {during} "
                        f"(exit code {self.workers[w].exitcode})")

    def _send(self, w, message, during):
        try:
            self.pipes[w].send(message)
        except (OSError, BrokenPipeError):
            raise self._died(w, during) from None

    def _receive(self, w, during):
        pipe, envs = self.pipes[w], self._envs(w)
        try:
            if not pipe.poll(self.timeout):
                raise multiprocessing.TimeoutError(f"gathering worker {w} ({envs}) gave no answer to {during} "
                                                   f"within {self.timeout:g} s")
            status, payload = pipe.recv()
        except (EOFError, OSError, BrokenPipeError):
            raise self._died(w, during) from None
        if status == "error":
            kind, message = payload
            if kind == "EnvError":
                raise EnvError(message)
            raise RuntimeError(f"gathering worker {w} ({envs}): {kind}: {message}")
        return payload

    def _merge_infos(self, infos):
        """The workers' per-env infos (arrays over their envs, nested dicts) as one info over all envs."""
        return _merge(infos, self.indices, self.num_envs)


def _merge(infos, indices, n):
    keys = []
    for info in infos:
        keys += [k for k in info if k not in keys]
    merged = {}
    for key in keys:
        parts = [(info[key], block) for info, block in zip(infos, indices) if key in info]
        if isinstance(parts[0][0], dict):
            merged[key] = _merge([info.get(key, {}) for info in infos], indices, n)
            continue
        first = np.asarray(parts[0][0])
        if first.ndim == 0 or len(first) != len(parts[0][1]):  # not per-env: keep worker 0's
            merged[key] = parts[0][0]
            continue
        out = np.empty((n, *first.shape[1:]), first.dtype) if first.dtype == object else \
            np.zeros((n, *first.shape[1:]), first.dtype)
        for value, block in parts:
            first = block[0] - indices[0][0]
            out[first : first + len(block)] = value
        merged[key] = out
    return merged


def _worker(make, pipe, parent_pipe, shared_obs, offset, single_observation_space):
    """One gathering worker: step its vector env on command, observations into shared memory."""
    parent_pipe.close()
    env = None

    def publish(obs):
        for j, value in enumerate(iterate(env.observation_space, obs)):
            write_to_shared_memory(single_observation_space, offset + j, value, shared_obs)

    try:
        env = make.fn()
        pipe.send(("ok", None))
        while True:
            command, data = pipe.recv()
            if command == "reset":
                obs, info = env.reset(**data)
                publish(obs)
                pipe.send(("ok", info))
            elif command == "step":
                obs, rewards, terminated, truncated, info = env.step(data)
                publish(obs)
                pipe.send(("ok", (np.asarray(rewards), np.asarray(terminated), np.asarray(truncated), info)))
            elif command == "close":
                env.close()
                env = None
                pipe.send(("ok", None))
                break
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        pass
    except Exception as e:  # noqa: BLE001 - every env error goes back to the learner
        try:
            pipe.send(("error", (type(e).__name__, str(e) or traceback.format_exc().splitlines()[-1])))
        except (OSError, BrokenPipeError):
            print(f"gathering worker: {type(e).__name__}: {e}", file=sys.stderr)
    finally:
        if env is not None:
            try:
                env.close()
            except Exception:  # noqa: BLE001 - the worker is going away anyway
                pass
        pipe.close()
