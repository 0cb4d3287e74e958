"""Pretrained checkpoints: a local folder, the local Hugging Face cache, or the hub only when it can be reached."""

from __future__ import annotations

import functools
import logging
import os
import socket
import urllib.parse
from pathlib import Path

from hifa.errors import HifaError, shorten

log = logging.getLogger(__name__)
DEFAULT_ENDPOINT = "https://huggingface.co"
# Words in a loader's error (or its causes) that mean a file is there but damaged, not missing.
CORRUPT_MARKERS = ("unable to load weights", "deserializ", "safetensor", "incomplete metadata", "header", "truncat",
                   "corrupt", "pytorchstreamreader", "unpickl", "invalid load key", "unexpected end", "jsondecodeerror",
                   "expecting value", "size mismatch", "error(s) in loading state_dict")


def offline() -> bool:
    """Whether downloads are ruled out (HF_HUB_OFFLINE or HIFA_OFFLINE set)."""
    return any(os.environ.get(k, "0") not in ("", "0", "false", "False") for k in ("HF_HUB_OFFLINE", "HIFA_OFFLINE"))


def hub_endpoint() -> str:
    """The Hugging Face hub's address ($HF_ENDPOINT, as huggingface_hub reads it)."""
    return os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT


def reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether a TCP connection to the URL's host and port opens within `timeout` seconds (DNS included)."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return False
    return _connects(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), timeout)


@functools.lru_cache(maxsize=16)
def _connects(host: str, port: int, timeout: float) -> bool:
    """One probe per host and port in a process (CLIP's three checkpoints share one host)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def is_local_path(model: str) -> bool:
    """Whether `model` names a folder (existing, or written as a path) rather than a hub id."""
    return model.startswith(("/", "./", "../", "~")) or Path(model).expanduser().exists()


# Stability AI took its SD 2.x repositories off the hub in November 2025 (404 since); the sd2-community
# organisation keeps the same files under the same names.
ARCHIVED = {
    f"stabilityai/{name}": f"sd2-community/{name}"
    for name in ("stable-diffusion-2-1-base", "stable-diffusion-2-1", "stable-diffusion-2-base", "stable-diffusion-2")
}


PIPELINE, MODEL = "diffusers pipeline", "transformers model"
WEIGHTS = ("*.safetensors", "*.bin")  # either format, one file or shards
MODEL_FILES = (("config.json",), WEIGHTS)
# What hifa's loaders read from a local folder of each kind: per subfolder ("" for the folder itself), groups of files
# of which one each must be there. The SD prior loads five components and never model_index.json (the tiny world's
# folders have none); the depth model its config, weights and image processor. A CLIPTokenizer given no tokenizer
# files loads anyway, as a two-token vocabulary, so a missing tokenizer/ is caught here or not at all.
LAYOUTS = {
    PIPELINE: {"tokenizer": (("tokenizer.json", "vocab.json"),), "text_encoder": MODEL_FILES, "vae": MODEL_FILES,
               "unet": MODEL_FILES, "scheduler": (("scheduler_config.json",),)},
    MODEL: {"": (*MODEL_FILES, ("preprocessor_config.json",))},
}
MARKS = {PIPELINE: ("model_index.json", *LAYOUTS[PIPELINE]), MODEL: ("config.json",)}  # any one: meant as that kind


def describe(subfolder: str, group: tuple[str, ...]) -> str:
    """A group of files as a gap in a folder: 'unet/config.json', 'unet/ weights (*.safetensors or *.bin)'."""
    prefix = f"{subfolder}/" if subfolder else ""
    if group == WEIGHTS:
        return f"{prefix} weights ({' or '.join(group)})".lstrip()
    return " or ".join(prefix + name for name in group)


def gaps(folder: Path, kind: str) -> list[str]:
    """What `folder` lacks of a `kind` folder: a missing subfolder as 'unet/', missing files as in describe()."""
    found = []
    for subfolder, groups in LAYOUTS[kind].items():
        part = folder / subfolder
        if not part.is_dir():
            found.append(f"{subfolder}/")
            continue
        found += [describe(subfolder, group) for group in groups if not any(any(part.glob(name)) for name in group)]
    return found


def model_folder_problem(model: str, what: str, kind: str) -> str | None:
    """Why local path `model` cannot be loaded as `what` from a `kind` folder (PIPELINE or MODEL), or None if it can."""
    folder = Path(model).expanduser()
    if not folder.exists():
        return f"{what} folder '{model}' does not exist"
    if not folder.is_dir():
        return f"{what} '{model}' is a file, not a folder"
    missing = gaps(folder, kind)
    if not missing:
        return None
    if not any((folder / mark).exists() for mark in MARKS[kind]):
        return f"{what} '{model}' is not a {kind} folder: it has no {', '.join(missing)}"
    return f"{what} folder '{model}' has no {', '.join(missing)}"


def cached_file(model: str) -> Path | None:
    """A file of the local Hugging Face cache's snapshot of hub id `model` (no network), or None if none is cached;
    its folder names the snapshot's revision (.../snapshots/<commit>/)."""
    from huggingface_hub import try_to_load_from_cache

    for name in ("model_index.json", "unet/config.json", "config.json"):  # a pipeline, its UNet alone, a single model
        found = try_to_load_from_cache(model, name)
        if isinstance(found, str):
            return Path(found)
    return None


def in_cache(model: str) -> bool:
    """Whether the local Hugging Face cache holds a snapshot of hub id `model` (no network)."""
    return cached_file(model) is not None


def resolve_model(model: str) -> str:
    """The hub id to load `model` from: a retired Stability AI id that is not cached becomes its archive copy,
    and an archive id whose retired original is cached (and it is not) loads that copy: the same files, no download."""
    if is_local_path(model):
        return model
    archive = ARCHIVED.get(model)
    if archive is not None and not in_cache(model):
        log.warning("%s left the Hugging Face hub in November 2025; loading its archive copy %s (the same files)", model, archive)
        return archive
    original = next((old for old, new in ARCHIVED.items() if new == model), None)
    if original is not None and not in_cache(model) and in_cache(original):
        log.info("loading %s from the cached copy of %s (the same files)", model, original)
        return original
    return model


def missing_model_message(model: str, what: str = "Stable Diffusion model") -> str:
    """One line telling the user how to make a checkpoint available offline."""
    return (
        f"{what} '{model}' is not available{' offline (HF_HUB_OFFLINE or HIFA_OFFLINE set)' if offline() else ''}: "
        f"download it once with `hf download {model}` on a machine with internet and point HF_HOME at that cache, "
        "or pass a local folder holding the checkpoint"
    )


def unreachable_message(model: str, what: str, endpoint: str) -> str:
    """One line for a checkpoint that is neither cached nor downloadable from here."""
    host = urllib.parse.urlsplit(endpoint).hostname or endpoint
    return (
        f"{what} '{model}' is not in the local Hugging Face cache and the hub ({host}) cannot be reached from this "
        f"machine: download it once with `hf download {model}` where there is internet and point HF_HOME at that cache, "
        "or pass a local folder holding the checkpoint (HF_HUB_OFFLINE=1 skips the hub)"
    )


def damage(exc: BaseException) -> str | None:
    """The first line of the error in exc's chain that says a file is damaged (truncated, corrupt), or None."""
    seen = exc
    while seen is not None:
        text = f"{seen.__class__.__name__}: {seen}"
        if any(marker in text.lower() for marker in CORRUPT_MARKERS):
            return (text.strip().splitlines() or [text])[0]
        seen = seen.__cause__ or seen.__context__
    return None


def load_component(cls, model: str, subfolder: str | None, what: str, **kwargs):
    """`cls.from_pretrained(model, subfolder=...)`: cache first, the hub only if reachable; failures as one clear line.

    The cache is tried with no network at all, so a cached checkpoint loads the same on a compute node without
    internet; huggingface_hub would otherwise retry each file's request with back-off (minutes per model).
    """
    if is_local_path(model):
        # A component in a subfolder is one of a pipeline's (the SD prior); none, a single model (the depth model).
        problem = model_folder_problem(model, what, PIPELINE if subfolder else MODEL)
        if problem is not None:
            raise HifaError(problem)
    if subfolder is not None:
        kwargs["subfolder"] = subfolder
    try:
        try:
            return cls.from_pretrained(model, local_files_only=True, **kwargs)
        except Exception as exc:
            if offline() or is_local_path(model) or damage(exc) is not None:
                raise
            endpoint = hub_endpoint()
            if not reachable(endpoint):
                raise HifaError(unreachable_message(model, what, endpoint)) from exc
            return cls.from_pretrained(model, **kwargs)  # downloads what the cache lacks, with the hub's progress bars
    except HifaError:
        raise
    except Exception as exc:
        # from_pretrained raises OSError (or a subclass) for missing files and unreachable hubs; a damaged
        # file raises whatever its parser raises (SafetensorError, an OSError naming the weights, JSON errors).
        part = f"{model}/{subfolder}" if subfolder else model
        reason = damage(exc)
        if reason is not None:
            raise HifaError(
                f"{what} '{model}' is damaged: loading {part} failed ({shorten(reason, 200)}); "
                "a file is truncated or corrupt: download it again (or rebuild the folder)"
            ) from exc
        if isinstance(exc, (OSError, ValueError)):
            raise HifaError(missing_model_message(model, what)) from exc
        raise
