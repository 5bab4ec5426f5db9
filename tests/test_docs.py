"""The docs cannot rot: the site builds with `mkdocs build --strict`, and every fenced code block of README.md and
docs/**/*.md runs, on short budgets.

The convention (docs/development.md, "The docs and their tests"):

- Every fence names its language. `python` blocks run in order, in one namespace per page, with a fresh
  temporary directory per page as the working directory. `PPO.learn` is cut to one rollout and
  `evaluate(n_episodes=...)` to 2 episodes, so that a 100k-step example runs in seconds.
- `bash` blocks run in that page's directory too, in order, one command per line (`&&` chains commands on a
  line; `#` starts a comment). The commands this file knows are `python -m unstable_ppo.<tool>`, the console
  scripts `unstable-ppo[-tool]`, `python run.py` and `python examples/<script>.py`, with `NAME=value`
  prefixes. Their budgets are cut: a runner run trains one update of one epoch and evaluates 2 short episodes, play plays
  2 short episodes, a study runs 1 trial of a tiny budget on a one-parameter search space.
- `json` blocks must parse; `text` blocks (trees, output) are not run.
- `<!-- docs-test: skip: REASON -->` on the line before a fence: the block does not run.
  `<!-- docs-test: skip-commands: PROGRAM[, PROGRAM]: REASON -->`: the block's commands that start with one
  of the programs (`pip`, `tensorboard`) or run one of the tools (`unstable_ppo.plot`) do not run, the others do. A REASON is required, a skipped program
  must occur in the block, and a command the test does not know fails it: annotate it instead.

The runner runs in this process (`tests.helpers.flag_strategies.run_in_process`: a subprocess costs 10-20 s
of imports); the other tools, a command with a `NAME=value` prefix or another backend's `--backend`, and
the example scripts run in a subprocess.
"""

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

import pytest

from tests.helpers.runner import ROOT, child_env

pytestmark = pytest.mark.backend_independent

ANNOTATION = re.compile(r"<!--\s*docs-test:\s*(?P<kind>[\w-]+)\s*:(?P<rest>.*?)-->")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+)(?P<lang>[^`\s]*)[^\n]*$")
RUN_LANGUAGES = {"python", "bash"}
KNOWN_LANGUAGES = RUN_LANGUAGES | {"json", "text"}
EVAL_EPISODES = 2
TOOLS = {"unstable-ppo": "run", "unstable-ppo-play": "play", "unstable-ppo-plot": "plot",
         "unstable-ppo-export": "export", "unstable-ppo-tune": "tune"}


class Block:
    def __init__(self, page, line, lang, code, annotation):
        self.page, self.line, self.lang, self.code, self.annotation = page, line, lang, code, annotation

    def __repr__(self):
        return f"{self.page}:{self.line} ({self.lang})"


def pages():
    """README.md and the docs' pages, relative to the repository root."""
    found = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
    return ["README.md", *found]


def blocks(page):
    """The fenced code blocks of `page`, each with the annotation on the line before its fence (or None)."""
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        lines = f.read().split("\n")
    found, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = opening.group("indent"), opening.group("fence")
        start, code = i, []
        i += 1
        while i < len(lines) and lines[i].strip() != fence:
            code.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        assert i < len(lines), f"{page}:{start + 1}: unclosed code block"
        previous = lines[start - 1].strip() if start else ""
        annotation = ANNOTATION.fullmatch(previous)
        found.append(Block(page, start + 1, opening.group("lang"), "\n".join(code) + "\n", annotation))
        i += 1
    return found


def skipped_programs(block):
    """The programs a `skip-commands` annotation names ({} without one); checks the annotation's form."""
    if block.annotation is None:
        return set()
    kind, rest = block.annotation.group("kind"), block.annotation.group("rest").strip()
    where = f"{block!r}: <!-- docs-test: {kind}: ... -->"
    if kind == "skip":
        assert rest, f"{where} gives no reason"
        return set()
    assert kind == "skip-commands", f"{where}: unknown annotation (skip or skip-commands)"
    programs, _, reason = rest.partition(":")
    assert reason.strip(), f"{where} gives no reason (skip-commands: PROGRAM[, PROGRAM]: REASON)"
    return {p.strip() for p in programs.split(",") if p.strip()}


# -- shell commands -----------------------------------------------------------------------------------------

def commands(code):
    """A bash block's commands: (line, [words]) per command, comments and `&&` split off."""
    found = []
    for line in code.splitlines():
        words = shlex.split(line, comments=True)
        command = []
        for word in [*words, "&&"]:
            if word == "&&":
                if command:
                    found.append((line.strip(), command))
                command = []
            else:
                command.append(word)
    return found


def _replace(argv, name, value):
    """`argv` with `--name=...` dropped and `--name=value` appended."""
    return [a for a in argv if not a.startswith(f"--{name}=")] + [f"--{name}={value}"]


def shortened(tool, argv, workdir):
    """`argv` of `tool` with its budget cut (see the module docstring)."""
    if tool == "run":
        argv = [a for a in argv if not a.startswith("--total_timesteps=")]
        for name, value in [("num_episodes", 1), ("num_epochs", 1), ("eval_episodes", EVAL_EPISODES), ("eval_max_steps", 100),
                            ("save_interval", 1), ("eval_interval", 1)]:
            argv = _replace(argv, name, value)
    elif tool == "play":
        argv = _replace(_replace(argv, "episodes", EVAL_EPISODES), "max_steps", 100)
    elif tool == "tune" and "--report" not in argv:
        space = os.path.join(workdir, "docs_test_space.json")
        with open(space, "w") as f:
            json.dump({"extends": "none", "lr": [3e-4]}, f)
        for name, value in [("n_trials", 1), ("n_jobs", 1), ("budget", 512), ("n_evaluations", 1),
                            ("eval_episodes", EVAL_EPISODES), ("eval_max_steps", 100), ("search_space", space)]:
            argv = _replace(argv, name, value)
    elif tool == "examples":
        argv = _replace(argv, "episodes", EVAL_EPISODES) if any(a.startswith("--episodes=") for a in argv) else argv
    return argv


def parse_command(words):
    """(environment assignments, tool, argv): tool is a module under unstable_ppo, "examples" or None (unknown)."""
    assignments = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        name, value = words[0].split("=", 1)
        assignments[name] = value
        words = words[1:]
    if words[:1] and words[0] in TOOLS:
        return assignments, TOOLS[words[0]], words[1:]
    if words[:1] == ["python"] and len(words) > 1:
        if words[1] == "-m" and len(words) > 2 and words[2].startswith("unstable_ppo."):
            return assignments, words[2].split(".", 1)[1], words[3:]
        if words[1] == "run.py":
            return assignments, "run", words[2:]
        if words[1].startswith("examples/") and words[1].endswith(".py"):
            return assignments, "examples", words[1:]
    return assignments, None, words


def run_command(line, words, workdir):
    import keras

    from tests.helpers.flag_strategies import run_in_process

    assignments, tool, argv = parse_command(words)
    argv = shortened(tool, argv, workdir)
    backend = next((a.split("=", 1)[1] for a in argv if a.startswith("--backend=")), None)
    other_backend = assignments.get("KERAS_BACKEND", backend or keras.backend.backend()) != keras.backend.backend()
    if tool == "run" and not assignments and not other_backend:
        outcome = run_in_process(argv, timeout=300)
        detail = f"{outcome.stdout[-3000:]}\n{outcome.stderr[-3000:]}\n{outcome.traceback or ''}"
        assert outcome.code == 0, f"`{line}` (in-process: {argv}) exited {outcome.code}:\n{detail}"
        return
    if tool == "examples":
        program = [sys.executable, os.path.join(ROOT, argv[0]), *argv[1:]]
    else:
        program = [sys.executable, "-m", f"unstable_ppo.{tool}", *argv]
    proc = subprocess.run(program, cwd=workdir, env=child_env(**assignments), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, (f"`{line}` ({program[1:]}) exited {proc.returncode}:\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def run_bash(block, workdir):
    skip = skipped_programs(block)
    seen = set()
    for line, words in commands(block.code):
        _, tool, _ = parse_command(words)
        names = {words[0]} | ({f"unstable_ppo.{tool}"} if tool not in (None, "examples") else set())
        if names & skip:
            seen |= names & skip
            continue
        assert tool is not None, (f"{block!r}: `{line}`: a command this test cannot run; annotate the block "
                                  f"(<!-- docs-test: skip-commands: {words[0]}: REASON -->)")
        run_command(line, words, workdir)
    assert skip <= seen, f"{block!r}: skip-commands names {sorted(skip - seen)}, which the block does not run"


# -- python blocks ------------------------------------------------------------------------------------------

@pytest.fixture
def short_budgets(monkeypatch):
    """`PPO.learn` cut to one rollout, `PPO.evaluate` to 2 episodes."""
    from unstable_ppo.ppo import PPO

    learn, evaluate = PPO.learn, PPO.evaluate

    def short_learn(self, total_timesteps, *args, **kwargs):
        return learn(self, min(total_timesteps, self.hp.num_envs * self.hp.num_steps), *args, **kwargs)

    def short_evaluate(self, *args, **kwargs):
        if "n_episodes" in kwargs:
            kwargs["n_episodes"] = min(kwargs["n_episodes"], EVAL_EPISODES)
        return evaluate(self, *args, **kwargs)

    monkeypatch.setattr(PPO, "learn", short_learn)
    monkeypatch.setattr(PPO, "evaluate", short_evaluate)


def run_page(page):
    runnable = [b for b in blocks(page) if b.lang in RUN_LANGUAGES]
    workdir = tempfile.mkdtemp(prefix="unstable_ppo_docs_")
    namespace = {"__name__": "__docs__"}
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        for block in runnable:
            if block.annotation is not None and block.annotation.group("kind") == "skip":
                skipped_programs(block)  # checks the reason
                continue
            if block.lang == "python":
                assert block.annotation is None, f"{block!r}: a python block runs whole (skip, or no annotation)"
                try:
                    exec(compile(block.code, f"{page}:{block.line}", "exec"), namespace)
                except Exception as e:
                    raise AssertionError(f"{block!r} failed: {type(e).__name__}: {e}") from e
            else:
                run_bash(block, workdir)
    finally:
        os.chdir(cwd)
        shutil.rmtree(workdir, ignore_errors=True)


# -- the tests ----------------------------------------------------------------------------------------------

def test_every_block_is_tagged_and_annotated_with_a_reason():
    for page in pages():
        for block in blocks(page):
            assert block.lang in KNOWN_LANGUAGES, (f"{block!r}: every fence names its language, one of "
                                                   f"{sorted(KNOWN_LANGUAGES)}")
            skipped_programs(block)
            if block.lang == "json":
                json.loads(block.code)


@pytest.mark.parametrize("page", [p for p in pages() if any(b.lang in RUN_LANGUAGES for b in blocks(p))])
def test_code_blocks_run(page, short_budgets):
    run_page(page)


def test_mkdocs_build_strict(tmp_path):
    mkdocs = pytest.importorskip("mkdocs", reason='the docs extra is not installed: pip install -e ".[docs]"')
    del mkdocs
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    for page in ["index.html", "api/index.html", "getting-started/index.html"]:
        assert (tmp_path / "site" / page).is_file(), page
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    assert "unstable_ppo.ppo.PPO" in api and "bundled_settings" in api  # mkdocstrings rendered the docstrings
