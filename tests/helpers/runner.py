"""Running the runner (`python -m unstable_ppo.run`) in a subprocess, and reading what a run logged.

The `run_runner` fixture in tests/conftest.py hands tests `run_runner`; helper modules
(fault_injection, flag_strategies) import it from here.
"""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child_env(**extra):
    """The environment for a subprocess: this one, this checkout first on the path, TensorFlow quiet; then `extra`."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT, **extra}


def run_runner(*flags, cwd=None, env=None, timeout=600, wait=True, **popen):
    """`python -m unstable_ppo.run *flags` in a fresh process.

    `env`: variables set on top of `child_env()` (a whole environment works too).
    With `wait` (the default): waits up to `timeout` seconds and returns the
    `subprocess.CompletedProcess`, stdout and stderr captured as text. With `wait=False`:
    returns the running `subprocess.Popen`, given `popen` (stdout=..., start_new_session=..., ...).
    """
    argv = [sys.executable, "-m", "unstable_ppo.run", *flags]
    environ = child_env(**(env or {}))
    if not wait:
        return subprocess.Popen(argv, env=environ, cwd=cwd, **popen)
    return subprocess.run(argv, env=environ, cwd=cwd, capture_output=True, text=True, timeout=timeout, **popen)


def tensorboard_steps(logdir, tag):
    """The steps of every value of `tag` in the TensorBoard event files directly in `logdir`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = []
    for name in sorted(os.listdir(logdir)):
        if name.startswith("events.out.tfevents"):
            acc = EventAccumulator(os.path.join(logdir, name))
            acc.Reload()
            if tag in acc.Tags()["tensors"]:
                steps += [e.step for e in acc.Tensors(tag)]
    return steps
