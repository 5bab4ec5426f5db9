"""Atari learning runs with the runner's defaults: does the mission's command learn, and how fast?

Each run is the real runner, `python -m unstable_ppo.run --env_id=ID --total_timesteps=N --seed=S`,
with the bundled Atari flagfile (8 envs x 128 steps, 4 epochs, minibatch 256, lr 2.5e-4 and the
clip range 0.1 annealed over N, ent 0.01; ale-py's C++ vector env; an evaluation of 10 whole games
with the stochastic policy every 200 updates). `run` starts them (all at once: on 2 cores two runs
side by side gave ~1.9x the steps/s of one), `collect` reads finished or stopped run directories
into one results JSON, and `plot` draws their learning curves with `unstable_ppo.plot`.

    python benchmarks/atari_learning.py run --logroot /tmp/atari BreakoutNoFrameskip-v4:2000000 \
        BreakoutNoFrameskip-v0:1000000 PongNoFrameskip-v4:2000000
    python benchmarks/atari_learning.py collect --logroot /tmp/atari --json benchmarks/results/atari_learning_DATE.json
    python benchmarks/atari_learning.py plot --logroot /tmp/atari --png benchmarks/results/atari_learning_DATE.png

Per run the JSON holds: the budget and steps reached (a stopped run has no final report), wall
time and steps/s, the evaluations' share of the wall time, every intermediate evaluation (steps,
mean, std of 10 stochastic games), the final report (latest and best, 10 games each), and the
training games' real score (Monitor CSVs, whole games) averaged over the last 100 games at every
250k steps.
"""

import argparse
import csv
import glob
import json
import os
import re
import subprocess
import sys

import atari_soak
import harness

EVAL_LINE = re.compile(r"eval at (\d+) steps: mean_return=(-?[\d.]+) std_return=([\d.]+)"
                       r"(?: mean_length=\d+ \(([\d.]+) s\))?")


def run_dir(logroot, env_id, steps):
    return os.path.join(logroot, f"{env_id}_{steps // 1000}k")


def start(args):
    procs = []
    for spec in args.runs:
        env_id, steps = spec.split(":")
        logdir = run_dir(args.logroot, env_id, int(steps))
        os.makedirs(args.logroot, exist_ok=True)
        command = [sys.executable, "-m", "unstable_ppo.run", f"--env_id={env_id}", f"--total_timesteps={steps}",
                   f"--seed={args.seed}", f"--logdir={logdir}", "--verbose=2", *args.extra]
        out = open(logdir + ".out", "w")
        procs.append((spec, subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                             env=harness.job_env(), cwd=harness.ROOT)))
        print(f"started {spec}: {' '.join(command[1:])} > {logdir}.out")
    for spec, proc in procs:
        print(f"{spec}: exit {proc.wait()}")


def training_score(logdir, every=250_000, last=100):
    """The training games' mean real score over the last `last` games, at every `every` agent steps.

    Monitor lengths count frames (as in SB3): agent steps = frames / 4 per env, summed over envs
    in the order the games ended (by wall time).
    """
    games = []
    for path in glob.glob(os.path.join(logdir, "monitor", "*.monitor.csv")):
        with open(path) as f:
            t_start = json.loads(f.readline()[1:])["t_start"]
            for row in csv.DictReader(f):
                games.append((t_start + float(row["t"]), float(row["r"]), int(row["l"]) // 4))
    games.sort()
    points, steps, returns, mark = [], 0, [], every
    for _, ret, agent_steps in games:
        steps += agent_steps
        returns.append(ret)
        while steps >= mark:
            window = returns[-last:]
            points.append({"steps": mark, "mean_return": round(sum(window) / len(window), 2), "games": len(window)})
            mark += every
    return points


def collect_one(logdir):
    # training.log: the runner appends to it across `--resume`s, so it holds every evaluation of the run.
    text = open(os.path.join(logdir, "training.log")).read()
    # After a SIGKILL the steps since the last checkpoint are trained again: the later line for a step wins.
    evaluations = list({int(m[0]): {"steps": int(m[0]), "mean_return": float(m[1]), "std_return": float(m[2]),
                                    "seconds": float(m[3]) if m[3] else None}
                        for m in EVAL_LINE.findall(text)}.values())
    meta = json.load(open(os.path.join(logdir, "model", "latest", "ppo.json")))
    flags = meta["run"]["flags"]
    result = {
        "env_id": flags["env_id"], "seed": flags["seed"], "budget": flags["total_timesteps"],
        "steps_reached": meta["num_timesteps"], "backend": meta["keras_backend"],
        "evaluations": evaluations, "training_score": training_score(logdir),
        # A stopped and resumed run: the final report's wall time, steps/s and evaluation share cover the
        # last session only (from the step it was resumed at).
        "resumed_at": [int(m) for m in re.findall(r"stopped by \w+ after (\d+) steps", text)],
    }
    soak = atari_soak.summarize(logdir)  # a soak (atari_soak.py): its kills, memory and disk samples
    if soak is not None:
        result.update(soak)
        result["resumed_at"] = sorted(set(result["resumed_at"]) | {
            s["checkpoint_steps"] for s in soak["starts"] if s["resume"]})
    metrics_path = os.path.join(logdir, "metrics.json")
    if os.path.exists(metrics_path):
        metrics = json.load(open(metrics_path))
        result.update(finished=True, wall_time_s=metrics["wall_time_s"], steps_per_second=metrics["steps_per_second"],
                      eval_wall_time_s=metrics.get("eval_wall_time_s"), latest=metrics["latest"], best=metrics["best"])
        if metrics.get("eval_wall_time_s") is not None:
            result["eval_share"] = round(metrics["eval_wall_time_s"] / metrics["wall_time_s"], 4)
    else:
        result["finished"] = False  # stopped before its budget: the evaluations and training score so far
    return result


def collect(args):
    runs = [collect_one(d) for d in sorted(glob.glob(os.path.join(args.logroot, "*")))
            if os.path.isfile(os.path.join(d, "training.log"))]
    for r in runs:
        final = (f"latest {r['latest']['mean_return']:.1f} ± {r['latest']['std_return']:.1f}, best "
                 f"{r['best']['mean_return']:.1f} ± {r['best']['std_return']:.1f}" if r["finished"] else "not finished")
        print(f"{r['env_id']:<24}{r['steps_reached']:>9} of {r['budget']:>9} steps  {final}")
    if args.json:
        harness.write_json(args.json, {"machine": harness.machine(), "runs": runs})
        print(f"wrote {args.json}")


def plot(args):
    dirs = sorted(d for d in glob.glob(os.path.join(args.logroot, "*")) if os.path.isdir(d))
    subprocess.run([sys.executable, "-m", "unstable_ppo.plot", *dirs, f"--output={args.png}", "--x=steps"],
                   check=True, env=harness.job_env(), cwd=harness.ROOT)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="start the runs, all at once, and wait for them")
    p.add_argument("runs", nargs="+", metavar="ENV_ID:STEPS")
    p.add_argument("--logroot", required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--extra", nargs="*", default=[], help="more runner flags, e.g. --backend=jax")
    p = sub.add_parser("collect", help="read the run directories under --logroot into one JSON")
    p.add_argument("--logroot", required=True)
    p.add_argument("--json")
    p = sub.add_parser("plot", help="learning curves of every run under --logroot (unstable_ppo.plot)")
    p.add_argument("--logroot", required=True)
    p.add_argument("--png", required=True)
    args = parser.parse_args()
    {"run": start, "collect": collect, "plot": plot}[args.command](args)


if __name__ == "__main__":
    main()
