"""MiniGrid DoorKey-5x5 with a user-defined Keras encoder: train, evaluate, save, load back.

MiniGrid observations are a Dict of a 7x7x3 grid of object/colour/state indices, the
agent's direction (Discrete(4)) and a mission string. The mission of DoorKey is always the
same sentence, so `MiniGrid-DoorKey-5x5-NoMission-v0`, registered below, drops it with
gymnasium's `FilterObservation`; `examples.encoders.MiniGridEncoder` encodes the rest.

Importing this module registers the env id, so the module-prefixed id
`examples.minigrid_doorkey:MiniGrid-DoorKey-5x5-NoMission-v0` works in any fresh process
(PPO's own evaluation envs, async workers, the runner), run from the repository root:

    pip install -e ".[minigrid]"
    python examples/minigrid_doorkey.py --timesteps 100000 --seed 0
    KERAS_BACKEND=jax python examples/minigrid_doorkey.py --timesteps 4096   # a smoke run
    python -m unstable_ppo.run --env_id=examples.minigrid_doorkey:MiniGrid-DoorKey-5x5-NoMission-v0 \\
        --encoder=examples.encoders:MiniGridEncoder --encoder_kwargs='{"filters": 16}' \\
        --num_envs=16 --num_steps=128 --num_epochs=4 --batch_size=256 --lr=1e-3 --noanneal_lr \\
        --ent_coef=0.01 --hidden_sizes=64 --total_timesteps=100000

Settings (SETTINGS): rl-starter-files' PPO defaults for MiniGrid (16 envs x 128 steps, 4 epochs,
minibatch 256, lr 1e-3 constant, gamma 0.99, GAE 0.95, clip 0.2, entropy 0.01, vf 0.5, grad
norm 0.5; a 64-unit tanh layer for each of policy and value after the shared encoder); its
README trains DoorKey-5x5 in 80k frames. benchmarks/dict_obs.py uses the same settings.
"""

import argparse
import os
import sys

import gymnasium as gym
import minigrid  # noqa: F401  registers MiniGrid-*
from gymnasium.wrappers import FilterObservation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV_ID = "MiniGrid-DoorKey-5x5-NoMission-v0"
FULL_ENV_ID = f"examples.minigrid_doorkey:{ENV_ID}"
SETTINGS = dict(num_envs=16, num_steps=128, num_epochs=4, batch_size=256, lr=1e-3, anneal_lr=False, gamma=0.99,
                gae_lambda=0.95, clip_range=0.2, ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5,
                hidden_sizes=(64,), activation="tanh")


def make_doorkey(**kwargs):
    """DoorKey-5x5 with observations {"image", "direction"} (the constant mission text dropped)."""
    return FilterObservation(gym.make("MiniGrid-DoorKey-5x5-v0", **kwargs), ["image", "direction"])


if ENV_ID not in gym.registry:  # run as a script, this file is also imported as examples.minigrid_doorkey
    gym.register(ENV_ID, entry_point=make_doorkey)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=100_000, help="training steps (default 100000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--filters", type=int, default=16, help="the encoder's first conv width (default 16)")
    parser.add_argument("--eval_episodes", type=int, default=10)
    parser.add_argument("--logdir", default="log/minigrid_doorkey", help="the model is saved in LOGDIR/model")
    args = parser.parse_args()

    if ROOT not in sys.path:  # `examples.*` importable when this file is run as a script
        sys.path.insert(0, ROOT)
    from examples.encoders import MiniGridEncoder
    from unstable_ppo import PPO

    model = PPO(FULL_ENV_ID, encoder=MiniGridEncoder(filters=args.filters), seed=args.seed, verbose=1,
                **SETTINGS)
    model.learn(args.timesteps)
    trained = model.evaluate(n_episodes=args.eval_episodes, seed=args.seed + 10_000)
    path = model.save(os.path.join(args.logdir, "model"))
    loaded = PPO.load(path).evaluate(n_episodes=args.eval_episodes, seed=args.seed + 10_000)
    print(f"{ENV_ID}, {model.num_timesteps} steps, seed {args.seed}: deterministic return "
          f"{trained['mean_return']:.3f} ± {trained['std_return']:.3f} over {args.eval_episodes} episodes "
          f"(random policy: 0); saved to {path}; loaded back: {loaded['mean_return']:.3f} ± "
          f"{loaded['std_return']:.3f}")
    return 0 if loaded["returns"] == trained["returns"] else 1


if __name__ == "__main__":
    sys.exit(main())
