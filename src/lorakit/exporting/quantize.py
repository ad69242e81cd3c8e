"""K-quants by llama.cpp's own quantizer: `llama_model_quantize` from the prebuilt libllama that the pinned
npm package `@node-llama-cpp/linux-x64` ships, called through ctypes (no compiler, no download).

The `gguf` package writes only F16/BF16/Q8_0/Q4_x/Q5_x; K-quant mixtures (which tensors get Q6_K in a
Q4_K_M file, the fallbacks for rows that do not divide into 256-blocks) are llama.cpp's rules, so they are
left to llama.cpp rather than re-implemented. The params struct is declared to match that one build's
llama.h, and every default read back is checked, so another build fails in one line instead of writing a
wrong file. The quantizer runs in a child process: a llama.cpp abort cannot take the export down with it,
and its log is kept off the terminal unless it fails.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lorakit import settings
from lorakit.errors import LorakitError

# --quant value -> llama_ftype of include/llama.h (LLAMA_FTYPE_MOSTLY_*)
K_QUANTS = {"q4_k_m": 15, "q5_k_m": 17, "q6_k": 18}

PACKAGE = "@node-llama-cpp/linux-x64"
PACKAGE_VERSION = "3.22.1"  # tests/unit/export/llama_cpp/package.json pins the same
LLAMA_VERSION = "0.5.0-dev"  # what that build's llama_version() returns
LIB_ENV = settings.LLAMA_CPP_LIB
LIBS = ("libggml-base.so", "libggml.v0.5.0.so", "libllama.v0.5.0.so")  # load order: ggml first, globally
INSTALL = (f"npm install -g {PACKAGE}@{PACKAGE_VERSION} (or `make install` in a lorakit checkout), or set "
           f"{LIB_ENV} to the folder holding its libllama.v0.5.0.so")  # fmt: skip
_BINS = Path(PACKAGE) / "bins" / "linux-x64"
_REPO_NODE_MODULES = Path(__file__).resolve().parents[3] / "tests" / "unit" / "export" / "llama_cpp" / "node_modules"

GGML_TYPE_COUNT = 43  # ggml.h of the pinned build: "no override" for output/token-embedding types
QUANT_MAX_BUF_SIZE = 8 * 1024**3  # llama-quant.cpp's LLAMA_QUANT_MAX_BUF_SIZE


class QuantizeParams(ctypes.Structure):
    """llama_model_quantize_params as the pinned build's include/llama.h declares it (64 bytes)."""

    _fields_ = [("nthread", ctypes.c_int32), ("ftype", ctypes.c_int32),
                ("output_tensor_type", ctypes.c_int32), ("token_embedding_type", ctypes.c_int32),
                ("allow_requantize", ctypes.c_bool), ("quantize_output_tensor", ctypes.c_bool),
                ("only_copy", ctypes.c_bool), ("pure", ctypes.c_bool), ("keep_split", ctypes.c_bool),
                ("dry_run", ctypes.c_bool), ("imatrix", ctypes.c_void_p), ("kv_overrides", ctypes.c_void_p),
                ("tt_overrides", ctypes.c_void_p), ("prune_layers", ctypes.c_void_p),
                ("max_buf_size", ctypes.c_size_t)]  # fmt: skip


# llama_model_quantize_default_params() of the pinned build; anything else means another layout.
DEFAULTS = {"nthread": 0, "ftype": 7, "output_tensor_type": GGML_TYPE_COUNT, "token_embedding_type": GGML_TYPE_COUNT,
            "allow_requantize": False, "quantize_output_tensor": True, "only_copy": False, "pure": False,
            "keep_split": False, "dry_run": False, "imatrix": None, "kv_overrides": None, "tt_overrides": None,
            "prune_layers": None, "max_buf_size": QUANT_MAX_BUF_SIZE}  # fmt: skip


@dataclass(frozen=True)
class Quantizer:
    folder: Path  # holds the three shared libraries
    where: str  # how it was found, for messages


def find_quantizer() -> Quantizer:
    """The pinned libllama, from LORAKIT_LLAMA_CPP_LIB, this checkout's test packages (`make install`) or
    the global npm root; refuses in one line, saying what to install, when none is there."""
    if sys.platform != "linux" or os.uname().machine not in ("x86_64", "AMD64"):
        raise LorakitError(f"K-quants use llama.cpp's quantizer from {PACKAGE}, which is built for Linux x86-64 "
                           "only; export f16 here and quantize with llama.cpp's llama-quantize")  # fmt: skip
    env = settings.llama_cpp_lib()
    if env is not None:  # an explicit place is the only place looked at
        return _checked(env, f"{LIB_ENV}={env}")
    for root, where in ((_REPO_NODE_MODULES, "this checkout's tests/unit/export/llama_cpp"), (_npm_root(), "npm -g")):
        if root is None:
            continue
        for folder in (root / _BINS, root / "node-llama-cpp" / "node_modules" / _BINS):
            if (folder / LIBS[-1]).is_file():
                return _checked(folder, where)
    raise LorakitError(f"K-quants need llama.cpp's quantizer, which is not installed: {INSTALL}")


def _npm_root() -> Path | None:
    npm = shutil.which("npm")
    if npm is None:
        return None
    try:
        proc = subprocess.run([npm, "root", "-g"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return Path(proc.stdout.strip()) if proc.returncode == 0 and proc.stdout.strip() else None


def _checked(folder: Path, where: str) -> Quantizer:
    """`folder` holds the pinned build: the libraries, the package version beside them, llama_version()
    and the struct defaults read back."""
    missing = [name for name in LIBS if not (folder / name).is_file()]
    if missing:
        raise LorakitError(f"{where}: no {missing[-1]} in {folder}; K-quants need llama.cpp's quantizer: {INSTALL}")
    package = folder.parent.parent / "package.json"
    try:
        version = json.loads(package.read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError):
        version = None
    if version != PACKAGE_VERSION:
        raise LorakitError(f"{package}: {PACKAGE} {version or '(no version)'} is not the pinned {PACKAGE_VERSION} "
                           f"whose quantizer layout lorakit checks; {INSTALL}")  # fmt: skip
    lib = _load(folder)
    got = ctypes.string_at(lib.llama_version()).decode()
    if got != LLAMA_VERSION:
        raise LorakitError(f"{folder}: libllama reports version {got}, not {LLAMA_VERSION}; {INSTALL}")
    params = lib.llama_model_quantize_default_params()
    read = {name: getattr(params, name) for name, _ in QuantizeParams._fields_}
    if read != DEFAULTS:
        differ = sorted(k for k in DEFAULTS if read[k] != DEFAULTS[k])
        raise LorakitError(f"{folder}: llama_model_quantize_params does not read back as the pinned build's "
                           f"defaults ({', '.join(differ)}); not quantizing with an unknown layout")  # fmt: skip
    return Quantizer(folder, where)


def _load(folder: Path):
    for name in LIBS[:-1]:  # libllama resolves ggml's symbols from these, so they must be global
        ctypes.CDLL(str(folder / name), mode=ctypes.RTLD_GLOBAL)
    lib = ctypes.CDLL(str(folder / LIBS[-1]))
    lib.llama_version.restype = ctypes.c_void_p
    lib.llama_model_quantize_default_params.restype = QuantizeParams
    lib.llama_model_quantize.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(QuantizeParams)]
    lib.llama_model_quantize.restype = ctypes.c_uint32
    return lib


def quantize(quantizer: Quantizer, src: Path, dst: Path, quant: str, threads: int | None = None) -> None:
    """Quantize GGUF `src` (f16) into `dst` with llama.cpp's rules for `quant` (a K_QUANTS key)."""
    threads = threads or os.cpu_count() or 1
    args = [sys.executable, "-m", "lorakit.exporting.quantize", str(quantizer.folder), str(src), str(dst),
            str(K_QUANTS[quant]), str(threads)]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0 or not dst.is_file():
        lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if "error" in line.lower()), lines[-1] if lines else "")
        raise LorakitError(f"llama.cpp's quantizer ({quantizer.folder}) failed on {src.name} -> {quant} "
                           f"(exit {proc.returncode}): {reason.strip() or 'no output'}")  # fmt: skip


def _child(folder: str, src: str, dst: str, ftype: str, threads: str) -> int:
    """Runs in the child process: one llama_model_quantize call (its log goes to this process's stderr)."""
    lib = _load(Path(folder))
    lib.llama_backend_init()
    params = lib.llama_model_quantize_default_params()
    params.nthread, params.ftype = int(threads), int(ftype)
    rc = lib.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if rc != 0:
        print(f"error: llama_model_quantize returned {rc}", file=sys.stderr)
    return int(rc)


if __name__ == "__main__":
    sys.exit(_child(*sys.argv[1:6]))
