"""The compiled trainer's speed, side by side with the Python-stepped path and Stable-Baselines3.

Three CartPole trainings with the same PPO settings (8 envs x 128 steps, 4 epochs of 4 minibatches of 256,
lr 2.5e-4, annealed), each in a fresh interpreter, one after the other on this machine:

- compiled:  `unstable_ppo.compiled.CompiledTrainer` on `gymnax/CartPole-v1` (jax backend): the whole
             iteration in one XLA program; steps/s after the first update (which compiles), and the
             compile time apart;
- python:    `PPO("CartPole-v1").learn` on the jax backend (Gymnasium's CartPole, Python-stepped);
- sb3:       Stable-Baselines3's PPO on `CartPole-v1` (the `benchmarks` extra), when installed.

Prints a table (steps/s, the ratio to SB3 and to the Python-stepped path, the final mean training return)
and writes `benchmarks/results/compiled_<date>.json`. Absolute speeds drift between hosts of our kind; the
ratios, measured in one run of this script, are the figures to compare.

    python benchmarks/compiled.py                       # 200k compiled steps, 50k for the others
    python benchmarks/compiled.py --compiled_steps 1000000 --steps 100000
"""

import argparse
import datetime
import json
import os
import sys
import time

import harness

HP = dict(num_envs=8, num_steps=128, num_epochs=4, batch_size=256, lr=2.5e-4)
ROLLOUT = HP["num_envs"] * HP["num_steps"]


def job_compiled(steps, seed):
    import numpy as np

    from unstable_ppo import PPO
    from unstable_ppo.compiled import CompiledTrainer

    ppo = PPO("gymnax/CartPole-v1", seed=seed, **HP)
    trainer = CompiledTrainer(ppo, "gymnax/CartPole-v1", seed=seed)
    updates, returns = steps // ROLLOUT, []
    start = time.perf_counter()
    for update in range(updates):
        logs, ended = trainer.update(update, updates)
        returns += [r for r, _ in ended]
        if update == 0:
            compiled_at = time.perf_counter()
    seconds = time.perf_counter() - compiled_at
    return {"steps": updates * ROLLOUT, "compile_s": compiled_at - start,
            "steps_per_s": (updates - 1) * ROLLOUT / seconds, "final_return": float(np.mean(returns[-100:]))}


def job_python(steps, seed):
    from unstable_ppo import PPO
    from unstable_ppo.callbacks import LambdaCallback

    ppo = PPO("CartPole-v1", seed=seed, **HP)
    marks = {}
    start = time.perf_counter()
    ppo.learn(steps, callbacks=[LambdaCallback(
        on_update_end=lambda update, logs: marks.setdefault("first", time.perf_counter()))])
    seconds = time.perf_counter() - marks["first"]
    return {"steps": ppo.num_timesteps, "compile_s": marks["first"] - start,
            "steps_per_s": (ppo.num_timesteps - ROLLOUT) / seconds, "final_return": ppo.logs.get("ep_rew_mean")}


def job_sb3(steps, seed):
    import numpy as np
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    model = PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=HP["num_envs"], seed=seed),
                n_steps=HP["num_steps"], batch_size=HP["batch_size"], n_epochs=HP["num_epochs"],
                learning_rate=lambda progress: HP["lr"] * progress, device="cpu", seed=seed, verbose=0)
    clock = harness.sb3_clock()
    start = time.perf_counter()
    model.learn(steps, callback=clock)
    end = time.perf_counter()
    first = clock.first_update_end()
    returns = [e["r"] for e in model.ep_info_buffer]
    return {"steps": model.num_timesteps, "compile_s": first - start,
            "steps_per_s": (model.num_timesteps - ROLLOUT) / (end - first), "final_return": float(np.mean(returns))}


JOBS = {"compiled": job_compiled, "python": job_python, "sb3": job_sb3}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compiled_steps", type=int, default=200_000)
    parser.add_argument("--steps", type=int, default=50_000, help="steps of the Python-stepped and SB3 runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--job", choices=sorted(JOBS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        steps = args.compiled_steps if args.job == "compiled" else args.steps
        print(json.dumps(JOBS[args.job](steps, args.seed)), flush=True)
        return 0
    jobs = ["compiled", "python"]
    try:
        import stable_baselines3  # noqa: F401
        jobs.append("sb3")
    except ImportError:
        print("stable-baselines3 is not installed (the benchmarks extra): no SB3 row", file=sys.stderr)
    argv = ["--compiled_steps", str(args.compiled_steps), "--steps", str(args.steps), "--seed", str(args.seed)]
    results, failed = harness.run_jobs(jobs, lambda job: harness.spawn(__file__, [*argv, "--job", job],
                                                                        backend="jax"))
    if failed:
        return 1
    results = dict(zip(jobs, results))
    info = harness.machine()
    sb3 = results.get("sb3", {}).get("steps_per_s")
    python = results["python"]["steps_per_s"]
    print(f"| CartPole, {HP['num_envs']}x{HP['num_steps']}, 4 epochs | steps | steps/s | vs SB3 | vs Python-stepped "
          f"| compile/first update s | final mean return |")
    print("|---|---|---|---|---|---|---|")
    for job in jobs:
        r = results[job]
        vs_sb3 = f"{r['steps_per_s'] / sb3:.1f}x" if sb3 else "—"
        print(f"| {job} | {r['steps']} | {r['steps_per_s']:,.0f} | {vs_sb3} | {r['steps_per_s'] / python:.1f}x "
              f"| {r['compile_s']:.1f} | {r['final_return']:.1f} |")
    print(harness.machine_line(info))
    path = os.path.join(harness.ROOT, "benchmarks", "results", f"compiled_{datetime.date.today()}.json")
    harness.write_json(path, {"machine": info, "settings": HP, "results": results})
    print(f"results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
