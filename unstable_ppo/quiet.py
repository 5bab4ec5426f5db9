"""Keep TensorFlow's C++ start-up lines off the console.

`import tensorflow` writes `oneDNN custom operations are on`, `Could not find cuda drivers`
and `All log messages before absl::InitializeLog() ...` straight to file descriptor 2, before
any log level (`TF_CPP_MIN_LOG_LEVEL`, absl's) applies. A jax or torch run never imports
TensorFlow (the TensorBoard writer, seeding and saving leave it alone); a TensorFlow run, or a
user's code that imports it, would show them. The only place to drop them is the import
itself: `install()` (called when `unstable_ppo` is imported) wraps the first
`import tensorflow` so that what it writes to fd 2 is held back, and replayed without the
C++ INFO/WARNING lines. Python warnings, errors, tracebacks and C++ ERROR lines raised
during the import still come through, in order. `show_startup_logs(True)` (the runner's
`--verbose=2`) or `UNSTABLE_PPO_TF_STARTUP_LOGS=1` turns this off.
"""

import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile

# absl's C++ log prefix (`I0000 00:00:1796160119.365931    3362 port.cc:153] `): severity, date,
# time, thread id, file:line. INFO and WARNING only.
_CXX_INFO_OR_WARNING = re.compile(rb"^[IW]\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\] ")
_NOISE = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    # CUDA builds on a machine without a GPU, a stock start-up line of the TF 2.1x CUDA wheels.
    b"Unable to register cuDNN factory",
    b"Unable to register cuFFT factory",
    b"Unable to register cuBLAS factory",
    b"To enable the following instructions:",  # the second line of cpu_feature_guard's INFO line
)

_show = os.environ.get("UNSTABLE_PPO_TF_STARTUP_LOGS", "") not in ("", "0")


def show_startup_logs(show=True):
    """Let TensorFlow's start-up lines through (must run before TensorFlow is imported)."""
    global _show
    _show = show


def is_startup_noise(line):
    """Whether one line (bytes) that TensorFlow wrote while importing is start-up noise."""
    return bool(_CXX_INFO_OR_WARNING.match(line)) or any(marker in line for marker in _NOISE)


@contextlib.contextmanager
def startup_lines_dropped():
    """Hold back what is written to fd 2 inside the block; replay it without start-up noise."""
    if _show:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = b"".join(line for line in held.read().splitlines(keepends=True) if not is_startup_noise(line))
            if kept:
                sys.stderr.flush()
                os.write(2, kept)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` on sys.path, and runs its module code inside `startup_lines_dropped()`.

    It stays installed until the module code runs: libraries probe with `importlib.util.find_spec`
    whether TensorFlow is there without importing it.
    """

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_quietly(module):
            uninstall()
            with startup_lines_dropped():
                exec_module(module)

        spec.loader.exec_module = exec_quietly
        return spec


_finder = _QuietTensorFlowImport()


def install():
    """Wrap the process's first `import tensorflow` (nothing to do if it already ran)."""
    if "tensorflow" not in sys.modules and _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def uninstall():
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)
