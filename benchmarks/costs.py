"""Where the time goes: per-call costs of acting and training on each Keras backend.

For the CartPole setting (8 envs, 1024-step rollouts, 4 epochs of minibatch 256) it
measures, side by side in one process per backend:

- acting, batch 8: `model.predict`, an eager `model(x)` call, and the compiled acting
  function the rollout loop uses;
- one rollout's update (4 epochs x 4 minibatches): Keras `fit()` on the rollout,
  against the compiled per-epoch update function PPO uses. Both run the same
  `train_step`.

    python benchmarks/costs.py                    # every installed backend
    python benchmarks/costs.py --backends jax
"""

import argparse
import json
import sys
import time

import harness

BACKENDS = harness.keras_backends(("tensorflow", "jax", "torch"))


def best_time(fn, repeats, rounds=5, warmup=3):
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def job():
    import keras
    import numpy as np

    from unstable_ppo import PPO
    from unstable_ppo.buffer import RolloutBuffer

    ppo = PPO("CartPole-v1", seed=0)
    model = ppo.model
    buffer = RolloutBuffer(128, 8, (4,), np.float32, (), np.int32)
    ppo.collector.reset()
    ppo.collect_rollout(buffer)
    batch = buffer.training_batch()
    obs = batch["obs"][:8]
    noise = np.random.default_rng(0).uniform(size=(8, 2)).astype(np.float32)
    act = model.make_act_function()
    update = model.make_update_function()
    rng = np.random.default_rng(0)

    def ppo_update():
        for _ in range(4):
            update(batch, rng.permutation(1024).reshape(4, 256))

    results = {
        "backend": keras.backend.backend(),
        "act_predict_us": best_time(lambda: model.predict(obs, verbose=0), 20) * 1e6,
        "act_eager_us": best_time(lambda: keras.ops.convert_to_numpy(model(obs)[0]), 100) * 1e6,
        "act_compiled_us": best_time(lambda: act(obs, noise), 500) * 1e6,
        "update_fit_ms": best_time(
            lambda: model.fit(batch, batch_size=256, epochs=4, shuffle=True, verbose=0), 3
        ) * 1e3,
        "update_compiled_ms": best_time(ppo_update, 10) * 1e3,
    }
    print(json.dumps(results))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=BACKENDS, choices=BACKENDS)
    parser.add_argument("--job", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        return job()

    def stop_at_a_failure(i, n, backend, result, output):
        if result is None:
            print(f"{backend} failed:\n{output[-2000:]}")
            sys.exit(1)

    rows, _ = harness.run_jobs(args.backends, lambda backend: harness.spawn(
        __file__, ["--job"], backend=backend, env={"TF_CPP_MIN_LOG_LEVEL": "3"}), progress=stop_at_a_failure)
    print("| backend | act: predict | act: eager call | act: compiled | update per rollout: fit() | update per rollout: compiled |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backend']} | {r['act_predict_us']:.0f} µs | {r['act_eager_us']:.0f} µs | "
              f"{r['act_compiled_us']:.0f} µs | {r['update_fit_ms']:.1f} ms | {r['update_compiled_ms']:.1f} ms |")


if __name__ == "__main__":
    main()
