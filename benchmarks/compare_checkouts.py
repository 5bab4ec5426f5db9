"""Prove that a change left the computation alone: the same tiny run from two checkouts, compared bit for bit.

For each backend, in each checkout (the candidate: by default the checkout this script is in; the
baseline: `--baseline DIR`, e.g. `git worktree add /tmp/base <commit>`), a subprocess with its cwd
and PYTHONPATH set to that checkout runs

    python -m unstable_ppo.run --env_id=CartPole-v1 --noenv_defaults --num_envs=2 --num_steps=32
        --num_epochs=2 --batch_size=32 --num_episodes=2 --seed=3 --eval_episodes=2
        --logdir=WORKDIR/CHECKOUT/BACKEND --verbose=0 --backend=BACKEND

(CHECKOUT is `baseline` or `candidate`), and then, per backend, the two runs' final checkpoints
(`model/latest/`) are compared:

- weights: every array in the `model.weights.h5` inside `model.keras` (the model's variables and
  the optimizer's), by name, dtype, shape and bytes, with h5py. Whether the raw `model.weights.h5`
  files are byte-identical is reported too; it is stricter (HDF5 layout and metadata), and on
  one machine with the same packages it holds for two runs of the same checkout.
- `ppo.json`: parsed, every key at any depth (dotted paths such as `run.flags.seed`; a list is
  one value). Any key that differs is listed, except those that differ between two runs of the
  SAME checkout, found by running the baseline twice (`--repeat_baseline` does it again):

      run.flags.logdir    the run directory, WORKDIR/CHECKOUT/BACKEND: different for every run

  Nothing else in ppo.json differed between two runs of one checkout (no timestamps there: the
  save time is only in model.keras's metadata.json, which is not compared).

Prints a table (backend, weights identical, raw bytes identical, ppo.json identical, differing keys)
and exits 1 if any backend's runs differ in any of these, or failed.

    python benchmarks/compare_checkouts.py --baseline /tmp/base                        # every installed backend
    python benchmarks/compare_checkouts.py --baseline /tmp/base --backends jax --repeat_baseline
    python benchmarks/compare_checkouts.py --baseline /tmp/base --candidate ../other --keep

Every run uses the same interpreter, so the same Keras, backends and numpy: only unstable_ppo's
code differs.

`--cli` compares the command lines instead (no training): every tool's `--helpfull`, and the one-line errors
of `BAD_INPUT` (bad flags of each tool), run from both checkouts; exit code, stdout and stderr must be the
same once each checkout's path is replaced by a placeholder. absl's flag-list headings name the module that
defines the flags (`unstable_ppo.run:` or a file path): a refactoring that moves a tool's flags changes them,
so heading lines are compared apart and listed, not counted as a difference. With `--repeat_baseline` the baseline also runs a second time, and a second table
shows what differs between two runs of one checkout (ignored keys included): the check that the
runs are deterministic here and that the list above is right.
"""

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

import harness

RUN_FLAGS = ["--env_id=CartPole-v1", "--noenv_defaults", "--num_envs=2", "--num_steps=32", "--num_epochs=2",
             "--batch_size=32", "--num_episodes=2", "--seed=3", "--eval_episodes=2", "--verbose=0"]
# ppo.json keys that differ between two runs of the same checkout, and why.
IGNORED_KEYS = {"run.flags.logdir": "the run directory, different for every run"}
BACKENDS = ("tensorflow", "jax", "torch")
TIMEOUT_S = 900

# Bad input of every tool: (tool, arguments). The runner's are tests/test_run.py's bad-flag cases.
BAD_INPUT = [("run", [f]) if isinstance(f, str) else ("run", f) for f in [
    "--env_id=NoSuchEnv-v0", "--num_envs=0", "--batch_size=100000", "--lr=0", "--num_episodes=-1",
    "--logdir=/tmp/{user}/x", "--logdir=/tmp/{rank:s}/x", "--monitor_dir=m{env_id!x}", "--resume", "--no_such_flag",
    "--num_envs=abc", ["--resume", "--overwrite"], "--vec_env=ale", "--eval_interval=-1", "--hidden_sizes=64,x",
    "--activation=bogus", "--eval_max_steps=0", ["--recurrent", "--num_steps=32", "--timestep_size=24"],
    ["--recurrent", "--batch_size=40", "--timestep_size=16"], ["--recurrent", "--noshared_net"],
    ["--recurrent", "--hidden_layer_size=0"], "--lstm_head_sizes=64", ["--recurrent", "--lstm_head_sizes=64,y"],
    ["--num_envs=4", "--gather_per_worker=3"], ["--time_feature", "--env_id=BreakoutNoFrameskip-v4"],
    ["--env_kwargs={\"g\": 2.0", "--env_id=Pendulum-v1"], ["--env_kwargs={\"bogus\": 1}", "--num_episodes=1"],
]] + [
    ("play", []), ("play", ["--model_dir=no/such/dir"]), ("export", []), ("export", ["--model_dir=x", "--format=pt"]),
    ("tune", []), ("tune", ["--env_id=CartPole-v1", "--n_trials=0"]), ("plot", []), ("plot", ["no/such/run"]),
]
TOOLS = ("run", "play", "plot", "export", "tune")


def train(checkout, backend, logdir):
    """One run of the runner from `checkout`; returns None, or why it failed."""
    env = harness.job_env(backend, code=checkout)
    where = subprocess.run([sys.executable, "-c", "import unstable_ppo; print(unstable_ppo.__file__)"], cwd=checkout,
                           env=env, capture_output=True, text=True)
    expected = os.path.join(os.path.realpath(checkout), "unstable_ppo")
    if where.returncode != 0 or os.path.dirname(os.path.realpath(where.stdout.strip())) != expected:
        return f"unstable_ppo is not imported from {checkout}: {(where.stdout + where.stderr).strip()[-500:]}"
    cmd = [sys.executable, "-m", "unstable_ppo.run", *RUN_FLAGS, f"--logdir={logdir}", f"--backend={backend}"]
    try:
        proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"timed out after {TIMEOUT_S} s"
    if proc.returncode != 0:
        return f"exit {proc.returncode}:\n{harness.failure_tail(proc.stderr + proc.stdout)}"
    return None


def read_checkpoint(logdir):
    """(raw model.weights.h5 bytes, {array name: numpy array}, parsed ppo.json) of `logdir`'s latest checkpoint."""
    import h5py

    latest = os.path.join(logdir, "model", "latest")
    with zipfile.ZipFile(os.path.join(latest, "model.keras")) as z:
        raw = z.read("model.weights.h5")
    arrays = {}
    with h5py.File(io.BytesIO(raw), "r") as f:
        f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    with open(os.path.join(latest, "ppo.json")) as f:
        metadata = json.load(f)
    return raw, arrays, metadata


def differing_arrays(a, b):
    """Names of the arrays that are not the same bit for bit (or exist on one side only), with a note each."""
    import numpy as np

    out = []
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            out.append(f"{name} (only in the {'candidate' if name in b else 'baseline'})")
            continue
        x, y = np.asarray(a[name]), np.asarray(b[name])
        if x.dtype != y.dtype or x.shape != y.shape:
            out.append(f"{name} ({x.dtype}{list(x.shape)} against {y.dtype}{list(y.shape)})")
        elif x.tobytes() != y.tobytes():
            diff = np.max(np.abs(x.astype(np.float64) - y.astype(np.float64))) if x.size else 0.0
            out.append(f"{name} (largest difference {diff:.3g})")
    return out


def flatten(value, prefix=""):
    """{dotted key: value} of every non-dict value in nested dicts (a list is one value)."""
    if isinstance(value, dict) and value:
        out = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def differing_keys(a, b):
    """Dotted keys whose values differ between two parsed ppo.json files, or that only one has."""
    fa, fb = flatten(a), flatten(b)
    missing = object()

    def same(x, y):  # through JSON text, so that NaN equals NaN and 1 differs from 1.0 and True
        return x is not missing and y is not missing and json.dumps(x, sort_keys=True) == json.dumps(y, sort_keys=True)

    return [k for k in sorted(set(fa) | set(fb)) if not same(fa.get(k, missing), fb.get(k, missing))]


def compare(base_dir, cand_dir, ignored):
    """A table row's facts for two run directories."""
    raw_a, arrays_a, meta_a = read_checkpoint(base_dir)
    raw_b, arrays_b, meta_b = read_checkpoint(cand_dir)
    keys = differing_keys(meta_a, meta_b)
    return {"arrays": differing_arrays(arrays_a, arrays_b), "n_arrays": len(arrays_a), "raw_same": raw_a == raw_b,
            "keys": [k for k in keys if k not in ignored], "ignored": [k for k in keys if k in ignored]}


def table(rows):
    yes = lambda ok: "yes" if ok else "**no**"  # noqa: E731
    lines = ["| backend | weights identical | model.weights.h5 bytes identical | ppo.json identical | differing keys |",
             "|---|---|---|---|---|"]
    for backend, row in rows:
        if isinstance(row, str):
            lines.append(f"| {backend} | failed | | | |")
            continue
        keys = ", ".join(row["keys"]) or "—"
        if row["ignored"]:
            keys += f" (ignored: {', '.join(row['ignored'])})"
        lines.append(f"| {backend} | {yes(not row['arrays'])} ({row['n_arrays']} arrays) | {yes(row['raw_same'])} "
                     f"| {yes(not row['keys'])} | {keys} |")
    return "\n".join(lines)


def differs(row):
    return isinstance(row, str) or bool(row["arrays"] or row["keys"] or not row["raw_same"])


def details(rows):
    out = []
    for backend, row in rows:
        if isinstance(row, str):
            out.append(f"{backend} failed: {row}")
        elif row["arrays"]:
            out.append(f"{backend}: arrays that differ: " + "; ".join(row["arrays"]))
    return out


def cli_outputs(checkout, workdir):
    """{case: (exit code, stdout, stderr)} of every tool's --helpfull and every BAD_INPUT case, run from `checkout`."""
    env = harness.job_env("tensorflow", code=checkout, TF_CPP_MIN_LOG_LEVEL="3")
    cases = [(tool, ["--helpfull"]) for tool in TOOLS] + BAD_INPUT
    out = {}
    for tool, argv in cases:
        cwd = tempfile.mkdtemp(dir=workdir)
        proc = subprocess.run([sys.executable, "-m", f"unstable_ppo.{tool}", *argv], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=300)
        text = [t.replace(os.path.realpath(checkout), "<CHECKOUT>").replace(cwd, "<CWD>")
                for t in (proc.stdout, proc.stderr)]
        out[f"{tool} {' '.join(argv)}".strip()] = (proc.returncode, *text)
    return out


def _headings(text):
    """absl's flag-list headings (an unindented line ending in ':') apart from the rest of the text."""
    lines = text.splitlines()
    is_heading = [bool(line) and not line[0].isspace() and line.endswith(":") and " " not in line for line in lines]
    return ([l for l, h in zip(lines, is_heading) if h], [l for l, h in zip(lines, is_heading) if not h])


def compare_cli(checkouts, workdir):
    base, cand = (cli_outputs(checkouts[role], workdir) for role in ("baseline", "candidate"))
    differ, headings = [], []
    for case in base:
        (code_a, out_a, err_a), (code_b, out_b, err_b) = base[case], cand[case]
        heads_a, body_a = _headings(out_a)
        heads_b, body_b = _headings(out_b)
        if heads_a != heads_b:
            headings.append(f"{case}: {sorted(set(heads_a) - set(heads_b))} -> {sorted(set(heads_b) - set(heads_a))}")
        if (code_a, body_a, err_a) != (code_b, body_b, err_b):
            import difflib

            diff = difflib.unified_diff((out_a + err_a).splitlines(), (out_b + err_b).splitlines(), lineterm="", n=0)
            differ.append(f"{case} (exit {code_a} -> {code_b}):\n  " + "\n  ".join(list(diff)[2:12]))
    print(f"{len(base)} command lines ({len(TOOLS)} --helpfull, {len(BAD_INPUT)} bad inputs): "
          f"{len(base) - len(differ)} the same, {len(differ)} differ")
    for line in differ:
        print(line)
    if headings:
        print("flag-list headings that moved (not counted):")
        for line in headings:
            print("  " + line)
    return 1 if differ else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, metavar="DIR", help="the checkout to compare against")
    parser.add_argument("--candidate", default=harness.ROOT, metavar="DIR",
                        help="the checkout under test (default: the one this script is in)")
    parser.add_argument("--backends", nargs="+", default=harness.keras_backends(BACKENDS), choices=BACKENDS,
                        metavar="BACKEND", help="Keras backends (default: every installed one)")
    parser.add_argument("--repeat_baseline", action="store_true",
                        help="run the baseline twice as well, and show what differs between two runs of one checkout")
    parser.add_argument("--workdir", metavar="DIR",
                        help="where the runs go, kept afterwards (default: a fresh temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory of the runs")
    parser.add_argument("--cli", action="store_true", help="compare the tools' --helpfull and bad-input errors instead")
    args = parser.parse_args()
    checkouts = {"baseline": os.path.abspath(args.baseline), "candidate": os.path.abspath(args.candidate)}
    for role, path in checkouts.items():
        if not os.path.isfile(os.path.join(path, "unstable_ppo", "run.py")):
            parser.error(f"--{role} {path}: not a checkout of this project (no unstable_ppo/run.py)")
    workdir = os.path.abspath(args.workdir) if args.workdir else tempfile.mkdtemp(prefix="compare_checkouts_")
    if args.cli:
        try:
            sys.exit(compare_cli(checkouts, workdir))
        finally:
            if not (args.workdir or args.keep):
                shutil.rmtree(workdir, ignore_errors=True)
    runs = [("baseline", "baseline"), ("candidate", "candidate")]
    if args.repeat_baseline:
        runs.append(("baseline", "baseline-again"))
    print(f"baseline:  {checkouts['baseline']}\ncandidate: {checkouts['candidate']}\nruns in:   {workdir}",
          file=sys.stderr, flush=True)

    rows, repeats = [], []
    try:
        for backend in args.backends:
            failed = None
            for role, name in runs:
                logdir = os.path.join(workdir, name, backend)
                shutil.rmtree(logdir, ignore_errors=True)
                failed = train(checkouts[role], backend, logdir)
                print(f"{backend}: {name} run {'FAILED: ' + failed if failed else 'done'}", file=sys.stderr,
                      flush=True)
                if failed:
                    failed = f"the {name} run: {failed}"
                    break
            if failed:
                rows.append((backend, failed))
                repeats.append((backend, failed))
                continue
            base_dir = os.path.join(workdir, "baseline", backend)
            rows.append((backend, compare(base_dir, os.path.join(workdir, "candidate", backend), IGNORED_KEYS)))
            if args.repeat_baseline:
                repeats.append((backend, compare(base_dir, os.path.join(workdir, "baseline-again", backend), {})))
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"\n## {checkouts['candidate']} against {checkouts['baseline']}\n")
    print(table(rows))
    print("\nignored ppo.json keys: " + "; ".join(f"{k} ({why})" for k, why in IGNORED_KEYS.items()))
    for line in details(rows):
        print(line)
    bad = any(differs(row) for _, row in rows)
    if args.repeat_baseline:
        print("\n## The baseline against itself (two runs, nothing ignored)\n")
        print(table(repeats))
        for line in details(repeats):
            print(line)
        unexpected = [(b, r) for b, r in repeats if isinstance(r, str) or r["arrays"] or not r["raw_same"]
                      or set(r["keys"]) - set(IGNORED_KEYS)]
        if unexpected:
            print("\nTwo runs of the same checkout differ beyond the ignored keys: these runs prove nothing here.")
            bad = True
    print("\n" + ("DIFFERENT" if bad else "IDENTICAL") + f" ({', '.join(args.backends)})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
