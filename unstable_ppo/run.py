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

import json
import logging
import os
import string
import sys
import time
import typing

from absl import flags

from unstable_ppo import config
from unstable_ppo.checkpoint import (  # no Keras: safe before the flags are checked
    BEST,
    LATEST,
    CheckpointError,
    dangling_link,
    has_checkpoint,
    read_metadata,
    save_checkpoint,
    write_json_atomically,
)
from unstable_ppo.cli import BACKENDS, UsageError, run_app, select_backend

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
        else:
            flags.DEFINE_string(name, field.default, meta["help"])


_define_setting_flags()
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
flags.DEFINE_integer("verbose", 1, "0: quiet, 1: progress bar and a summary every log_interval, 2: a summary every update.")

FLAGS = flags.FLAGS

MAX_SEED = 2_000_000_000
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
# Flags a resumed run keeps: changing them would change the model, its envs or its training.
_FIXED_ON_RESUME = ("seed",) + tuple(config.flag_name(f) for f in config.settings()
                                     if config.flag_name(f) and f.metadata["fixed_on_resume"])
# Flags that say where a run is, or how to start it; never taken from a saved run.
_PLACE_FLAGS = {"resume", "overwrite", "backend", "verbose", "env_defaults", "logdir", "rank", "env_id",
                "model_dir", "logging", "monitor_dir", "tb_logdir", "ray_address",
                "compilation_cache_dir"} | {
    config.flag_name(f) for f in config.settings() if config.flag_name(f) and not f.metadata["fixed_on_resume"]}


def render_path(template, flag="logdir", **values):
    """`template` with `{env_id}`/`{rank}` filled in; any other key, a format spec or a conversion is an error."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise UsageError(f"--{flag}: bad path template {template!r}: {e}") from None
    for _, key, spec, conversion in parsed:
        if key is None:
            continue
        if key not in values:
            raise UsageError(f"--{flag}: unknown template key {{{key}}} in path {template!r}: use {{env_id}} or "
                             f"{{rank}}")
        if spec or conversion:
            raise UsageError(f"--{flag}: path template {template!r} formats {{{key}}}: write it as {{{key}}}, "
                             f"with no ':' format spec or '!' conversion")
    return template.format(**values)


def env_config_file(env_id):
    """The bundled flagfile for `env_id`: `configs/<id>.flags`, or `configs/atari.flags` for ALE games."""
    from unstable_ppo.atari import is_atari

    path = os.path.join(CONFIG_DIR, env_id.replace("/", "_") + ".flags")
    if os.path.isfile(path):
        return path
    if is_atari(env_id):
        return os.path.join(CONFIG_DIR, "atari.flags")
    return None


def apply_defaults(argv_flags, values, source):
    """Make `values` ({flag: value or string}) the defaults of flags not given explicitly."""
    for name, value in values.items():
        if name not in argv_flags:
            raise UsageError(f"{source} sets an unknown flag --{name}")
        if argv_flags[name].present:
            continue
        try:
            argv_flags.set_default(name, value)
        except (flags.IllegalFlagValueError, ValueError) as e:
            raise UsageError(f"{source}: bad value for --{name}: {e}") from None


def read_flagfile(path):
    """`{name: string}` from a flagfile of `--name=value` lines (`#` comments)."""
    values = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not line.startswith("--") or "=" not in line:
                raise UsageError(f"{path}: expected --name=value, got {line!r}")
            name, value = line[2:].split("=", 1)
            values[name] = value
    return values


def run_flags(argv_flags):
    """This module's flags and their values, by name (not by where they are defined): saved with every checkpoint."""
    return {f.name: f.value for f in sorted(argv_flags.get_flags_for_module(sys.modules[__name__]),
                                            key=lambda f: f.name)}


class Run:
    """One training run: its paths, envs, PPO, loggers and checkpoints."""

    def __init__(self, argv_flags):
        self.flags = argv_flags
        keys = dict(env_id=argv_flags.env_id, rank=argv_flags.rank)
        self.logdir = render_path(argv_flags.logdir, "logdir", **keys)
        self.model_root, self.log_file, self.monitor_dir, self.tb_dir = (
            os.path.join(self.logdir, render_path(getattr(argv_flags, name), name, **keys))
            for name in ("model_dir", "logging", "monitor_dir", "tb_logdir")
        )
        self.video_dir = os.path.join(self.logdir, "videos")

    # -- before anything is written: settle and check every flag ----------------

    def settle_flags(self):
        f = self.flags
        if f.resume and f.overwrite:
            raise UsageError("--resume and --overwrite contradict each other: pick one")
        for name in ("clip_range", "anneal_clip_range"):
            if f.use_kl_loss and f[name].present:
                raise UsageError(f"--use_kl_loss replaces the clipped objective: drop --{name}")
        self.config_file = env_config_file(f.env_id) if f.env_defaults else None
        existing = has_checkpoint(self.model_root)
        self.saved = None
        if f.resume:
            if not existing:
                latest = os.path.join(self.model_root, LATEST)
                if dangling_link(latest) is not None:
                    raise UsageError(f"--resume: broken checkpoint link {latest}: it points to "
                                     f"{dangling_link(latest)}, which does not exist")
                raise UsageError(f"--resume: no checkpoint to resume in {self.model_root}")
            self.saved = self._read_saved_run()
            saved_flags = self.saved.get("flags", {})
            if "env_id" in saved_flags and f.env_id != saved_flags["env_id"]:
                raise UsageError(f"--env_id={f.env_id} differs from the resumed run's {saved_flags['env_id']} "
                                 f"(in {self.model_root}): resume it with its own env id")
            for name in _FIXED_ON_RESUME:
                if f[name].present and name in saved_flags and f[name].value != saved_flags[name]:
                    raise UsageError(
                        f"--{name}={f[name].value} differs from the resumed run's {saved_flags[name]!r}: a resumed "
                        f"run keeps its PPO settings (start a new run to change them)"
                    )
            apply_defaults(f, {k: v for k, v in saved_flags.items() if k not in _PLACE_FLAGS and k in f},
                           "the saved run")
        elif existing and not f.overwrite:
            raise UsageError(
                f"{self.logdir} already holds a run: pass --resume to continue it, --overwrite to "
                f"replace it, or another --rank/--logdir"
            )
        if self.config_file and not f.resume:
            apply_defaults(f, read_flagfile(self.config_file), self.config_file)
        if f.seed is not None and not 0 <= f.seed <= MAX_SEED:  # seed + i seeds env i: keep it an int32
            raise UsageError(f"seed must be in [0, {MAX_SEED}], got {f.seed}")
        if f.eval_seed is not None and not 0 <= f.eval_seed <= MAX_SEED:
            raise UsageError(f"eval_seed must be in [0, {MAX_SEED}], got {f.eval_seed}")
        for name in ("logging", "model_dir", "monitor_dir"):
            if not getattr(f, name).strip():
                raise UsageError(f"--{name} must name a path inside the logdir, got an empty one")
        if len({os.path.normpath(self.log_file), os.path.normpath(self.model_root),
                os.path.normpath(self.monitor_dir)}) < 3:
            raise UsageError("--logging, --model_dir and --monitor_dir must be three different paths")
        for name in ("log_interval", "eval_episodes"):
            if getattr(f, name) <= 0:
                raise UsageError(f"{name} must be a positive integer, got {getattr(f, name)}")
        for name in ("eval_interval", "save_interval"):
            if getattr(f, name) < 0:
                raise UsageError(f"{name} must be >= 0, got {getattr(f, name)}")
        if f.max_env_restarts < 0:
            raise UsageError(f"max_env_restarts must be >= 0, got {f.max_env_restarts}")
        if not f.env_timeout > 0:
            raise UsageError(f"env_timeout must be > 0 seconds, got {f.env_timeout}")
        if f.eval_max_steps is not None and f.eval_max_steps <= 0:
            raise UsageError(f"eval_max_steps must be a positive integer, got {f.eval_max_steps}")
        rollout = f.num_envs * f.num_steps
        if f.num_episodes is not None:
            if f.num_episodes <= 0:
                raise UsageError(f"num_episodes must be a positive integer, got {f.num_episodes}")
            self.total = f.num_episodes * rollout
        else:
            self.total = f.total_timesteps
            if self.total is None or self.total <= 0:
                raise UsageError(f"total_timesteps must be a positive integer, got {self.total}")
        if f.vec_env == "ale":
            from unstable_ppo.atari import is_atari

            if not is_atari(f.env_id):
                raise UsageError(f"--vec_env=ale needs an Atari env id, not {f.env_id!r}")
        self._settle_parallelism()
        self._settle_compilation_cache()
        from unstable_ppo.config import Hyperparameters

        self.hp = Hyperparameters(**self.hyperparameters())
        self.hp.check_values()  # all but the activation's name, which needs Keras

    def _settle_compilation_cache(self):
        """--compilation_cache_dir: JAX only, and a directory this run can write."""
        path = self.flags.compilation_cache_dir
        if path is None:
            return
        if not path.strip():
            raise UsageError("--compilation_cache_dir must name a directory, got an empty one")
        from unstable_ppo.backend import use_compilation_cache

        try:
            use_compilation_cache(path)  # refuses a backend without one, before the directory is made
        except ValueError as e:
            raise UsageError(f"--compilation_cache_dir: {e}") from None
        _check_writable(path, "the compilation cache directory")

    def _settle_parallelism(self):
        """--gather_per_worker, --ray_address, --worker_num: checked, and Ray joined, before any file is written."""
        from unstable_ppo.parallel import check_split
        from unstable_ppo.ray_gather import check_options, connect, resolve_address

        f = self.flags
        for name in ("gather_per_worker", "worker_num"):
            if getattr(f, name) <= 0:
                raise UsageError(f"{name} must be a positive integer, got {getattr(f, name)}")
        try:
            if f.num_envs > 0 and f.batch_size > 0:  # else PPO's own check names the bad number
                check_split(f.num_envs, f.gather_per_worker, f.worker_num, f.batch_size)
        except ValueError as e:
            raise UsageError(str(e)) from None
        self.ray_address = resolve_address(f.ray_address)
        if self.ray_address is None:
            if f.gather_per_worker > 1 and f.vec_env != "sync":
                raise UsageError(f"--gather_per_worker steps --vec_env=sync envs in worker processes: "
                                 f"drop --vec_env={f.vec_env}")
            return
        try:
            check_options(self.hyperparameters())
            connect(self.ray_address)
        except ValueError as e:
            raise UsageError(str(e)) from None

    def _read_saved_run(self):
        """The runner's record in the latest checkpoint's ppo.json, checked before anything is written."""
        path = os.path.join(self.model_root, LATEST, "ppo.json")
        try:
            saved = read_metadata(path).get("run") or {}
            problem = None
            if not isinstance(saved, dict):
                problem = "'run' is not an object"
            elif not isinstance(saved.get("flags", {}), dict):
                problem = "'run.flags' is not an object"
            elif not isinstance(saved.get("evaluations", []), list):
                problem = "'run.evaluations' is not a list"
            elif not (saved.get("best_mean_return") is None or
                      (isinstance(saved["best_mean_return"], (int, float)) and
                       not isinstance(saved["best_mean_return"], bool))):
                problem = "'run.best_mean_return' is not a number"
            if problem:
                raise ValueError(f"corrupt model metadata {path}: {problem}")
        except ValueError as e:
            raise UsageError(f"--resume: {e}") from None
        return saved

    def hyperparameters(self):
        """`Hyperparameters` arguments from the flags (the table in `unstable_ppo.config` names them)."""
        f, values = self.flags, {}
        for field in config.settings():
            name = config.flag_name(field)
            if name is None:
                continue
            if field.name == "net":
                values["net"] = "mlp" if f.force_mlp else "auto"
            elif field.type is tuple:
                values[field.name] = self._sizes(name)
            else:
                values[field.name] = f[name].value
        # A flagfile's anneal_clip_range is ignored under --use_kl_loss, as its clip_range is.
        values["anneal_clip_range"] = f.anneal_clip_range and not f.use_kl_loss
        return values

    def _sizes(self, name):
        try:
            return tuple(int(h) for h in self.flags[name].value)
        except ValueError:
            raise UsageError(f"--{name} must be comma-separated integers, got "
                             f"{','.join(self.flags[name].value)!r}") from None

    # -- the run ------------------------------------------------------------------

    def build(self):
        from unstable_ppo.envs import make_vec_env

        f, hp = self.flags, self.hp
        # The evaluation envs write no files: they tell the spaces before the training envs exist.
        self.eval_env = make_vec_env(f.env_id, min(f.eval_episodes, f.num_envs), f.vec_env, training=False,
                                     max_episode_steps=f.eval_max_steps, max_env_restarts=f.max_env_restarts,
                                     env_timeout=f.env_timeout)
        try:
            hp.check_spaces(self.eval_env.single_observation_space, self.eval_env.single_action_space)
            from unstable_ppo.ppo import PPO  # Keras (and TensorFlow) start here, after every other flag check

            hp.check_activation()
            _check_writable(self.logdir)
        except (ValueError, UsageError):
            self.eval_env.close()
            raise
        if f.resume:  # a damaged checkpoint is reported before any env or file is made
            try:
                self.ppo = PPO.load(os.path.join(self.model_root, LATEST))
                if f["recurrent"].present and f.recurrent != self.ppo.recurrent:
                    raise UsageError(f"--{'' if f.recurrent else 'no'}recurrent: the checkpoint in "
                                     f"{os.path.join(self.model_root, LATEST)} holds a "
                                     f"{'non-' if f.recurrent else ''}recurrent model")
            except (ValueError, FileNotFoundError, UsageError):
                self.eval_env.close()
                raise
        env_files = dict(monitor_dir=self.monitor_dir, training=True, monitor_append=f.resume,
                         max_env_restarts=f.max_env_restarts, env_timeout=f.env_timeout)
        if self.ray_address:  # the actors step the envs and write the Monitor files; these only tell the spaces
            env = make_vec_env(f.env_id, f.num_envs, "sync", training=True)
        else:
            env = make_vec_env(f.env_id, f.num_envs, f.vec_env, gather_per_worker=f.gather_per_worker, **env_files)
        if f.resume:
            self.ppo.hp.gather_per_worker, self.ppo.hp.worker_num = f.gather_per_worker, f.worker_num
            self.ppo.set_env(env)
            self.best_mean_return = self.saved.get("best_mean_return")
            self.evaluations = list(self.saved.get("evaluations", []))
        else:
            if f.overwrite:
                self._clear_previous_run()
            self.ppo = PPO(env, seed=f.seed, **self.hyperparameters())
            self.best_mean_return = None
            self.evaluations = []
        if self.ray_address:
            from unstable_ppo.ray_gather import RayGatherer

            self.ppo.gatherer = RayGatherer(self.ppo, f.env_id, f.gather_per_worker, seed=f.seed,
                                            make_kwargs=env_files, max_restarts=f.max_env_restarts)

    def _clear_previous_run(self):
        import shutil

        for path in (self.model_root, self.monitor_dir):
            shutil.rmtree(path, ignore_errors=True)
        for path in (os.path.join(self.logdir, "metrics.json"),):
            if os.path.exists(path):
                os.remove(path)

    def run_info(self):
        return {
            "flags": run_flags(self.flags),
            "config_file": self.config_file,
            "best_mean_return": self.best_mean_return,
            "evaluations": self.evaluations,
        }

    def train(self):
        from unstable_ppo.faults import EnvFailure, NonFiniteError
        from unstable_ppo.monitor import TensorBoardLogger

        f, ppo = self.flags, self.ppo
        log = self.log = _file_logger(self.log_file)
        log.info("%s run: flags %s", "resumed" if f.resume else "new", json.dumps(run_flags(f)))
        if self.config_file:
            log.info("env defaults from %s", self.config_file)
        if ppo.gatherer is not None:
            for line in ppo.gatherer.describe():
                log.info("%s", line)
        self.tensorboard = TensorBoardLogger(self.tb_dir)
        self.stop = _StopRequests()
        start = time.perf_counter()
        self.eval_wall = 0.0  # intermediate evaluations' share of the wall time, reported in metrics.json
        steps_before = ppo.num_timesteps
        library_log = logging.getLogger("unstable_ppo")  # env restarts and the like, into training.log too
        library_log.addHandler(log.handlers[0])
        try:
            with self.stop:
                try:
                    ppo.learn(self.total, callback=self.after_update, progress_bar=f.verbose == 1,
                              reset_num_timesteps=not f.resume)
                except EnvFailure as e:  # the model is sound: keep it
                    save_checkpoint(ppo, self.model_root, LATEST, self.run_info())
                    raise RunFailed(f"{e}; checkpoint saved to {os.path.join(self.model_root, LATEST)} "
                                    f"after {ppo.num_timesteps} steps, --resume continues the run") from e
                except NonFiniteError as e:  # the model may be garbage: keep the last good checkpoint
                    kept = (f"the last good checkpoint is kept in {os.path.join(self.model_root, LATEST)}"
                            if has_checkpoint(self.model_root) else "no checkpoint had been saved yet")
                    raise RunFailed(f"{e}: the run stopped; {kept}") from e
            if self.stop.requested:
                save_checkpoint(ppo, self.model_root, LATEST, self.run_info())
                message = (f"stopped by {self.stop.requested} after {ppo.num_timesteps} steps: checkpoint saved to "
                           f"{os.path.join(self.model_root, LATEST)}; --resume continues the run")
                log.info(message)
                raise Interrupted(message)
            self.wall = time.perf_counter() - start
            self.steps_this_session = ppo.num_timesteps - steps_before
            if not self.evaluations or self.evaluations[-1][0] != ppo.num_timesteps:
                self.evaluate_and_keep_best()
            save_checkpoint(ppo, self.model_root, LATEST, self.run_info())
        except (RunFailed, CheckpointError) as e:
            log.info("error: %s", e)
            raise RunFailed(str(e)) from e
        finally:
            library_log.removeHandler(log.handlers[0])
            self.tensorboard.close()

    def after_update(self, ppo, logs):
        """`learn`'s callback: log, evaluate and save on schedule; False once a stop was requested."""
        from unstable_ppo.ppo import PPO

        f = self.flags
        self.tensorboard.write(logs, ppo.num_timesteps)
        lines = [f"update {ppo.num_updates}: {PPO._summary(logs)}"]
        if f.eval_interval and ppo.num_updates % f.eval_interval == 0:
            lines.append(self.evaluate_and_keep_best())
        if f.save_interval and ppo.num_updates % f.save_interval == 0:
            save_checkpoint(ppo, self.model_root, LATEST, self.run_info())
        self.log.info(lines[0])
        if f.verbose >= 2 or (f.verbose == 1 and ppo.num_updates % f.log_interval == 0):
            for line in lines:
                _console(line)
        return not self.stop.requested

    def evaluate_and_keep_best(self):
        """One evaluation of the current policy; a new best is saved as the `best` checkpoint."""
        f, ppo = self.flags, self.ppo
        eval_start = time.perf_counter()
        result = ppo.evaluate(self.eval_env, f.eval_episodes, deterministic=f.eval_deterministic, seed=f.eval_seed)
        seconds = time.perf_counter() - eval_start
        self.eval_wall += seconds
        mean, std = result["mean_return"], result["std_return"]
        mean_length = float(sum(result["lengths"]) / len(result["lengths"]))
        self.evaluations.append([ppo.num_timesteps, mean, std])
        self.tensorboard.write({"eval_mean_reward": mean, "eval_mean_ep_length": mean_length}, ppo.num_timesteps)
        line = (f"eval at {ppo.num_timesteps} steps: mean_return={mean:.2f} std_return={std:.2f} "
                f"mean_length={mean_length:.0f} ({seconds:.1f} s)")
        if self.best_mean_return is None or mean > self.best_mean_return:
            self.best_mean_return = mean
            save_checkpoint(ppo, self.model_root, BEST, self.run_info())
            line += " (new best, saved)"
        self.log.info(line)
        return line

    def final_report(self):
        """Reload latest and best from disk, evaluate both, print the table, write metrics.json."""
        from unstable_ppo import evaluation
        from unstable_ppo.ppo import PPO

        f = self.flags
        results = {}
        for name in (LATEST, BEST):
            model = PPO.load(self.model_root, best=name == BEST)
            video_dir = self.video_dir if f.record_video and name == BEST else None
            if video_dir:
                evaluation.record_video(model, f.env_id, video_dir, f.eval_max_steps, seed=f.eval_seed,
                             deterministic=f.eval_deterministic)
            results[name] = model.evaluate(self.eval_env, f.eval_episodes, deterministic=f.eval_deterministic,
                                           seed=f.eval_seed)
        self.eval_env.close()
        self.ppo.env.close()
        if self.ppo.gatherer is not None:
            self.ppo.gatherer.close()
        import keras

        metrics = {
            "env_id": f.env_id,
            "backend": keras.backend.backend(),
            "total_timesteps": self.ppo.num_timesteps,
            "num_updates": self.ppo.num_updates,
            "wall_time_s": round(self.wall, 2),
            "steps_per_second": round(self.steps_this_session / self.wall, 1),
            "eval_episodes": f.eval_episodes,
            "eval_deterministic": f.eval_deterministic,
            "eval_wall_time_s": round(self.eval_wall, 2),  # the intermediate evaluations, inside wall_time_s
            "latest": {"mean_return": results[LATEST]["mean_return"], "std_return": results[LATEST]["std_return"]},
            "best": {"mean_return": results[BEST]["mean_return"], "std_return": results[BEST]["std_return"]},
            "model_dir": self.model_root,
        }
        write_json_atomically(os.path.join(self.logdir, "metrics.json"), metrics)
        table = [
            f"{f.env_id} on {metrics['backend']}: {metrics['total_timesteps']} steps, "
            f"{self.steps_this_session} in this session in {self.wall:.1f} s "
            f"({metrics['steps_per_second']:.0f} steps/s; evaluations {self.eval_wall:.1f} s of it)",
            f"{'model':<8}{'mean_return':>14}{'std_return':>14}{'episodes':>10}",
        ]
        for name in (LATEST, BEST):
            r = results[name]
            table.append(f"{name:<8}{r['mean_return']:>14.2f}{r['std_return']:>14.2f}{len(r['returns']):>10}")
        table.append(f"checkpoints in {self.model_root} (latest/, best/); metrics in "
                     f"{os.path.join(self.logdir, 'metrics.json')}")
        for line in table:
            self.log.info(line)
            if f.verbose:
                print(line)
        return metrics


class Interrupted(Exception):
    """The run was asked to stop, and saved a checkpoint first."""


class RunFailed(RuntimeError):
    """The run cannot go on (envs keep failing, NaN, a failed save): exit 1 with one line."""


class _StopRequests:
    """While active, SIGINT/SIGTERM ask the run to stop after the current update (a second SIGINT forces it)."""

    def __init__(self):
        self.requested = None
        self._previous = {}

    def __enter__(self):
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        import signal

        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        print(f"\n{self.requested}: stopping after this update and saving a checkpoint "
              f"(press Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def train(argv_flags):
    if argv_flags.verbose >= 2 and "tensorflow" not in sys.modules:  # afterwards there is nothing to show
        from unstable_ppo import quiet

        quiet.show_startup_logs()
    select_backend(argv_flags.backend)
    run = Run(argv_flags)
    run.settle_flags()
    run.build()
    try:
        run.train()
    except Interrupted as e:
        print(str(e), file=sys.stderr)
        sys.exit(130)
    except RunFailed as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    from unstable_ppo.faults import EnvFailure

    try:
        return run.final_report()
    except EnvFailure as e:  # the checkpoints are saved; only the final evaluation is missing
        print(f"error: final evaluation: {e}", file=sys.stderr)
        sys.exit(1)


def _check_writable(path, what="the run directory"):
    """Fail before training, not at the first save, when a directory cannot be written."""
    import tempfile

    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UsageError(f"cannot write to {what} {path}: {e.strerror or e}") from None


def _file_logger(path):
    """A logger that writes to the run's log file (and nowhere else)."""
    import logging as std_logging

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    logger = std_logging.getLogger(f"unstable_ppo.run.{path}")
    logger.setLevel(std_logging.INFO)
    logger.propagate = False
    if not logger.handlers:
        handler = std_logging.FileHandler(path)
        handler.setFormatter(std_logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
    return logger


def _console(line):
    from tqdm.auto import tqdm

    tqdm.write(line)  # prints above a progress bar instead of through it


def entry_point():
    run_app(train)


if __name__ == "__main__":
    entry_point()
