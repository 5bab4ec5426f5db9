"""PPO's settings, in one place: the `Hyperparameters` dataclass, the table that says where each
setting goes, and the checks, all free of Keras.

Each field's metadata (`setting(...)`) is the table: its group (where it is used: `loss` ->
`LossConfig`, `network` -> `ActorCritic`'s arguments, `rollout`, `update`, `parallel`), its runner
flag and help text, and whether a resumed run keeps it. The runner's flags, its fixed-on-resume
list, `LossConfig` and the network arguments are all derived from it, so a new setting is one
field here, the code that uses it, and its test.

The runner builds and checks one of these before Keras (and TensorFlow) is imported, so that a
bad flag is reported in a second on every backend.
"""

import dataclasses
import json
import math

import numpy as np
from gymnasium import spaces

from unstable_ppo.spaces import is_image_space, vector_entry_keys

GROUPS = ("env", "rollout", "update", "loss", "network", "parallel")
# How a vector env steps its envs: one process, a process per env, or ale-py's C++ vector env (Atari).
VECTORIZATION_MODES = ("sync", "async", "ale", "compiled")
# The TF1 reference code's reward transforms (`normalize.transform_reward`).
REWARD_TRANSFORMS = ("identity", "scale", "positive")
# Backends whose data-parallel learners `worker_num` can use (keras.distribution.DataParallel).
DATA_PARALLEL_BACKENDS = ("jax",)


def setting(default, group, help, flag=None, fixed_on_resume=True, choices=None):
    """A `Hyperparameters` field and its row of the table.

    `flag`: the runner's flag name (default: the field's name; "" for no flag).
    `fixed_on_resume`: a resumed run refuses a different value (else the flag says how to run).
    `choices`: an enum flag's values.
    """
    assert group in GROUPS, group
    meta = {"group": group, "help": help, "flag": flag, "fixed_on_resume": fixed_on_resume, "choices": choices}
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class Hyperparameters:
    """PPO's settings; the defaults are the Atari/CartPole settings of the PPO reference code."""

    num_envs: int = setting(8, "rollout", "Parallel environments.")
    num_steps: int = setting(128, "rollout", "Steps per env per rollout.")
    num_epochs: int = setting(4, "update", "Passes over each rollout.")
    batch_size: int = setting(256, "update", "Minibatch size.")
    lr: float = setting(2.5e-4, "update", "Adam learning rate (linearly annealed to 0 unless --noanneal_lr).")
    anneal_lr: bool = setting(True, "update", "Anneal the learning rate linearly to 0.")
    gamma: float = setting(0.99, "rollout", "Discount factor.")
    gae_lambda: float = setting(0.95, "rollout", "GAE lambda.")
    clip_range: float = setting(0.2, "loss", "PPO clipping range.")
    anneal_clip_range: bool = setting(False, "update", "Anneal the clipping range linearly to 0, as the learning "
                                      "rate.")
    clip_range_vf: float | None = setting(None, "loss", "Value clipping range (off if unset).")
    ent_coef: float = setting(0.0, "loss", "Entropy bonus coefficient.")
    vf_coef: float = setting(0.5, "loss", "Value loss coefficient.")
    max_grad_norm: float | None = setting(0.5, "update", "Global gradient-norm clip.")
    target_kl: float | None = setting(None, "update", "Stop the epochs of an update once approx KL exceeds this.")
    normalize_advantage: bool = setting(True, "loss", "Normalize advantages per minibatch.", flag="")
    # The runner's --force_mlp sets net="mlp"; "auto" is the Nature CNN for images, else the MLP.
    net: str = setting("auto", "network", "Use the MLP even for image observations.", flag="force_mlp")
    hidden_sizes: tuple = setting((64, 64), "network", "MLP layer sizes, comma-separated.")
    activation: str = setting("tanh", "network", "MLP activation: a Keras activation name (tanh, relu, ...).")
    shared_net: bool | None = setting(None, "network", "Share the torso between policy and value (default: CNN "
                                      "yes, MLP no).")
    nn_std: bool = setting(False, "network", "Box actions: the network predicts the log-std (else a free "
                           "variable).")
    log_std_init: float = setting(0.0, "network", "Box actions: the Gaussian's initial log-std.")
    ortho_init: bool = setting(True, "network", "Orthogonal initialisation (gains sqrt(2), 0.01, 1); "
                               "--noortho_init: PyTorch's default uniform init, as the RL Zoo's ortho_init=False.")
    # gSDE (Raffin et al., 2021), as Stable-Baselines3's use_sde / sde_sample_freq.
    use_sde: bool = setting(False, "network", "Box actions: generalized State-Dependent Exploration (gSDE), noise "
                            "linear in the policy's features, held for --sde_sample_freq steps.")
    sde_sample_freq: int = setting(-1, "rollout", "gSDE: draw new exploration matrices every this many steps "
                                   "(-1: once per rollout, at its start).")
    # Recurrent PPO: an LSTM between torso and heads, trained on sequences of timestep_size steps.
    recurrent: bool = setting(False, "network", "An LSTM between the torso and the policy and value heads "
                              "(recurrent PPO).")
    hidden_layer_size: int = setting(128, "network", "Recurrent: LSTM units.")
    shared_lstm: bool = setting(True, "network", "Recurrent: one LSTM (and torso) for policy and value; "
                                "--noshared_lstm gives each its own.")
    lstm_head_sizes: tuple = setting((), "network", "Recurrent: dense layers (--activation) between the LSTM and "
                                     "each head, comma-separated.")
    timestep_size: int = setting(16, "update", "Recurrent: steps per training sequence; must divide --num_steps "
                                 "and --batch_size.")
    vectorization_mode: str = setting("sync", "rollout", "sync: envs in this process; async: one subprocess per "
                                      "env; ale: ale-py's C++ Atari vector env; compiled: a gymnax env stepped inside the "
                                      "compiled trainer's XLA program (jax backend).", flag="vec_env",
                                      choices=VECTORIZATION_MODES)
    # The first reference code's options (see docs/algorithm-options.md).
    use_kl_loss: bool = setting(False, "loss", "Adaptive KL-penalty loss instead of the clipped surrogate.")
    kl_target: float = setting(0.01, "loss", "KL loss: the KL(old || new) per update that beta is servoed to.")
    init_beta: float = setting(1.0, "update", "KL loss: the initial KL penalty coefficient beta.")
    eta_kl: float = setting(50.0, "loss", "KL loss: coefficient of the hinge max(0, KL - 2 kl_target)^2.")
    eta: float = setting(0.0, "loss", "Box actions: weight of the penalty on a Gaussian mean outside the bounds.")
    # A string flag, not an enum: a bad value is then the runner's own one-line error.
    reward_transform: str = setting("identity", "rollout", "identity | scale: r * reward_scale | positive: "
                                    "max(-0.001, r / 100).")
    reward_scale: float = setting(0.01, "rollout", "The factor of --reward_transform=scale.")
    normalize_reward: bool = setting(False, "rollout", "Divide rewards by the running std of the discounted "
                                     "return.")
    normalize_obs: bool = setting(False, "rollout", "Normalize Box vector observations: running mean/std, "
                                  "clip ±10.")
    time_feature: bool = setting(False, "env", "Append the elapsed fraction of the episode's time limit to "
                                 "the observation (gymnasium's TimeAwareObservation), so that values near a "
                                 "time-out are predictable.")
    env_kwargs: dict | None = setting(None, "env", "Keyword arguments of gymnasium.make for the env id, a JSON "
                                      "object, e.g. '{\"include_cfrc_ext_in_observation\": false}'; saved with "
                                      "the model, so that evaluation and play build the same env.")
    # How the work is split (docs/parallelism.md); the results do not depend on it.
    gather_per_worker: int = setting(1, "parallel", "Gathering workers: step the num_envs envs in this many worker "
                                     "processes (num_envs/M envs each; 1: in this process), or with --ray_address "
                                     "this many Ray actors.", fixed_on_resume=False)
    worker_num: int = setting(1, "parallel", "Data-parallel learners: split each minibatch over this many devices "
                              "(JAX only).", fixed_on_resume=False)

    def validate(self):
        """Every check of the values alone; the activation's name is looked up in Keras."""
        self.check_values()
        self.check_activation()

    def check_activation(self):
        import keras  # deliberately late: the runner checks every other flag before Keras starts

        try:
            keras.activations.get(self.activation)
        except (ValueError, TypeError):
            raise ValueError(f"unknown activation {self.activation!r}: use a Keras activation name "
                             f"such as tanh or relu") from None

    def check_values(self):
        """The checks that need no Keras: the runner makes them before importing it."""
        for name in ("num_envs", "num_steps", "num_epochs", "batch_size", "hidden_layer_size", "timestep_size",
                     "gather_per_worker", "worker_num"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("lr", "clip_range", "clip_range_vf", "max_grad_norm", "target_kl", "gamma", "gae_lambda",
                     "ent_coef", "vf_coef", "kl_target", "init_beta", "eta_kl", "eta", "reward_scale",
                     "log_std_init"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float, np.number))
                                          and not isinstance(value, bool) and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        for name in ("lr", "clip_range"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("clip_range_vf", "max_grad_norm", "target_kl"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None, got {value!r}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma!r}")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"gae_lambda must be in [0, 1], got {self.gae_lambda!r}")
        for name in ("ent_coef", "vf_coef"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.vectorization_mode not in VECTORIZATION_MODES:
            raise ValueError(
                f"unknown vectorization_mode {self.vectorization_mode!r}: "
                f"use one of {', '.join(VECTORIZATION_MODES)}"
            )
        rollout = self.num_envs * self.num_steps
        if self.batch_size > rollout:
            raise ValueError(
                f"batch_size {self.batch_size} is larger than the rollout "
                f"(num_envs * num_steps = {rollout})"
            )
        if self.recurrent:
            if self.num_steps % self.timestep_size:
                raise ValueError(f"timestep_size {self.timestep_size} does not divide num_steps {self.num_steps}: "
                                 f"training sequences must tile each env's rollout")
            if self.batch_size % self.timestep_size:
                raise ValueError(f"batch_size {self.batch_size} is not a multiple of timestep_size "
                                 f"{self.timestep_size}: minibatches are made of whole sequences")
            if self.shared_lstm and self.shared_net is False:
                raise ValueError("a shared LSTM needs a shared torso: drop shared_net=False, "
                                 "or pass shared_lstm=False for separate policy and value networks")
        check_split(self.num_envs, self.gather_per_worker, self.worker_num, self.batch_size)
        if any(int(h) <= 0 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive, got {self.hidden_sizes!r}")
        if any(int(h) <= 0 for h in self.lstm_head_sizes):
            raise ValueError(f"lstm_head_sizes must be positive, got {self.lstm_head_sizes!r}")
        if self.lstm_head_sizes and not self.recurrent:
            raise ValueError("lstm_head_sizes applies to recurrent models only: add recurrent=True")
        if self.use_kl_loss and self.anneal_clip_range:
            raise ValueError("anneal_clip_range anneals the clipped objective's range, which use_kl_loss replaces: "
                             "drop one of them")
        for name in ("kl_target", "init_beta", "reward_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        sde_freq = self.sde_sample_freq
        if isinstance(sde_freq, bool) or not isinstance(sde_freq, (int, np.integer)) or not (
                sde_freq == -1 or sde_freq > 0):
            raise ValueError(f"sde_sample_freq must be -1 (once per rollout) or a positive integer, got {sde_freq!r}")
        if sde_freq != -1 and not self.use_sde:
            raise ValueError(f"sde_sample_freq={sde_freq} applies to gSDE only: add use_sde=True")
        if self.use_sde and self.nn_std:
            raise ValueError("use_sde (gSDE) learns its own noise matrix: it cannot be combined with nn_std")
        for name in ("eta", "eta_kl"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        check_env_kwargs(self.env_kwargs)
        if self.reward_transform not in REWARD_TRANSFORMS:
            raise ValueError(f"unknown reward_transform {self.reward_transform!r}: "
                             f"use one of {', '.join(REWARD_TRANSFORMS)}")

    def check_spaces(self, observation_space, action_space):
        """The options that only some spaces support."""
        if not isinstance(action_space, spaces.Box):
            for name in ("eta", "nn_std", "use_sde"):
                if getattr(self, name):
                    raise ValueError(f"{name} applies to Box (continuous) action spaces only, "
                                     f"not {type(action_space).__name__}")
        if self.normalize_obs:
            structured = isinstance(observation_space, (spaces.Dict, spaces.Tuple))
            if structured and not vector_entry_keys(observation_space):
                raise ValueError("normalize_obs applies to Box vector entries: this Dict/Tuple observation has none")
            if not structured and (not isinstance(observation_space, spaces.Box) or is_image_space(observation_space)):
                raise ValueError("normalize_obs applies to Box vector observations, not images or discrete ones")

    def env_options(self):
        """The `env` group as one frozen `EnvOptions`: what every env built for this PPO gets."""
        return EnvOptions(**group_values(self, "env"))

    def to_json(self):
        d = dataclasses.asdict(self)
        d["hidden_sizes"] = list(self.hidden_sizes)
        d["lstm_head_sizes"] = list(self.lstm_head_sizes)
        return d


def check_env_kwargs(env_kwargs):
    """`env_kwargs` must be what a JSON object holds (it is saved in ppo.json): string keys, plain values."""
    if env_kwargs is None:
        return
    if not isinstance(env_kwargs, dict):
        raise ValueError(f"env_kwargs must be a dict of gymnasium.make's keyword arguments, got {env_kwargs!r}")
    for key, value in env_kwargs.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f"env_kwargs keys must be argument names, got {key!r}")
        if key == "render_mode":
            raise ValueError("env_kwargs cannot set render_mode: training envs do not render, and play and "
                             "record_video choose their own")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise ValueError(f"env_kwargs[{key!r}] must be a JSON value (number, string, bool, None, list or "
                             f"dict of those), got {value!r}") from None


def settings(group=None):
    """The `Hyperparameters` fields (of one group), in declaration order."""
    return [f for f in dataclasses.fields(Hyperparameters) if group is None or f.metadata["group"] == group]


def flag_name(field):
    """The runner flag of a field, or None."""
    flag = field.metadata["flag"]
    return field.name if flag is None else (flag or None)


def group_values(hp, group):
    """`{name: value}` of one group's fields: `LossConfig(**group_values(hp, "loss"))`, the network's arguments."""
    return {f.name: getattr(hp, f.name) for f in settings(group)}


def _env_options_class():
    fields = [(f.name, f.type, dataclasses.field(default=f.default))
              for f in dataclasses.fields(Hyperparameters) if f.metadata["group"] == "env"]
    def rendering(self, render_mode):
        """The same options, the env rendering as `render_mode` ("rgb_array" for video, "human" for a window)."""
        return dataclasses.replace(self, env_kwargs={**(self.env_kwargs or {}), "render_mode": render_mode})

    cls = dataclasses.make_dataclass("EnvOptions", fields, frozen=True, namespace={"rendering": rendering})
    cls.__module__ = __name__  # pickled by reference (Ray actors, gathering workers)
    cls.__doc__ = """How every env of a run is built from its id: the `env` group of `Hyperparameters`, whole.

    `make_vec_env`, evaluation, play, the runner, the gathering workers and the Ray actors take one of these
    (`hp.env_options()`), so a new env option is its `setting(..., "env", ...)` field here, its wrapper in
    `unstable_ppo.envs`, and a test. Fields: """ + ", ".join(name for name, _, _ in fields) + "."
    return cls


EnvOptions = _env_options_class()


# The loss's settings, hashable (a compiled function's static argument): derived from the table.
LossConfig = dataclasses.make_dataclass(
    "LossConfig", [(f.name, f.type, dataclasses.field(default=f.default)) for f in settings("loss")], frozen=True)
LossConfig.__module__ = __name__


def check_split(num_envs, gather_per_worker, worker_num=1, batch_size=None):
    """One-line `ValueError`s for a split of the work that cannot work, checked here for every entry point.

    - `gather_per_worker` M: the rollout's `num_envs` envs are stepped by M gathering workers
      (processes on this machine, `unstable_ppo.envs.gather`, or Ray actors, `unstable_ppo.ray_gather`);
    - `worker_num` N: each minibatch is split over N devices (data-parallel learners; JAX only).

    Neither changes the result of a seeded run, only how fast it comes.
    """
    if isinstance(gather_per_worker, bool) or not isinstance(gather_per_worker, int) or gather_per_worker < 1:
        raise ValueError(f"gather_per_worker must be a positive integer, got {gather_per_worker!r}")
    if gather_per_worker > num_envs:
        raise ValueError(f"gather_per_worker={gather_per_worker} is larger than num_envs={num_envs}: "
                         f"each gathering worker needs at least one env")
    if num_envs % gather_per_worker:
        raise ValueError(f"gather_per_worker={gather_per_worker} does not divide num_envs={num_envs}: "
                         f"each gathering worker steps num_envs/gather_per_worker envs")
    if worker_num == 1:
        return
    import keras  # late: the runner checks its flags before it chooses the backend

    backend = keras.backend.backend()
    if backend not in DATA_PARALLEL_BACKENDS:
        raise ValueError(f"worker_num={worker_num} (data-parallel learners) needs the jax backend "
                         f"(keras.distribution.DataParallel); this run uses {backend}")
    devices = keras.distribution.list_devices()
    if worker_num > len(devices):
        raise ValueError(f"worker_num={worker_num} is more than the {len(devices)} device(s) present "
                         f"(on CPU, start with XLA_FLAGS=--xla_force_host_platform_device_count={worker_num})")
    if batch_size % worker_num:
        raise ValueError(f"worker_num={worker_num} does not divide batch_size={batch_size}: each learner "
                         f"takes batch_size/worker_num rows of every minibatch")
