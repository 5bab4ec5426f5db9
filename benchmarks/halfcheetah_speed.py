"""HalfCheetah-v5 training throughput: unstable_ppo on each backend against Stable-Baselines3 PPO.

The issue's setting: 1 env x 2048 steps, 10 epochs, minibatch 64, lr 3e-4, gamma 0.99,
GAE 0.95, clip 0.2, vf_coef 0.5, max_grad_norm 0.5, 64-64 tanh actor and critic, no
normalization in either library. Each job runs in a fresh subprocess, the runners
interleaved per seed; only `learn` is timed, and "steady" leaves out the first
rollout+update (compilation). Needs `pip install -e ".[mujoco,benchmarks]"`.

    python benchmarks/halfcheetah_speed.py                 # 3 rollouts per job, seed 0
    python benchmarks/halfcheetah_speed.py --rollouts 5 --seeds 0 1 --json out.json
"""

import argparse
import json
import sys
import time

import harness

ENV_ID = "HalfCheetah-v5"
HP = dict(num_envs=1, num_steps=2048, num_epochs=10, batch_size=64, lr=3e-4, gamma=0.99, gae_lambda=0.95,
          clip_range=0.2, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5)
ROLLOUT = HP["num_envs"] * HP["num_steps"]
KERAS_BACKENDS = harness.keras_backends(("tensorflow", "jax", "torch"))


def run_job(runner, seed, rollouts):
    times = []
    if runner == "sb3":
        from stable_baselines3 import PPO
        from stable_baselines3.common.env_util import make_vec_env

        clock = harness.sb3_clock()
        times = clock.starts
        model = PPO("MlpPolicy", make_vec_env(ENV_ID, n_envs=1, seed=seed), learning_rate=HP["lr"],
                    n_steps=HP["num_steps"], batch_size=HP["batch_size"], n_epochs=HP["num_epochs"],
                    gamma=HP["gamma"], gae_lambda=HP["gae_lambda"], clip_range=HP["clip_range"],
                    ent_coef=HP["ent_coef"], vf_coef=HP["vf_coef"], max_grad_norm=HP["max_grad_norm"],
                    seed=seed, device="cpu", verbose=0)
        start = time.perf_counter()
        model.learn(rollouts * ROLLOUT, callback=clock)
    else:
        from unstable_ppo import PPO
        from unstable_ppo.callbacks import LambdaCallback

        model = PPO(ENV_ID, seed=seed, anneal_lr=False, **HP)
        start = time.perf_counter()
        model.learn(rollouts * ROLLOUT,
                    callbacks=[LambdaCallback(on_update_end=lambda update, logs: times.append(time.perf_counter()))])
    end = time.perf_counter()
    # SB3's clock ticks at each rollout start (the 2nd tick ends update 1); ours after each update.
    first_update_end = times[1] if runner == "sb3" else times[0]
    print(json.dumps(dict(runner=runner, seed=seed, steps=rollouts * ROLLOUT, learn_s=end - start,
                          steps_per_second=rollouts * ROLLOUT / (end - start),
                          steady_steps_per_second=(rollouts - 1) * ROLLOUT / (end - first_update_end))), flush=True)


def spawn(runner, seed, rollouts):
    """Run one job in a fresh interpreter; returns (result dict or None, stderr)."""
    return harness.spawn(__file__, ["--job", runner, "--seeds", seed, "--rollouts", rollouts],
                         backend=None if runner == "sb3" else runner, env={"TF_CPP_MIN_LOG_LEVEL": "3"})


def progress(i, n, job, result, output):
    runner, seed = job
    if result is None:
        print(f"{runner} seed {seed} failed:\n{output[-2000:]}", file=sys.stderr)
    else:
        print(f"{runner:<10} seed {seed}: {result['steps_per_second']:7.0f} steps/s, "
              f"steady {result['steady_steps_per_second']:7.0f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rollouts", type=int, default=3, help="rollouts of 2048 steps per job (>= 2)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--backends", nargs="+", default=["sb3", *KERAS_BACKENDS])
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.rollouts < 2:
        parser.error("--rollouts must be >= 2 (the first one is compilation)")
    if args.job:
        return run_job(args.job, args.seeds[0], args.rollouts)
    jobs = [(runner, seed) for seed in args.seeds for runner in args.backends]
    results, _ = harness.run_jobs(jobs, lambda job: spawn(*job, args.rollouts), progress=progress)
    sb3 = {r["seed"]: r["steady_steps_per_second"] for r in results if r["runner"] == "sb3"}
    print("\n| runner | steady steps/s | × SB3 |\n|---|---|---|")
    for runner in args.backends:
        rs = [r for r in results if r["runner"] == runner]
        if rs:
            mean = sum(r["steady_steps_per_second"] for r in rs) / len(rs)
            ratios = [r["steady_steps_per_second"] / sb3[r["seed"]] for r in rs if r["seed"] in sb3]
            ratio = f"{sum(ratios) / len(ratios):.2f}" if ratios else "—"
            print(f"| {runner} | {mean:.0f} | {ratio} |")
    if args.json:
        harness.write_json(args.json, {"machine": harness.machine(), "hyperparameters": HP, "results": results})


if __name__ == "__main__":
    main()
