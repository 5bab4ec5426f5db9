"""`PPO.export`: the request's checks, then the graph (`graph`) written by the format's writer (`writers`),
in this process on the TensorFlow backend, else in a `python -m unstable_ppo.export` child process."""

import importlib.util
import os
import subprocess
import sys
import tempfile

from unstable_ppo.export.graph import check_exportable
from unstable_ppo.export.writers import policy_json_path, write

FORMATS = ("onnx", "tf_saved_model", "litert")
# What each format needs beyond the core dependencies (TensorFlow is one of them).
DEPENDENCIES = {"onnx": ("onnx", "tf2onnx"), "tf_saved_model": (), "litert": ()}
INSTALL_HINT = 'pip install -e ".[export]"'


class MissingDependencyError(ImportError, ValueError):
    """An exporter's package is not installed (a ValueError too: the CLI reports it in one line)."""


def check_format(format):
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}: use {', '.join(FORMATS[:-1])} or {FORMATS[-1]}")


def require(format):
    """Raise `MissingDependencyError` if a package `format` needs is missing, before any work is done."""
    for name in DEPENDENCIES[format]:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a module set to None in sys.modules, a broken parent package
            found = False
        if not found:
            raise MissingDependencyError(f"format {format} needs the {name} package, which is not installed: "
                                         f"{INSTALL_HINT}")


def check_request(output, format, overwrite):
    """The checks that need no Keras: the format, its packages, and an existing output."""
    check_format(format)
    if not output:
        raise ValueError("an output path is required")
    output = os.fspath(output)
    if not overwrite:
        if os.path.lexists(output):
            raise ValueError(f"{output} already exists: pass --overwrite (overwrite=True) to replace it")
        if os.path.lexists(policy_json_path(output, format)):
            raise ValueError(f"{policy_json_path(output, format)} already exists (one export per directory: "
                             f"its policy.json describes it): pass --overwrite (overwrite=True) to replace it")
    parent = os.path.dirname(os.path.abspath(output))
    while not os.path.exists(parent):  # missing directories are made when the artifact is written
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"cannot write {output}: {parent} is not a directory")
    require(format)


def export(ppo, path, format="onnx", overwrite=False):
    """`PPO.export`: write the deterministic policy of `ppo` to `path`, and `policy.json`; returns `path`."""
    check_request(path, format, overwrite)
    check_exportable(ppo)
    import keras  # late: Keras starts after the request is checked

    if keras.backend.backend() == "tensorflow":
        write(ppo, path, format)
        return path
    with tempfile.TemporaryDirectory(prefix="unstable_ppo_export_") as tmp:
        ppo.save(os.path.join(tmp, "model"))
        export_in_subprocess(os.path.join(tmp, "model"), path, format, overwrite=True)
    return path


def export_in_subprocess(model_dir, output, format, best=False, overwrite=False):
    """`python -m unstable_ppo.export` on TensorFlow, importing this very copy of unstable_ppo."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # above unstable_ppo/export/
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    argv = [sys.executable, "-m", "unstable_ppo.export", f"--model_dir={model_dir}", f"--format={format}",
            f"--output={os.path.abspath(os.fspath(output))}"]
    argv += ["--best"] if best else []
    argv += ["--overwrite"] if overwrite else []
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        message = errors[-1][len("error: "):] if errors else (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise RuntimeError(f"the TensorFlow export process failed: {message}")
