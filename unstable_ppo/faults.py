"""What a run does when something breaks: crashed envs, non-finite numbers, failed saves.

Long runs die of faults, not of bad hyperparameters. The rules here:

- an env that raises, a worker process that dies and a worker that stops answering
  are all the same event to the learner: `envs.supervisor.SupervisedVectorEnv` logs a warning that
  names the env, rebuilds the vector env and carries on, with the interrupted
  episodes cut as truncated. After `max_restarts` such events it raises `EnvFailure`
  and the runner stops with a checkpoint saved;
- a NaN or Inf in an observation, a reward or the loss raises `NonFiniteError` at the
  first occurrence, naming the quantity, env and step (or update). Nothing non-finite
  is ever written as a checkpoint, so the last good one stays on disk.
"""

import re

import numpy as np


class EnvError(RuntimeError):
    """An exception raised inside env `env_index`, re-raised with the index in its message.

    It survives the trip from an async worker (gymnasium rebuilds it from its message).
    """

    def __init__(self, message, env_index=None):
        message = str(message)
        super().__init__(message)
        if env_index is None:
            match = re.match(r"env (\d+):", message)
            env_index = int(match.group(1)) if match else None
        self.env_index = env_index


class EnvFailure(RuntimeError):
    """The envs failed more often than the run allows."""


class NonFiniteError(RuntimeError):
    """A NaN or Inf where training needs a finite number."""


def check_finite(name, values, where):
    """Raise `NonFiniteError` naming `name`, the offending envs (rows) and `where`, if any value is NaN/Inf."""
    values = np.asarray(values)
    if values.dtype.kind not in "fc" or np.isfinite(values).all():
        return
    rows = values.reshape(len(values), -1)
    bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
    sample = rows[bad[0]][~np.isfinite(rows[bad[0]])][0]
    raise NonFiniteError(f"non-finite {name} ({sample}) from env {', '.join(map(str, bad))} {where}")


def check_finite_logs(logs, update):
    """The update's losses must be finite, or the weights it wrote are garbage."""
    for key in ("loss", "policy_loss", "value_loss", "entropy"):
        if key in logs and not np.isfinite(logs[key]):
            raise NonFiniteError(f"non-finite {key} ({logs[key]}) in update {update}")


def check_finite_weights(model):
    """Before a checkpoint is written: every weight finite."""
    import keras  # late: checkpoint.py and gather.py import this module and stay Keras-free

    for variable in model.weights:
        value = keras.ops.convert_to_numpy(variable)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise NonFiniteError(f"non-finite weights in {variable.path}: the checkpoint was not written")
