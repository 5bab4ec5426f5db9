"""Export a trained policy to run without Python RL code: ONNX, TF SavedModel or LiteRT.

    python -m unstable_ppo.export --model_dir=DIR [--best] --format=onnx|tf_saved_model|litert \\
        --output=PATH [--overwrite]

In Python: `PPO.export(path, format="onnx")`. The exported function is the whole deterministic
policy, the action `PPO.predict(obs, deterministic=True)` returns: raw env observations in (the frozen
observation normalizer, pixel scaling and one-hot encoding are in the graph), env actions out
(argmax per head, thresholded bits, or the Gaussian mean clipped to the Box bounds; `start`
offsets added). A recurrent policy is `(obs, state, episode_start) -> (action, next_state)`, its
state zeroed where `episode_start` is 1. The batch axis is dynamic. A `policy.json` beside the
artifact (inside it for a SavedModel directory) names the inputs and outputs, their shapes and
dtypes, and the spaces in `unstable_ppo.spaces`'s JSON form, for callers in any language.

The three formats are built from one TensorFlow graph, so the export always runs on the
TensorFlow backend: in this process when Keras runs on TensorFlow, else in a child process
(`KERAS_BACKEND=tensorflow`) that loads the model saved to a temporary directory. A saved
model is backend-neutral, so a model trained on JAX or PyTorch exports the same way.
"""

from absl import flags

from unstable_ppo.checkpoint import resolve_checkpoint
from unstable_ppo.cli import UsageError, run_app, select_backend
from unstable_ppo.export.api import FORMATS, check_request
from unstable_ppo.export.writers import policy_json_path, write


def define_flags(module_name=None):
    """Only for the command line: importing this module defines no flag, so it can sit beside play's or run's.

    `module_name`: the module the flags are listed under (absl's default: this one); `__main__.py` names
    the program, so that `python -m unstable_ppo.export --helpfull` lists them first, as the other tools do.
    """
    where = {"module_name": module_name} if module_name else {}
    flags.DEFINE_string("model_dir", None, "A run's model directory, or a directory written by PPO.save.", **where)
    flags.DEFINE_bool("best", False, "Export the run's best checkpoint instead of its latest.", **where)
    flags.DEFINE_string("format", "onnx", f"One of {', '.join(FORMATS)}.", **where)
    flags.DEFINE_string("output", None, "The artifact: a .onnx or .tflite file, or a SavedModel directory.", **where)
    flags.DEFINE_bool("overwrite", False, "Replace an existing output (and the policy.json beside it).", **where)


def main(argv_flags):
    if not argv_flags.model_dir:
        raise UsageError("--model_dir is required")
    if not argv_flags.output:
        raise UsageError("--output is required")
    check_request(argv_flags.output, argv_flags.format, argv_flags.overwrite)
    model_dir = resolve_checkpoint(argv_flags.model_dir, best=argv_flags.best)
    select_backend("tensorflow")  # the graph is TensorFlow's, whichever backend trained the model
    import keras  # late: Keras starts after the request is checked

    if keras.backend.backend() != "tensorflow":
        raise UsageError(f"the export runs on TensorFlow, but Keras is already running on {keras.backend.backend()}")
    from unstable_ppo.ppo import PPO  # late: imports Keras, after the flags are checked

    ppo = PPO.load(model_dir)
    write(ppo, argv_flags.output, argv_flags.format)
    print(f"wrote {argv_flags.output} and {policy_json_path(argv_flags.output, argv_flags.format)}")


def entry_point(flags_module=None):
    """The console script `unstable-ppo-export`; `python -m unstable_ppo.export` (`__main__.py`) names
    `flags_module`, see `define_flags`."""
    define_flags(flags_module)
    run_app(main)
