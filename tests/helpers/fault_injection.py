"""Fault-injection trials against the real runner, shared by tests/test_faults.py and benchmarks/faults.py.

Every trial starts `python -m unstable_ppo.run` as a subprocess, injects one fault for
real (SIGKILL, a crashing or silent env worker, a NaN, a file-size limit) and returns
a `Trial` saying whether the run was lost. A run is lost when what the issue promises
does not hold: no loadable checkpoint, more than one save interval of work gone,
counters / learning-rate schedule / normalizer / TensorBoard steps not continued,
a traceback, a hang, or a wrong exit code.
"""

import dataclasses
import glob
import json
import os
import re
import resource
import signal
import subprocess
import time
import zipfile

from tests.helpers.runner import ROOT, run_runner

FAULTY_ENV = "tests.helpers.fault_envs:FaultyCartPole-v0"
NUM_ENVS, NUM_STEPS, UPDATES, LR = 2, 64, 10, 1e-3
ROLLOUT = NUM_ENVS * NUM_STEPS
TRIAL_FLAGS = (
    f"--num_envs={NUM_ENVS}", f"--num_steps={NUM_STEPS}", "--num_epochs=2", "--batch_size=64",
    f"--lr={LR}", "--eval_interval=0", "--eval_episodes=2", "--save_interval=1", "--verbose=2",
    "--normalize_obs", "--normalize_reward", "--noenv_defaults", f"--total_timesteps={UPDATES * ROLLOUT}",
)
TIMEOUT = 300


@dataclasses.dataclass
class Trial:
    kind: str
    lost: bool
    detail: str
    seconds: float = 0.0


def start(logdir, *flags, env=None, backend=None):
    """The runner as a subprocess, stdout/stderr to files in `logdir`'s parent."""
    os.makedirs(os.path.dirname(logdir), exist_ok=True)
    environ = dict(env or {})
    if backend:
        environ["KERAS_BACKEND"] = backend
    out = open(logdir + ".out", "a")
    err = open(logdir + ".err", "a")
    proc = run_runner(f"--logdir={logdir}", *TRIAL_FLAGS, *flags, env=environ, cwd=ROOT, wait=False,
                      stdout=out, stderr=err, start_new_session=True)
    proc.files = (out, err)
    return proc


def finish(proc, timeout=TIMEOUT):
    """Wait (bounded); returns (exit code, stderr text). A hang is killed and reported as rc None."""
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        rc = None
    for f in proc.files:
        f.close()
    with open(proc.files[1].name) as f:
        return rc, f.read()


def run(logdir, *flags, **kwargs):
    return finish(start(logdir, *flags, **kwargs))


def logged_updates(logdir):
    try:
        with open(os.path.join(logdir, "training.log")) as f:
            found = re.findall(r"\bupdate (\d+):", f.read())
    except FileNotFoundError:
        return 0
    return max(map(int, found), default=0)


def saved_meta(logdir, name="latest"):
    path = os.path.join(logdir, "model", name)
    with open(os.path.join(path, "ppo.json")) as f:
        meta = json.load(f)
    with zipfile.ZipFile(os.path.join(path, "model.keras")) as z:  # a complete archive, every member intact
        if z.testzip() is not None:
            raise ValueError("corrupt member in model.keras")
    return meta


def one_line_error(stderr):
    lines = [line for line in stderr.splitlines() if line.strip()]
    return bool(lines) and lines[-1].startswith("error: ") and "Traceback" not in stderr


def _wait_for(predicate, proc, timeout=TIMEOUT, poll=0.002):
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if predicate():
            return True
        time.sleep(poll)
    return False


def _save_in_progress(model_root):
    """A checkpoint directory being written: hidden, newer than what `latest` points to."""
    try:
        current = os.readlink(os.path.join(model_root, "latest"))
        return any(e.startswith(".latest-") and e != current for e in os.listdir(model_root))
    except OSError:
        return False


def _tensorboard(logdir, tag):
    """{event file: [(step, value)]} for one scalar tag."""
    import tensorflow as tf

    out = {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        rows = []
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    rows.append((event.step, float(tf.make_ndarray(value.tensor))))
        out[path] = rows
    return out


def kill_and_resume(workdir, rng, backend=None, during_save=False):
    """SIGKILL a run at a random moment (or in the middle of a checkpoint write), then --resume it."""
    t0 = time.monotonic()
    logdir = os.path.join(workdir, "run")
    kind = "kill during save" if during_save else "kill"
    proc = start(logdir, f"--seed={int(rng.integers(1000))}", backend=backend)
    model_root = os.path.join(logdir, "model")
    if during_save:
        skip = int(rng.integers(1, UPDATES - 3))  # let a few saves pass first
        _wait_for(lambda: logged_updates(logdir) >= skip and _save_in_progress(model_root), proc)
    else:
        at = int(rng.integers(1, UPDATES - 1))
        _wait_for(lambda: logged_updates(logdir) >= at, proc)
        time.sleep(float(rng.uniform(0, 0.3)))
    if proc.poll() is not None:
        finish(proc)
        return Trial(kind, False, "the run finished before the kill (not counted as a fault)",
                     time.monotonic() - t0)
    os.killpg(proc.pid, signal.SIGKILL)
    finish(proc)
    partial = _save_in_progress(model_root)  # the kill left a half-written checkpoint behind
    logged = logged_updates(logdir)
    try:
        meta = saved_meta(logdir)
    except (OSError, ValueError, KeyError) as e:
        return Trial(kind, True, f"no loadable latest checkpoint after the kill: {e}")
    saved_updates, saved_steps = meta["num_updates"], meta["num_timesteps"]
    saved_count = meta["normalizer"]["obs_rms"]["count"]
    problems = []
    if logged - saved_updates > 1:  # --save_interval=1
        problems.append(f"lost {logged - saved_updates} updates (> 1 save interval)")

    rc, err = run(logdir, "--resume", backend=backend)
    if rc != 0:
        return Trial(kind, True, f"--resume exited {rc}: {err.strip().splitlines()[-1:] if err else ''}")
    final = saved_meta(logdir)
    if final["num_updates"] != UPDATES or final["num_timesteps"] != UPDATES * ROLLOUT:
        problems.append(f"counters: {final['num_updates']} updates, {final['num_timesteps']} steps")
    expected_count = saved_count + NUM_ENVS * (1 + (final["num_timesteps"] - saved_steps) // NUM_ENVS)
    if abs(final["normalizer"]["obs_rms"]["count"] - expected_count) > 1e-3:
        problems.append(f"normalizer count {final['normalizer']['obs_rms']['count']} != {expected_count}")
    events = _tensorboard(logdir, "train/learning_rate")
    resumed = list(events.values())[-1]  # the resumed process's event file
    steps = [s for s, _ in resumed]
    if steps != list(range(saved_steps + ROLLOUT, UPDATES * ROLLOUT + 1, ROLLOUT)):
        problems.append(f"TensorBoard steps after resume {steps[:3]}... do not continue from {saved_steps}")
    for step, lr in resumed:
        update = step // ROLLOUT - 1
        if abs(lr - LR * (1 - update / UPDATES)) > 1e-9:
            problems.append(f"learning rate {lr} at update {update + 1} off the schedule")
            break
    leftovers = [e for e in os.listdir(model_root) if e.startswith(".") and e not in
                 {os.readlink(os.path.join(model_root, n)) for n in ("latest", "best")
                  if os.path.islink(os.path.join(model_root, n))}]
    if leftovers:
        problems.append(f"stale checkpoint files left: {leftovers}")
    detail = (f"killed after update {logged}{' mid-save' if partial else ''}, resumed from {saved_updates}"
              + (": " + "; ".join(problems) if problems else ""))
    return Trial(kind, bool(problems), detail, time.monotonic() - t0)


def env_raises(workdir, backend=None, vec_env="sync", failures=5):
    """Envs that raise every 50 steps (`failures` times): the run rebuilds its envs, warns, and finishes."""
    t0 = time.monotonic()
    logdir = os.path.join(workdir, "run")
    budget = os.path.join(workdir, "fault_budget")
    rc, err = run(logdir, f"--env_id={FAULTY_ENV}", f"--vec_env={vec_env}", f"--max_env_restarts={failures}",
                  env={"FAULT_RAISE_EVERY": "50", "FAULT_BUDGET": f"{budget}:{failures}",
                       # async workers step in parallel: one failing env makes one failure event
                       **({"FAULT_RAISE_ENV": "1"} if vec_env == "async" else {})},
                  backend=backend)
    with open(os.path.join(logdir, "training.log")) as f:
        warnings = re.findall(r"env \d failed during step \(env \d: RuntimeError: injected failure", f.read())
    ok = rc == 0 and len(warnings) == failures and "Traceback" not in err
    return Trial(f"env raises ({vec_env})", not ok, f"exit {rc}, {len(warnings)} env restarts logged",
                 time.monotonic() - t0)


def _workers(pid):
    """The env worker processes of run `pid` (its children running Python)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    children.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return sorted(children)


def worker_fault(workdir, rng, backend=None, how=signal.SIGKILL):
    """Kill (or stop: a hang) one async env worker from outside; the run rebuilds its envs and finishes."""
    t0 = time.monotonic()
    logdir = os.path.join(workdir, "run")
    name = signal.Signals(how).name
    proc = start(logdir, "--vec_env=async", "--env_timeout=5", f"--total_timesteps={4 * UPDATES * ROLLOUT}",
                 backend=backend)
    _wait_for(lambda: logged_updates(logdir) >= 2, proc)
    workers = _workers(proc.pid)[-NUM_ENVS:]  # the training envs' workers: started after the evaluation envs'
    if not workers or proc.poll() is not None:
        finish(proc)
        return Trial(f"worker {name}", True, "no worker process found to fault")
    os.kill(workers[int(rng.integers(len(workers)))], how)
    rc, err = finish(proc)
    with open(os.path.join(logdir, "training.log")) as f:
        log = f.read()
    recovered = "failed during step" in log and "rebuilding the envs" in log
    ok = rc == 0 and recovered and "Traceback" not in err
    return Trial(f"worker {name}", not ok, f"exit {rc}, recovery logged: {recovered}", time.monotonic() - t0)


def too_many_env_failures(workdir, backend=None):
    """Past --max_env_restarts the run stops: one-line error, exit 1, a checkpoint that resumes."""
    t0 = time.monotonic()
    logdir = os.path.join(workdir, "run")
    env = {"FAULT_RAISE_EVERY": "150"}
    rc, err = run(logdir, f"--env_id={FAULTY_ENV}", "--max_env_restarts=2", env=env, backend=backend)
    problems = []
    if rc != 1 or not one_line_error(err) or "max_env_restarts=2" not in err:
        problems.append(f"exit {rc}, stderr {err.strip().splitlines()[-1:]}")
    try:
        meta = saved_meta(logdir)
    except (OSError, ValueError) as e:
        problems.append(f"no checkpoint: {e}")
        meta = None
    if meta is not None:
        rc2, err2 = run(logdir, "--resume", f"--env_id={FAULTY_ENV}", backend=backend)
        if rc2 != 0:
            problems.append(f"resume after the failure exited {rc2}: {err2.strip().splitlines()[-1:]}")
    return Trial("too many env failures", bool(problems), "; ".join(problems) or "stopped, saved, resumed",
                 time.monotonic() - t0)


def non_finite(workdir, backend=None, where="reward"):
    """A NaN from the env: named at once, exit 1, the last good checkpoint kept and finite."""
    t0 = time.monotonic()
    logdir = os.path.join(workdir, "run")
    rc, err = run(logdir, f"--env_id={FAULTY_ENV}", env={"FAULT_NAN_AT": "300", "FAULT_NAN_IN": where},
                  backend=backend)
    name = "observation" if where == "obs" else "reward"
    problems = []
    if rc != 1 or not one_line_error(err) or f"non-finite {name}" not in err:
        problems.append(f"exit {rc}, stderr {err.strip().splitlines()[-1:]}")
    try:
        meta = saved_meta(logdir)
        if meta["num_timesteps"] > 300 * NUM_ENVS:
            problems.append(f"checkpoint at {meta['num_timesteps']} steps is past the NaN")
    except (OSError, ValueError) as e:
        problems.append(f"no checkpoint kept: {e}")
    return Trial(f"NaN {name}", bool(problems), "; ".join(problems) or err.strip().splitlines()[-1],
                 time.monotonic() - t0)


def disk_full(workdir, backend=None):
    """Saves start failing (file-size limit: EFBIG, the path ENOSPC takes too): one-line error, exit 1,
    the earlier checkpoint intact and resumable."""
    t0 = time.monotonic()
    logdir = os.path.join(workdir, "run")
    proc = start(logdir, backend=backend)
    _wait_for(lambda: logged_updates(logdir) >= 2, proc)
    if proc.poll() is not None:
        finish(proc)
        return Trial("disk full at a save", True, "the run ended before the fault")
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (50_000, 50_000))  # model.keras is ~160 kB
    rc, err = finish(proc)
    problems = []
    if rc != 1 or not one_line_error(err) or "could not write the latest checkpoint" not in err:
        problems.append(f"exit {rc}, stderr {err.strip().splitlines()[-1:]}")
    try:
        saved_meta(logdir)
    except (OSError, ValueError) as e:
        problems.append(f"earlier checkpoint damaged: {e}")
    rc2, err2 = run(logdir, "--resume", backend=backend)
    if rc2 != 0:
        problems.append(f"resume exited {rc2}: {err2.strip().splitlines()[-1:]}")
    return Trial("disk full at a save", bool(problems),
                 "; ".join(problems) or err.strip().splitlines()[-1], time.monotonic() - t0)


def unwritable_logdir(workdir, backend=None):
    """A run directory that cannot be created: one-line error, exit 2, before any training."""
    t0 = time.monotonic()
    blocker = os.path.join(workdir, "a_file")
    with open(blocker, "w") as f:
        f.write("not a directory")
    logdir = os.path.join(blocker, "run")
    # --verbose=1: with TRIAL_FLAGS' --verbose=2 the one line would come with its traceback.
    proc = run_runner(f"--logdir={logdir}", *TRIAL_FLAGS, "--verbose=1",
                      env={"KERAS_BACKEND": backend} if backend else None, timeout=TIMEOUT, cwd=ROOT)
    ok = proc.returncode == 2 and one_line_error(proc.stderr) and "update 1" not in proc.stdout
    return Trial("unwritable logdir", not ok, proc.stderr.strip().splitlines()[-1] if proc.stderr else "",
                 time.monotonic() - t0)
