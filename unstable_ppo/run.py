"""Train PPO from the command line, the way `unstable_baselines.ppo.run` did.

    python -m unstable_ppo.run --env_id=CartPole-v1 --num_envs=8 --num_steps=128

Total timesteps = num_envs * num_steps * num_episodes (`--total_timesteps` instead
of `--num_episodes` if you prefer). The model is saved under
`{logdir}/{model_dir}`; `{env_id}` and `{rank}` are templated into the paths.
"""

import json
import os
import string
import sys
import time

from absl import flags

from unstable_ppo.cli import BACKENDS, UsageError, run_app, select_backend

flags.DEFINE_integer("rank", 0, "Run index; templated into paths as {rank}.")
flags.DEFINE_integer("seed", 1, "Random seed (envs, weights, sampling).")
flags.DEFINE_string("logdir", "./log/{env_id}/ppo/{rank}", "Run directory ({env_id} and {rank} are templated).")
flags.DEFINE_string("model_dir", "model", "Model directory, relative to logdir.")
flags.DEFINE_string("logging", "training.log", "Log file, relative to logdir.")
flags.DEFINE_string("monitor_dir", "monitor", "Monitor CSVs (one per env), relative to logdir.")
flags.DEFINE_string("tb_logdir", "", "TensorBoard event directory, relative to logdir ('' = logdir).")
flags.DEFINE_integer("log_interval", 10, "Updates between summaries on the console.")
flags.DEFINE_string("env_id", "CartPole-v1", "Gymnasium environment id.")
flags.DEFINE_integer("num_envs", 8, "Parallel environments.")
flags.DEFINE_integer("num_episodes", None, "Rollout/update iterations (default: from --total_timesteps).")
flags.DEFINE_integer("total_timesteps", 100_000, "Env steps to train for, when --num_episodes is not given.")
flags.DEFINE_integer("num_steps", 128, "Steps per env per rollout.")
flags.DEFINE_integer("num_epochs", 4, "Passes over each rollout.")
flags.DEFINE_integer("batch_size", 256, "Minibatch size.")
flags.DEFINE_float("lr", 2.5e-4, "Adam learning rate (linearly annealed to 0 unless --noanneal_lr).")
flags.DEFINE_bool("anneal_lr", True, "Anneal the learning rate linearly to 0.")
flags.DEFINE_float("gamma", 0.99, "Discount factor.")
flags.DEFINE_float("gae_lambda", 0.95, "GAE lambda.")
flags.DEFINE_float("clip_range", 0.2, "PPO clipping range.")
flags.DEFINE_float("clip_range_vf", None, "Value clipping range (off if unset).")
flags.DEFINE_float("ent_coef", 0.0, "Entropy bonus coefficient.")
flags.DEFINE_float("vf_coef", 0.5, "Value loss coefficient.")
flags.DEFINE_float("max_grad_norm", 0.5, "Global gradient-norm clip.")
flags.DEFINE_float("target_kl", None, "Stop the epochs of an update once approx KL exceeds this.")
flags.DEFINE_bool("shared_net", None, "Share the torso between policy and value (default: CNN yes, MLP no).")
flags.DEFINE_bool("force_mlp", False, "Use the MLP even for image observations.")
flags.DEFINE_enum("backend", None, BACKENDS, "Keras backend (default: $KERAS_BACKEND, else tensorflow).")
flags.DEFINE_integer("eval_episodes", 10, "Episodes of the final evaluation.")
flags.DEFINE_integer("verbose", 1, "0: quiet, 1: progress bar and a summary every log_interval, 2: a summary every update.")

FLAGS = flags.FLAGS


def render_path(template, **values):
    """`template` with `{env_id}`/`{rank}` filled in; any other key is an error."""
    for _, key, _, _ in string.Formatter().parse(template):
        if key is not None and key not in values:
            raise UsageError(f"unknown template key {{{key}}} in path {template!r}: use {{env_id}} or {{rank}}")
    return template.format(**values)


def train(argv_flags):
    select_backend(argv_flags.backend)
    from unstable_ppo.monitor import TensorBoardLogger
    from unstable_ppo.ppo import PPO

    keys = dict(env_id=argv_flags.env_id, rank=argv_flags.rank)
    logdir = render_path(argv_flags.logdir, **keys)
    model_dir, log_file, monitor_dir, tb_dir = (
        os.path.join(logdir, render_path(getattr(argv_flags, name), **keys))
        for name in ("model_dir", "logging", "monitor_dir", "tb_logdir")
    )
    if argv_flags.log_interval <= 0:
        raise UsageError(f"log_interval must be a positive integer, got {argv_flags.log_interval}")
    rollout = argv_flags.num_envs * argv_flags.num_steps
    if argv_flags.num_episodes is not None:
        if argv_flags.num_episodes <= 0:
            raise UsageError(f"num_episodes must be a positive integer, got {argv_flags.num_episodes}")
        total = argv_flags.num_episodes * rollout
    else:
        total = argv_flags.total_timesteps
        if total is None or total <= 0:
            raise UsageError(f"total_timesteps must be a positive integer, got {total}")

    ppo = PPO(
        argv_flags.env_id,
        seed=argv_flags.seed,
        monitor_dir=monitor_dir,
        num_envs=argv_flags.num_envs,
        num_steps=argv_flags.num_steps,
        num_epochs=argv_flags.num_epochs,
        batch_size=argv_flags.batch_size,
        lr=argv_flags.lr,
        anneal_lr=argv_flags.anneal_lr,
        gamma=argv_flags.gamma,
        gae_lambda=argv_flags.gae_lambda,
        clip_range=argv_flags.clip_range,
        clip_range_vf=argv_flags.clip_range_vf,
        ent_coef=argv_flags.ent_coef,
        vf_coef=argv_flags.vf_coef,
        max_grad_norm=argv_flags.max_grad_norm,
        target_kl=argv_flags.target_kl,
        shared_net=argv_flags.shared_net,
        net="mlp" if argv_flags.force_mlp else "auto",
    )
    log = _file_logger(log_file)
    log.info("flags: %s", json.dumps({f.name: f.value for f in argv_flags.get_flags_for_module(sys.modules[__name__])}))
    tensorboard = TensorBoardLogger(tb_dir)

    def after_update(ppo, logs):
        tensorboard.write(logs, ppo.num_timesteps)
        line = f"update {ppo.num_updates}: {PPO._summary(logs)}"
        log.info(line)
        if argv_flags.verbose >= 2 or (argv_flags.verbose == 1 and ppo.num_updates % argv_flags.log_interval == 0):
            _console(line)

    start = time.perf_counter()
    try:
        ppo.learn(total, callback=after_update, progress_bar=argv_flags.verbose == 1)
    finally:
        tensorboard.close()
    wall = time.perf_counter() - start
    ppo.save(model_dir)
    result = ppo.evaluate(n_episodes=argv_flags.eval_episodes)
    metrics = {
        "env_id": argv_flags.env_id,
        "backend": __import__("keras").backend.backend(),
        "total_timesteps": ppo.num_timesteps,
        "wall_time_s": round(wall, 2),
        "steps_per_second": round(ppo.num_timesteps / wall, 1),
        "eval_mean_return": result["mean_return"],
        "eval_std_return": result["std_return"],
        "eval_episodes": len(result["returns"]),
        "model_dir": model_dir,
    }
    with open(os.path.join(logdir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    summary = (
        f"{argv_flags.env_id} on {metrics['backend']}: {ppo.num_timesteps} steps in {wall:.1f} s "
        f"({metrics['steps_per_second']:.0f} steps/s); eval over {metrics['eval_episodes']} episodes: "
        f"mean_return={result['mean_return']:.2f} std_return={result['std_return']:.2f}; "
        f"model saved to {model_dir}"
    )
    log.info(summary)
    if argv_flags.verbose:
        print(summary)
    return metrics


def _file_logger(path):
    """A logger that writes to the run's log file (and nowhere else)."""
    import logging as std_logging

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    logger = std_logging.getLogger(f"unstable_ppo.run.{path}")
    logger.setLevel(std_logging.INFO)
    logger.propagate = False
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
