"""Atari training-throughput benchmark: unstable_ppo on each Keras backend against Stable-Baselines3 PPO.

BreakoutNoFrameskip-v4 with the standard Atari PPO settings in both libraries: 8 envs x 128
steps, 4 epochs, minibatch 256, lr 2.5e-4 annealed linearly to 0, clip 0.1, ent_coef 0.01,
vf_coef 0.5, max_grad_norm 0.5, gamma 0.99, GAE 0.95, a Nature CNN shared by actor and critic,
on the usual pipeline (noop reset, max-and-skip 4, 84x84 grayscale, episodic life, FIRE reset,
reward sign clipping, 4-frame stack). Stable-Baselines3 runs `CnnPolicy` on `make_atari_env`
(DummyVecEnv) + `VecFrameStack`, on the CPU. unstable_ppo runs once per `--modes` entry:
"ale" is ale-py's C++ `AtariVectorEnv` (our default for Atari), "sync" gymnasium's Python
wrappers in a `SyncVectorEnv`; each (backend, mode) pair is one runner column.

Only throughput is measured (a 10k-step run learns nothing worth scoring). Per job:
  - steady steps/s: env steps (agent steps, not frames) after the first rollout+update, over
    the wall time of the rest of `learn`; the first update includes one-off compilation
    (several seconds of XLA for the JAX Nature-CNN epoch, tracing on TensorFlow).
  - overall steps/s: all steps over the whole `learn` call.
  - seconds per 1024-step rollout, steady state, split into env (the vector env's `step`,
    frame stacking and, for SB3, `VecTransposeImage` included), act (the rest of the rollout:
    the policy forward pass, buffer writes, GAE) and update (the 4 epochs of minibatch SGD).
  - first-update seconds: from the start of `learn` to the end of the first update.

Every job runs in a fresh subprocess (the Keras backend is fixed at import; the parent sets
KERAS_BACKEND). Repetition r uses seed r for every runner, and within a repetition the runners
follow one another, so drift on a shared machine hits them alike. Thread settings (torch, jax,
tf, ALE, OpenBLAS, OMP) are left at the libraries' defaults.

    python benchmarks/atari.py                                   # 10240 steps, 2 repeats, all runners
    python benchmarks/atari.py --timesteps 2048 --repeats 1 --runners sb3 torch --modes ale sync
    python benchmarks/atari.py --json benchmarks/results/atari_breakout_DATE.json
"""

import argparse
import json
import os
import sys
import time

import harness

ENV_ID = "BreakoutNoFrameskip-v4"
HP = {"num_envs": 8, "num_steps": 128, "num_epochs": 4, "batch_size": 256, "lr": 2.5e-4, "anneal_lr": True,
      "clip_range": 0.1, "ent_coef": 0.01, "vf_coef": 0.5, "max_grad_norm": 0.5, "gamma": 0.99,
      "gae_lambda": 0.95}
ROLLOUT = HP["num_envs"] * HP["num_steps"]
KERAS_BACKENDS = harness.keras_backends(("tensorflow", "torch", "jax"))
RUNNERS = ["sb3", *KERAS_BACKENDS]
MODES = ["ale", "sync"]
TARGET = 1.2
PACKAGES = ("unstable_ppo", "keras", "tensorflow", "jax", "torch", "stable_baselines3", "gymnasium", "ale_py", "numpy")


def timed(method, clock):
    """`method` wrapped to add its wall time to `clock["env_s"]`."""

    def call(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            clock["env_s"] += time.perf_counter() - t0

    return call


def run_sb3(seed, timesteps):
    import ale_py
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack

    gym.register_envs(ale_py)  # gymnasium >= 1.0 no longer finds ALE ids by itself; make_atari_env needs them
    env = make_atari_env(ENV_ID, n_envs=HP["num_envs"], seed=seed, vec_env_cls=DummyVecEnv)
    env = VecFrameStack(env, n_stack=4)
    lr = HP["lr"]
    model = PPO(
        "CnnPolicy", env, n_steps=HP["num_steps"], n_epochs=HP["num_epochs"], batch_size=HP["batch_size"],
        learning_rate=lambda progress: lr * progress, clip_range=HP["clip_range"], ent_coef=HP["ent_coef"],
        vf_coef=HP["vf_coef"], max_grad_norm=HP["max_grad_norm"], gamma=HP["gamma"],
        gae_lambda=HP["gae_lambda"], device="cpu", seed=seed, verbose=0,
    )
    clock = {"env_s": 0.0}
    # model.env is the outermost VecEnv (VecTransposeImage over VecFrameStack over DummyVecEnv);
    # collect_rollouts calls its step(), so the whole preprocessing stack is timed as env.
    model.env.step = timed(model.env.step, clock)
    # Rollout and update times per iteration; an update runs from a rollout's end to the next start.
    env_times = []
    split = harness.sb3_clock(on_rollout_start=lambda: clock.update(env_s=0.0),
                              on_rollout_end=lambda: env_times.append(clock["env_s"]))
    start = time.perf_counter()
    model.learn(timesteps, callback=split)
    end = time.perf_counter()
    updates = [{"rollout_s": it["rollout_s"], "env_s": env_s, "update_s": it["update_s"]}
               for it, env_s in zip(split.iterations(), env_times)]
    return model.num_timesteps, start, end, split.first_update_end(), updates


def run_unstable_ppo(backend, mode, seed, timesteps):
    assert os.environ.get("KERAS_BACKEND") == backend, "run through the parent, which sets KERAS_BACKEND"
    from unstable_ppo import PPO
    from unstable_ppo.callbacks import LambdaCallback

    ppo = PPO(ENV_ID, seed=seed, vectorization_mode=mode, **HP)
    clock = {"env_s": 0.0}
    ppo.env.step = timed(ppo.env.step, clock)  # the instance attribute shadows the bound method
    updates, marks = [], {}

    def split(ppo, logs):
        now = time.perf_counter()
        updates.append({"rollout_s": logs["rollout_time"], "env_s": clock["env_s"],
                        "update_s": logs["update_time"]})
        clock["env_s"] = 0.0
        if len(updates) == 1:  # includes compiling the acting and update functions
            marks["first_update_end"] = now

    start = time.perf_counter()
    ppo.learn(timesteps, callbacks=[LambdaCallback(on_update_end=lambda update, logs: split(ppo, logs))])
    end = time.perf_counter()
    return ppo.num_timesteps, start, end, marks["first_update_end"], updates


def run_job(runner, seed, timesteps):
    """Train one runner in this process; print one JSON line."""
    backend, _, mode = runner.partition("/")
    if backend == "sb3":
        steps, start, end, first_end, updates = run_sb3(seed, timesteps)
    else:
        steps, start, end, first_end, updates = run_unstable_ppo(backend, mode, seed, timesteps)
    for u in updates:
        u["act_s"] = u["rollout_s"] - u["env_s"]
    print(json.dumps({"runner": runner, "seed": seed, "timesteps": int(steps), "learn_s": end - start,
                      "first_update_s": first_end - start, "steps_per_second": steps / (end - start),
                      "steady_steps_per_second": (steps - ROLLOUT) / (end - first_end),
                      "updates": updates}), flush=True)


def spawn(runner, seed, timesteps, baseline=None):
    """Run one job in a fresh interpreter; returns (result dict or None, stderr).

    A runner `BACKEND/MODE@base` imports unstable_ppo from the `baseline` checkout."""
    backend = runner.partition("/")[0]
    name, _, base = runner.partition("@")
    code = baseline if base else harness.ROOT
    result, err = harness.spawn(__file__, ["--job", name, "--seed", seed, "--timesteps", timesteps],
                                backend=None if backend == "sb3" else backend, code=code)
    if result is not None:
        result["runner"] = runner
    return result, err


def mean(xs):
    return sum(xs) / len(xs)


def steady_split(result):
    """Mean seconds per rollout (env, act, update) over the updates after the first."""
    rest = result["updates"][1:] or result["updates"]
    return tuple(mean([u[k] for u in rest]) for k in ("env_s", "act_s", "update_s"))


def median_update_rate(results):
    """Median steps/s of single steady updates: robust to bursts of load from other processes."""
    rates = sorted(ROLLOUT / (u["rollout_s"] + u["update_s"]) for r in results for u in r["updates"][1:])
    if not rates:
        return None
    mid = len(rates) // 2
    return rates[mid] if len(rates) % 2 else (rates[mid - 1] + rates[mid]) / 2


def table(results, runners):
    sb3 = {r["seed"]: r["steady_steps_per_second"] for r in results if r["runner"] == "sb3"}
    sb3_median = median_update_rate([r for r in results if r["runner"] == "sb3"])
    rows = [(f"| runner | steady steps/s mean (min-max) | x SB3 steady | median update steps/s | x SB3 median "
             f"| overall steps/s | s per {ROLLOUT}-step rollout: env / act / update | 1st update s |"),
            "|---|---|---|---|---|---|---|---|"]
    summary = {}
    for runner in runners:
        rs = sorted((r for r in results if r["runner"] == runner), key=lambda r: r["seed"])
        if not rs:
            rows.append(f"| {runner} | failed | | | | | | |")
            continue
        warm = [r["steady_steps_per_second"] for r in rs]
        ratios = [r["steady_steps_per_second"] / sb3[r["seed"]] for r in rs if r["seed"] in sb3]
        ratio = mean(ratios) if ratios else None
        summary[runner] = (mean(warm), ratio)
        overall = mean([r["steps_per_second"] for r in rs])
        env_s, act_s, update_s = (mean(x) for x in zip(*map(steady_split, rs)))
        first = mean([r["first_update_s"] for r in rs])
        med = median_update_rate(rs)
        med_ratio = f"{med / sb3_median:.2f}" if med and sb3_median else "-"
        rows.append(f"| {runner} | {mean(warm):.0f} ({min(warm):.0f}-{max(warm):.0f}) "
                    f"| {f'{ratio:.2f}' if ratio is not None else '-'} | {med:.0f} | {med_ratio} | {overall:.0f} "
                    f"| {env_s:.2f} / {act_s:.2f} / {update_s:.2f} | {first:.1f} |")
    ours = {k: v for k, v in summary.items() if k != "sb3"}
    if ours:
        best = max(ours, key=lambda k: ours[k][0])
        sps, ratio = ours[best]
        ratio_text = f"{ratio:.2f} x SB3" if ratio is not None else "? x SB3 (no SB3 result)"
        rows.append(f"\nfastest unstable_ppo: {best}, {sps:.0f} steps/s = {ratio_text} (target >= {TARGET}x)")
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=10_240,
                        help=f"training steps per job, whole {ROLLOUT}-step rollouts (default 10240)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="repetitions, with seeds 0, 1, ...; runners interleaved within each (default 2)")
    parser.add_argument("--runners", nargs="+", default=RUNNERS, choices=RUNNERS, metavar="RUNNER",
                        help=f"runners to benchmark, from {' '.join(RUNNERS)} (default: all)")
    parser.add_argument("--modes", nargs="+", default=["ale"], choices=MODES, metavar="MODE",
                        help="unstable_ppo vectorization modes, each runner's own column: ale, sync "
                        "(default: ale)")
    parser.add_argument("--baseline", metavar="DIR", help="also each unstable_ppo runner on another checkout's code "
                        "(BACKEND/MODE@base, run right before its peer): a before/after comparison")
    parser.add_argument("--json", metavar="OUT", help="write the machine and all raw results to OUT")
    parser.add_argument("--job", help=argparse.SUPPRESS)  # internal: one job ("sb3" or "backend/mode") here
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        return run_job(args.job, args.seed, args.timesteps)
    if args.timesteps < 2 * ROLLOUT:
        parser.error(f"--timesteps must be at least {2 * ROLLOUT}: the steady state starts after one rollout")

    runners = [f"{r}/{m}" if r != "sb3" else r for r in RUNNERS if r in args.runners
               for m in (args.modes if r != "sb3" else [None])]
    if args.baseline:
        runners = [x for r in runners for x in ([f"{r}@base", r] if r != "sb3" else [r])]
    jobs = [(r, s) for s in range(args.repeats) for r in runners]
    results, failures = harness.run_jobs(
        jobs, lambda job: spawn(*job, args.timesteps, os.path.abspath(args.baseline) if args.baseline else None), name=lambda job, result: f"{job[0]} seed {job[1]}",
        summary=lambda r: f"{r['steady_steps_per_second']:.0f} steps/s steady, {r['steps_per_second']:.0f} overall, "
                          f"first update {r['first_update_s']:.1f} s")

    info = harness.machine(PACKAGES)
    print(f"\n## {ENV_ID}, {args.timesteps} steps per job, {args.repeats} repeats "
          f"(seeds 0-{args.repeats - 1})\n")
    print(table(results, runners))
    print("\n" + harness.machine_line(info)
          + f" · threads: library defaults, env {info['thread_env'] or 'unset'}")
    if failures:
        print("\nfailed jobs: " + ", ".join(f"{r} seed {s}" for r, s in failures))
    if args.json:
        harness.write_json(args.json, {"machine": info, "env_id": ENV_ID,
                                       "args": {k: v for k, v in vars(args).items() if k not in ("job", "seed")},
                                       "hyperparameters": HP, "runners": runners, "results": results,
                                       "failures": failures})
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
