"""Train PPO from the command line, the way `unstable_baselines.ppo.run` did.

    python -m unstable_ppo.run --env_id=BreakoutNoFrameskip-v4 --num_envs=8

Total timesteps = num_envs * num_steps * num_episodes (`--total_timesteps` instead
of `--num_episodes` if you prefer). Settings come, in increasing priority, from the
flag defaults, the bundled per-env flagfile (`unstable_ppo/configs/`), the saved
run (with `--resume`), and the command line (`--flagfile` included).

A run directory (`--logdir`, with `{env_id}` and `{rank}` templated) holds:

    training.log          flags, one summary line per update, the final table
    monitor/{i}.monitor.csv   one row per finished episode of env i
    events.out.tfevents.* TensorBoard scalars, keyed like Stable-Baselines3's
    model/latest          the checkpoint saved every --save_interval updates
    model/best            the checkpoint with the best evaluation so far
    videos/               with --record_video, the final evaluation's first episode
    metrics.json          final evaluation of latest and best, steps, wall time
"""

import sys
import traceback
import typing

from absl import flags

from unstable_ppo import config, quiet
from unstable_ppo.cli import BACKENDS, JsonObjectParser, JsonSerializer, run_app, select_backend
from unstable_ppo.faults import EnvFailure
# Flag settling and the run itself live in their own modules; their names stay importable from here.
from unstable_ppo.run_settings import (  # noqa: F401 - re-exported
    CONFIG_DIR,
    MAX_SEED,
    RunPaths,
    RunSettings,
    apply_defaults,
    env_config_file,
    read_flagfile,
    render_path,
    run_flags,
)
from unstable_ppo.training_run import Crashed, Interrupted, RunFailed, TrainingRun  # noqa: F401 - re-exported

flags.DEFINE_integer("rank", 0, "Run index; templated into paths as {rank}.")
flags.DEFINE_integer("seed", 1, "Random seed (envs, weights, sampling).")
flags.DEFINE_string("logdir", "./log/{env_id}/ppo/{rank}", "Run directory ({env_id} and {rank} are templated).")
flags.DEFINE_string("model_dir", "model", "Checkpoints (latest/, best/), relative to logdir.")
flags.DEFINE_string("logging", "training.log", "Log file, relative to logdir.")
flags.DEFINE_string("monitor_dir", "monitor", "Monitor CSVs (one per env), relative to logdir.")
flags.DEFINE_string("tb_logdir", "", "TensorBoard event directory, relative to logdir ('' = logdir).")
flags.DEFINE_integer("log_interval", 10, "Updates between summaries on the console.")
flags.DEFINE_string("env_id", "CartPole-v1", "Gymnasium environment id.")
flags.DEFINE_bool("env_defaults", True, "Apply the bundled flagfile for env_id (unstable_ppo/configs/).")


def _define_setting_flags():
    """One flag per PPO setting, from the table in `unstable_ppo.config` (name, default, help)."""
    for field in config.settings():
        name, meta = config.flag_name(field), field.metadata
        if name is None:
            continue
        kinds = set(typing.get_args(field.type)) or {field.type}
        if meta["choices"]:
            flags.DEFINE_enum(name, field.default, meta["choices"], meta["help"])
        elif field.name == "net":  # a bool flag: --force_mlp sets net="mlp"
            flags.DEFINE_bool(name, False, meta["help"])
        elif bool in kinds:
            flags.DEFINE_bool(name, field.default, meta["help"])
        elif int in kinds:
            flags.DEFINE_integer(name, field.default, meta["help"])
        elif float in kinds:
            flags.DEFINE_float(name, field.default, meta["help"])
        elif tuple in kinds:
            flags.DEFINE_list(name, [str(v) for v in field.default], meta["help"])
        elif dict in kinds:
            flags.DEFINE(JsonObjectParser(), name, field.default, meta["help"], serializer=JsonSerializer())
        else:
            flags.DEFINE_string(name, field.default, meta["help"])


_define_setting_flags()
flags.DEFINE_string("encoder", None, "A Keras layer of your own as the observation encoder, module:ClassName (the "
                    "module is imported, as for --env_id=module:EnvId; the class must be registered with "
                    "keras.saving.register_keras_serializable). The MLP torso (--hidden_sizes) follows it.")
flags.DEFINE(JsonObjectParser(), "encoder_kwargs", None, "The --encoder's constructor arguments, a JSON object, "
             "e.g. '{\"filters\": 32}'.", serializer=JsonSerializer())
flags.DEFINE_integer("num_episodes", None, "Rollout/update iterations (default: from --total_timesteps).")
flags.DEFINE_integer("total_timesteps", 100_000, "Env steps to train for, when --num_episodes is not given.")
flags.DEFINE_enum("backend", None, BACKENDS, "Keras backend (default: $KERAS_BACKEND, else tensorflow).")
flags.DEFINE_integer("eval_interval", 10, "Updates between evaluations (0: only at the end).")
flags.DEFINE_integer("eval_episodes", 10, "Episodes per evaluation.")
flags.DEFINE_integer("eval_max_steps", None, "Cut evaluation episodes after this many agent steps.")
flags.DEFINE_integer("eval_seed", None, "Seed of the evaluation envs (default: seed + 10000).")
flags.DEFINE_bool("eval_deterministic", True, "Evaluate with the most likely action; --noeval_deterministic samples "
                  "from the policy (the Atari flagfile does: a deterministic policy can stall a game forever).")
flags.DEFINE_integer("save_interval", 10, "Updates between saves of the latest checkpoint (0: only at the end).")
flags.DEFINE_integer("max_env_restarts", 10,
                     "Env failures (an exception, a dead or silent worker) to recover from by rebuilding the envs "
                     "before the run stops with a checkpoint saved.")
flags.DEFINE_float("env_timeout", 60.0, "Seconds to wait for an env worker's answer (--vec_env=async) before "
                   "counting it as failed.")
flags.DEFINE_bool("record_video", False, "Record the final evaluation's first episode to {logdir}/videos.")
flags.DEFINE_bool("resume", False, "Continue the run in logdir from its latest checkpoint.")
flags.DEFINE_bool("overwrite", False, "Start afresh in a logdir that already holds a run, deleting its checkpoints.")
flags.DEFINE_string("ray_address", None, "Run the gathering workers as actors of the Ray cluster at this address "
                    "(host:port, ray://host:port or auto; default: $RAY_ADDRESS; needs unstable_ppo[ray]).")
flags.DEFINE_string("compilation_cache_dir", None, "JAX: keep compiled XLA programs in this directory, so a later "
                    "run with the same shapes skips compiling them. Use a directory only you can write to: what it "
                    "holds runs as machine code.")
flags.DEFINE_integer("verbose", 1, "0: quiet, 1: a summary every log_interval (and a progress bar on a terminal), 2: a summary every update.")

FLAGS = flags.FLAGS


def train(argv_flags: flags.FlagValues) -> dict:
    """The whole run: settle and check the flags (no file written, no Keras), then build, train and report.

    Returns the final metrics; exits 130 (SIGINT) or 143 (SIGTERM) when stopped by a signal, 1 when the run failed
    (with the traceback of an exception raised once training had started: bad input before it is one line).
    """
    if argv_flags.verbose >= 2 and "tensorflow" not in sys.modules:  # afterwards there is nothing to show
        quiet.show_startup_logs()
    select_backend(argv_flags.backend)
    settings = RunSettings(argv_flags)
    settings.settle()
    run = TrainingRun(settings)
    run.build()
    try:
        run.train()
    except Interrupted as e:
        print(str(e), file=sys.stderr)
        sys.exit(e.exit_code)
    except RunFailed as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except Crashed as e:
        traceback.print_exception(e.__cause__)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    try:
        return run.final_report()
    except EnvFailure as e:  # the checkpoints are saved; only the final evaluation is missing
        print(f"error: final evaluation: {e}", file=sys.stderr)
        sys.exit(1)


def entry_point() -> None:
    run_app(train)


if __name__ == "__main__":
    entry_point()
