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
differ are in `unstable_ppo.tune.space`'s docstring.
`num_envs`, `anneal_lr` (on by default: the Zoo's sampled rates are constant) and every other flag come
from the base settings. `--search_space=FILE` (JSON, or YAML) changes the space: see `unstable_ppo.tune.space`
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

import os
import signal
import subprocess
import sys

from absl import flags

from unstable_ppo.cli import UsageError, run_app, select_backend
from unstable_ppo.training_run import Interrupted
from unstable_ppo.tune import space as tune_space
from unstable_ppo.tune.report import write_report
from unstable_ppo.tune.settings import Tuner
from unstable_ppo.tune.storage import open_storage, safe_url
from unstable_ppo.tune.study import open_study, trial_counts
from unstable_ppo.tune.worker import Worker


def define_flags(module_name=None):
    """Only for the command line (`entry_point`). `module_name`: the module the flags are listed under (absl's
    default: this one); `__main__.py` names the program, so that `python -m unstable_ppo.tune --helpfull`
    lists them first, as the other tools do."""
    where = {"module_name": module_name} if module_name else {}
    flags.DEFINE_integer("n_trials", 20, "Trials to finish (COMPLETE or PRUNED) in the study, earlier calls' "
                         "included.", **where)
    flags.DEFINE_integer("budget", None, "Env steps of each trial's training run.", **where)
    flags.DEFINE_string("storage", None, "Optuna storage URL (default: sqlite:///{study_dir}/study.db); "
                        "postgresql://user:password@host/db to share a study between machines.", **where)
    flags.DEFINE_string("study_name", "ppo", "The study's name in the storage.", **where)
    flags.DEFINE_string("study_dir", "./log/tune/{env_id}/{study_name}", "Trials' run directories, the default "
                        "storage and the report ({env_id} and {study_name} are templated).", **where)
    flags.DEFINE_integer("n_jobs", 1, "Worker processes running trials at once.", **where)
    flags.DEFINE_string("search_space", None, "A JSON or YAML file that changes the default (RL Zoo) search "
                        "space.", **where)
    flags.DEFINE_bool("report", False, "Only write and print the report of the study so far.", **where)
    flags.DEFINE_integer("n_evaluations", 4, "Evaluations per trial, at even steps of its budget: the pruner's "
                         "intermediate values.", **where)
    flags.DEFINE_integer("n_startup_trials", 5, "Random trials before TPE samples; completed trials before the "
                         "pruner prunes.", **where)
    flags.DEFINE_integer("top", 10, "Trials in the report's table.", **where)


WORKER_ENV = "UNSTABLE_PPO_TUNE_WORKER"  # set in the worker processes of --n_jobs: the worker's index


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
            stopped = [c for c in codes if c in (130, 143)]  # a worker stopped by SIGINT or SIGTERM
            code = 130 if interrupted else stopped[0] if stopped else max(codes)
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
    """A worker's life: trials until the study has enough; its exit code (130 or 143: stopped by SIGINT or SIGTERM)."""
    worker = Worker(tuner, index)
    try:
        return worker.run()
    except (Interrupted, KeyboardInterrupt) as e:
        print(f"{worker.prefix}stopped{f': {e}' if str(e) else ''}; the trial is marked FAIL, and the same "
              f"command continues the study", file=sys.stderr)
        return e.exit_code if isinstance(e, Interrupted) else 130


def entry_point(flags_module=None):
    """The console script `unstable-ppo-tune`; `python -m unstable_ppo.tune` (`__main__.py`) names `flags_module`,
    see `define_flags`."""
    define_flags(flags_module)
    run_app(tune)


if __name__ == "__main__":
    entry_point()
