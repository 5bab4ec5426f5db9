"""What the command-line tools share: backend selection and one-line errors."""

import os
import sys

from absl import app, flags, logging

BACKENDS = ("tensorflow", "jax", "torch")


class UsageError(ValueError):
    """Bad flags: reported in one line, exit code 2."""


def select_backend(name):
    """Set KERAS_BACKEND before Keras is imported; refuse a clash afterwards."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if name is None:
        return
    if "keras" in sys.modules:
        import keras  # already imported (checked above): this only reads its backend

        if keras.backend.backend() != name:
            raise UsageError(f"--backend={name} but Keras is already running on {keras.backend.backend()}")
    os.environ["KERAS_BACKEND"] = name


def run_app(command):
    """`absl.app.run` for a tool whose body is `command(FLAGS)`."""
    def main(argv):
        logging.set_verbosity(logging.WARNING)  # keep JAX's platform probing off the console
        if len(argv) > 1:
            fail(f"unexpected arguments: {' '.join(argv[1:])}")
        exit_on_error(command, flags.FLAGS)

    app.run(main, flags_parser=parse_flags)


def parse_flags(argv):
    """absl's parsing, with an unknown flag or a bad value reported like any other bad input."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(e)


def exit_on_error(fn, *args):
    """Run `fn`; bad input becomes `error: <one line>` on stderr and exit code 2."""
    try:
        return fn(*args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        fail(e)
    except Exception as e:  # gymnasium's unknown-id errors and the like
        if type(e).__module__.startswith("gymnasium"):
            fail(e)
        raise


def fail(error):
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
