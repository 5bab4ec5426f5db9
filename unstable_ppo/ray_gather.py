"""Experience-gathering workers as Ray actors, on one machine or across many.

Each of the M actors owns `num_envs/M` of the run's envs (env `i` is the same env,
with the same seed, as in an in-process run) and its own `PPO` with the run's
hyperparameters, which it uses only to act. Per rollout the driver puts its current
weights (numpy) into the object store once; every actor loads them, runs the
same `RolloutCollector` as an in-process run on its envs (GAE included: it is per env column) and
returns every numpy array of its `RolloutBuffer`. The driver writes them into its
own buffer along the env axis (`RolloutBuffer.store_columns`) and runs the usual update.

The sampling noise is the driver's: each actor gets the driver's RNG state, draws
the whole rollout's noise as the in-process run would and keeps its own columns.
So a seeded run collects the same trajectories with 1, 2 or M actors as without
Ray (up to the float rounding of acting on a smaller batch).

Faults: an actor that dies is restarted by Ray (`max_restarts`; its constructor
builds fresh envs, and its Monitor files continue). The rollout it was collecting
is lost: the update goes on with the survivors' env columns (the lost columns get
`mask` 0, so the loss and its statistics skip them) and the restarted actor rejoins
the next rollout. Only if every actor failed is the rollout collected again.

Running observation/reward normalization keeps statistics in one process and is
refused here (`check_options`).
"""

import logging
import os
import socket
import threading
import time

import numpy as np

import unstable_ppo
from unstable_ppo.config import Hyperparameters
from unstable_ppo.envs import make_vec_env
from unstable_ppo.envs.gather import split_envs
from unstable_ppo.normalize import Normalizer
from unstable_ppo.rollout import RolloutCollector

logger = logging.getLogger("unstable_ppo")

CONNECT_TIMEOUT_S = 5.0
JOIN_TIMEOUT_S = 20.0
# Options whose state lives in one process: they cannot be split over actors.
SINGLE_PROCESS_OPTIONS = ("normalize_obs", "normalize_reward")


def resolve_address(address):
    """The Ray address to use: the flag, else $RAY_ADDRESS, else None (no Ray)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def check_options(hyperparameters):
    """A one-line `ValueError` for options that cannot work across actors."""
    for name in SINGLE_PROCESS_OPTIONS:
        if hyperparameters.get(name):
            raise ValueError(f"{name} keeps running statistics in one process: it cannot be combined with "
                             f"Ray gathering workers (drop --ray_address or --{name})")
    if hyperparameters.get("vectorization_mode") == "ale":
        raise ValueError("vectorization_mode 'ale' cannot be split over Ray gathering workers: use 'sync'")


def connect(address, timeout=CONNECT_TIMEOUT_S, join_timeout=JOIN_TIMEOUT_S):
    """Join the Ray cluster at `address`; a one-line `ValueError` within seconds if that cannot be done.

    `ray.init` keeps retrying an address nobody listens on for a minute or more, so a
    `host:port` address is first probed with a plain TCP connection.
    """
    try:
        import ray  # late: the ray extra is optional
    except ImportError:
        raise ValueError(f"--ray_address={address} needs Ray, which is not installed: "
                         f"pip install 'unstable_ppo[ray]'") from None
    if ray.is_initialized():
        return ray
    if address not in ("auto", "local"):
        host_port = address.split("://", 1)[-1]
        host, _, port = host_port.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--ray_address={address} is not host:port, ray://host:port, 'auto' or 'local'")
        try:
            socket.create_connection((host, int(port)), timeout=timeout).close()
        except OSError as e:
            raise ValueError(f"cannot reach the Ray cluster at {address} within {timeout:g} s: "
                             f"{e.strerror or e}") from None
    env_vars = {"TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": _backend()}
    outcome = []

    def join():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                     runtime_env={"py_modules": [unstable_ppo], "env_vars": env_vars})
            outcome.append(None)
        except Exception as e:  # noqa: BLE001 - reported below, in one line
            outcome.append(e)

    # Something that accepts TCP but is no Ray head makes ray.init wait for minutes: bound it.
    thread = threading.Thread(target=join, name="ray-init", daemon=True)
    thread.start()
    thread.join(join_timeout)
    if not outcome:
        hint = ("; a cluster with token authentication (ray start's default) also needs RAY_AUTH_MODE=token here"
                if not os.environ.get("RAY_AUTH_MODE") else "")
        raise ValueError(f"no Ray cluster answered at {address} within {join_timeout:g} s{hint}")
    if outcome[0] is not None:
        raise ValueError(f"cannot join the Ray cluster at {address}: {str(outcome[0]).splitlines()[0]}")
    return ray


def _backend():
    import keras  # late: the runner imports this module before it chooses the backend

    return keras.backend.backend()


class GatheringWorker:
    """A Ray actor: the envs `first_index .. first_index + num_envs - 1`, stepped by a `RolloutCollector`.

    It only acts: its model gets the driver's weights before every rollout, and its
    collector the driver's RNG state (keeping its own columns of the run's noise).
    """

    def __init__(self, env_id, first_index, num_envs, total_envs, seed, hyperparameters, make_kwargs, encoders=None):
        import ray  # late, as in connect()

        from unstable_ppo.ppo import build_model  # Keras: this module is imported before the backend is chosen

        restarted = ray.get_runtime_context().was_current_actor_reconstructed
        make_kwargs = dict(make_kwargs)
        make_kwargs["monitor_append"] = make_kwargs.get("monitor_append", False) or restarted
        hp = Hyperparameters(**dict(hyperparameters, num_envs=num_envs, gather_per_worker=1, worker_num=1))
        make_kwargs.setdefault("options", hp.env_options())  # the model's env options, unless the caller gives them
        env = make_vec_env(env_id, num_envs, hp.vectorization_mode, first_index=first_index, **make_kwargs)
        obs_space, action_space = env.single_observation_space, env.single_action_space
        model = build_model(hp, obs_space, action_space, **(encoders or {}))  # user encoders: their configuration
        normalizer = Normalizer(model.obs_layout.normalizer_shape(), num_envs, hp.gamma, hp.normalize_obs,
                                hp.normalize_reward)
        self.collector = RolloutCollector(env, model, normalizer, hp, np.random.default_rng(), action_space,
                                          seed=None if seed is None else seed + first_index,
                                          noise_columns=(first_index, total_envs))
        self.buffer = self.collector.make_buffer()
        self.restarted = restarted

    def info(self):
        return {"pid": os.getpid(), "node": socket.gethostname(), "restarted": self.restarted}

    def collect(self, weights, rng_state, num_updates):
        """One rollout with the driver's `weights` and RNG state: `({name: array}, [(return, length)], seconds)`."""
        start = time.perf_counter()
        collector = self.collector
        collector.model.set_weights(weights)
        collector.rng.bit_generator.state = rng_state
        if collector.last_obs is None:
            collector.reset()
        collector.episode_returns.clear()  # from here on: this rollout's episodes, for the driver's statistics
        collector.episode_lengths.clear()
        collector.collect(self.buffer, num_updates + 1)
        episodes = list(zip(collector.episode_returns, collector.episode_lengths))
        return self.buffer.arrays(), episodes, time.perf_counter() - start

    def close(self):
        self.collector.env.close()


class RayGatherer:
    """The driver's side: `num_workers` `GatheringWorker` actors filling `ppo`'s rollouts.

    Attach it as `ppo.gatherer`; `PPO.learn` then calls its `collect_rollout(buffer)`.
    `ready_timeout` bounds the wait for the actors to start (a cluster without room
    for them is an error, not a hang); `rollout_timeout` bounds a rollout.
    """

    def __init__(self, ppo, env_id, num_workers, seed=None, make_kwargs=None, max_restarts=10,
                 ready_timeout=180.0, rollout_timeout=600.0):
        import ray  # late, as in connect()

        hp = ppo.hp
        hyperparameters = dict(vars(hp))
        check_options(hyperparameters)
        self.ppo, self.ray = ppo, ray
        self.blocks = split_envs(hp.num_envs, num_workers)
        self.rollout_timeout = rollout_timeout
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < num_workers:
            raise ValueError(f"the Ray cluster has {cpus:g} CPUs, fewer than the {num_workers} gathering actors "
                             f"(one CPU each) need")
        actor = ray.remote(num_cpus=1, max_restarts=max_restarts, max_task_retries=0)(GatheringWorker)
        self.actors = [
            actor.remote(env_id, block[0], len(block), hp.num_envs, seed, hyperparameters, make_kwargs or {},
                         ppo.model.encoder_config())
            for block in self.blocks
        ]
        try:
            self.infos = ray.get([a.info.remote() for a in self.actors], timeout=ready_timeout)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise ValueError(f"the {num_workers} gathering actors did not start within {ready_timeout:g} s") from None
        self.lost = []  # (update, actor index, error) for every rollout an actor did not deliver
        self.restarting = {}  # actor index -> a ping that answers once Ray has restarted it
        self.timings = []  # per rollout: the slowest actor's own collection time

    def describe(self):
        return [f"gathering actor {k} (envs {b[0]}-{b[-1]}) on {i['node']} pid {i['pid']}"
                for k, (b, i) in enumerate(zip(self.blocks, self.infos))]

    def collect_rollout(self, buffer):
        """Fill `buffer` from the actors; returns the env steps actually collected."""
        ray, ppo = self.ray, self.ppo
        T, N = ppo.hp.num_steps, ppo.hp.num_envs
        while True:
            self._check_restarted()
            weights = ray.put([np.asarray(w) for w in ppo.model.get_weights()])
            rng_state = ppo.rng.bit_generator.state
            refs = {k: a.collect.remote(weights, rng_state, ppo.num_updates)
                    for k, a in enumerate(self.actors) if k not in self.restarting}
            ppo.collector.rollout_noise()  # the driver's RNG moves on as in-process
            collected, slowest = [], 0.0
            for k, ref in refs.items():
                block = self.blocks[k]
                try:
                    arrays, episodes, seconds = ray.get(ref, timeout=self.rollout_timeout)
                except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as e:
                    self.lost.append((ppo.num_updates + 1, k, type(e).__name__))
                    logger.warning("gathering actor %d (envs %d-%d) failed during rollout %d (%s): the updates "
                                   "go on with the other actors' envs until Ray has restarted it", k, block[0],
                                   block[-1], ppo.num_updates + 1, type(e).__name__)
                    self.restarting[k] = self.actors[k].info.remote()
                    continue
                buffer.store_columns(arrays, slice(block[0], block[-1] + 1))
                for r, length in episodes:
                    ppo.episode_returns.append(float(r))
                    ppo.episode_lengths.append(int(length))
                collected.append(block)
                slowest = max(slowest, seconds)
            if collected:
                break
            logger.warning("every gathering actor failed during rollout %d: collecting it again",
                           ppo.num_updates + 1)
            ray.wait(list(self.restarting.values()), num_returns=1, timeout=self.rollout_timeout)
        live = np.zeros(N, bool)
        for block in collected:
            live[block[0] : block[-1] + 1] = True
        buffer.mask[:, ~live] = 0.0  # lost columns: no part of the loss or its statistics
        self.timings.append(slowest)
        return T * int(live.sum())

    def _check_restarted(self):
        """Actors whose restart has finished rejoin the next rollout."""
        ray = self.ray
        for k, ping in list(self.restarting.items()):
            ready, _ = ray.wait([ping], timeout=0)
            if not ready:
                continue
            try:
                self.infos[k] = ray.get(ping)
            except ray.exceptions.RayActorError:  # not up yet, or out of restarts: ask again next rollout
                self.restarting[k] = self.actors[k].info.remote()
                continue
            del self.restarting[k]
            logger.warning("gathering actor %d (envs %d-%d) is back (pid %d): it rejoins rollout %d", k,
                           self.blocks[k][0], self.blocks[k][-1], self.infos[k]["pid"], self.ppo.num_updates + 1)

    def close(self):
        for a in self.actors:
            try:
                self.ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
