"""llama.cpp's own `llama-server`, built from the llama.cpp that llama-cpp-python vendors.

Why a second engine: `python -m llama_cpp.server` decodes one request at a time, so parallel workers
only queue. The native server decodes several slots in one batch (continuous batching). Measured
with `llama-batched-bench` on this 2-core machine (1.5B Q4_K_M, 256-token prompts): 14.5 tokens/s
for one sequence, 35.6 for four at once, and prompts at ~110 tokens/s. Synthesis, evaluation and
training issue many independent requests, so they gain the most.

Nothing ships a binary that runs on Debian 12, so `optitrace llm build-native` compiles one: it
fetches the sdist of the pinned llama-cpp-python through pip (the same source the [local] extra
compiles), builds the `llama-server` target statically and keeps the single binary in the cache.
AMX kernels are left out: with -march=native on a Sapphire Rapids CPU the AMX matmul segfaulted
while warming up.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from agent.local_llm.registry import LocalModelError, optitrace_cache_dir

LLAMA_CPP_PYTHON_VERSION = "0.3.36"  # as pinned by the [local] extra
BINARY_ENV = "OPTITRACE_LLAMA_SERVER"
BINARY_NAME = "llama-server"
# Portable x86-64 flags instead of GGML_NATIVE (which turns on AMX; see the module docstring).
CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX=ON",
    "-DGGML_AVX2=ON",
    "-DGGML_FMA=ON",
    "-DGGML_F16C=ON",
    "-DGGML_BMI2=ON",
)
AVX512_OPTIONS = ("-DGGML_AVX512=ON", "-DGGML_AVX512_VNNI=ON", "-DGGML_AVX512_BF16=ON")
# The server's RAM cache of finished prompts (MiB); its default of 8 GiB would let it grow a lot.
PROMPT_CACHE_MIB = 1024


class NativeServerMissingError(LocalModelError):
    pass


class NativeBuildError(LocalModelError):
    pass


def default_binary_path() -> Path:
    return optitrace_cache_dir() / "bin" / BINARY_NAME


def find_native_server() -> Path:
    """The llama-server binary to run: $OPTITRACE_LLAMA_SERVER, else the one `llm build-native` made."""
    override = os.environ.get(BINARY_ENV)
    candidate = Path(override).expanduser() if override else default_binary_path()
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    where = f"${BINARY_ENV} points at {candidate}, which" if override else f"{candidate}"
    raise NativeServerMissingError(
        f"no native llama-server: {where} is not an executable file. Build it once with "
        "`optitrace llm build-native` (about 6 minutes on 2 cores), or use the default engine "
        "(--engine python)."
    )


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cmake_options(cpu_flags: set[str] | None = None) -> list[str]:
    """Configure options for this CPU: AVX2 always (x86-64-v3), AVX-512 only where the CPU has it."""
    flags = _cpu_flags() if cpu_flags is None else cpu_flags
    options = list(CMAKE_OPTIONS)
    if {"avx512f", "avx512bw", "avx512vl"} <= flags:
        options += AVX512_OPTIONS
    return options


def _run(command: list[str], log: Path, what: str) -> None:
    with log.open("ab") as sink:
        sink.write(f"\n$ {' '.join(command)}\n".encode())
        sink.flush()
        finished = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, check=False)
    if finished.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise NativeBuildError(f"{what} failed (exit {finished.returncode}); full log {log}:\n{tail}")


def build_native_server(
    destination: Path | None = None, jobs: int | None = None, log: Path | None = None
) -> Path:
    """Download the pinned llama-cpp-python sdist, build its vendored llama-server, install the binary."""
    if shutil.which("cmake") is None:
        raise NativeBuildError("cmake is not installed (apt install cmake, or pip install cmake)")
    target = destination or default_binary_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    log = log or target.with_name("build-native.log")
    log.write_text("")
    jobs = jobs or len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="optitrace-native-") as scratch:
        work = Path(scratch)
        _run(
            [sys.executable, "-m", "pip", "download", f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}",
             "--no-deps", "--no-binary", ":all:", "--dest", str(work)],
            log, "downloading the llama-cpp-python source",
        )  # fmt: skip
        archives = sorted(work.glob("llama_cpp_python-*.tar.gz"))
        if not archives:
            raise NativeBuildError(f"pip downloaded no llama-cpp-python sdist into {work}; see {log}")
        with tarfile.open(archives[0]) as archive:
            archive.extractall(work, filter="data")
        source = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"), None)
        if source is None:
            raise NativeBuildError("the sdist has no vendor/llama.cpp directory")
        build = source / "build"
        _run(["cmake", "-S", str(source), "-B", str(build), *cmake_options()], log, "configuring")
        _run(
            ["cmake", "--build", str(build), "--target", BINARY_NAME, "-j", str(jobs)],
            log, "compiling llama-server",
        )  # fmt: skip
        built = build / "bin" / BINARY_NAME
        if not built.is_file():
            raise NativeBuildError(f"the build finished without {built}; see {log}")
        temporary = target.with_suffix(".partial")
        shutil.copy2(built, temporary)
        os.replace(temporary, target)
    return target


def native_command(
    binary: Path, weights: Path, alias: str, host: str, port: int, *, n_ctx: int, threads: int, parallel: int
) -> list[str]:
    """Arguments for llama-server; each of the `parallel` slots gets the full `n_ctx` context."""
    return [
        str(binary),
        "--model", str(weights),
        "--alias", alias,
        "--host", host,
        "--port", str(port),
        "--ctx-size", str(n_ctx * parallel),
        "--parallel", str(parallel),
        "--threads", str(threads),
        "--threads-batch", str(threads),
        "--cache-ram", str(PROMPT_CACHE_MIB),
        "--no-webui",
    ]  # fmt: skip
