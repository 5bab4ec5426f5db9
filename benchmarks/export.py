"""Exported policies (issue 19): artifact size and the latency of one action, against `PPO.predict`.

For three policies — CartPole-v1's 64-64 MLP, Breakout's Nature CNN and an LSTM (128) policy on
CartPoleNoVel-v1, untrained and seeded — it measures, in one run:

- per format (ONNX in onnxruntime, TF SavedModel in TensorFlow, LiteRT in TensorFlow's
  `tf.lite.Interpreter`): the export's wall time, the artifact's size and the latency of one
  batch-1 call that returns the env's action (median of `--calls`, 1,000 by default);
- per Keras backend: the latency of `PPO.predict(obs, deterministic=True)` on one observation,
  the same way.

The first job (TensorFlow) builds and saves the three models, exports them and times the
artifacts; one job per backend then loads the saved models and times `predict`. Each job runs
in a fresh interpreter (see harness.py). Recurrent calls carry the LSTM state from call to call.

    python benchmarks/export.py
    python benchmarks/export.py --backends jax --calls 200 --json /tmp/export.json
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import harness

BACKENDS = harness.keras_backends(("tensorflow", "jax", "torch"))
FORMATS = ("onnx", "tf_saved_model", "litert")
ARTIFACT = {"onnx": "policy.onnx", "tf_saved_model": "saved_model", "litert": "policy.tflite"}
# name: (env id, PPO settings)
POLICIES = {
    "CartPole MLP 64-64": ("CartPole-v1", {}),
    "Breakout Nature CNN": ("BreakoutNoFrameskip-v4", {}),
    "CartPoleNoVel LSTM 128": ("CartPoleNoVel-v1", {"recurrent": True, "hidden_layer_size": 128}),
}


def median_us(call, inputs, calls, warmup=20):
    """The median wall time of `call(x)` over `calls` calls, cycling through `inputs`, in µs."""
    for i in range(warmup):
        call(inputs[i % len(inputs)])
    times = []
    for i in range(calls):
        x = inputs[i % len(inputs)]
        start = time.perf_counter()
        call(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def sample_obs(space, n=100):
    space.seed(0)
    return [space.sample() for _ in range(n)]


def size_bytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def artifact_caller(path, format, recurrent, state_size):
    """One env's action from the artifact: `call(obs)`, the recurrent state kept between calls."""
    import numpy as np

    state = {"state": np.zeros((1, state_size), np.float32), "episode_start": np.zeros(1, np.float32)}
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        run = lambda feed: dict(zip(("action", "next_state"), session.run(None, feed)))  # noqa: E731
    elif format == "tf_saved_model":
        import tensorflow as tf

        fn = tf.saved_model.load(path).signatures["serving_default"]
        run = lambda feed: {k: v.numpy() for k, v in fn(**feed).items()}  # noqa: E731
    else:
        import warnings

        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
            runner = tf.lite.Interpreter(model_path=path).get_signature_runner("serving_default")
        run = lambda feed: runner(**feed)  # noqa: E731

    def call(obs):
        feed = {"obs": obs[None]}
        if recurrent:
            feed.update(state)
        out = run(feed)
        if recurrent:
            state["state"] = out["next_state"]
        return out["action"][0]

    return call


def export_job(workdir, calls):
    """TensorFlow: build, save and export the policies; time the artifacts."""
    import numpy as np

    from unstable_ppo import PPO

    rows = []
    for name, (env_id, settings) in POLICIES.items():
        ppo = PPO(env_id, seed=0, num_envs=1, num_steps=128, batch_size=128, **settings)
        model_dir = os.path.join(workdir, name.replace(" ", "_"))
        ppo.save(os.path.join(model_dir, "model"))
        obs = [np.asarray(o, ppo.model.obs_dtype) for o in sample_obs(ppo.observation_space)]
        for format in FORMATS:
            os.makedirs(os.path.join(model_dir, format))
            path = os.path.join(model_dir, format, ARTIFACT[format])
            start = time.perf_counter()
            ppo.export(path, format)
            export_s = time.perf_counter() - start
            call = artifact_caller(path, format, ppo.recurrent, ppo.model.state_size)
            rows.append({"policy": name, "runner": format, "export_s": export_s, "size_bytes": size_bytes(path),
                         "median_us": median_us(call, obs, calls)})
    print(json.dumps({"rows": rows}))


def predict_job(workdir, calls):
    """One backend: `PPO.predict` on one observation, for each saved policy."""
    import keras
    import numpy as np

    from unstable_ppo import PPO

    rows = []
    for name in POLICIES:
        ppo = PPO.load(os.path.join(workdir, name.replace(" ", "_"), "model"))
        obs = sample_obs(ppo.observation_space)
        if ppo.recurrent:
            carried = {"state": ppo.initial_state(1)[0]}

            def call(o):
                action, carried["state"] = ppo.predict(o, carried["state"], False, deterministic=True)
                return action
        else:
            def call(o):
                return ppo.predict(o, deterministic=True)[0]
        size = os.path.getsize(os.path.join(workdir, name.replace(" ", "_"), "model", "model.keras"))
        rows.append({"policy": name, "runner": f"predict ({keras.backend.backend()})", "size_bytes": size,
                     "median_us": median_us(lambda o: call(np.asarray(o)), obs, calls)})
    print(json.dumps({"rows": rows}))


def table(rows):
    lines = ["| policy | runner | artifact | export | one action (batch 1, median) |", "|---|---|---|---|---|"]
    for r in rows:
        export = f"{r['export_s']:.1f} s" if "export_s" in r else "—"
        size = f"{r['size_bytes'] / 1e3:.0f} kB" if r["size_bytes"] < 1e6 else f"{r['size_bytes'] / 1e6:.1f} MB"
        if r["runner"].startswith("predict"):
            size += " (model.keras)"
        lines.append(f"| {r['policy']} | {r['runner']} | {size} | {export} | {r['median_us']:.0f} µs |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=BACKENDS, choices=BACKENDS,
                        help="the backends whose PPO.predict is timed (the export itself always runs on TensorFlow)")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--job", nargs=2, metavar=("KIND", "WORKDIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        kind, workdir = args.job
        return (export_job if kind == "export" else predict_job)(workdir, args.calls)

    env = {"TF_CPP_MIN_LOG_LEVEL": "3"}
    load_before = os.getloadavg()  # other work on a shared machine shows here
    with tempfile.TemporaryDirectory(prefix="export_bench_") as workdir:
        jobs = [("export", "tensorflow")] + [("predict", backend) for backend in args.backends]
        results, failed = harness.run_jobs(
            jobs, lambda job: harness.spawn(__file__, ["--job", job[0], workdir, "--calls", args.calls],
                                            backend=job[1], env=env),
            name=lambda job, _: f"{job[0]} on {job[1]}", summary=lambda r: f"{len(r['rows'])} rows")
    if failed:
        sys.exit(1)
    rows = [row for result in results for row in result["rows"]]
    rows.sort(key=lambda r: list(POLICIES).index(r["policy"]))  # stable: formats, then backends
    info = harness.machine(harness.PACKAGES + ("onnxruntime", "tf2onnx", "onnx"))
    print(table(rows))
    print(harness.machine_line(info))
    print(f"load average (1, 5, 15 min): before {load_before}, after {os.getloadavg()}")
    if args.json:
        harness.write_json(args.json, {"machine": info, "calls": args.calls, "rows": rows,
                                       "load_average": {"before": load_before, "after": os.getloadavg()}})


if __name__ == "__main__":
    main()
