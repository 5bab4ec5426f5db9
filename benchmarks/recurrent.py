"""Recurrent PPO benchmark (issue #5): memory and speed, against sb3-contrib's RecurrentPPO.

Two parts, each job in a fresh subprocess (the Keras backend is fixed at import):

- `learn`: CartPoleNoVel-v1 (CartPole without its velocities) for 100k steps with the
  bundled flagfile's settings (`unstable_ppo/configs/CartPoleNoVel-v1.flags`), the
  recurrent policy against the same settings with a feed-forward 64-64 MLP, per backend and seed,
  then 10 deterministic evaluation episodes. The MLP cannot see velocities: it should fail.
- `speed`: training throughput with the issue's settings, the same for both libraries —
  8 envs x 128 steps, 4 epochs, minibatch 256, LSTM 128, separate actor and critic LSTMs
  (sb3-contrib's default), 64-64 tanh layers, lr 2.5e-4, gamma 0.99, GAE 0.95, clip 0.2.
  Reports steps/s over the whole `learn` and after the first update (compilation).

    python benchmarks/recurrent.py                                  # both parts, all runners
    python benchmarks/recurrent.py --parts speed --timesteps 10240 --runners sb3 jax
"""

import argparse
import json
import os
import sys
import time

import harness

ENV_ID = "CartPoleNoVel-v1"
CONFIG = harness.flagfile(ENV_ID)
SPEED_HP = dict(num_envs=8, num_steps=128, num_epochs=4, batch_size=256, lr=2.5e-4, gamma=0.99, gae_lambda=0.95,
                clip_range=0.2, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5)
LSTM_UNITS = 128
KERAS_BACKENDS = harness.keras_backends(("tensorflow", "jax", "torch"))
RUNNERS = ["sb3", *KERAS_BACKENDS]
EVAL_EPISODES = 10
SOLVED = 475.0


def flagfile_hyperparameters():
    """The bundled CartPoleNoVel-v1 flags, as PPO(...) arguments (the runner's own conversion)."""
    from absl import flags

    from unstable_ppo import run

    argv_flags = flags.FLAGS
    argv_flags(["benchmark", f"--flagfile={CONFIG}", f"--env_id={ENV_ID}"])
    hp = run.RunSettings(argv_flags).hyperparameters()
    return hp, argv_flags.total_timesteps


def learn_job(runner, seed, recurrent):
    from unstable_ppo import PPO

    hp, timesteps = flagfile_hyperparameters()
    if not recurrent:  # the same settings with a feed-forward 64-64 MLP in place of the LSTM and its head layers
        hp.update(recurrent=False, hidden_sizes=(64, 64), lstm_head_sizes=())
    model = PPO(ENV_ID, seed=seed, **hp)
    start = time.perf_counter()
    model.learn(timesteps)
    seconds = time.perf_counter() - start
    result = model.evaluate(n_episodes=EVAL_EPISODES, deterministic=True)
    return dict(part="learn", runner=runner, policy="lstm" if recurrent else "mlp", seed=seed,
                timesteps=model.num_timesteps, learn_s=seconds, steps_per_second=model.num_timesteps / seconds,
                eval_mean=result["mean_return"], eval_std=result["std_return"])


def speed_job(runner, seed, timesteps):
    rollout = SPEED_HP["num_envs"] * SPEED_HP["num_steps"]
    marks = {}
    if runner == "sb3":
        import torch
        from sb3_contrib import RecurrentPPO
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.vec_env import DummyVecEnv

        import unstable_ppo  # noqa: F401  registers CartPoleNoVel-v1

        hp = SPEED_HP
        model = RecurrentPPO(
            "MlpLstmPolicy", make_vec_env(ENV_ID, n_envs=hp["num_envs"], seed=seed, vec_env_cls=DummyVecEnv),
            learning_rate=hp["lr"], n_steps=hp["num_steps"], batch_size=hp["batch_size"],
            n_epochs=hp["num_epochs"], gamma=hp["gamma"], gae_lambda=hp["gae_lambda"],
            clip_range=hp["clip_range"], ent_coef=hp["ent_coef"], vf_coef=hp["vf_coef"],
            max_grad_norm=hp["max_grad_norm"], seed=seed, device="cpu", verbose=0,
            policy_kwargs=dict(lstm_hidden_size=LSTM_UNITS, net_arch=dict(pi=[64, 64], vf=[64, 64]),
                               activation_fn=torch.nn.Tanh),
        )
        clock = harness.sb3_clock()
        start = time.perf_counter()
        model.learn(timesteps, callback=clock)
        seconds = time.perf_counter() - start
        if len(clock.starts) > 1:  # the first rollout+update ends when the second rollout starts
            marks["first_update_s"] = clock.starts[1] - start
        steps = model.num_timesteps
        split = {}
    else:
        from unstable_ppo import PPO
        from unstable_ppo.callbacks import LambdaCallback

        model = PPO(ENV_ID, seed=seed, anneal_lr=False, recurrent=True, hidden_layer_size=LSTM_UNITS,
                    shared_lstm=False, timestep_size=16, **SPEED_HP)
        split = {"rollout_s": 0.0, "update_s": 0.0}

        def add_times(ppo, logs):
            if ppo.num_updates == 1:  # includes compiling the acting and update functions
                marks["first_update_s"] = time.perf_counter() - start
                return
            split["rollout_s"] += logs["rollout_time"]
            split["update_s"] += logs["update_time"]

        start = time.perf_counter()
        model.learn(timesteps, callbacks=[LambdaCallback(on_update_end=lambda update, logs: add_times(model, logs))])
        seconds = time.perf_counter() - start
        steps = model.num_timesteps
    steady = (steps - rollout) / (seconds - marks["first_update_s"])
    return dict(part="speed", runner=runner, seed=seed, timesteps=int(steps), learn_s=seconds,
                steps_per_second=steps / seconds, steady_steps_per_second=steady, **marks, **split)


def spawn(argv, runner):
    """Run one job in a fresh interpreter; returns (result dict or None, stderr)."""
    return harness.spawn(__file__, argv, backend=None if runner == "sb3" else runner,
                         env={"TF_CPP_MIN_LOG_LEVEL": "3"})


def learn_table(results, runners):
    rows = ["| runner | policy | eval return per seed | mean | all ≥ 475 | train s per job |", "|---|---|---|---|---|---|"]
    for runner in runners:
        for policy in ("lstm", "mlp"):
            rs = sorted((r for r in results if r["runner"] == runner and r["policy"] == policy),
                        key=lambda r: r["seed"])
            if not rs:
                continue
            evals = ", ".join(f"{r['seed']}: {r['eval_mean']:.1f}" for r in rs)
            mean = sum(r["eval_mean"] for r in rs) / len(rs)
            solved = "yes" if all(r["eval_mean"] >= SOLVED for r in rs) else "no"
            secs = sum(r["learn_s"] for r in rs) / len(rs)
            rows.append(f"| {runner} | {policy} | {evals} | {mean:.1f} | {solved} | {secs:.0f} |")
    return "\n".join(rows)


def speed_table(results, runners):
    sb3 = {r["seed"]: r for r in results if r["runner"] == "sb3"}
    rows = ["| runner | steps/s | × sb3-contrib | after the 1st update: steps/s | × sb3-contrib "
            "| s per rollout: collect / update |", "|---|---|---|---|---|---|"]
    for runner in runners:
        rs = [r for r in results if r["runner"] == runner]
        if not rs:
            rows.append(f"| {runner} | failed | | | | |")
            continue
        sps = sum(r["steps_per_second"] for r in rs) / len(rs)
        steady = sum(r["steady_steps_per_second"] for r in rs) / len(rs)
        ratio = [r["steps_per_second"] / sb3[r["seed"]]["steps_per_second"] for r in rs if r["seed"] in sb3]
        steady_ratio = [r["steady_steps_per_second"] / sb3[r["seed"]]["steady_steps_per_second"]
                        for r in rs if r["seed"] in sb3]
        fmt = lambda xs: f"{sum(xs) / len(xs):.2f}" if xs else "—"  # noqa: E731
        split = "—"
        if "rollout_s" in rs[0]:
            updates = (rs[0]["timesteps"] // (SPEED_HP["num_envs"] * SPEED_HP["num_steps"])) - 1
            split = (f"{sum(r['rollout_s'] for r in rs) / len(rs) / updates:.3f} / "
                     f"{sum(r['update_s'] for r in rs) / len(rs) / updates:.3f}")
        rows.append(f"| {runner} | {sps:.0f} | {fmt(ratio)} | {steady:.0f} | {fmt(steady_ratio)} | {split} |")
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["learn", "speed"], choices=["learn", "speed"])
    parser.add_argument("--runners", nargs="+", default=RUNNERS, choices=RUNNERS,
                        help="runners (default: all; sb3 means sb3-contrib, speed part only)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--speed_seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--timesteps", type=int, default=20_480, help="steps per speed job (default 20480)")
    parser.add_argument("--json", metavar="OUT", help="write the machine and all raw results to OUT")
    parser.add_argument("--job", nargs=3, metavar=("PART", "RUNNER", "ARG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        part, runner, arg = args.job
        seed = args.seeds[0]
        result = (learn_job(runner, seed, arg == "lstm") if part == "learn" else
                  speed_job(runner, seed, args.timesteps))
        print(json.dumps(result), flush=True)
        return 0

    jobs = []
    if "speed" in args.parts:  # interleaved per seed, so drift on a shared machine hits every runner alike
        jobs += [(["--job", "speed", r, "-", "--seeds", str(s), "--timesteps", str(args.timesteps)], r)
                 for s in args.speed_seeds for r in args.runners]
    if "learn" in args.parts:
        jobs += [(["--job", "learn", r, policy, "--seeds", str(s)], r)
                 for s in args.seeds for r in args.runners if r != "sb3" for policy in ("lstm", "mlp")]

    def name(job, result):
        name = " ".join(job[0][1:4])
        return name if result is None else f"{name} seed {result['seed']}"

    results, failed = harness.run_jobs(
        jobs, lambda job: spawn(*job), name=name,
        summary=lambda r: (f"eval {r['eval_mean']:.1f}" if r["part"] == "learn"
                           else f"{r['steady_steps_per_second']:.0f} steps/s after the 1st update"))
    failures = [name(job, None) for job in failed]

    info = harness.machine()
    if "learn" in args.parts:
        print(f"\n## {ENV_ID}: recurrent against feed-forward, settings of {os.path.basename(CONFIG)}\n")
        print(learn_table([r for r in results if r["part"] == "learn"], args.runners))
    if "speed" in args.parts:
        print(f"\n## {ENV_ID} throughput against sb3-contrib RecurrentPPO, {args.timesteps} steps per job\n")
        print(speed_table([r for r in results if r["part"] == "speed"], args.runners))
    print("\n" + harness.machine_line(info))
    if failures:
        print("\nfailed jobs: " + ", ".join(failures))
    if args.json:
        harness.write_json(args.json, dict(machine=info, args={k: v for k, v in vars(args).items() if k != "job"},
                                           speed_hyperparameters=SPEED_HP, results=results, failures=failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
