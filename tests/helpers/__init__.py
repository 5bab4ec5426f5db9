"""Shared non-test code for the test suite (nothing here is collected by pytest).

- `settings`: the small PPO settings tests build their agents with.
- `runner`: `run_runner`, the one way tests start `python -m unstable_ppo.run` in a subprocess,
  and `tensorboard_steps`, to read what a run logged.
- `envs`: tiny gymnasium envs (every space kind, a memory task, scripted rewards).
- `loss_reference`: a float64 numpy/scipy re-implementation of the PPO objective, and random cases for it.
- `fault_envs`, `fault_injection`: envs that fail on purpose and the fault trials against the runner
  (also used by benchmarks/faults.py).
- `flag_strategies`: hypothesis strategies for the runner's flags, and an in-process runner call.

This package imports nothing heavy on import: `tests.helpers.fault_envs:FaultyCartPole-v0` is
imported by env worker processes.
"""
