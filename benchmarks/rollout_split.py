"""Where a CartPole rollout's time goes, per backend: env stepping, acting, the loop's own work, the update.

Steady state of `learn()` with the issue-3 settings (8 envs x 128 steps, 4 epochs, minibatch
256): `env.step` and the compiled acting function are wrapped with timers, and "loop" is the
rest of `collect_rollout` (buffer writes, checks, GAE). Each backend runs in a fresh process.

    python benchmarks/rollout_split.py                    # every installed backend
    python benchmarks/rollout_split.py --backends jax --updates 40
"""

import argparse
import os
import sys
import time

import harness

BACKENDS = harness.keras_backends(("tensorflow", "jax", "torch"))


def job(updates):
    from unstable_ppo import PPO

    ppo = PPO("CartPole-v1", seed=0, num_envs=8, num_steps=128, num_epochs=4, batch_size=256, lr=2.5e-4)
    timers = {"step": 0.0, "act": 0.0}
    env_step = ppo.env.step

    def step(actions):
        t = time.perf_counter()
        out = env_step(actions)
        timers["step"] += time.perf_counter() - t
        return out

    ppo.env.step = step
    make_act = ppo.model.make_act_function

    def timed_make_act(*args, **kwargs):
        act = make_act(*args, **kwargs)

        def timed(*inputs):
            t = time.perf_counter()
            out = act(*inputs)
            timers["act"] += time.perf_counter() - t
            return out

        return timed

    ppo.model.make_act_function = timed_make_act
    steps = ppo.hp.num_envs * ppo.hp.num_steps
    ppo.learn(3 * steps)  # compilation and warm-up, not measured
    timers.update(step=0.0, act=0.0)
    logs = []
    from unstable_ppo.callbacks import LambdaCallback

    ppo.learn(updates * steps, callbacks=[LambdaCallback(on_update_end=lambda update, l: logs.append(dict(l)))])
    n = len(logs)
    rollout = sum(l["rollout_time"] for l in logs) / n
    update = sum(l["update_time"] for l in logs) / n
    step_ms, act_ms = 1e3 * timers["step"] / n, 1e3 * timers["act"] / n
    print(f"| {os.environ['KERAS_BACKEND']} | {step_ms:.1f} ms | {act_ms:.1f} ms | {1e3 * rollout - step_ms - act_ms:.1f} ms "
          f"| {1e3 * update:.1f} ms | {1e3 * (rollout + update):.1f} ms | {steps / (rollout + update):.0f} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=BACKENDS, choices=BACKENDS)
    parser.add_argument("--updates", type=int, default=20, help="measured updates per backend")
    parser.add_argument("--job", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        return job(args.updates)
    print("| backend | env stepping | acting (129 calls + bootstraps) | loop | update | total | steps/s |")
    print("|---|---|---|---|---|---|---|", flush=True)
    for backend in args.backends:  # each job prints its own row
        harness.spawn_printing(__file__, ["--job", f"--updates={args.updates}"], backend=backend,
                               env={"TF_CPP_MIN_LOG_LEVEL": "3"})


if __name__ == "__main__":
    sys.exit(main())
