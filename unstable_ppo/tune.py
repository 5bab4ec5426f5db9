"""Tune PPO's settings with Optuna: `python -m unstable_ppo.tune --env_id=X --n_trials=N --budget=STEPS`.

    python -m unstable_ppo.tune --env_id=CartPole-v1 --n_trials=50 --budget=50000 --n_jobs=2
    python -m unstable_ppo.tune --env_id=CartPole-v1 --report          # the report of the study so far
    python -m unstable_ppo.run --flagfile=log/tune/CartPole-v1/ppo/best.flags --total_timesteps=200000

Each trial is a runner run (`unstable_ppo.run`, on the Python API, in this process) of `--budget` env steps
with its flags overridden by the sampled values: the same settings, flagfiles, checks, run directory
(`{study_dir}/trial_{number}`), checkpoints and `metrics.json` as `python -m unstable_ppo.run`. The runner's
own flags given here (`--flagfile=BASE` included) are the base of every trial, over the bundled flagfile of
the env id; the sampled values override them. The trial's seed is `--seed` + its number. `--budget`
replaces `--total_timesteps`/`--num_episodes`, and `--n_evaluations` the `--eval_interval`.

**Objective and pruning.** The runner evaluates each trial `--n_evaluations` times, at even steps of its
budget (every `updates // n_evaluations` updates; `--eval_episodes` episodes each); each evaluation's mean
return is reported to a median pruner (Optuna's `MedianPruner`: a trial is stopped when its best return
so far is below the median of the earlier trials' at the same evaluation, once `--n_startup_trials`
trials completed, after the first `n_evaluations // 3` evaluations). The objective, maximized by the TPE
sampler (random for the first `--n_startup_trials` trials), is the final evaluation's mean return: the
runner's final report of the `latest` checkpoint. A trial whose sampled settings the runner refuses, whose
rollout (num_envs x num_steps) is larger than the budget, or whose training diverges (NaN) is PRUNED with
the reason in its user attribute `pruned`, so that the sampler learns to avoid it.

**The default search space** is the RL Zoo's PPO space (rl-baselines3-zoo, `rl_zoo3/hyperparams_opt.py`,
`sample_ppo_params`), in our flag names: batch_size, num_steps, gamma, lr, ent_coef, clip_range, num_epochs,
gae_lambda, max_grad_norm, vf_coef, hidden_sizes and activation. Their ranges, the Zoo's names and where we
differ are in `unstable_ppo.tune_space`'s docstring.
`num_envs`, `anneal_lr` (on by default: the Zoo's sampled rates are constant) and every other flag come
from the base settings. `--search_space=FILE` (JSON, or YAML) changes the space: see `unstable_ppo.tune_space`
for the format, e.g. `{"lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": true},
"n_epochs": {"type": "categorical", "choices": [5, 10]}, "vf_coef": null, "gamma": 0.99}`.

**Storage, resuming, workers.** The study lives in `--storage` (default: the SQLite file
`{study_dir}/study.db`; `{study_dir}` defaults to `./log/tune/{env_id}/{study_name}`). A call runs trials until
the study holds `--n_trials` COMPLETE or PRUNED trials, counting those of earlier calls, so the same
command continues a study after Ctrl-C or a crash. A trial left RUNNING by a killed process is marked FAIL
at the next start: at once when that process ran on this machine, else when its heartbeat (every 20 s)
is 2 minutes old. `--n_jobs=K` runs K worker processes on the storage; with
`--storage=postgresql://user:password@host/db`, workers on several machines share one study (each machine
keeps its trials' run directories under its own `--study_dir`). A worker takes a new trial only while the
study's finished and running trials are fewer than `--n_trials`, under a lock (a file lock for SQLite, an
advisory lock for PostgreSQL), so no trial is run twice and the study stops at `--n_trials`.

**Report** (at the end, or alone with `--report`), in `{study_dir}`: `best.flags`, the best trial's settings
as a flagfile the runner takes; `top_trials.txt`, the table of the `--top` trials, also printed;
`trials.json`, every trial; `history.png` and `importance.png`, Optuna's optimization-history and
parameter-importance plots (the latter needs two completed trials whose parameters differ).
"""

import collections
import copy
import datetime
import importlib.util
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
import zlib

import numpy as np
from absl import flags

from unstable_ppo import run as runner  # noqa: F401 - defines the runner's flags, on this FLAGS (no Keras)
from unstable_ppo import config, tune_space
from unstable_ppo.checkpoint import write_atomically
from unstable_ppo.cli import UsageError, run_app, select_backend
from unstable_ppo.faults import EnvFailure, NonFiniteError
from unstable_ppo.run_settings import MAX_SEED, RunSettings, render_path
from unstable_ppo.training_run import Interrupted, RunFailed, TrainingRun

flags.DEFINE_integer("n_trials", 20, "Trials to finish (COMPLETE or PRUNED) in the study, earlier calls' included.")
flags.DEFINE_integer("budget", None, "Env steps of each trial's training run.")
flags.DEFINE_string("storage", None, "Optuna storage URL (default: sqlite:///{study_dir}/study.db); "
                    "postgresql://user:password@host/db to share a study between machines.")
flags.DEFINE_string("study_name", "ppo", "The study's name in the storage.")
flags.DEFINE_string("study_dir", "./log/tune/{env_id}/{study_name}", "Trials' run directories, the default "
                    "storage and the report ({env_id} and {study_name} are templated).")
flags.DEFINE_integer("n_jobs", 1, "Worker processes running trials at once.")
flags.DEFINE_string("search_space", None, "A JSON or YAML file that changes the default (RL Zoo) search space.")
flags.DEFINE_bool("report", False, "Only write and print the report of the study so far.")
flags.DEFINE_integer("n_evaluations", 4, "Evaluations per trial, at even steps of its budget: the pruner's "
                     "intermediate values.")
flags.DEFINE_integer("n_startup_trials", 5, "Random trials before TPE samples; completed trials before the "
                     "pruner prunes.")
flags.DEFINE_integer("top", 10, "Trials in the report's table.")

FLAGS = flags.FLAGS
# The flags as defined, before parsing: each trial parses a copy of them, as the runner parses its command line.
_PRISTINE_FLAGS = copy.deepcopy(FLAGS)

WORKER_ENV = "UNSTABLE_PPO_TUNE_WORKER"  # set in the worker processes of --n_jobs: the worker's index
HEARTBEAT_S, GRACE_S = 20, 120
CONNECT_TIMEOUT_S = 5
# Runner flags that say where and how a trial runs: set by the tuner, never taken from the base.
_TUNER_FLAGS = {"logdir", "resume", "overwrite", "total_timesteps", "num_episodes", "eval_interval", "verbose",
                "seed", "backend", "rank", "env_id", "flagfile"}
_REFUSED = {"logdir": "trials run in {study_dir}/trial_N: set --study_dir",
            "resume": "a study resumes by itself: run the same command again",
            "overwrite": "each trial has its own run directory",
            "num_episodes": "use --budget (env steps per trial)"}


class TrialFailed(RuntimeError):
    """The trial's run failed (its envs, a save): the trial is FAIL and the worker goes on."""


# -- settling the flags, before Optuna's storage or Keras ---------------------------------------------------

def runner_flag_names():
    return {f.name for f in FLAGS.get_flags_for_module(FLAGS.find_module_defining_flag("lr"))}


def fresh_runner_flags(argv):
    """A FlagValues of the runner's flags, parsed from `argv` alone (a copy: nothing else shares it)."""
    values = copy.deepcopy(_PRISTINE_FLAGS)
    try:
        values(["unstable_ppo.run", *argv])
    except flags.Error as e:
        raise UsageError(str(e)) from None
    return values


class Tuner:
    """The study's settings, checked: its place, base flags, search space and budget."""

    def __init__(self, f):
        self.flags = f
        for name in ("n_trials", "n_jobs", "n_evaluations", "top"):
            if f[name].value <= 0:
                raise UsageError(f"{name} must be a positive integer, got {f[name].value}")
        if f.n_startup_trials < 0:
            raise UsageError(f"n_startup_trials must be >= 0, got {f.n_startup_trials}")
        for name, why in _REFUSED.items():
            if f[name].present:
                raise UsageError(f"--{name} does not apply to tuning: {why}")
        if not f.study_name.strip():
            raise UsageError("--study_name must not be empty")
        self.env_id = f.env_id
        self.study_dir = os.path.abspath(render_path(f.study_dir, "study_dir", env_id=f.env_id, rank=f.rank,
                                                     study_name=f.study_name))
        self.storage_url = f.storage or f"sqlite:///{os.path.join(self.study_dir, 'study.db')}"
        self.base_seed = f.seed if f.seed is not None else 1
        names = runner_flag_names()
        # The runner's flags given here (by --flagfile too), as the runner would read them: (name, argument).
        self.base_flags = [("env_id", f"--env_id={f.env_id}")] + [
            (name, f[name].serialize()) for name in sorted(names - _TUNER_FLAGS) if f[name].present]
        self.base = [argument for _, argument in self.base_flags]
        self.budget = f.budget
        self.space = None
        if f.report:
            return
        if f.budget is None:
            raise UsageError("--budget (env steps per trial) is required")
        if f.budget <= 0:
            raise UsageError(f"budget must be a positive integer, got {f.budget}")
        if not 0 <= self.base_seed <= MAX_SEED - 100_000:
            raise UsageError(f"seed must be in [0, {MAX_SEED - 100_000}] (trial N runs with seed + N), got {f.seed}")
        self.space = tune_space.load_space(f.search_space)
        self.base_settings = self._settle(self.base, os.path.join(self.study_dir, ".base-check"))
        self._check_space()
        self._check_budget()

    def _settle(self, arguments, logdir):
        """`RunSettings` of a run with these flags (settled and checked, nothing written)."""
        values = fresh_runner_flags([*arguments, f"--total_timesteps={self.budget}", f"--logdir={logdir}",
                                     "--verbose=0"])
        settings = RunSettings(values)
        settings.settle()
        return settings

    def _check_space(self):
        """Every range end and choice, set in the base settings, passes the runner's checks (but the batch
        size, which a trial cuts to the rollout)."""
        base = self.base_settings.flags
        for name, param in self.space.items():
            for value in param.extremes():
                values = copy.deepcopy(base)
                try:
                    values[name].parse(value if isinstance(value, bool) else str(value))
                    hp = config.Hyperparameters(**RunSettings(values).hyperparameters())
                    hp.batch_size = min(hp.batch_size, hp.num_envs * hp.num_steps)
                    hp.check_values()
                except (flags.Error, ValueError) as e:
                    raise UsageError(f"search space: {name}={value!r}: {str(e).splitlines()[0]}") from None

    def _values(self, name):
        """The values the space can give a flag (the base's when it is not searched)."""
        param = self.space.get(name)
        if param is None:
            return [self.base_settings.flags[name].value]
        if param.kind in ("int", "float"):
            return [param.low]
        return [int(v) for v in param.extremes()]

    def _check_budget(self):
        num_envs, num_steps = min(self._values("num_envs")), min(self._values("num_steps"))
        if self.budget < num_envs * num_steps:
            raise UsageError(f"--budget={self.budget} is smaller than one rollout (num_envs x num_steps = "
                             f"{num_envs} x {num_steps} = {num_envs * num_steps} steps)")

    def trial_arguments(self, number, values):
        """The runner flags of trial `number` with the sampled `values`, and a note (or None: the trial is valid).

        Returns (arguments, pruned_reason).
        """
        base = self.base_settings.flags
        get = lambda name: values.get(name, base[name].value)  # noqa: E731
        tuned = dict(values)
        rollout = int(get("num_envs")) * int(get("num_steps"))
        if int(get("batch_size")) > rollout:
            tuned["batch_size"] = rollout  # as the Zoo cuts batch_size to n_steps
        arguments = [argument for name, argument in self.base_flags if name not in tuned] + [
            tune_space.flag_argument(base[name], value) for name, value in tuned.items()]
        if rollout > self.budget:
            return arguments, f"one rollout (num_envs x num_steps = {rollout} steps) is more than the budget"
        updates = math.ceil(self.budget / rollout)
        arguments += [f"--seed={self.base_seed + number}", f"--total_timesteps={self.budget}",
                      f"--eval_interval={max(1, updates // self.flags.n_evaluations)}"]
        return arguments, None


# -- the storage and the study --------------------------------------------------------------------------------

def safe_url(url):
    try:
        from sqlalchemy.engine import make_url  # late: the tune extra is optional

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def open_storage(url):
    """Optuna's RDBStorage at `url`, with heartbeats; an unreachable one is a one-line error within seconds."""
    import optuna  # late: the tune extra is optional
    import sqlalchemy  # late: the tune extra is optional

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError as e:
        raise UsageError(f"--storage: bad URL {url!r}: {e}") from None
    dialect = parsed.get_backend_name()
    if parsed.drivername == "postgresql":
        # SQLAlchemy 2.1 takes psycopg (3) for a plain postgresql:// URL; the "tune" extra installs psycopg2.
        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            url = parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    connect_args = {"sqlite": {"timeout": 60}, "postgresql": {"connect_timeout": CONNECT_TIMEOUT_S},
                    "mysql": {"connect_timeout": CONNECT_TIMEOUT_S}}.get(dialect, {})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": connect_args, "pool_pre_ping": True},
                                              heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    except Exception as e:  # sqlalchemy's OperationalError, a missing driver, ...
        first = str(getattr(e, "orig", None) or e).strip().splitlines()
        raise UsageError(f"cannot open the storage {safe_url(url)}: {first[0] if first else type(e).__name__}") \
            from None


class ClaimLock:
    """Held while a worker decides whether to start a trial and creates it: a file lock next to a SQLite
    database, a PostgreSQL advisory lock, else nothing (several workers might then overshoot --n_trials)."""

    def __init__(self, storage, study_name):
        self.engine, self.held, self.file, self.connection = storage.engine, False, None, None
        self.dialect = self.engine.dialect.name
        self.key = zlib.crc32(f"unstable_ppo.tune:{study_name}".encode())
        if self.dialect == "sqlite" and self.engine.url.database not in (None, "", ":memory:"):
            self.path = os.path.abspath(self.engine.url.database) + ".lock"
        else:
            self.path = None

    def acquire(self):
        if self.path:
            import fcntl  # late: POSIX only, SQLite storage only

            self.file = open(self.path, "a")
            fcntl.flock(self.file, fcntl.LOCK_EX)
        elif self.dialect == "postgresql":
            from sqlalchemy import text  # late: the tune extra is optional

            self.connection = self.connection or self.engine.connect()
            self.connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": self.key})
            self.connection.commit()
        self.held = True

    def release(self):
        if not self.held:
            return
        self.held = False
        if self.file is not None:
            import fcntl  # late: POSIX only, SQLite storage only

            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()
            self.file = None
        elif self.connection is not None:
            from sqlalchemy import text  # late: the tune extra is optional

            self.connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            self.connection.commit()

    def close(self):
        self.release()
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def study_attributes(tuner):
    """What every call on a study must agree on: its values are comparable only then."""
    return {"env_id": tuner.env_id, "budget": tuner.budget, "n_evaluations": tuner.flags.n_evaluations}


def open_study(tuner, storage, create, sampler=None, pruner=None):
    import optuna  # late: the tune extra is optional

    if create:
        study = optuna.create_study(storage=storage, study_name=tuner.flags.study_name, direction="maximize",
                                    sampler=sampler, pruner=pruner, load_if_exists=True)
    else:
        try:
            study = optuna.load_study(study_name=tuner.flags.study_name, storage=storage, sampler=sampler,
                                      pruner=pruner)
        except KeyError:
            raise UsageError(f"no study {tuner.flags.study_name!r} in {safe_url(tuner.storage_url)}") from None
    if study.directions != [optuna.study.StudyDirection.MAXIMIZE]:
        raise UsageError(f"study {tuner.flags.study_name!r} in {safe_url(tuner.storage_url)} is not a "
                         f"maximization: use another --study_name")
    if not tuner.flags.report:
        for key, value in study_attributes(tuner).items():
            if key not in study.user_attrs:
                study.set_user_attr(key, value)
            elif study.user_attrs[key] != value:
                raise UsageError(f"study {tuner.flags.study_name!r} was made with --{key}={study.user_attrs[key]}, "
                                 f"not {value}: its trials would not compare; use another --study_name")
    return study


# -- which process runs a trial -------------------------------------------------------------------------------

def _boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _start_time(pid):
    """The process's start time (clock ticks since boot), or None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def process_identity(pid=None):
    pid = os.getpid() if pid is None else pid
    return {"host": socket.gethostname(), "boot_id": _boot_id(), "pid": pid, "start": _start_time(pid)}


def process_gone(identity):
    """True when the process named by `identity` ran on this machine and is gone; False when it runs or is
    elsewhere (its heartbeat tells then)."""
    if not isinstance(identity, dict) or identity.get("host") != socket.gethostname() or \
            identity.get("boot_id") != _boot_id():
        return False
    pid = identity.get("pid")
    if not isinstance(pid, int):
        return False
    if identity.get("start") is None:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return _start_time(pid) != identity["start"]


def fail_abandoned_trials(study, storage, log):
    """RUNNING trials whose process on this machine is gone, and those whose heartbeat is stale: FAIL."""
    import optuna  # late: the tune extra is optional
    from optuna.trial import TrialState  # late: the tune extra is optional

    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        identity = trial.user_attrs.get("worker")
        if not process_gone(identity):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            storage.set_trial_user_attr(trial_id, "failed", f"its worker (pid {identity['pid']}) is gone")
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                log(f"trial {trial.number}: its worker (pid {identity['pid']}) is gone: marked FAIL")
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def trial_counts(storage, study):
    from optuna.trial import TrialState  # late: the tune extra is optional

    study_id = storage.get_study_id_from_name(study.study_name)
    done = len(storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    running = len(storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)))
    return done, running


# -- one trial: a runner run ----------------------------------------------------------------------------------

def _trial_run_class():
    class TrialRun(TrainingRun):
        """A runner run that reports each evaluation to the trial, and stops when the pruner says so."""

        def __init__(self, settings, trial):
            super().__init__(settings)
            self.trial, self.pruned_at = trial, None

        def after_update(self, ppo, logs):
            before = len(self.evaluations)
            go_on = super().after_update(ppo, logs)
            if len(self.evaluations) > before:
                step, value = len(self.evaluations), float(self.evaluations[-1][1])
                self.trial.report(value, step)
                if ppo.num_timesteps < self.settings.total and self.trial.should_prune():
                    self.pruned_at = (step, ppo.num_timesteps, value)
                    self.log.info("pruned at evaluation %d (%d steps): mean_return=%.2f", step, ppo.num_timesteps,
                                  value)
                    return False
            return go_on

        def close(self):
            for env in (getattr(self, "eval_env", None), getattr(getattr(self, "ppo", None), "env", None)):
                if env is not None:
                    try:
                        env.close()
                    except Exception:
                        pass
            gatherer = getattr(getattr(self, "ppo", None), "gatherer", None)
            if gatherer is not None:
                gatherer.close()

    return TrialRun


def _short(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def params_text(params):
    return " ".join(f"{name}={_short(value)}" for name, value in params.items())


class Worker:
    """Runs trials, one at a time, while the study needs more."""

    def __init__(self, tuner, index):
        self.tuner, self.index = tuner, index
        self.prefix = f"[worker {index}] " if tuner.flags.n_jobs > 1 else ""

    def log(self, line):
        if self.tuner.flags.verbose:
            print(f"{self.prefix}{line}", flush=True)

    def run(self):
        import optuna  # late: the tune extra is optional

        tuner = self.tuner
        storage = open_storage(tuner.storage_url)
        probe = open_study(tuner, storage, create=False)
        # Each worker, and each call, samples from its own random stream: never the same startup trials twice.
        seed = int(np.random.SeedSequence([tuner.base_seed, self.index, len(probe.trials), os.getpid()])
                   .generate_state(1)[0] % (2**31))
        sampler = optuna.samplers.TPESampler(n_startup_trials=tuner.flags.n_startup_trials, seed=seed)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=tuner.flags.n_startup_trials,
                                             n_warmup_steps=tuner.flags.n_evaluations // 3)
        study = open_study(tuner, storage, create=False, sampler=sampler, pruner=pruner)
        self.lock = ClaimLock(storage, study.study_name)
        failures = 0
        try:
            while True:
                self.lock.acquire()
                try:
                    fail_abandoned_trials(study, storage, self.log)
                    done, running = trial_counts(storage, study)
                    if done + running >= tuner.flags.n_trials:
                        return 0
                    self.outcome = None
                    study.optimize(self.objective, n_trials=1, catch=(TrialFailed,), gc_after_trial=True)
                finally:
                    self.lock.release()
                failures = failures + 1 if self.outcome == "FAIL" else 0
                if failures >= 3:
                    self.log("3 trials failed in a row: this worker stops (their errors are in the trials' "
                             "training.log and user attributes)")
                    return 1
        finally:
            self.lock.close()

    def objective(self, trial):
        import optuna  # late: the tune extra is optional

        self.lock.release()  # the trial exists (RUNNING): other workers count it from now on
        start = time.perf_counter()
        trial.set_user_attr("worker", process_identity())
        values = tune_space.suggest(trial, self.tuner.space)
        arguments, reason = self.tuner.trial_arguments(trial.number, values)
        logdir = os.path.join(self.tuner.study_dir, f"trial_{trial.number}")
        trial.set_user_attr("flags", arguments)
        trial.set_user_attr("logdir", logdir)
        try:
            if reason is None:
                value = self._train(trial, arguments, logdir)
                self._report(trial, "COMPLETE", f"mean_return={value:.2f}", start)
                return value
        except optuna.TrialPruned as e:
            reason = str(e)
        except TrialFailed as e:
            trial.set_user_attr("failed", str(e))
            self.outcome = "FAIL"
            self._report(trial, "FAIL", str(e), start)
            raise
        trial.set_user_attr("pruned", reason)
        self._report(trial, "PRUNED", reason, start)
        raise optuna.TrialPruned(reason)

    def _report(self, trial, state, what, start):
        self.outcome = state
        self.log(f"trial {trial.number}: {state} {what} ({time.perf_counter() - start:.0f} s) "
                 f"| {params_text(trial.params)}")

    def _train(self, trial, arguments, logdir):
        import optuna  # late: the tune extra is optional

        try:
            settings = RunSettings(fresh_runner_flags([*arguments, f"--logdir={logdir}", "--overwrite",
                                                       "--verbose=0"]))
            settings.settle()
        except UsageError as e:
            raise optuna.TrialPruned(f"the runner refuses these settings: {e}") from None
        run = _trial_run_class()(settings, trial)
        try:
            try:
                run.build()
            except (ValueError, UsageError) as e:
                raise optuna.TrialPruned(f"the runner refuses these settings: {str(e).splitlines()[0]}") from None
            try:
                run.train()
            except RunFailed as e:
                if isinstance(e.__cause__, NonFiniteError):
                    raise optuna.TrialPruned(f"training diverged: {str(e).splitlines()[0]}") from None
                raise TrialFailed(str(e).splitlines()[0]) from None
            if run.pruned_at:
                step, steps, value = run.pruned_at
                raise optuna.TrialPruned(f"at evaluation {step} ({steps} steps): mean_return={value:.2f} is below "
                                         f"the median")
            try:
                metrics = run.final_report()
            except EnvFailure as e:
                raise TrialFailed(f"final evaluation: {e}") from None
            trial.set_user_attr("best_mean_return", metrics["best"]["mean_return"])
            trial.set_user_attr("wall_time_s", metrics["wall_time_s"])
            trial.set_user_attr("steps_per_second", metrics["steps_per_second"])
            return float(metrics["latest"]["mean_return"])
        finally:
            run.close()
            log = getattr(run, "log", None)
            for handler in list(log.handlers if log else []):
                handler.close()
                log.removeHandler(handler)
            if "keras" in sys.modules:
                sys.modules["keras"].backend.clear_session()


# -- the report ---------------------------------------------------------------------------------------------

def write_report(tuner, study):
    """best.flags, top_trials.txt, trials.json and the two plots in the study directory; the lines printed."""
    from optuna.trial import TrialState  # late: the tune extra is optional

    os.makedirs(tuner.study_dir, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    counts = collections.Counter(t.state.name for t in trials)
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value, reverse=True)
    budget = study.user_attrs.get("budget", tuner.budget)
    lines = [f"study {study.study_name!r} ({safe_url(tuner.storage_url)}), {study.user_attrs.get('env_id', '?')}, "
             f"budget {budget} steps a trial: {len(trials)} trials ("
             + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ")"]
    table = [f"{'rank':>4} {'trial':>5} {'mean_return':>12} {'best_eval':>10} {'wall_s':>7}  params"]
    for rank, t in enumerate(complete[:tuner.flags.top], 1):
        best_eval = t.user_attrs.get("best_mean_return")
        best_eval = f"{best_eval:.2f}" if best_eval is not None else "-"
        wall = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else float("nan")
        table.append(f"{rank:>4} {t.number:>5} {t.value:>12.2f} {best_eval:>10} {wall:>7.0f}  {params_text(t.params)}")
    _write_text(os.path.join(tuner.study_dir, "top_trials.txt"), "\n".join(lines + table) + "\n")
    lines += table if complete else ["no COMPLETE trial yet"]
    _write_trials_json(tuner, study, trials)
    if complete:
        best = complete[0]
        path = os.path.join(tuner.study_dir, "best.flags")
        # Without the tuner's evaluation schedule and this machine's paths: the settings that train.
        flag_lines = [a for a in best.user_attrs.get("flags", [])
                      if not a.startswith(("--eval_interval=", "--compilation_cache_dir=", "--ray_address="))]
        _write_text(path, f"# unstable_ppo.tune: the best trial ({best.number}) of study {study.study_name!r}, final "
                          f"mean return {best.value:.2f} after {budget} steps ({datetime.date.today()}).\n"
                          f"# python -m unstable_ppo.run --flagfile=best.flags  (a later --total_timesteps=N trains "
                          f"longer)\n" + "\n".join(flag_lines) + "\n")
        lines.append(f"best trial {best.number}: mean_return={best.value:.2f}; its flags: {path}")
    lines += _plots(tuner, study, len(complete))
    lines.append(f"report in {tuner.study_dir} (top_trials.txt, trials.json)")
    return lines


def _write_trials_json(tuner, study, trials):
    rows = []
    for t in trials:
        rows.append({"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                     "intermediate_values": {str(k): v for k, v in sorted(t.intermediate_values.items())},
                     "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
                     "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else None,
                     "user_attrs": {k: v for k, v in t.user_attrs.items() if k != "worker"}})
    _write_text(os.path.join(tuner.study_dir, "trials.json"),
                json.dumps({"study_name": study.study_name, "user_attrs": study.user_attrs, "trials": rows}, indent=1,
                           default=str))


def _write_text(path, text):
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    write_atomically(path, write)


def _plots(tuner, study, n_complete):
    import optuna  # late: the tune extra is optional

    try:
        import matplotlib  # late: the tune extra is optional

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # late: the tune extra is optional
        from optuna.visualization import matplotlib as plots  # late: the tune extra is optional
    except ImportError as e:
        return [f"plots skipped: {e} (pip install matplotlib)"]
    lines = []
    jobs = [("history.png", "optimization history", plots.plot_optimization_history, 1),
            ("importance.png", "parameter importance", plots.plot_param_importances, 2)]
    for name, what, plot, needed in jobs:
        path = os.path.join(tuner.study_dir, name)
        if n_complete < needed:
            lines.append(f"{what} plot skipped: it needs {needed} COMPLETE trial(s), the study has {n_complete}")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = plot(study)
                figure = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                write_atomically(path, lambda tmp: figure.savefig(tmp, format="png", bbox_inches="tight", dpi=100))
                plt.close(figure)
            lines.append(f"{what}: {path}")
        except (ImportError, ValueError, RuntimeError, ZeroDivisionError, optuna.exceptions.OptunaError) as e:
            lines.append(f"{what} plot skipped: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    return lines


# -- the command --------------------------------------------------------------------------------------------

def _spawn_workers(tuner):
    """--n_jobs worker processes (this command again, as workers); their exit codes."""
    argv = [sys.executable, "-m", "unstable_ppo.tune", *sys.argv[1:]]
    children = [subprocess.Popen(argv, env={**os.environ, WORKER_ENV: str(i)}) for i in range(tuner.flags.n_jobs)]

    def forward(signum, frame):
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    interrupted = False
    try:
        for child in children:
            while True:
                try:
                    child.wait()
                    break
                except KeyboardInterrupt:  # Ctrl-C reached the workers too: let them save and stop
                    interrupted = True
    finally:
        signal.signal(signal.SIGTERM, previous)
    return [c.returncode for c in children], interrupted


def tune(argv_flags):
    import optuna  # late: the tune extra is optional

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own line per trial says what happened
    worker_index = os.environ.get(WORKER_ENV)
    tuner = Tuner(argv_flags)  # every flag and the search space checked: no storage, no Keras yet
    if worker_index is not None:
        select_backend(argv_flags.backend)
        sys.exit(_work(tuner, int(worker_index)))
    if argv_flags.storage is None:
        if not argv_flags.report:
            os.makedirs(tuner.study_dir, exist_ok=True)  # for the SQLite file
        elif not os.path.exists(os.path.join(tuner.study_dir, "study.db")):
            raise UsageError(f"no study in {tuner.study_dir}: no study.db there (pass --storage for another one)")
    storage = open_storage(tuner.storage_url)
    study = open_study(tuner, storage, create=not argv_flags.report)
    os.makedirs(tuner.study_dir, exist_ok=True)
    code = 0
    if not argv_flags.report:
        done, running = trial_counts(storage, study)
        if argv_flags.verbose:
            print(f"study {study.study_name!r} in {safe_url(tuner.storage_url)}: {done} of {argv_flags.n_trials} "
                  f"trials finished; trials run in {tuner.study_dir}; search space:", flush=True)
            print("\n".join(tune_space.describe(tuner.space)), flush=True)
        if argv_flags.n_jobs == 1:
            select_backend(argv_flags.backend)
            code = _work(tuner, 0)
        else:
            codes, interrupted = _spawn_workers(tuner)
            code = 130 if interrupted or 130 in codes else max(codes)
    for line in write_report(tuner, study):
        print(line, flush=True)
    done, running = trial_counts(storage, study)
    if not argv_flags.report and done < argv_flags.n_trials:
        print(f"the study has {done} of {argv_flags.n_trials} finished trials: run the same command again to "
              f"continue it", file=sys.stderr)
        code = code or 1
    if code:
        sys.exit(code)


def _work(tuner, index):
    """A worker's life: trials until the study has enough; its exit code (130: stopped by a signal)."""
    worker = Worker(tuner, index)
    try:
        return worker.run()
    except (Interrupted, KeyboardInterrupt) as e:
        print(f"{worker.prefix}stopped{f': {e}' if str(e) else ''}; the trial is marked FAIL, and the same "
              f"command continues the study", file=sys.stderr)
        return 130


def entry_point():
    run_app(tune)


if __name__ == "__main__":
    entry_point()
