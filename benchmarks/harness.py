"""What the benchmark scripts share: jobs in fresh interpreters, the job loop, the machine, results JSON.

A benchmark script plays two roles. As the parent it builds a list of jobs and runs each in a
fresh interpreter (`spawn`), because the Keras backend is fixed when Keras is first imported:
the job's environment gets KERAS_BACKEND and, first on its PYTHONPATH, the checkout whose code
it must import (this one by default; another with `code=DIR`, as `cartpole.py --baseline` does).
As the job (a hidden `--job ...` option) it trains, then prints one JSON line on stdout, which
the parent reads back (the last stdout line that starts with `{`).

    import harness                       # from a script in benchmarks/, run as python benchmarks/X.py

    result, output = harness.spawn(__file__, ["--job", "jax", "--seeds", "0"], backend="jax")
    results, failed = harness.run_jobs(jobs, spawn_job, name=..., summary=...)
    info = harness.machine()             # date, CPUs, Python, package versions, thread variables
    harness.write_json(path, {"machine": info, "results": results})
    hp = harness.read_flagfile(harness.flagfile("CartPole-v1"))   # the runner's own parser
    clock = harness.sb3_clock()          # a Stable-Baselines3 callback timing rollouts and updates

Importing this module changes nothing in `sys.path`: a job started with `code=DIR` must import
unstable_ppo from DIR, not from the checkout the script file is in (only `read_flagfile`, where no
unstable_ppo can be imported at all, appends this checkout). Nothing here imports Keras.
"""

import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time

# The checkout this file is in: the code that jobs import unless told otherwise.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The package versions that `machine()` reports, in this order.
PACKAGES = ("unstable_ppo", "keras", "tensorflow", "jax", "torch", "stable_baselines3", "gymnasium", "numpy")


def keras_backends(order=("tensorflow", "jax", "torch")):
    """The Keras backends installed here, in `order`."""
    return [b for b in order if importlib.util.find_spec(b)]


# -- jobs ----------------------------------------------------------------------------------------


def job_env(backend=None, code=ROOT, **extra):
    """The environment of a job: ours, plus `extra`, KERAS_BACKEND=`backend` (unless None) and
    `code` first on PYTHONPATH (unless None)."""
    env = dict(os.environ, **extra)
    if code:
        code = os.path.abspath(code)
        env["PYTHONPATH"] = code + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if backend:
        env["KERAS_BACKEND"] = backend
    return env


def job_command(script, argv):
    """`python script argv...` with this interpreter."""
    return [sys.executable, os.path.abspath(script), *map(str, argv)]


def spawn(script, argv, backend=None, code=ROOT, env=None):
    """Run `python script argv...` in a fresh interpreter (see `job_env`) and read its JSON line.

    Returns (the last stdout line that starts with `{`, parsed; stderr) when the job exited 0 and
    printed one, else (None, its stderr and stdout).
    """
    proc = subprocess.run(job_command(script, argv), env=job_env(backend, code, **(env or {})),
                          capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return None, proc.stderr + proc.stdout
    return json.loads(lines[-1]), proc.stderr


def spawn_printing(script, argv, backend=None, code=ROOT, env=None, stderr=subprocess.DEVNULL):
    """Run a job whose stdout is ours (it prints its own lines, no JSON); raise if it fails."""
    subprocess.run(job_command(script, argv), env=job_env(backend, code, **(env or {})), check=True,
                   stderr=stderr)


def failure_tail(output, lines=20):
    """The last `lines` lines of a failed job's output."""
    return "\n".join(output.strip().splitlines()[-lines:])


def run_jobs(jobs, spawn_job, name=str, summary=None, on_result=None, progress=None):
    """Run `spawn_job(job)` for each job in turn; returns (results, failed jobs).

    `spawn_job(job)` returns what `spawn` does. After each job one line goes to stderr,
    `[i/n] NAME: SUMMARY`, or `[i/n] NAME: FAILED` and the last 20 lines of the job's output,
    where NAME is `name(job, result)` (result None for a failure) or `str(job)`, and SUMMARY is
    `summary(result)`. `progress(i, n, job, result, output)` prints something else instead.
    `on_result(results, failed)` runs after each job that succeeded (to save partial results).
    """
    results, failed = [], []
    for i, job in enumerate(jobs, 1):
        result, output = spawn_job(job)
        if result is None:
            failed.append(job)
        else:
            results.append(result)
        if progress is not None:
            progress(i, len(jobs), job, result, output)
        elif result is None:
            print(f"[{i}/{len(jobs)}] {_name(name, job, None)}: FAILED\n{failure_tail(output)}", file=sys.stderr,
                  flush=True)
        else:
            print(f"[{i}/{len(jobs)}] {_name(name, job, result)}: {summary(result) if summary else 'done'}",
                  file=sys.stderr, flush=True)
        if result is not None and on_result is not None:
            on_result(results, failed)
    return results, failed


def _name(name, job, result):
    return str(job) if name is str else name(job, result)


# -- the machine and the results ----------------------------------------------------------------


def machine(packages=PACKAGES):
    """This machine and moment: date, CPUs, CPU model, Python, package versions, thread variables."""
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                   platform.processor() or "?")
    versions = {}
    for pkg in packages:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "nproc": len(os.sched_getaffinity(0)), "cpu": cpu, "python": platform.python_version(),
            "versions": versions,
            "thread_env": {k: v for k, v in os.environ.items()
                           if k.endswith("_NUM_THREADS") or k.startswith("XLA_FLAGS")}}


def machine_line(info, versions=True):
    """`date · N CPUs (model) · Python x.y.z · pkg version, ...`: the footer under a table."""
    line = f"{info['date']} · {info['nproc']} CPUs ({info['cpu']}) · Python {info['python']}"
    if versions:
        line += " · " + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    return line


def write_json(path, data):
    """`data` to `path` as indented JSON, through `path.tmp`: a reader never sees half a file."""
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=2)
    os.replace(path + ".tmp", path)


# -- flagfiles ------------------------------------------------------------------------------------


def flagfile(env_id):
    """The bundled flagfile of `env_id` in this checkout (unstable_ppo/configs/ENV_ID.flags)."""
    return os.path.join(ROOT, "unstable_ppo", "configs", f"{env_id}.flags")


def read_flagfile(path):
    """`{name: string}` from a flagfile, through the runner's own parser (`unstable_ppo.run`, no Keras).

    unstable_ppo is imported from wherever this process imports it (a job's PYTHONPATH); only
    when it cannot be found at all does this checkout's copy serve.
    """
    if importlib.util.find_spec("unstable_ppo") is None:
        sys.path.append(ROOT)
    from unstable_ppo.run import read_flagfile as read

    return read(path)


# -- Stable-Baselines3 --------------------------------------------------------------------------


def sb3_clock(on_rollout_start=None, on_rollout_end=None):
    """A Stable-Baselines3 callback that notes `time.perf_counter()` at each rollout's start and end
    and at the end of training, calling the optional hooks after each rollout mark.

    SB3's `learn` alternates a rollout and an update; the update after rollout i runs from
    `ends[i]` to `starts[i + 1]` (or `training_end` for the last one).
    """
    from stable_baselines3.common.callbacks import BaseCallback

    class RolloutClock(BaseCallback):
        def __init__(self):
            super().__init__()
            self.starts, self.ends, self.training_end = [], [], None

        def _on_rollout_start(self):
            self.starts.append(time.perf_counter())
            if on_rollout_start is not None:
                on_rollout_start()

        def _on_rollout_end(self):
            self.ends.append(time.perf_counter())
            if on_rollout_end is not None:
                on_rollout_end()

        def _on_training_end(self):
            self.training_end = time.perf_counter()

        def _on_step(self):
            return True

        def first_update_end(self):
            """When the first rollout+update ended: the second rollout's start, else the end of training."""
            return self.starts[1] if len(self.starts) > 1 else self.training_end

        def iterations(self):
            """`{"rollout_s", "update_s"}` for each rollout+update, in order."""
            closes = self.starts[1:] + [self.training_end]
            return [{"rollout_s": end - start, "update_s": close - end}
                    for start, end, close in zip(self.starts, self.ends, closes)]

    return RolloutClock()
