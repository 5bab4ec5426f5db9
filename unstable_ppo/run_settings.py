"""The runner's flags settled into a checked plan, before any file of the run is written.

`RunSettings` turns the parsed flags (defined in `unstable_ppo.run`) into the run's
paths, its `Hyperparameters`, the number of steps and, with `--resume`, the saved
run's record. Every check that can fail on bad flags or a bad saved run happens
here, so that a mistake costs under a second and leaves the run directory as it
was: no Keras is imported (`unstable_ppo.backend` only for --compilation_cache_dir),
and the only writes are the compilation cache directory's write test.
"""

import dataclasses
import importlib
import json
import os
import string
import tempfile

from absl import flags

from unstable_ppo import config, envs
from unstable_ppo.checkpoint import LATEST, dangling_link, has_checkpoint, read_metadata
from unstable_ppo.cli import UsageError, flagfile_line
from unstable_ppo.ray_gather import check_options, connect, resolve_address

MAX_SEED = 2_000_000_000
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
# Flags a resumed run keeps: changing them would change the model, its envs or its training.
_FIXED_ON_RESUME = ("seed",) + tuple(config.flag_name(f) for f in config.settings()
                                     if config.flag_name(f) and f.metadata["fixed_on_resume"])
# Flags that say where a run is, or how to start it; never taken from a saved run.
_PLACE_FLAGS = {"resume", "overwrite", "backend", "verbose", "env_defaults", "logdir", "rank", "env_id",
                "model_dir", "logging", "monitor_dir", "tb_logdir", "ray_address",
                "compilation_cache_dir", "encoder", "encoder_kwargs"} | {
    config.flag_name(f) for f in config.settings() if config.flag_name(f) and not f.metadata["fixed_on_resume"]}


def render_path(template: str, flag: str = "logdir", **values) -> str:
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


def env_config_file(env_id: str) -> str | None:
    """The bundled flagfile for `env_id`: `configs/<id>.flags`, else its family's (`configs/atari.flags` for ALE
    games)."""
    return envs.families.config_file(CONFIG_DIR, env_id)


def apply_defaults(argv_flags: flags.FlagValues, values: dict, source: str) -> None:
    """Make `values` ({flag: value or string}) the defaults of flags not given explicitly.

    `source` names where they come from in errors: a flagfile's path (then with the line), or a phrase.
    """
    for name, value in values.items():
        if name not in argv_flags:
            raise UsageError(f"{_where(source, name)} sets an unknown flag --{name}")
        if argv_flags[name].present:
            continue
        try:
            argv_flags.set_default(name, value)
        except (flags.IllegalFlagValueError, ValueError) as e:
            raise UsageError(f"{_where(source, name)}: bad value for --{name}: {e}") from None


def _where(source, name):
    """`path:line` of the flag `name` in the flagfile `source`; else `source` as it is."""
    number = flagfile_line(source, name) if os.path.isfile(source) else None
    return f"{source}:{number}" if number else source


def read_flagfile(path: str) -> dict[str, str]:
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


def run_flags(argv_flags: flags.FlagValues) -> dict:
    """The runner's flags and their values, by name (not by where they are defined): saved with every checkpoint.

    The runner's flags are those of the module that defines --logdir: `unstable_ppo.run`,
    or `__main__` under `python -m unstable_ppo.run`.
    """
    module = argv_flags.find_module_defining_flag("logdir")
    return {f.name: f.value for f in sorted(argv_flags.get_flags_for_module(module), key=lambda f: f.name)}


def check_writable(path: str, what: str = "the run directory") -> None:
    """Fail before training, not at the first save, when a directory cannot be written."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UsageError(f"cannot write to {what} {path}: {e.strerror or e}") from None


@dataclasses.dataclass(frozen=True)
class RunPaths:
    """Where a run keeps its files: --logdir and the paths inside it, templates filled in."""

    logdir: str
    model_root: str  # checkpoints: latest/, best/
    log_file: str
    monitor_dir: str
    tb_dir: str
    video_dir: str

    @classmethod
    def from_flags(cls, argv_flags: flags.FlagValues) -> "RunPaths":
        keys = dict(env_id=argv_flags.env_id, rank=argv_flags.rank)
        logdir = render_path(argv_flags.logdir, "logdir", **keys)
        model_root, log_file, monitor_dir, tb_dir = (
            os.path.join(logdir, render_path(getattr(argv_flags, name), name, **keys))
            for name in ("model_dir", "logging", "monitor_dir", "tb_logdir")
        )
        return cls(logdir, model_root, log_file, monitor_dir, tb_dir, os.path.join(logdir, "videos"))


class RunSettings:
    """The flags of one run, settled (env flagfile, saved run) and checked before anything is built.

    After `settle()`: `config_file` (the env flagfile applied, or None), `saved` (the resumed
    run's record, or None), `total` (env steps to train for), `ray_address` (or None) and
    `hp` (the checked `Hyperparameters`, all but the activation's name, which needs Keras).
    """

    def __init__(self, argv_flags: flags.FlagValues):
        self.flags = argv_flags
        self.paths = RunPaths.from_flags(argv_flags)

    def settle(self) -> None:
        """Apply the flagfile or saved run to the flags not given, and check every flag, in a fixed order."""
        f, paths = self.flags, self.paths
        if f.resume and f.overwrite:
            raise UsageError("--resume and --overwrite contradict each other: pick one")
        for name in ("clip_range", "anneal_clip_range"):
            if f.use_kl_loss and f[name].present:
                raise UsageError(f"--use_kl_loss replaces the clipped objective: drop --{name}")
        self.config_file = env_config_file(f.env_id) if f.env_defaults else None
        existing = has_checkpoint(paths.model_root)
        self.saved = None
        if f.resume:
            if not existing:
                latest = os.path.join(paths.model_root, LATEST)
                if dangling_link(latest) is not None:
                    raise UsageError(f"--resume: broken checkpoint link {latest}: it points to "
                                     f"{dangling_link(latest)}, which does not exist")
                raise UsageError(f"--resume: no checkpoint to resume in {paths.model_root}")
            self.saved = self._read_saved_run()
            saved_flags = self.saved.get("flags", {})
            if "env_id" in saved_flags and f.env_id != saved_flags["env_id"]:
                raise UsageError(f"--env_id={f.env_id} differs from the resumed run's {saved_flags['env_id']} "
                                 f"(in {paths.model_root}): resume it with its own env id")
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
                f"{paths.logdir} already holds a run: pass --resume to continue it, --overwrite to "
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
        if len({os.path.normpath(paths.log_file), os.path.normpath(paths.model_root),
                os.path.normpath(paths.monitor_dir)}) < 3:
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
        needed = envs.families.family_needed(f.env_id, f.vec_env)
        if needed:
            raise UsageError(f"--vec_env={f.vec_env} needs {needed}, not {f.env_id!r}")
        self._settle_parallelism()
        self._settle_compilation_cache()
        self.encoder = self._settle_encoder()
        self.hp = config.Hyperparameters(**self.hyperparameters())
        self.hp.check_values()  # all but the activation's name, which needs Keras

    def _settle_encoder(self):
        """`--encoder=module:Name` and `--encoder_kwargs` -> `(module, name, kwargs)`, or None; the import waits
        for `make_encoder` (it may import Keras)."""
        f = self.flags
        if f.encoder is None:
            if f.encoder_kwargs is not None:
                raise UsageError("--encoder_kwargs needs --encoder")
            return None
        if f.resume:
            raise UsageError("--encoder: a resumed run keeps the encoder saved in its checkpoint; drop --encoder")
        module, _, name = f.encoder.partition(":")
        if not (module and name.isidentifier()):
            raise UsageError(f"--encoder={f.encoder!r}: expected module:ClassName, e.g. my_package.encoders:GridEncoder")
        return module, name, f.encoder_kwargs or {}  # a dict: the flag's parser checked the JSON

    def make_encoder(self):
        """The `--encoder` layer (imports its module), or None; a one-line error names what is wrong."""
        if self.encoder is None:
            return None
        module, name, kwargs = self.encoder
        try:
            imported = importlib.import_module(module)
        except ImportError as e:
            raise UsageError(f"--encoder: cannot import module {module!r} ({e})") from None
        cls = getattr(imported, name, None)
        if not isinstance(cls, type):
            raise UsageError(f"--encoder: module {module!r} has no class {name!r}")
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise UsageError(f"--encoder: {name}(**{json.dumps(kwargs)}) failed: {e}") from None

    def _settle_compilation_cache(self):
        """--compilation_cache_dir: JAX only, and a directory this run can write."""
        path = self.flags.compilation_cache_dir
        if path is None:
            return
        if not path.strip():
            raise UsageError("--compilation_cache_dir must name a directory, got an empty one")
        from unstable_ppo.backend import use_compilation_cache  # imports Keras: only when the flag is given

        try:
            use_compilation_cache(path)  # refuses a backend without one, before the directory is made
        except ValueError as e:
            raise UsageError(f"--compilation_cache_dir: {e}") from None
        check_writable(path, "the compilation cache directory")

    def _settle_parallelism(self):
        """--gather_per_worker, --ray_address, --worker_num: checked, and Ray joined, before any file is written."""
        f = self.flags
        for name in ("gather_per_worker", "worker_num"):
            if getattr(f, name) <= 0:
                raise UsageError(f"{name} must be a positive integer, got {getattr(f, name)}")
        try:
            if f.num_envs > 0 and f.batch_size > 0:  # else PPO's own check names the bad number
                config.check_split(f.num_envs, f.gather_per_worker, f.worker_num, f.batch_size)
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
        path = os.path.join(self.paths.model_root, LATEST, "ppo.json")
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

    def hyperparameters(self) -> dict:
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
