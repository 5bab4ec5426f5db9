"""Tune PPO's settings with Optuna: `python -m unstable_ppo.tune` (its flags and usage: `unstable_ppo.tune.cli`).

    settings   the tuner's settings, checked before Optuna or Keras start; each trial's runner flags
    space      the search space: the RL Zoo's PPO space, and the --search_space files that change it
    storage    Optuna's storage (SQLite, PostgreSQL) and the lock under which a worker claims a trial
    study      creating or loading the study, its sampler and pruner, counting and failing its trials
    worker     running trials: each a runner run (a TrainingRun) that reports to the trial
    report     best.flags, top_trials.txt, trials.json and the plots
    cli        the absl flags and the command: tune(FLAGS), entry_point

Importing the package imports none of them: `entry_point` and `fresh_runner_flags` load their module on first
use (the tuner's flags are defined on absl's FLAGS only when `cli` is imported).
"""

import importlib

_EXPORTS = {"entry_point": "unstable_ppo.tune.cli", "fresh_runner_flags": "unstable_ppo.tune.settings"}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
