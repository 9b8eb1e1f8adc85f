"""The TFLite interpreter, whichever runtime package is installed.

``ai_edge_litert`` (LiteRT, the successor of TensorFlow Lite; wheels for x86_64 and aarch64 on
Python 3.10+) is imported first. ``tflite_runtime`` is the fallback for boards where LiteRT has no
wheel (armv7 / Pi OS 32-bit, or Python 3.8 images). tflite-runtime 2.14 is built against numpy 1.x
and crashes under numpy 2, so wherever tflite-runtime is the one installed numpy must be pinned
below 2 (``pip install 'numpy<2' tflite-runtime``). Both expose the same ``Interpreter`` API
(``model_content``, ``num_threads``, ``allocate_tensors``, ``set_tensor``, ``invoke``, ``get_tensor``).

tflite-runtime's native loader can crash the whole process on a damaged flatbuffer (seen with a
truncated file whose hash a manifest vouched for), so with that runtime a model is first opened in a
short-lived child process (:func:`probe_in_child`); if the child dies, the model is refused and the
agent keeps running.

``KBE_TFLITE_BACKEND=litert`` or ``=tflite_runtime`` forces one package (used by tests that run a
model in both runtimes).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from kernel.errors import ModelError

BACKENDS: dict[str, str] = {
    "litert": "ai_edge_litert.interpreter",
    "tflite_runtime": "tflite_runtime.interpreter",
}


@dataclass(frozen=True)
class Backend:
    """One importable runtime: its short name, module and ``Interpreter`` class."""

    name: str
    module: str
    interpreter_class: Any


def available_backends() -> list[str]:
    """Names of the runtime packages importable here, preferred first."""
    found = []
    for name, module in BACKENDS.items():
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        found.append(name)
    return found


def select_backend(name: str | None = None) -> Backend:
    """The runtime to use: ``name``, else ``$KBE_TFLITE_BACKEND``, else the first importable one."""
    wanted = name or os.environ.get("KBE_TFLITE_BACKEND") or None
    if wanted is not None and wanted not in BACKENDS:
        raise ModelError(f"unknown TFLite backend {wanted!r} (known: {', '.join(BACKENDS)})")
    order = [wanted] if wanted else list(BACKENDS)
    problems = []
    for candidate in order:
        module = BACKENDS[candidate]
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            problems.append(f"{module}: {exc}")
            continue
        return Backend(candidate, module, mod.Interpreter)
    raise ModelError(
        "no TFLite runtime is installed (pip install ai-edge-litert, or on armv7: "
        "pip install 'numpy<2' tflite-runtime): " + "; ".join(problems)
    )


def default_threads() -> int:
    """All the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def make_interpreter(content: bytes, num_threads: int | None, backend: Backend) -> Any:
    """An interpreter with tensors allocated, built from model bytes already checked by the caller.

    A file the runtime cannot parse (truncated, not a flatbuffer, unknown op) raises
    :class:`ModelError`.
    """
    threads = num_threads or default_threads()
    try:
        interp = backend.interpreter_class(model_content=content, num_threads=threads)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"the {backend.name} runtime cannot load the model: {exc}") from exc
    return interp


_PROBE = (
    "import importlib, sys\n"
    "interp = importlib.import_module(sys.argv[1]).Interpreter(model_content=sys.stdin.buffer.read(), num_threads=1)\n"
    "interp.allocate_tensors()\n"
)


def probe_in_child(content: bytes, backend: Backend, timeout_s: float = 60.0) -> None:
    """Open the model in a child process first; :class:`ModelError` if the child fails or crashes."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, backend.module],
            input=content,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ModelError(
            f"the {backend.name} runtime did not open the model within {timeout_s:.0f} s"
        ) from exc
    if done.returncode != 0:
        how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}"
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise ModelError(
            f"the {backend.name} runtime cannot load the model (probe process: {how}) {tail[0]}".rstrip()
        )
