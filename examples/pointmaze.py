"""PointMaze UMaze (dense reward) with the built-in Dict-observation encoders: train, evaluate, save, load back.

The observation is a Dict of three float64 Boxes: "observation" (ball position and
velocity), "achieved_goal" and "desired_goal" (a new random goal each episode). No custom
encoder: each vector entry goes in as it is, the entries are concatenated, and the MLP follows.
The reward is exp(-distance to the goal) at every one of the 300 steps of an episode (the task
continues after the goal is reached), so a random policy scores about 80 and one that runs to the
goal and stays there scores more the sooner it arrives.

The `gymnasium_robotics:` prefix imports gymnasium-robotics, which registers its envs:

    pip install -e ".[robotics]"
    python examples/pointmaze.py --timesteps 200000 --seed 0
    KERAS_BACKEND=jax python examples/pointmaze.py --timesteps 4096   # a smoke run
    python -m unstable_ppo.run --env_id=gymnasium_robotics:PointMaze_UMazeDense-v3 --num_envs=8 --num_steps=256 \\
        --num_epochs=10 --batch_size=64 --lr=3e-4 --noanneal_lr --total_timesteps=200000

Settings (SETTINGS): Stable-Baselines3's PPO defaults, which are the PPO paper's MuJoCo settings
(2048 steps per update, 10 epochs, minibatch 64, lr 3e-4 constant, gamma 0.99, GAE 0.95, clip 0.2,
no entropy bonus, 64-64 tanh), with the 2048 steps spread over 8 envs x 256 steps.
benchmarks/dict_obs.py uses the same settings.
"""

import argparse
import os
import sys

ENV_ID = "PointMaze_UMazeDense-v3"
FULL_ENV_ID = f"gymnasium_robotics:{ENV_ID}"
SETTINGS = dict(num_envs=8, num_steps=256, num_epochs=10, batch_size=64, lr=3e-4, anneal_lr=False, gamma=0.99,
                gae_lambda=0.95, clip_range=0.2, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5,
                hidden_sizes=(64, 64), activation="tanh")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=200_000, help="training steps (default 200000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval_episodes", type=int, default=10)
    parser.add_argument("--logdir", default="log/pointmaze", help="the model is saved in LOGDIR/model")
    args = parser.parse_args()

    from unstable_ppo import PPO

    model = PPO(FULL_ENV_ID, seed=args.seed, verbose=1, **SETTINGS)
    model.learn(args.timesteps)
    trained = model.evaluate(n_episodes=args.eval_episodes, seed=args.seed + 10_000)
    path = model.save(os.path.join(args.logdir, "model"))
    loaded = PPO.load(path).evaluate(n_episodes=args.eval_episodes, seed=args.seed + 10_000)
    print(f"{ENV_ID}, {model.num_timesteps} steps, seed {args.seed}: deterministic return "
          f"{trained['mean_return']:.1f} ± {trained['std_return']:.1f} over {args.eval_episodes} episodes "
          f"(random policy: about 80); saved to {path}; loaded back: {loaded['mean_return']:.1f} ± "
          f"{loaded['std_return']:.1f}")
    return 0 if loaded["returns"] == trained["returns"] else 1


if __name__ == "__main__":
    sys.exit(main())
