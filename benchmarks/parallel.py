"""Parallelism benchmark: gathering worker processes, and Ray gathering actors on one machine.

(a) BreakoutNoFrameskip-v4, 8 envs x 128 steps, the Atari PPO settings (as benchmarks/atari.py),
    `--vec_env=sync` pipeline: `gather_per_worker=1` (every env in the learner's process) against
    `gather_per_worker=2` (two worker processes of 4 envs each), side by side in one process,
    alternating M=1, M=2 per repetition so machine drift hits both alike.
(a') Env stepping alone (no acting, no learner) of the same 8 Breakout envs: in-process, in
    gathering workers, and in two processes with no pipes between them (the ideal M=2).
(a'') A prototype of overlapped acting (act for one worker's envs while the other steps),
    against lockstep, acting and stepping only: measured to decide whether to build it.
(b) A scaling table over 1, 2 and 4 Ray actors on a local Ray instance on 127.0.0.1, next to
    the in-process run with the same settings, for CartPole-v1 (8 envs x 128 steps, 64-64 MLP:
    acting-bound) and Breakout (as in (a): update-bound).

Every figure is steady state: the first rollout+update (compilation, actors importing Keras)
is left out. Per configuration: steps/s, the share of the wall time spent in the rollout and in
the update, and for Ray the actors' own collection time (the slowest actor per rollout), so the
rest of the rollout time is Ray's overhead (weights out, trajectories back, the barrier), and the
bytes moved per rollout.

    python benchmarks/parallel.py                         # torch backend, 3 updates, 2 repeats
    python benchmarks/parallel.py --backend jax --updates 2 --repeats 1 --parts gather
    python benchmarks/parallel.py --parts stepping        # env stepping alone: M=1, 2, 4, ideal
    python benchmarks/parallel.py --parts overlap         # prototype: act for one worker while the other steps
    python benchmarks/parallel.py --json benchmarks/results/parallel_DATE.json
"""

import argparse
import os
import sys
import time

import harness

ROOT = harness.ROOT
sys.path.insert(0, ROOT)  # this checkout's unstable_ppo: everything here runs in this process (and Ray's actors)

ATARI = "BreakoutNoFrameskip-v4"
ATARI_HP = {"num_envs": 8, "num_steps": 128, "num_epochs": 4, "batch_size": 256, "lr": 2.5e-4,
            "clip_range": 0.1, "ent_coef": 0.01, "vf_coef": 0.5, "max_grad_norm": 0.5, "gamma": 0.99,
            "gae_lambda": 0.95}
CARTPOLE = "CartPole-v1"
CARTPOLE_HP = {"num_envs": 8, "num_steps": 128, "num_epochs": 4, "batch_size": 256}


def measure(ppo, updates, gatherer=None):
    """Steady-state figures of `updates` updates after one warm-up update."""
    logs, actor_s = [], []

    def record(ppo, update_logs):
        logs.append(dict(update_logs))
        if gatherer is not None:
            actor_s.append(gatherer.timings[-1])

    rollout = ppo.hp.num_envs * ppo.hp.num_steps
    from unstable_ppo.callbacks import LambdaCallback

    ppo.learn((updates + 1) * rollout, callbacks=[LambdaCallback(on_update_end=lambda update, logs: record(ppo, logs))])
    steady = logs[1:]
    wall = sum(l["rollout_time"] + l["update_time"] for l in steady)
    steps = ppo.num_timesteps - logs[0]["num_timesteps"]
    out = {
        "steps_per_second": steps / wall,
        "rollout_share": sum(l["rollout_time"] for l in steady) / wall,
        "update_share": sum(l["update_time"] for l in steady) / wall,
        "rollout_s": sum(l["rollout_time"] for l in steady) / len(steady),
        "update_s": sum(l["update_time"] for l in steady) / len(steady),
        "rollout_steps_per_second": steps / sum(l["rollout_time"] for l in steady),
        "updates": len(steady),
    }
    if gatherer is not None:
        out["actor_collect_s"] = sum(actor_s[1:]) / len(steady)
        out["ray_overhead_s"] = out["rollout_s"] - out["actor_collect_s"]
    return out


def gather_part(updates, repeats):
    from unstable_ppo import PPO

    results = []
    for rep in range(repeats):
        for m in (1, 2):
            ppo = PPO(ATARI, seed=rep, gather_per_worker=m, **ATARI_HP)
            try:
                r = measure(ppo, updates)
            finally:
                ppo.env.close()
            r.update(gather_per_worker=m, repeat=rep)
            results.append(r)
            print(f"  gather_per_worker={m} repeat {rep}: {r['steps_per_second']:.1f} steps/s "
                  f"(rollout {r['rollout_s']:.2f} s, update {r['update_s']:.2f} s)", flush=True)
    return results


def _step_envs(env, steps):
    """ms per vector step of `steps` NOOP steps, after 10 unmeasured ones."""
    import numpy as np

    env.reset(seed=0)
    actions = np.zeros(env.num_envs, np.int64)
    for _ in range(10):
        env.step(actions)
    start = time.perf_counter()
    for _ in range(steps):
        env.step(actions)
    return 1e3 * (time.perf_counter() - start) / steps


def _step_block(num_envs, steps):
    """In a fresh process: one in-process vector env of `num_envs` Breakout envs, ms per step."""
    from unstable_ppo.envs import make_vec_env

    env = make_vec_env(ATARI, num_envs)
    try:
        return _step_envs(env, steps)
    finally:
        env.close()


def stepping_part(steps):
    """Env stepping alone, no acting: what a gathering worker round trip costs on top of the envs.

    Rows: 8 envs in this process (M=1); 4 envs in this process (a worker's share); two
    processes stepping 4 envs each at the same time, with no pipes (the ideal M=2); and
    `GatherVectorEnv` with M=2 and M=4 (the same plus the command/result round trips).
    """
    import multiprocessing

    from unstable_ppo.envs import make_vec_env

    rows = [{"setup": "8 envs in one process (M=1)", "ms_per_step": _step_block(8, steps)},
            {"setup": "4 envs in one process", "ms_per_step": _step_block(4, steps)}]
    with multiprocessing.get_context("forkserver").Pool(2) as pool:
        both = pool.starmap(_step_block, [(4, steps), (4, steps)])
    rows.append({"setup": "2 processes x 4 envs at once, no pipes (ideal M=2)", "ms_per_step": max(both)})
    for m in (2, 4):
        env = make_vec_env(ATARI, 8, gather_per_worker=m)
        try:
            rows.append({"setup": f"GatherVectorEnv, M={m}", "ms_per_step": _step_envs(env, steps)})
        finally:
            env.close()
    for row in rows:
        print(f"  {row['setup']}: {row['ms_per_step']:.2f} ms per vector step", flush=True)
    return rows


def overlap_part(repeats, steps=128):
    """A prototype of overlapped acting, measured before building it: is it worth it here?

    Acting and env stepping only (no buffer, no update), ms per vector step of 8 Breakout envs:
    M=1 lockstep (act on 8, step 8 in-process); M=2 lockstep (what `gather_per_worker=2` does);
    M=2 overlapped: act for worker w's 4 envs while the other worker steps, through
    `GatherVectorEnv`'s own pipes (private methods: this is a measurement, not a feature).
    """
    import numpy as np

    from unstable_ppo import PPO

    one = PPO(ATARI, seed=0, num_envs=8, num_steps=steps)
    two = PPO(ATARI, seed=0, num_envs=8, num_steps=steps, gather_per_worker=2)
    gather = two.env
    while not hasattr(gather, "pipes"):
        gather = gather.env
    act = one.model.make_act_function()
    noise = np.full((8, 1), 0.5, np.float32)

    def actions(obs):
        return act(np.asarray(obs), noise[: len(obs)])[0].astype(np.int64).ravel()

    def lockstep(env):
        obs, _ = env.reset(seed=0)
        start = time.perf_counter()
        for _ in range(steps):
            obs = env.step(actions(obs))[0]
        return 1e3 * (time.perf_counter() - start) / steps

    def overlapped(env):
        obs, _ = env.reset(seed=0)
        blocks = [slice(block[0], block[-1] + 1) for block in env.indices]
        start = time.perf_counter()
        for w, block in enumerate(blocks):
            env._send(w, ("step", actions(obs[block])), "step")
        for t in range(steps):
            for w, block in enumerate(blocks):
                env._receive(w, "step")
                if t < steps - 1:
                    env._send(w, ("step", actions(env._obs[block].copy())), "step")
        return 1e3 * (time.perf_counter() - start) / steps

    rows = []
    try:
        for rep in range(repeats):
            row = {"repeat": rep, "m1_lockstep_ms": lockstep(one.env), "m2_lockstep_ms": lockstep(two.env),
                   "m2_overlapped_ms": overlapped(gather)}
            rows.append(row)
            print(f"  repeat {rep}: M=1 lockstep {row['m1_lockstep_ms']:.2f} ms per step, M=2 lockstep "
                  f"{row['m2_lockstep_ms']:.2f}, M=2 overlapped {row['m2_overlapped_ms']:.2f}", flush=True)
    finally:
        one.env.close()
        two.env.close()
    return rows


def ray_part(env_ids, updates, actor_counts):
    import numpy as np
    import ray

    from unstable_ppo import PPO
    from unstable_ppo.ray_gather import RayGatherer

    import keras

    def run(env_id, actors):
        hp = ATARI_HP if env_id == ATARI else CARTPOLE_HP
        ppo = PPO(env_id, seed=0, **hp)
        gatherer = None
        if actors:
            gatherer = ppo.gatherer = RayGatherer(ppo, env_id, actors, seed=0)
        try:
            r = measure(ppo, updates, gatherer)
        finally:
            if gatherer is not None:
                gatherer.close()
            ppo.env.close()
        r.update(env_id=env_id, actors=actors,
                 weights_bytes=int(sum(np.asarray(w).nbytes for w in ppo.model.get_weights())))
        label = f"{actors} Ray actor(s)" if actors else "in-process"
        print(f"  {env_id} {label}: {r['steps_per_second']:.1f} steps/s, rollout {r['rollout_share']:.0%} "
              f"/ update {r['update_share']:.0%}", flush=True)
        return r

    # The in-process baselines run before Ray starts: a fresh Ray instance spends its first
    # seconds starting idle worker processes, which would slow whatever runs next to it.
    baselines = {env_id: run(env_id, 0) for env_id in env_ids}
    ray.init(address="local", _node_ip_address="127.0.0.1", num_cpus=max(actor_counts), include_dashboard=False,
             log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3",
                                                             "KERAS_BACKEND": keras.backend.backend()}})
    results = []
    try:
        for env_id in env_ids:
            results.append(baselines[env_id])
            for actors in actor_counts:
                results.append(run(env_id, actors))
    finally:
        ray.shutdown()
    return results


def trajectory_bytes(env_id, hp):
    """Bytes of one rollout's buffer arrays (what the actors send back, all together)."""
    from unstable_ppo import PPO

    ppo = PPO(env_id, seed=0, **hp)
    buffer = ppo.make_buffer()
    ppo.env.close()
    return int(sum(v.nbytes for v in buffer.arrays().values()))


def gather_table(results):
    rows = ["| repeat | gather_per_worker=1 steps/s | gather_per_worker=2 steps/s | speedup "
            "| rollout-only steps/s, M=1 → M=2 |", "|---|---|---|---|---|"]
    for rep in sorted({r["repeat"] for r in results}):
        one = next(r for r in results if r["repeat"] == rep and r["gather_per_worker"] == 1)
        two = next(r for r in results if r["repeat"] == rep and r["gather_per_worker"] == 2)
        rows.append(f"| {rep} | {one['steps_per_second']:.1f} | {two['steps_per_second']:.1f} | "
                    f"{two['steps_per_second'] / one['steps_per_second']:.2f}× | "
                    f"{one['rollout_steps_per_second']:.0f} → {two['rollout_steps_per_second']:.0f} "
                    f"({two['rollout_steps_per_second'] / one['rollout_steps_per_second']:.2f}×) |")
    return rows


def ray_table(results):
    rows = ["| env | gathering | steps/s | rollout share | update share | rollout s | actors' own collect s "
            "| Ray overhead s |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        label = f"{r['actors']} Ray actor{'s' if r['actors'] > 1 else ''}" if r["actors"] else "in-process"
        rows.append(f"| {r['env_id']} | {label} | {r['steps_per_second']:.1f} | {r['rollout_share']:.0%} | "
                    f"{r['update_share']:.0%} | {r['rollout_s']:.2f} | "
                    f"{r.get('actor_collect_s', float('nan')):.2f} | {r.get('ray_overhead_s', float('nan')):.2f} |")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="torch", choices=["tensorflow", "jax", "torch"])
    parser.add_argument("--updates", type=int, default=3, help="measured updates per configuration")
    parser.add_argument("--repeats", type=int, default=2, help="repetitions of the gather comparison")
    parser.add_argument("--parts", nargs="+", default=["gather", "ray"], choices=["gather", "stepping", "overlap", "ray"])
    parser.add_argument("--ray_envs", nargs="+", default=[CARTPOLE, ATARI])
    parser.add_argument("--actors", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    report = {"machine": harness.machine(), "backend": args.backend, "updates": args.updates}
    if "gather" in args.parts:
        print(f"(a) {ATARI}, 8 envs, gathering worker processes, {args.backend}:", flush=True)
        report["gather"] = gather_part(args.updates, args.repeats)
        print("\n".join(gather_table(report["gather"])))
    if "stepping" in args.parts:
        print(f"(a') {ATARI}: env stepping alone, 8 envs, in-process against gathering workers:", flush=True)
        report["stepping"] = stepping_part(256)
    if "overlap" in args.parts:
        print(f"(a'') {ATARI}: acting and stepping only, lockstep against overlapped (prototype):", flush=True)
        report["overlap"] = overlap_part(args.repeats)
    if "ray" in args.parts:
        print(f"(b) Ray gathering actors on one machine, {args.backend}:", flush=True)
        report["ray"] = ray_part(args.ray_envs, args.updates, args.actors)
        report["trajectory_bytes"] = {e: trajectory_bytes(e, ATARI_HP if e == ATARI else CARTPOLE_HP)
                                      for e in args.ray_envs}
        print("\n".join(ray_table(report["ray"])))
        print("bytes per rollout (all actors' trajectories): "
              + ", ".join(f"{e} {b / 1e6:.2f} MB" for e, b in report["trajectory_bytes"].items()))
    if args.json:
        harness.write_json(args.json, report)


if __name__ == "__main__":
    main()
