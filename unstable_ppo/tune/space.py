"""The search space of `unstable_ppo.tune`: the RL Zoo's PPO space in our flag names, and the files that change it.

Free of Keras and of Optuna at import: a bad file is reported in one line before either starts.

The default space follows rl-baselines3-zoo's `sample_ppo_params` (rl_zoo3/hyperparams_opt.py,
DLR-RM/rl-baselines3-zoo at commit d477a07d19fa725e4c8ec38cacb5438d0c6fc1b9), mapped to the runner's flags:

    Zoo name        our flag        values
    batch_size      batch_size      8, 16, 32, 64, 128, 256, 512 (cut to the rollout, as the Zoo cuts it to n_steps)
    n_steps         num_steps       8, 16, 32, 64, 128, 256, 512, 1024, 2048
    gamma           gamma           0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999
    learning_rate   lr              1e-5 .. 2e-3, log scale (*)
    ent_coef        ent_coef        1e-8 .. 0.1, log scale
    clip_range      clip_range      0.1, 0.2, 0.3, 0.4
    n_epochs        num_epochs      1, 5, 10, 20
    gae_lambda      gae_lambda      0.8, 0.9, 0.92, 0.95, 0.98, 0.99, 1.0
    max_grad_norm   max_grad_norm   0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 2, 5
    vf_coef         vf_coef         0 .. 1
    net_arch        hidden_sizes    tiny "64", small "64,64", medium "256,256" (separate policy and value MLPs)
    activation_fn   activation      tanh, relu

(*) that commit samples the learning rate in 1e-5 .. 1; the Zoo's later versions (commit 0a9df503) narrowed it
to 1e-5 .. 0.002, which we take: a rate near 1 diverges and wastes the trial. Not sampled: `ortho_init` (the Zoo's
sampler fixes it to False; trials take the base settings' `--ortho_init`, which a search-space file can change). Not tuned: `num_envs`, `anneal_lr` and the rest come from the
base settings (the bundled flagfile of the env id, `--flagfile`, the command line).

A search-space file (JSON, or YAML with PyYAML) maps parameter names to specs, and changes the default space:

    {"lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": true},
     "num_epochs": {"type": "categorical", "choices": [5, 10]},
     "num_envs": {"type": "int", "low": 4, "high": 16, "step": 4},
     "clip_range": [0.1, 0.2],                   # a list: the choices, in short
     "gamma": 0.99,                              # a plain value: fixed, not searched
     "hidden_sizes": ["64,64", [256, 256], "tiny"],   # sizes as "64,64", a list, or tiny/small/medium
     "vf_coef": null}                            # removed from the space: the base settings' value

A name is a PPO setting flag of the runner (`--helpfull` lists them) or one of the Zoo names above. A spec
without "type" is categorical with "choices", else float (int if `low` and `high` are both integers).
`"extends": "none"` at the top level starts from an empty space instead of the Zoo's.
"""

import dataclasses
import json
import math

from unstable_ppo import config
from unstable_ppo.cli import UsageError

# Zoo names that differ from ours -> our flags.
ZOO_NAMES = {"learning_rate": "lr", "n_steps": "num_steps", "n_epochs": "num_epochs", "n_envs": "num_envs",
             "net_arch": "hidden_sizes", "activation_fn": "activation"}
NET_ARCH = {"tiny": "64", "small": "64,64", "medium": "256,256"}


@dataclasses.dataclass(frozen=True)
class Param:
    """One parameter: `kind` is float, int, categorical or fixed."""

    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()
    value: object = None

    def extremes(self):
        """The values to check against the PPO settings: the range's ends, every choice, or the fixed value."""
        if self.kind in ("float", "int"):
            return [self.low, self.high]
        if self.kind == "categorical":
            return list(self.choices)
        return [self.value]

    def describe(self):
        if self.kind == "categorical":
            return "{" + ", ".join(str(c) for c in self.choices) + "}"
        if self.kind == "fixed":
            return f"= {self.value}"
        return f"{self.kind} {self.low} .. {self.high}" + (" (log)" if self.log else "") + (
            f" step {self.step}" if self.step is not None else "")


def _cat(name, choices):
    return Param(name, "categorical", choices=tuple(choices))


ZOO_PPO_SPACE = {p.name: p for p in (
    _cat("batch_size", [8, 16, 32, 64, 128, 256, 512]),
    _cat("num_steps", [8, 16, 32, 64, 128, 256, 512, 1024, 2048]),
    _cat("gamma", [0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999]),
    Param("lr", "float", 1e-5, 2e-3, log=True),
    Param("ent_coef", "float", 1e-8, 0.1, log=True),
    _cat("clip_range", [0.1, 0.2, 0.3, 0.4]),
    _cat("num_epochs", [1, 5, 10, 20]),
    _cat("gae_lambda", [0.8, 0.9, 0.92, 0.95, 0.98, 0.99, 1.0]),
    _cat("max_grad_norm", [0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 2, 5]),
    Param("vf_coef", "float", 0.0, 1.0),
    _cat("hidden_sizes", [NET_ARCH["tiny"], NET_ARCH["small"], NET_ARCH["medium"]]),
    _cat("activation", ["tanh", "relu"]),
)}


def tunable_flags():
    """The runner flags a search space may name: the PPO settings (`unstable_ppo.config`)."""
    return [name for name in (config.flag_name(f) for f in config.settings()) if name]


def read_file(path):
    """The parsed JSON or YAML mapping in `path`."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise UsageError(f"--search_space: cannot read {path}: {e.strerror or e}") from None
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml  # late: PyYAML only for a YAML file
        except ImportError:
            raise UsageError(f"--search_space: {path} is YAML, which needs PyYAML (pip install pyyaml); "
                             f"or write it as JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise UsageError(f"--search_space: {path} is not valid YAML: {' '.join(str(e).split())}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UsageError(f"--search_space: {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--search_space: {path} must hold a mapping of parameter names to specs, "
                         f"not a {type(data).__name__}")
    return data


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _normalize_choice(name, value):
    """Optuna's categorical choices must be None, bool, int, float or str: sizes become "64,64"."""
    if name == "hidden_sizes":
        if isinstance(value, str) and value in NET_ARCH:
            return NET_ARCH[value]
        if isinstance(value, (list, tuple)):
            return ",".join(str(v) for v in value)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value


def parse_param(name, spec, where):
    """A `Param` from one entry of a search-space file (None: remove it from the space)."""
    if spec is None:
        return None
    if isinstance(spec, list):  # a list of choices, in short
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, dict):
        return Param(name, "fixed", value=_normalize_choice(name, spec))
    unknown = set(spec) - {"type", "low", "high", "log", "step", "choices"}
    if unknown:
        raise UsageError(f"{where}: {name}: unknown key(s) {', '.join(sorted(unknown))}: use type, low, high, log, "
                         f"step or choices")
    kind = spec.get("type")
    if kind is None:
        if "choices" in spec:
            kind = "categorical"
        else:
            kind = "int" if all(isinstance(spec.get(k), int) and not isinstance(spec.get(k), bool)
                                for k in ("low", "high")) else "float"
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list):
            raise UsageError(f"{where}: {name}: categorical needs a list of choices")
        if not choices:
            raise UsageError(f"{where}: {name}: empty range: no choices")
        choices = tuple(_normalize_choice(name, c) for c in choices)
        if len(set(map(repr, choices))) < len(choices):
            raise UsageError(f"{where}: {name}: repeated choices {list(choices)}")
        for c in choices:
            if not (c is None or isinstance(c, (bool, int, float, str))):
                raise UsageError(f"{where}: {name}: choice {c!r} is not a number, string or boolean")
        return Param(name, "categorical", choices=choices)
    if kind not in ("float", "int"):
        raise UsageError(f"{where}: {name}: unknown type {kind!r}: use float, int or categorical")
    low, high, log, step = spec.get("low"), spec.get("high"), spec.get("log", False), spec.get("step")
    if not (_number(low) and _number(high)):
        raise UsageError(f"{where}: {name}: {kind} needs numbers low and high, got low={low!r} high={high!r}")
    if not (math.isfinite(low) and math.isfinite(high)):
        raise UsageError(f"{where}: {name}: low and high must be finite")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise UsageError(f"{where}: {name}: int needs integer low and high, got {low!r} and {high!r}")
    if not low < high:
        raise UsageError(f"{where}: {name}: empty range: low {low!r} >= high {high!r}")
    if not isinstance(log, bool):
        raise UsageError(f"{where}: {name}: log must be true or false, got {log!r}")
    if log and low <= 0:
        raise UsageError(f"{where}: {name}: a log range needs low > 0, got {low!r}")
    if step is not None:
        if not _number(step) or step <= 0:
            raise UsageError(f"{where}: {name}: step must be a positive number, got {step!r}")
        if log:
            raise UsageError(f"{where}: {name}: step and log cannot go together")
        if kind == "int" and not float(step).is_integer():
            raise UsageError(f"{where}: {name}: an int step must be an integer, got {step!r}")
    if kind == "int":
        low, high, step = int(low), int(high), (int(step) if step is not None else None)
    else:
        low, high = float(low), float(high)
    return Param(name, kind, low, high, log, step)


def load_space(path=None):
    """The search space: the Zoo's, changed by the file at `path` (checked for names, types and empty ranges)."""
    space = dict(ZOO_PPO_SPACE)
    if path is None:
        return space
    data = dict(read_file(path))
    where = f"search space {path}"
    extends = data.pop("extends", "zoo")
    if extends in (None, "none"):
        space = {}
    elif extends != "zoo":
        raise UsageError(f"{where}: extends must be \"zoo\" or \"none\", got {extends!r}")
    known = tunable_flags()
    for key, spec in data.items():
        name = ZOO_NAMES.get(key, key)
        if name not in known:
            raise UsageError(f"{where}: unknown parameter {key!r}: use a PPO setting flag of the runner "
                             f"({', '.join(sorted(known))}) or a Zoo name ({', '.join(sorted(ZOO_NAMES))})")
        param = parse_param(name, spec, where)
        if param is None:
            space.pop(name, None)
        else:
            space[name] = param
    return space


def suggest(trial, space):
    """`{flag: value}` for one trial, sampled by Optuna (fixed parameters as given)."""
    values = {}
    for name, p in space.items():
        if p.kind == "fixed":
            values[name] = p.value
        elif p.kind == "float":
            values[name] = trial.suggest_float(name, p.low, p.high, log=p.log, step=p.step)
        elif p.kind == "int":
            values[name] = trial.suggest_int(name, p.low, p.high, log=p.log, step=p.step or 1)
        else:
            values[name] = trial.suggest_categorical(name, list(p.choices))
    return values


def flag_argument(flag, value):
    """`--name=value` (or `--name`/`--noname` for a boolean) for a runner flag object."""
    if isinstance(value, bool) or (flag.flag_type() == "bool" and value in (0, 1)):
        return f"--{flag.name}" if value else f"--no{flag.name}"
    if isinstance(value, float):
        return f"--{flag.name}={value!r}"
    return f"--{flag.name}={value}"


def describe(space):
    """The space, one parameter a line."""
    return [f"  {name:<15}{p.describe()}" for name, p in space.items()]
