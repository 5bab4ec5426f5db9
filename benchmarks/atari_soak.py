"""A long Atari run as a soak: the runner killed (SIGKILL) at random moments and resumed, its memory
and disk sampled throughout.

    python benchmarks/atari_soak.py run --logdir /root/soak/BreakoutNoFrameskip-v4_10000k \
        --env_id BreakoutNoFrameskip-v4 --total_timesteps 10000000 --kills 3 --extra=--backend=tensorflow
    python benchmarks/atari_learning.py collect --logroot /root/soak --json benchmarks/results/atari_learning_DATE.json

`run` starts `python -m unstable_ppo.run` (with `--resume` whenever the run directory already holds a
checkpoint), samples the runner's resident memory (the process and its children, from /proc) and the
run directory's size on disk every `--sample_s` seconds, and kills the runner with SIGKILL at a moment
drawn uniformly from `--kill_window` minutes after each start until `--kills` kills were made; then it
lets the run finish. Every event goes, one JSON object a line, to `soak.jsonl` in the run directory:
`start` (the steps of the checkpoint it resumes from), `sample` (steps so far, rss_mb, disk_mb),
`kill` (the steps trained when killed and those the checkpoint holds) and `exit`.
A stop of the driver itself (the machine's session ending) is a kill too: the next `run` finds a
`start` with no `exit` after it and records it as an `external` kill before resuming.
`atari_learning.py collect` reads soak.jsonl into the results JSON (`rss_mb`, `disk_mb`, `kills`).

Run it from a checkout of its own (a clone or worktree that your edits do not touch): the runner
imports unstable_ppo from the checkout this script is in.
"""

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import harness

UPDATE_LINE = re.compile(r"update (\d+): ")


def _events(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _append(path, event):
    event = {"time": round(time.time(), 1), **event}
    with open(path, "a") as f:
        f.write(json.dumps(event) + "\n")
        f.flush()
        os.fsync(f.fileno())
    print(json.dumps(event), flush=True)


def checkpoint_steps(logdir):
    """The steps the latest checkpoint holds (None without one)."""
    path = os.path.join(logdir, "model", "latest", "ppo.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)["num_timesteps"]


def trained_steps(logdir, steps_per_update):
    """The steps trained so far by the runner now or last running: its last `update N:` log line."""
    path = os.path.join(logdir, "training.log")
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - 20000))
        updates = UPDATE_LINE.findall(f.read().decode(errors="replace"))
    return int(updates[-1]) * steps_per_update if updates else 0


def rss_mb(pid):
    """Resident memory of `pid` and its descendants, MB (from /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return round(total / 1024, 1)


def disk_mb(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return round(total / 2**20, 1)


def run(args):
    logdir = os.path.abspath(args.logdir)
    os.makedirs(logdir, exist_ok=True)
    log_path = os.path.join(logdir, "soak.jsonl")
    events = _events(log_path)
    starts = [e for e in events if e["event"] == "start"]
    if events and events[-1]["event"] not in ("exit", "kill"):
        # The driver itself was stopped (a session ended): the runner went with it.
        _append(log_path, {"event": "kill", "cause": "external", "steps_trained": trained_steps(logdir, args.steps_per_update),
                           "checkpoint_steps": checkpoint_steps(logdir)})
        events = _events(log_path)
    if events and events[-1]["event"] == "exit" and events[-1]["returncode"] == 0:
        print("the run finished already")
        return
    kills = sum(1 for e in events if e["event"] == "kill" and e.get("cause") == "soak")
    rng = random.Random(args.seed * 1000 + len(starts))
    while True:
        resume = checkpoint_steps(logdir) is not None
        command = [sys.executable, "-m", "unstable_ppo.run", f"--env_id={args.env_id}",
                   f"--total_timesteps={args.total_timesteps}", f"--seed={args.seed}", f"--logdir={logdir}",
                   "--verbose=2", *(["--resume"] if resume else []), *args.extra]
        out = open(logdir + ".out", "a")
        out.write(f"\n== {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {' '.join(command[1:])}\n")
        out.flush()
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=harness.job_env(),
                                cwd=harness.ROOT)
        kill_at = None
        if kills < args.kills:
            kill_at = time.time() + 60 * rng.uniform(*args.kill_window)
        _append(log_path, {"event": "start", "pid": proc.pid, "resume": resume,
                           "checkpoint_steps": checkpoint_steps(logdir), "kill_planned_at": kill_at and round(kill_at)})
        next_sample = time.time()
        while proc.poll() is None:
            now = time.time()
            if now >= next_sample:
                _append(log_path, {"event": "sample", "steps_trained": trained_steps(logdir, args.steps_per_update),
                                   "rss_mb": rss_mb(proc.pid), "disk_mb": disk_mb(logdir)})
                next_sample = now + args.sample_s
            if kill_at is not None and now >= kill_at:
                trained = trained_steps(logdir, args.steps_per_update)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                _append(log_path, {"event": "kill", "cause": "soak", "steps_trained": trained,
                                   "checkpoint_steps": checkpoint_steps(logdir)})
                break
            time.sleep(1.0)
        else:
            _append(log_path, {"event": "exit", "returncode": proc.returncode,
                               "steps_trained": trained_steps(logdir, args.steps_per_update),
                               "disk_mb": disk_mb(logdir)})
            out.close()
            return proc.returncode
        out.close()


def summarize(logdir):
    """The soak's record for a results JSON: kills, memory and disk samples (None without soak.jsonl)."""
    events = _events(os.path.join(logdir, "soak.jsonl"))
    if not events:
        return None
    samples = [e for e in events if e["event"] == "sample"]
    return {
        "kills": [{k: e.get(k) for k in ("time", "cause", "steps_trained", "checkpoint_steps")}
                  for e in events if e["event"] == "kill"],
        "starts": [{k: e.get(k) for k in ("time", "resume", "checkpoint_steps")} for e in events if e["event"] == "start"],
        # One sample per ~10 minutes of the run: steps, MB.
        "rss_mb": [[e["steps_trained"], e["rss_mb"]] for e in samples[::10]],
        "disk_mb": [[e["steps_trained"], e["disk_mb"]] for e in samples[::10]],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run (or continue) the soak until the run finishes")
    p.add_argument("--logdir", required=True)
    p.add_argument("--env_id", default="BreakoutNoFrameskip-v4")
    p.add_argument("--total_timesteps", type=int, default=10_000_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--kills", type=int, default=3, help="SIGKILLs made by the soak (external stops come on top)")
    p.add_argument("--kill_window", type=float, nargs=2, default=(20.0, 90.0), metavar=("MIN", "MAX"),
                   help="minutes after a start within which its kill falls, uniformly")
    p.add_argument("--sample_s", type=float, default=60.0)
    p.add_argument("--steps_per_update", type=int, default=1024, help="num_envs x num_steps of the run")
    p.add_argument("--extra", action="append", default=[], help="more runner flags, e.g. --extra=--backend=tensorflow")
    args = parser.parse_args()
    sys.exit(run(args) or 0)


if __name__ == "__main__":
    main()
