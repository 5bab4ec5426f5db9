"""How the work of a run is split, checked in one place so every entry point says the same.

- `gather_per_worker` M: the rollout's `num_envs` envs are stepped by M gathering
  workers (processes on this machine, `unstable_ppo.gather`, or Ray actors with a
  Ray address, `unstable_ppo.ray_gather`), num_envs/M envs each;
- `worker_num` N: each minibatch is split over N devices (data-parallel learners;
  JAX only, `unstable_ppo.backend.jax`).

Neither changes the result of a seeded run, only how fast it comes.
"""

DATA_PARALLEL_BACKENDS = ("jax",)


def check_split(num_envs, gather_per_worker, worker_num, batch_size):
    """One-line `ValueError`s for a split that cannot work."""
    if gather_per_worker > num_envs:
        raise ValueError(f"gather_per_worker={gather_per_worker} is larger than num_envs={num_envs}: "
                         f"each gathering worker needs at least one env")
    if num_envs % gather_per_worker:
        raise ValueError(f"gather_per_worker={gather_per_worker} does not divide num_envs={num_envs}: "
                         f"each gathering worker steps num_envs/gather_per_worker envs")
    if worker_num == 1:
        return
    import keras  # late: config.py imports this module before the runner chooses the backend

    backend = keras.backend.backend()
    if backend not in DATA_PARALLEL_BACKENDS:
        raise ValueError(f"worker_num={worker_num} (data-parallel learners) needs the jax backend "
                         f"(keras.distribution.DataParallel); this run uses {backend}")
    devices = keras.distribution.list_devices()
    if worker_num > len(devices):
        raise ValueError(f"worker_num={worker_num} is more than the {len(devices)} device(s) present "
                         f"(on CPU, start with XLA_FLAGS=--xla_force_host_platform_device_count={worker_num})")
    if batch_size % worker_num:
        raise ValueError(f"worker_num={worker_num} does not divide batch_size={batch_size}: each learner "
                         f"takes batch_size/worker_num rows of every minibatch")
