"""Evaluate a saved model: `python -m unstable_ppo.play --model_dir=DIR [--best] [--episodes=N]`.

`DIR` is a run's model directory (its `latest` checkpoint, or `best` with `--best`)
or any directory written by `PPO.save`. The env id and its preprocessing come from
the saved model unless `--env_id` overrides them. Prints one line per episode, then
`mean_return=… std_return=… episodes=N`. `--record_video` writes mp4s to the run's
`videos/` directory; `--render` shows the game in a window.
"""

import os

from absl import flags

from unstable_ppo.checkpoint import LATEST
from unstable_ppo.cli import BACKENDS, UsageError, run_app, select_backend

flags.DEFINE_string("model_dir", None, "A run's model directory, or a directory written by PPO.save.")
flags.DEFINE_bool("best", False, "Play the run's best checkpoint instead of its latest.")
flags.DEFINE_integer("episodes", 10, "Episodes to play.")
flags.DEFINE_string("env_id", None, "Play on this env instead of the one the model was trained on.")
flags.DEFINE_bool("deterministic", True, "Take the most likely action instead of sampling.")
flags.DEFINE_integer("seed", None, "Seed for the env and for sampled actions.")
flags.DEFINE_integer("max_steps", None, "Cut episodes after this many agent steps.")
flags.DEFINE_bool("record_video", False, "Write every episode as mp4 under --video_dir.")
flags.DEFINE_string("video_dir", None, "Where videos go (default: the run's videos/ directory).")
flags.DEFINE_bool("render", False, "Show the episodes in a window (render_mode='human').")
flags.DEFINE_enum("backend", None, BACKENDS, "Keras backend (default: $KERAS_BACKEND, else tensorflow).")

FLAGS = flags.FLAGS


def default_video_dir(model_dir, best):
    """`{logdir}/videos` for a run's model directory (`{logdir}/model`), else `{model_dir}/videos`."""
    model_dir = os.path.abspath(model_dir)
    if best or os.path.isdir(os.path.join(model_dir, LATEST)):
        return os.path.join(os.path.dirname(model_dir), "videos")
    return os.path.join(model_dir, "videos")


def play(argv_flags):
    if not argv_flags.model_dir:
        raise UsageError("--model_dir is required")
    if argv_flags.episodes <= 0:
        raise UsageError(f"episodes must be a positive integer, got {argv_flags.episodes}")
    if argv_flags.max_steps is not None and argv_flags.max_steps <= 0:
        raise UsageError(f"max_steps must be a positive integer, got {argv_flags.max_steps}")
    if argv_flags.record_video and argv_flags.render:
        raise UsageError("--record_video and --render need different render modes: pick one")
    select_backend(argv_flags.backend)
    from unstable_ppo.envs import make_vec_env  # late: after the flag checks and the backend choice
    from unstable_ppo.ppo import PPO

    ppo = PPO.load(argv_flags.model_dir, seed=argv_flags.seed, best=argv_flags.best)
    env_id = argv_flags.env_id or ppo.env_id
    if env_id is None:
        raise UsageError("the model does not know its env id: pass --env_id")
    if argv_flags.record_video or argv_flags.render:
        video_dir = None
        if argv_flags.record_video:
            video_dir = argv_flags.video_dir or default_video_dir(argv_flags.model_dir, argv_flags.best)
        env = make_vec_env(
            env_id, 1, "sync", ppo.hp.env_options().rendering("rgb_array" if video_dir else "human"), training=False,
            max_episode_steps=argv_flags.max_steps, video_dir=video_dir, video_episodes=argv_flags.episodes,
        )
    else:
        env = make_vec_env(env_id, min(argv_flags.episodes, ppo.hp.num_envs), ppo.hp.vectorization_mode,
                           ppo.hp.env_options(), training=False, max_episode_steps=argv_flags.max_steps)
    try:
        result = ppo.evaluate(env, n_episodes=argv_flags.episodes, deterministic=argv_flags.deterministic,
                              seed=argv_flags.seed)
    finally:
        env.close()
    for i, (ret, length) in enumerate(zip(result["returns"], result["lengths"]), 1):
        print(f"episode {i}: return={ret:.2f} length={length}")
    if argv_flags.record_video:
        print(f"videos in {video_dir}")
    print(
        f"mean_return={result['mean_return']:.2f} std_return={result['std_return']:.2f} "
        f"episodes={len(result['returns'])}"
    )
    return result


def entry_point():
    run_app(play)


if __name__ == "__main__":
    entry_point()
