"""Evaluate a saved model: `python -m unstable_ppo.play --model_dir=DIR [--episodes=N]`.

The env id comes from the saved model unless `--env_id` overrides it. Prints one
line per episode, then `mean_return=… std_return=… episodes=N`.
"""

from absl import flags

from unstable_ppo.cli import BACKENDS, UsageError, run_app, select_backend

flags.DEFINE_string("model_dir", None, "A directory written by PPO.save or the runner.")
flags.DEFINE_integer("episodes", 10, "Episodes to play.")
flags.DEFINE_string("env_id", None, "Play on this env instead of the one the model was trained on.")
flags.DEFINE_bool("deterministic", True, "Take the most likely action instead of sampling.")
flags.DEFINE_integer("seed", None, "Seed for the env and for sampled actions.")
flags.DEFINE_enum("backend", None, BACKENDS, "Keras backend (default: $KERAS_BACKEND, else tensorflow).")

FLAGS = flags.FLAGS


def play(argv_flags):
    if not argv_flags.model_dir:
        raise UsageError("--model_dir is required")
    if argv_flags.episodes <= 0:
        raise UsageError(f"episodes must be a positive integer, got {argv_flags.episodes}")
    select_backend(argv_flags.backend)
    from unstable_ppo.ppo import PPO

    ppo = PPO.load(argv_flags.model_dir, seed=argv_flags.seed)
    env = argv_flags.env_id or ppo.env_id
    result = ppo.evaluate(env, n_episodes=argv_flags.episodes, deterministic=argv_flags.deterministic)
    for i, (ret, length) in enumerate(zip(result["returns"], result["lengths"]), 1):
        print(f"episode {i}: return={ret:.2f} length={length}")
    print(
        f"mean_return={result['mean_return']:.2f} std_return={result['std_return']:.2f} "
        f"episodes={len(result['returns'])}"
    )
    return result


def entry_point():
    run_app(play)


if __name__ == "__main__":
    entry_point()
