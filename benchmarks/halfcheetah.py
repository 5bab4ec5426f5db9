"""HalfCheetah-v5 for 1M steps with the bundled flagfile's settings (the RL Zoo's tuned PPO).

Uses the Python API with exactly the hyperparameters of `unstable_ppo/configs/HalfCheetah-v5.flags`,
evaluating 5 deterministic episodes every 200 updates (102,400 steps) and 10 at the end.
Needs `pip install -e ".[mujoco]"` (and matplotlib for `--png`).

    KERAS_BACKEND=jax python benchmarks/halfcheetah.py --seed 1 --json out.json --png curve.png
    python benchmarks/halfcheetah.py --plot out.json --png curve.png     # redraw a saved run
"""

import argparse
import json
import sys
import time

import harness

sys.path.insert(0, harness.ROOT)  # this checkout's unstable_ppo: it trains in this process

# The settings of unstable_ppo/configs/HalfCheetah-v5.flags, as PPO(...) arguments: keep the two in step.
HP = dict(num_envs=1, num_steps=512, num_epochs=20, batch_size=64, lr=2.0633e-05, anneal_lr=False,
          gamma=0.98, gae_lambda=0.92, clip_range=0.1, ent_coef=0.000401762, vf_coef=0.58096,
          max_grad_norm=0.8, hidden_sizes=(256, 256), activation="relu", log_std_init=-2.0,
          normalize_obs=True, normalize_reward=True)
TARGET = 3000.0


def train(seed, timesteps):
    from unstable_ppo import PPO
    from unstable_ppo.callbacks import LambdaCallback

    ppo = PPO("HalfCheetah-v5", seed=seed, **HP)
    start, curve = time.perf_counter(), []

    def evaluate(ppo, logs):
        if ppo.num_updates % 200 == 0:
            result = ppo.evaluate(n_episodes=5)
            curve.append([ppo.num_timesteps, result["mean_return"]])
            print(ppo.num_timesteps, round(result["mean_return"], 1), round(time.perf_counter() - start), flush=True)

    ppo.learn(timesteps, callbacks=[LambdaCallback(on_update_end=lambda update, logs: evaluate(ppo, logs))])
    final = ppo.evaluate(n_episodes=10)
    seconds = time.perf_counter() - start
    curve.append([ppo.num_timesteps, final["mean_return"]])
    print("FINAL", ppo.num_timesteps, final["mean_return"], final["std_return"], seconds, flush=True)
    import keras

    return dict(seed=seed, backend=keras.backend.backend(), timesteps=ppo.num_timesteps,
                final_mean=final["mean_return"], final_std=final["std_return"], seconds=seconds,
                curve=curve, hyperparameters={k: list(v) if isinstance(v, tuple) else v for k, v in HP.items()})


def plot(run, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, returns = zip(*run["curve"])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, returns, marker="o", label=f"unstable_ppo ({run['backend']}, seed {run['seed']})")
    ax.axhline(TARGET, color="gray", linestyle="--", label=f"issue target {TARGET:.0f}")
    ax.set_xlabel("env steps")
    ax.set_ylabel("mean evaluation return")
    ax.set_title("HalfCheetah-v5, bundled flagfile settings")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timesteps", type=int, default=1_000_000)
    parser.add_argument("--json")
    parser.add_argument("--png")
    parser.add_argument("--plot", help="draw --png from this saved JSON instead of training")
    args = parser.parse_args()
    if args.plot:
        with open(args.plot) as f:
            run = json.load(f)
    else:
        run = train(args.seed, args.timesteps)
        if args.json:
            harness.write_json(args.json, run)
    if args.png:
        plot(run, args.png)


if __name__ == "__main__":
    main()
