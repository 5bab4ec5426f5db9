"""Pendulum-v1 benchmark of the first seed's options: the clipped loss against the adaptive KL loss.

Every variant trains with the bundled `unstable_ppo/configs/Pendulum-v1.flags` settings
(100k steps by default), then plays 10 deterministic episodes on a fresh env. Variants:

- `clipped`: the flagfile as it is (clipped surrogate);
- `kl`: the same with `use_kl_loss=True` (β and the learning-rate multiplier servoed to kl_target);
- `clipped+eta`: the clipped loss with the out-of-bounds penalty `eta` (default 1.0).

For each run the table also gives the out-of-bounds share over the last fifth of training:
sampled actions outside the Box (what the env receives clipped), and Gaussian means outside it
(what `eta` penalizes). Each job runs in a fresh subprocess on one Keras backend.

    python benchmarks/pendulum.py                                  # jax, seeds 0 1 2, all variants
    python benchmarks/pendulum.py --backend torch --seeds 0 --variants clipped kl --timesteps 20000
"""

import argparse
import json
import sys
import time

import harness

ENV_ID = "Pendulum-v1"
VARIANTS = ("clipped", "kl", "clipped+eta")
EVAL_EPISODES = 10
TARGET = -200.0


def flagfile_hyperparameters():
    """The bundled Pendulum flagfile, as PPO keyword arguments."""
    from unstable_ppo.config import Hyperparameters

    defaults = Hyperparameters()
    kwargs = {}
    for name, value in harness.read_flagfile(harness.flagfile(ENV_ID)).items():
        if not hasattr(defaults, name):
            continue  # runner-only flags: total_timesteps, eval_interval, ...
        default = getattr(defaults, name)
        if isinstance(default, bool):
            kwargs[name] = value.lower() in ("1", "true", "yes")
        elif isinstance(default, int):
            kwargs[name] = int(value)
        elif isinstance(default, float) or default is None:
            kwargs[name] = float(value)
        else:
            kwargs[name] = value
    return kwargs


def run_job(variant, seed, timesteps, eta):
    """Train and evaluate one variant in this process; print one JSON line."""
    import numpy as np

    from unstable_ppo import PPO

    class CountingPPO(PPO):
        """Counts out-of-bounds actions and means in every rollout, as the buffer stores them."""

        def collect_rollout(self, buffer):
            steps = super().collect_rollout(buffer)
            low, high = self.action_space.low.ravel(), self.action_space.high.ravel()
            actions = buffer.actions.reshape(-1, len(low))
            mean = self._policy_params({"obs": buffer.obs.reshape(-1, *buffer.obs.shape[2:])})[:, : len(low)]
            self.oob.append((np.mean(np.any((actions < low) | (actions > high), axis=1)),
                             np.mean(np.any((mean < low) | (mean > high), axis=1))))
            return steps

    hp = flagfile_hyperparameters()
    if variant == "kl":
        hp["use_kl_loss"] = True
    if variant == "clipped+eta":
        hp["eta"] = eta
    model = CountingPPO(ENV_ID, seed=seed, **hp)
    model.oob = []
    start = time.perf_counter()
    model.learn(timesteps)
    seconds = time.perf_counter() - start
    result = model.evaluate(n_episodes=EVAL_EPISODES, deterministic=True)
    tail = model.oob[-max(1, len(model.oob) // 5):]
    print(json.dumps(dict(
        variant=variant, seed=seed, timesteps=model.num_timesteps, learn_s=seconds,
        eval_mean=result["mean_return"], eval_std=result["std_return"],
        oob_actions=float(np.mean([a for a, _ in tail])), oob_means=float(np.mean([m for _, m in tail])),
        kl_beta=model.logs.get("kl_beta"), lr_multiplier=model.logs.get("lr_multiplier"),
        hyperparameters=hp,
    )), flush=True)


def spawn(variant, seed, args):
    """Run one job in a fresh interpreter; returns (result dict or None, stderr)."""
    return harness.spawn(__file__, ["--job", variant, "--seeds", seed, "--timesteps", args.timesteps, "--eta", args.eta],
                         backend=args.backend, env={"TF_CPP_MIN_LOG_LEVEL": "3"})


def table(results, variants):
    rows = ["| variant | eval return per seed | mean | seeds ≥ −200 | OOB sampled actions | OOB means "
            "| final β, lr multiplier | train s |",
            "|---|---|---|---|---|---|---|---|"]
    for variant in variants:
        rs = sorted((r for r in results if r["variant"] == variant), key=lambda r: r["seed"])
        if not rs:
            rows.append(f"| {variant} | failed | | | | | | |")
            continue
        evals = ", ".join(f"{r['seed']}: {r['eval_mean']:.1f}" for r in rs)
        mean = sum(r["eval_mean"] for r in rs) / len(rs)
        good = sum(r["eval_mean"] >= TARGET for r in rs)
        oob_a = sum(r["oob_actions"] for r in rs) / len(rs)
        oob_m = sum(r["oob_means"] for r in rs) / len(rs)
        servo = "—"
        if rs[0]["kl_beta"]:
            servo = ", ".join(f"{r['kl_beta']:.3g}/{r['lr_multiplier']:.3g}" for r in rs)
        secs = sum(r["learn_s"] for r in rs) / len(rs)
        rows.append(f"| {variant} | {evals} | {mean:.1f} | {good}/{len(rs)} | {oob_a:.1%} | {oob_m:.1%} "
                    f"| {servo} | {secs:.0f} |")
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=100_000,
                        help="training steps per job (default 100000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--backend", default="jax", choices=("tensorflow", "jax", "torch"))
    parser.add_argument("--eta", type=float, default=1.0, help="eta of the clipped+eta variant (default 1.0)")
    parser.add_argument("--json", metavar="OUT", help="write all raw results to OUT")
    # internal: one job in this process
    parser.add_argument("--job", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        return run_job(args.job, args.seeds[0], args.timesteps, args.eta)

    jobs = [(v, s) for s in args.seeds for v in args.variants]
    results, failures = harness.run_jobs(
        jobs, lambda job: spawn(*job, args), name=lambda job, result: f"{job[0]} seed {job[1]}",
        summary=lambda r: f"eval {r['eval_mean']:.1f}, {r['learn_s']:.0f} s")
    info = harness.machine()
    cpu, date = info["cpu"], info["date"]
    print(f"\n## {ENV_ID}, {args.timesteps} steps, backend {args.backend}, seeds "
          f"{' '.join(map(str, args.seeds))}, eta {args.eta} in clipped+eta\n")
    print(table(results, args.variants))
    print("\n" + harness.machine_line(info, versions=False))
    if results:
        print("settings: " + json.dumps(results[0]["hyperparameters"]))
    if failures:
        print("\nfailed jobs: " + ", ".join(f"{v} seed {s}" for v, s in failures))
    if args.json:
        harness.write_json(args.json, dict(date=date, cpu=cpu, args={k: v for k, v in vars(args).items() if k != "job"},
                                           results=results, failures=failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
