"""`python -m unstable_ppo.tune`: Optuna studies whose trials are real runner runs, on a real storage (SQLite
always; PostgreSQL when the server's programs are installed), in subprocesses as a user runs them."""

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import keras
import optuna
import pytest
from optuna.trial import TrialState

from tests.helpers.runner import child_env

BACKEND = keras.backend.backend()
# CartPole with tiny rollouts (4 envs x 16 steps = 64 steps, 2 epochs of 2 minibatches): a budget of 256 steps
# is 4 updates, with an evaluation (2 episodes of at most 100 steps) after the 2nd and the 4th.
COMMON = ("--env_id=CartPole-v1", f"--backend={BACKEND}", "--num_envs=4", "--num_steps=16", "--num_epochs=2",
          "--batch_size=32", "--eval_episodes=2", "--eval_max_steps=100", "--n_evaluations=2", "--n_startup_trials=2",
          "--study_name=s", "--budget=256")
LR_SPACE = {"extends": "none", "lr": {"type": "float", "low": 1e-9, "high": 3e-3, "log": True}}

# Runs the tuner as `python -m unstable_ppo.tune` does, and reports at exit which heavy modules it imported.
PROBE = """
import atexit, runpy, sys
atexit.register(lambda: print("IMPORTED=" + ",".join(m for m in ("keras", "tensorflow", "jax", "torch")
                                                      if m in sys.modules), file=sys.stderr))
sys.argv = ["unstable_ppo.tune"] + sys.argv[1:]
runpy.run_module("unstable_ppo.tune", run_name="__main__")
"""


# Settles a runner command line as `python -m unstable_ppo.run` does before it builds anything.
SETTLE = """
import json, sys
from unstable_ppo.run_settings import RunSettings
from unstable_ppo.tune import fresh_runner_flags
settings = RunSettings(fresh_runner_flags(sys.argv[1:]))
settings.settle()
hp = settings.hp
print(json.dumps({"lr": hp.lr, "seed": settings.flags.seed, "total": settings.total,
                  "rollout": [hp.num_envs, hp.num_steps, hp.batch_size], "keras": "keras" in sys.modules}))
"""


def tune(*flags, cwd, wait=True, timeout=600, **popen):
    argv = [sys.executable, "-m", "unstable_ppo.tune", *flags]
    if not wait:
        return subprocess.Popen(argv, env=child_env(), cwd=cwd, **popen)
    return subprocess.run(argv, env=child_env(), cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def jax_cache():
    """On JAX, one XLA compilation cache for the module's trials: the same tiny networks compile once, not in
    every trial (each builds new ones)."""
    if BACKEND != "jax":
        yield []
        return
    path = tempfile.mkdtemp(prefix="unstable_ppo_tune_xla_")
    yield [f"--compilation_cache_dir={path}"]
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _cache(jax_cache):
    global CACHE
    CACHE = jax_cache


CACHE = []


def study_flags(tmp_path, space=LR_SPACE, storage=None):
    (tmp_path / "space.json").write_text(json.dumps(space))
    flags = [*COMMON, *CACHE, f"--study_dir={tmp_path / 'study'}", f"--search_space={tmp_path / 'space.json'}"]
    return flags + ([f"--storage={storage}"] if storage else [])


def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'study' / 'study.db'}"


def trials_of(url):
    return optuna.load_study(study_name="s", storage=url).get_trials(deepcopy=False)


def test_a_study_completes_and_writes_a_report_and_a_flagfile_the_runner_takes(tmp_path):
    url = sqlite_url(tmp_path)
    proc = tune(*study_flags(tmp_path), "--n_trials=2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = trials_of(url)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2, proc.stdout
    for t in trials:  # each trial is a runner run: its own run directory, the flags it ran with, its metrics
        assert t.user_attrs["logdir"] == str(tmp_path / "study" / f"trial_{t.number}")
        assert f"--seed={1 + t.number}" in t.user_attrs["flags"]
        metrics = json.loads((tmp_path / "study" / f"trial_{t.number}" / "metrics.json").read_text())
        assert t.value == metrics["latest"]["mean_return"] and metrics["total_timesteps"] == 256
        assert sorted(t.intermediate_values) == [1, 2]  # an evaluation after the 2nd and the 4th update
    best = max(trials, key=lambda t: t.value)
    assert f"best trial {best.number}:" in proc.stdout and "rank trial" in proc.stdout
    for name in ("best.flags", "top_trials.txt", "trials.json", "history.png", "importance.png"):
        assert (tmp_path / "study" / name).is_file(), name
    # The runner takes the flagfile: every check it makes before building anything passes, with the trial's values.
    check = subprocess.run([sys.executable, "-c", SETTLE, f"--flagfile={tmp_path / 'study' / 'best.flags'}",
                            f"--logdir={tmp_path / 'best'}"], env=child_env(), capture_output=True, text=True,
                           timeout=120)
    assert check.returncode == 0, check.stderr[-3000:]
    settled = json.loads(check.stdout.splitlines()[-1])
    assert settled == {"lr": best.params["lr"], "seed": 1 + best.number, "total": 256, "rollout": [4, 16, 32],
                       "keras": False}
    # --report alone: the report again, nothing trained.
    report = tune(*study_flags(tmp_path), "--report", cwd=tmp_path)
    assert report.returncode == 0 and "2 trials (2 COMPLETE)" in report.stdout, report.stderr[-2000:]
    assert f"best trial {best.number}:" in report.stdout


def _recorded_trials(study, n):
    """`n` finished trials recorded with evaluations no CartPole run can reach here (500 is the most; these runs
    stop at 100 steps) and a final return of 0: the median pruner stops the next real trial at its first
    evaluation, by construction."""
    for _ in range(n):
        study.add_trial(optuna.trial.create_trial(
            params={"lr": 1e-3}, distributions={"lr": optuna.distributions.FloatDistribution(1e-9, 3e-3, log=True)},
            value=0.0, intermediate_values={1: 1000.0, 2: 1000.0}))


@pytest.mark.backend_independent  # the study's orchestration; trials on every backend: test_a_study_completes_...
def test_a_killed_worker_leaves_a_failed_trial_and_the_study_goes_on_and_prunes(tmp_path):
    url = sqlite_url(tmp_path)
    (tmp_path / "study").mkdir()
    _recorded_trials(optuna.create_study(study_name="s", storage=url, direction="maximize"), 2)
    flags = [*study_flags(tmp_path), "--n_trials=3"]
    proc = tune(*flags, cwd=tmp_path, wait=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)
    log = tmp_path / "study" / "trial_2" / "training.log"
    try:
        _wait_for(lambda: log.exists() and "new run" in log.read_text(), 300, "trial 2 to start training")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert [t.state for t in trials_of(url)] == [TrialState.COMPLETE] * 2 + [TrialState.RUNNING]
    again = tune(*flags, cwd=tmp_path)  # the same command: the study goes on
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"trial 2: its worker (pid {proc.pid}) is gone: marked FAIL" in again.stdout
    trials = trials_of(url)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL, TrialState.PRUNED]
    assert "is gone" in trials[2].user_attrs["failed"]
    assert list(trials[3].intermediate_values) == [1] and "below the median" in trials[3].user_attrs["pruned"]
    assert "no COMPLETE trial" not in again.stdout  # the recorded trials are the best so far


@pytest.mark.backend_independent  # the study's orchestration; trials on every backend: test_a_study_completes_...
def test_two_workers_share_a_study_and_run_no_trial_twice(tmp_path):
    url = sqlite_url(tmp_path)
    proc = tune(*study_flags(tmp_path), "--n_trials=4", "--n_jobs=2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = trials_of(url)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), [t.state for t in trials]
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) == 2  # both workers took trials
    for t in trials:  # each trial ran once: one run in its directory
        log = (tmp_path / "study" / f"trial_{t.number}" / "training.log").read_text()
        assert log.count("new run: flags") == 1


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


# -- PostgreSQL: a real server on loopback, in a temporary directory ------------------------------------------

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A PostgreSQL server of Debian's postgresql package, on a free loopback port, for this test only."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb")]
    if not found[-1]:
        pytest.skip("PostgreSQL's initdb is not installed (apt-get install postgresql; .ci/run installs it)")
    bindir = os.path.dirname(found[-1])
    prefix, owner = [], None
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the PostgreSQL server as")
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser to start PostgreSQL as the 'postgres' user")
        prefix = ["runuser", "-u", "postgres", "--"]
    home = tempfile.mkdtemp(prefix="unstable_ppo_pg_")
    if owner:
        os.chown(home, owner.pw_uid, owner.pw_gid)
    data, port = os.path.join(home, "data"), _free_port()
    pg_ctl = [*prefix, os.path.join(bindir, "pg_ctl"), "-D", data]
    try:
        init = subprocess.run([*prefix, os.path.join(bindir, "initdb"), "-D", data, "-U", "postgres", "--auth=trust",
                               "-E", "UTF8", "--no-sync"], capture_output=True, text=True, timeout=120)
        if init.returncode:
            pytest.skip(f"initdb failed: {(init.stderr or init.stdout).strip().splitlines()[-1:]}")
        start = subprocess.run([*pg_ctl, "-l", os.path.join(home, "server.log"), "-w", "-t", "60", "-o",
                                f"-p {port} -k {home} -h 127.0.0.1 -c fsync=off", "start"],
                               capture_output=True, text=True, timeout=120)
        if start.returncode:
            log = open(os.path.join(home, "server.log")).read().strip().splitlines()[-1:]
            pytest.skip(f"the PostgreSQL server did not start: {log or start.stderr.strip()}")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "-w", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.backend_independent  # the study's orchestration; trials on every backend: test_a_study_completes_...
def test_two_workers_share_a_study_on_a_postgresql_server(tmp_path, postgres_url):
    proc = tune(*study_flags(tmp_path, storage=postgres_url), "--n_trials=2", "--n_jobs=2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = trials_of(postgres_url.replace("postgresql://", "postgresql+psycopg2://"))
    assert [t.number for t in trials] == [0, 1]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert (tmp_path / "study" / "best.flags").is_file() or "no COMPLETE trial" in proc.stdout
    assert not (tmp_path / "study" / "study.db").exists()


# -- bad input: one line, before Keras -------------------------------------------------------------------------

@pytest.mark.backend_independent  # refused before Keras starts
@pytest.mark.parametrize(
    "space, flags, message",
    [
        ({"foo": {"low": 1, "high": 2}}, ["--budget=5000"], "unknown parameter 'foo'"),
        ({"lr": {"type": "float", "low": 0.1, "high": 0.01}}, ["--budget=5000"], "lr: empty range"),
        ({"n_epochs": {"type": "categorical", "choices": []}}, ["--budget=5000"], "num_epochs: empty range"),
        (None, ["--budget=100", "--num_envs=16"], "smaller than one rollout (num_envs x num_steps = 16 x 8 = 128"),
        ({"extends": "none"}, ["--budget=1000", "--num_envs=16", "--num_steps=128"], "16 x 128 = 2048 steps"),
        (None, ["--budget=5000", "--storage=postgresql://u@127.0.0.1:1/db"], "cannot open the storage"),
    ],
)
def test_bad_input_is_one_line_before_keras_is_imported(tmp_path, space, flags, message):
    if space is not None:
        (tmp_path / "space.json").write_text(json.dumps(space))
        flags = [*flags, "--search_space=space.json"]
    env = child_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", PROBE, "--env_id=CartPole-v1", *flags], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert lines[-1] == "IMPORTED=", proc.stderr[-2000:]  # neither Keras nor any backend was imported
    assert len(lines) == 2 and lines[0].startswith("error:") and message in lines[0], proc.stderr[-2000:]
    assert seconds < 30
    assert not (tmp_path / "log").exists()  # nothing written
