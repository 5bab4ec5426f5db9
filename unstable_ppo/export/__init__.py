"""Export a trained policy to run without Python RL code: ONNX, TF SavedModel or LiteRT.

`PPO.export` calls `api.export`: the request's checks, then the policy's TensorFlow graph (`graph`)
written by the format's writer with its `policy.json` (`writers`). The command line,
`python -m unstable_ppo.export`, is `cli` (its docstring is the full story); it is the only module
here that imports `unstable_ppo.ppo`, and this package does not import it.
"""

from unstable_ppo.export.api import FORMATS, MissingDependencyError, export
from unstable_ppo.export.writers import policy_json_path, write

__all__ = ["FORMATS", "MissingDependencyError", "export", "policy_json_path", "write"]
