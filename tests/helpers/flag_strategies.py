"""Hypothesis strategies for the runner's flags, and a way to run the runner on them.

`runner_argv(backend)` draws a command line for `python -m unstable_ppo.run`: a mix of
valid and invalid values for most flags, always cheap (tiny rollouts, one or a few
updates, one evaluation episode). Its paths hold two placeholders that `materialize`
fills in: `LOGROOT`, a fresh empty directory, and `EXISTING_RUN`, a directory that
already holds a finished tiny run (for --resume/--overwrite).

`run_in_process(argv)` runs the runner's `main` in this process (a subprocess per
example costs seconds of imports) and returns its exit code, output and any
traceback; `check_outcome` states the contract: every command line either trains
(exit 0, metrics.json written) or exits 2 with a one-line `error: ...` on stderr,
no traceback, and the log directory exactly as it was before.

Used by tests/test_flags_property.py, and meant for a benchmark that runs many more
examples (`UNSTABLE_PPO_FLAG_EXAMPLES`).
"""

import contextlib
import io
import os
import shutil
import signal
import traceback
from dataclasses import dataclass

from hypothesis import strategies as st

from tests.helpers.runner import run_runner

LOGROOT = "@LOGROOT@"
EXISTING_RUN = "@EXISTING_RUN@"

# -- values: for each flag, valid values and invalid ones ---------------------------

_NAN, _INF = float("nan"), float("inf")
BAD_FLOATS = [0.0, -0.1, -1.0, _NAN, _INF, -_INF]
BAD_INTS = [0, -1, -7]
BOOLS = ["true", "false"]


def _text(value):
    return repr(value) if isinstance(value, float) else str(value)


# {flag: (valid values, invalid values)}; every valid value keeps a run tiny. The
# invalid ones are what the runner must refuse in one line (or, for some, accept).
FLAG_VALUES = {
    "num_epochs": ([1, 2, 3], BAD_INTS),
    "lr": ([1e-4, 2.5e-4, 1e-3, 0.5], BAD_FLOATS),
    "anneal_lr": (BOOLS, ["maybe", "2"]),
    "gamma": ([0.5, 0.99, 1.0], [0.0, -0.1, 1.5, _NAN, _INF]),
    "gae_lambda": ([0.0, 0.8, 1.0], [-0.5, 1.01, _NAN, _INF]),
    "clip_range": ([0.05, 0.2, 1.0], BAD_FLOATS),
    "clip_range_vf": ([0.1, 0.2, 10.0], BAD_FLOATS),
    "ent_coef": ([0.0, 0.01, 0.5], [-0.01, _NAN, _INF]),
    "vf_coef": ([0.0, 0.5, 1.0], [-0.5, _NAN, _INF]),
    "max_grad_norm": ([0.1, 0.5, 10.0], BAD_FLOATS),
    "target_kl": ([1e-6, 0.01, 1.0], BAD_FLOATS),
    "shared_net": (BOOLS, []),
    "force_mlp": (BOOLS, []),
    "use_kl_loss": (BOOLS, []),
    "kl_target": ([1e-3, 0.01, 0.3], BAD_FLOATS),
    "init_beta": ([0.1, 1.0, 10.0], BAD_FLOATS),
    "eta_kl": ([0.0, 50.0], [-1.0, _NAN, _INF]),
    "eta": ([0.0, 0.1, 1.0], [-1.0, _NAN, _INF]),  # non-zero on a Discrete action space: an error
    "nn_std": (BOOLS, []),  # true on a Discrete action space: an error
    "ortho_init": (BOOLS, []),
    "use_sde": (BOOLS, []),  # true on a Discrete action space, or with nn_std: an error
    "sde_sample_freq": ([-1, 1, 4], [0, -2, "x"]),  # not -1 without --use_sde: an error
    "reward_transform": (["identity", "scale", "positive"], ["", "SCALE", "log", "scale "]),
    "reward_scale": ([1e-3, 0.01, 1.0, 100.0], BAD_FLOATS),
    "normalize_obs": (BOOLS, []),
    "normalize_reward": (BOOLS, []),
    "time_feature": (BOOLS, []),  # CartPole-v1 and Pendulum-v1 both have a time limit and vector observations
    "env_kwargs": (["{}", '{"max_episode_steps": 50}'],
                   ['{"no_such_argument": 1}', "[1]", "{g}", '{"render_mode": "human"}', '{"g": NaN}']),
    "vec_env": (["sync", "async"], ["ale", "compiled", "threads", ""]),  # ale, compiled: other families
    "seed": ([0, 1, 12345, 2**31], [-1, -(2**40), 2**70]),
    "rank": ([0, 3], [-1]),
    "eval_interval": ([0, 1, 2], [-1]),
    "eval_max_steps": ([1, 5, 50], BAD_INTS),
    "eval_seed": ([0, 7], [-1, -(2**40)]),
    "eval_episodes": ([1, 2], BAD_INTS),
    "save_interval": ([0, 1, 2], [-1]),
    "log_interval": ([1, 10], BAD_INTS),
    "verbose": ([0, 2], [-1, 7]),
    "resume": (BOOLS, []),
    "overwrite": (BOOLS, []),
    "model_dir": (["model", "ckpt/{rank}"], ["{nope}", "m{", ""]),
    "logging": (["training.log", "logs/{env_id}.log"], ["", "{rank", "."]),
    "tb_logdir": (["", "tb"], ["tb/{foo}"]),
    "monitor_dir": (["monitor", "", "mon/{rank}"], ["{x}"]),
    "anneal_clip_range": (BOOLS, ["maybe"]),
    "activation": (["tanh", "relu"], ["bogus", ""]),
    "hidden_sizes": (["8", "16,8"], ["0", "8,x", "-4"]),
    "log_std_init": ([0.0, -0.5], [_NAN, _INF]),  # only Box action spaces read it
    "recurrent": (BOOLS, []),  # with CartPole's 8-32 steps and timestep_size 16: some runs, some one-line errors
    "timestep_size": ([4, 8], BAD_INTS),
    "hidden_layer_size": ([8, 16], BAD_INTS),
    "shared_lstm": (BOOLS, []),
    "lstm_head_sizes": (["", "8"], ["x", "0"]),  # without --recurrent: an error
    "eval_deterministic": (BOOLS, ["maybe"]),
    "max_env_restarts": ([0, 3], [-1]),
    "env_timeout": ([5.0, 60.0], [0.0, -1.0, _NAN]),
    "gather_per_worker": ([1], [0, -1]),  # > 1 starts worker processes: test_parallel.py covers it
    "worker_num": ([1], [0, -2]),
    # Without --encoder, --encoder_kwargs is a one-line error; with --resume, --encoder is.
    "encoder": (["tests.helpers.encoders:VectorEncoder"],
                ["no_such_module_xyz:Enc", "tests.helpers.encoders", "tests.helpers.encoders:Missing",
                 "tests.helpers.encoders:UnregisteredEncoder"]),
    "encoder_kwargs": (['{"units": 4}', "{}"], ["[1]", "{units}", '{"size": 2}']),
}
# Runner flags that `runner_argv` sets itself (CORE_FAULTS and the lines below), and those it never
# draws, with the reason. tests/test_flags_property.py checks that every flag is in one of these.
DRAWN_BY_HAND = {"env_id", "env_defaults", "logdir", "num_envs", "num_steps", "batch_size", "num_episodes",
                 "total_timesteps", "eval_episodes", "verbose", "backend"}
NOT_DRAWN = {
    "record_video": "writes an mp4 per run: tests/test_run.py covers it",
    "ray_address": "needs a Ray cluster: tests/test_parallel.py starts one",
    "compilation_cache_dir": "JAX only and writes a cache: tests/test_backend_settings.py covers it",
}
ENV_IDS = (["CartPole-v1", "CartPole-v1", "Pendulum-v1"],
           ["NoSuchEnv-v0", "not an id!", "CartPole", "CartPole-v99", "ALE/NoSuchGame-v5", "",
            "gymnasium.envs:Nope-v0"])
LOGDIRS = ([f"{LOGROOT}/run", f"{LOGROOT}/{{env_id}}/{{rank}}", EXISTING_RUN],
           [f"{LOGROOT}/{{foo}}", f"{LOGROOT}/run{{", f"{LOGROOT}/run}}", f"{LOGROOT}/{{}}", f"{LOGROOT}/{{0}}",
            f"{LOGROOT}/{{rank:d}}", f"{LOGROOT}/{{env_id:d}}", f"{LOGROOT}/{{env_id!x}}",
            f"{LOGROOT}/{{env_id.upper}}", f"{LOGROOT}/{{rank[0]}}"])
# The rollout, the minibatch and the run length have their own faults.
CORE_FAULTS = ["env_id", "logdir", "num_envs", "num_steps", "batch_size", "length", "extra_argument"]


def _value(draw, pair, bad):
    good, invalid = pair
    return draw(st.sampled_from(invalid if bad and invalid else good))


@st.composite
def runner_argv(draw, backend, max_faults=2):
    """A command line (without the program name) for the runner on Keras backend `backend`.

    Up to `max_faults` of its flags get an invalid value (none, in about a third of the
    examples); the others get valid ones, and combinations of valid values can still
    be invalid together (--vec_env=ale on CartPole, --eta on a Discrete action space,
    --use_kl_loss with --clip_range, --resume with a changed setting, ...).
    """
    optional = draw(st.lists(st.sampled_from(sorted(FLAG_VALUES)), max_size=8, unique=True))
    faultable = CORE_FAULTS + [name for name in optional if FLAG_VALUES[name][1]]
    num_faults = draw(st.sampled_from([0, 1, 0, 1, 2][: max_faults + 3] if max_faults else [0]))
    faults = set(draw(st.lists(st.sampled_from(faultable), min_size=num_faults, max_size=num_faults,
                               unique=True))) if num_faults else set()

    env_id = _value(draw, ENV_IDS, "env_id" in faults)
    logdir = _value(draw, LOGDIRS, "logdir" in faults)
    argv = [f"--env_id={env_id}", draw(st.sampled_from(["--env_defaults=false"] * 3 + ["--env_defaults=true"])),
            f"--logdir={logdir}"]
    existing = logdir == EXISTING_RUN
    if existing:  # a directory that holds a run: mostly continue or replace it
        argv.append(draw(st.sampled_from(["--resume", "--resume", "--overwrite", "--resume --overwrite", ""])))
        argv = [a for arg in argv for a in arg.split(" ") if a]
    # The rollout and the minibatch. A resumed run takes its own unless they are given.
    if not (existing and "--resume" in argv and draw(st.booleans())):
        num_envs = draw(st.sampled_from([0, -2] if "num_envs" in faults else [1, 2, 3]))
        num_steps = draw(st.sampled_from([0, -4] if "num_steps" in faults else [8, 16, 32]))
        argv += [f"--num_envs={num_envs}", f"--num_steps={num_steps}"]
        rollout = max(num_envs, 1) * max(num_steps, 1)
        if "batch_size" in faults:
            batch_size = draw(st.sampled_from([rollout + 1, 0, -rollout]))
        else:
            batch_size = draw(st.sampled_from([rollout, max(rollout // 2, 1), rollout // 3 + 1]))
        argv.append(f"--batch_size={batch_size}")
    else:
        rollout = 32  # the existing run's 2 envs x 16 steps
    # How long: one or two updates' worth (a resumed run continues from one update).
    if "length" in faults:
        argv += draw(st.sampled_from([["--num_episodes=0"], ["--num_episodes=-1"], ["--total_timesteps=0"],
                                      ["--total_timesteps=-5"], ["--num_episodes=1", "--total_timesteps=0"]]))
    elif draw(st.booleans()):
        argv.append(f"--num_episodes={draw(st.integers(1, 2))}")
    else:
        argv.append(f"--total_timesteps={draw(st.integers(1, 2 * rollout))}")
    argv += ["--eval_episodes=1", "--verbose=0", f"--backend={backend}"]
    # Everything else: a random subset of the other flags, in the spelling absl accepts.
    for name in optional:
        value = _value(draw, FLAG_VALUES[name], name in faults)
        if value in BOOLS and draw(st.booleans()):
            argv.append(f"--{name}" if value == "true" else f"--no{name}")
        else:
            argv.append(f"--{name}={_text(value)}")
    if "extra_argument" in faults:
        argv.insert(draw(st.integers(0, len(argv))), draw(st.sampled_from(["stray", "--", "-x", "--no_such_flag"])))
    return argv


# -- running the runner ---------------------------------------------------------------


def materialize(argv, workdir, existing_run=None):
    """`argv` with `LOGROOT` -> `workdir` and `EXISTING_RUN` -> a copy of `existing_run` in `workdir`.

    `existing_run`: a directory holding a finished run, or a callable returning one
    (called only when `argv` needs it).
    """
    out = []
    for arg in argv:
        if EXISTING_RUN in arg:
            source = existing_run() if callable(existing_run) else existing_run
            target = os.path.join(workdir, "existing")
            if not os.path.exists(target):
                shutil.copytree(source, target, symlinks=True)
            arg = arg.replace(EXISTING_RUN, target)
        out.append(arg.replace(LOGROOT, workdir))
    return out


@dataclass
class Outcome:
    code: int | None  # None: an exception escaped (a traceback)
    stdout: str
    stderr: str
    traceback: str = ""


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout("the run took too long (a hang?)")


def run_in_process(argv, timeout=120):
    """Run the runner on `argv` (no program name) in this process, as `python -m unstable_ppo.run` would.

    Flag values and defaults (which the runner changes with env flagfiles and resumed
    runs) are restored afterwards. A run over `timeout` seconds counts as a traceback.
    """
    from absl import flags, logging

    from unstable_ppo import cli
    from unstable_ppo import run as runner

    FLAGS = flags.FLAGS
    saved = {name: (FLAGS[name].default, FLAGS[name].default_as_str, FLAGS[name].value) for name in FLAGS}
    stdout, stderr = io.StringIO(), io.StringIO()
    outcome = None
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                remaining = cli.parse_flags(["unstable_ppo.run", *argv])
                logging.set_verbosity(logging.WARNING)
                if len(remaining) > 1:
                    cli.fail(f"unexpected arguments: {' '.join(remaining[1:])}")
                cli.exit_on_error(runner.train, FLAGS)
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        outcome = Outcome(code, stdout.getvalue(), stderr.getvalue())
    except Exception:  # noqa: BLE001 - an escaped exception (or a timeout) is what this looks for
        outcome = Outcome(None, stdout.getvalue(), stderr.getvalue(), traceback.format_exc())
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        FLAGS.unparse_flags()
        for name, (default, default_as_str, value) in saved.items():
            FLAGS[name].default = default
            FLAGS[name].default_as_str = default_as_str
            FLAGS[name].value = value
    return outcome


def run_subprocess(argv, cwd=None, timeout=600):
    """`python -m unstable_ppo.run *argv` in a fresh process, as an `Outcome`."""
    proc = run_runner(*argv, cwd=cwd, timeout=timeout)
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def snapshot(path):
    """{relative path: (size, mtime_ns)} of every file and directory under `path` ({} if it does not exist)."""
    tree = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st_ = os.lstat(full)
            tree[os.path.relpath(full, path)] = (st_.st_size, st_.st_mtime_ns)
    return tree


def check_outcome(outcome, argv, before, workdir):
    """Assert the contract for one command line; `before` is `snapshot(workdir)` taken before the run."""
    where = f"argv: {' '.join(argv)}"
    assert outcome.code is not None, f"{where}\n{outcome.traceback}"
    verbose = [int(a.split("=", 1)[1]) for a in argv if a.startswith("--verbose=") and a[10:].lstrip("-").isdigit()]
    if not (verbose and verbose[-1] >= 2 and outcome.code == 2):  # --verbose=2 shows a one-line error's traceback
        assert "Traceback" not in outcome.stderr, f"{where}\n{outcome.stderr[-3000:]}"
    if outcome.code == 0:
        logdir = _rendered_logdir(argv)
        assert logdir is None or os.path.isfile(os.path.join(logdir, "metrics.json")), \
            f"{where}\nexit 0 but no metrics.json in {logdir}"
        return "ok"
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert outcome.code == 2, f"{where}\nexit {outcome.code}\n{outcome.stderr[-3000:]}"
    assert lines and lines[-1].startswith("error: "), f"{where}\n{outcome.stderr[-3000:]}"
    assert sum(line.startswith("error: ") for line in lines) == 1, f"{where}\n{outcome.stderr[-3000:]}"
    after = snapshot(workdir)
    assert after == before, (f"{where}\n{lines[-1]}\nbut the files changed: "
                             f"{sorted(set(after.items()) ^ set(before.items()))[:10]}")
    return lines[-1]


def _rendered_logdir(argv):
    env_id, rank, logdir = "CartPole-v1", 0, "./log/{env_id}/ppo/{rank}"
    for arg in argv:
        if arg.startswith("--env_id="):
            env_id = arg.split("=", 1)[1]
        elif arg.startswith("--rank="):
            rank = int(arg.split("=", 1)[1])
        elif arg.startswith("--logdir="):
            logdir = arg.split("=", 1)[1]
    try:
        return logdir.format(env_id=env_id, rank=rank)
    except (ValueError, KeyError, IndexError, AttributeError):
        return None
