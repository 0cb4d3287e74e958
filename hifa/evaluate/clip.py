"""CLIP score and CLIP R-precision (clip-anytorch): the loader, embeddings, and the metrics as pure functions."""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
from pathlib import Path

import numpy as np
import torch

from hifa.errors import HifaError
from hifa.hub import offline, reachable
from hifa.io import to_uint8

DEFAULT_BACKBONES = ("ViT-B/32", "ViT-B/16", "ViT-L/14")
CLIP_SCORE_DEFINITION = "mean over views of 100 * cos(CLIP image embedding of the render, CLIP text embedding of the prompt); se = sample std / sqrt(views)"
MESH_CLIP_SCORE_DEFINITION = (
    "the CLIP score of views of the exported textured mesh (mesh/textured.glb ray-cast at the render cameras, unlit, on white) "
    "in place of the renders"
)
R_PRECISION_DEFINITION = (
    "fraction of views whose top-1 text by CLIP cosine similarity, among the caption set (the suite's prompts and the "
    "Object-Centric COCO validation captions of Dream Fields, normalised and deduplicated, the run's prompt added if missing), "
    "is the run's own prompt"
)


def clip_package():
    """clip-anytorch, imported without the pkg_resources deprecation warning its setup code raises (not the user's to act on)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        import clip
    return clip


def clip_root() -> Path:
    """Where CLIP checkpoints are looked for: $HIFA_CLIP_DIR, else clip's own default ~/.cache/clip."""
    return Path(os.environ.get("HIFA_CLIP_DIR") or Path.home() / ".cache" / "clip").expanduser()


def checkpoint_file(name: str) -> str | None:
    """The file name clip.load stores a named backbone under (e.g. ViT-B-32.pt), or None for an unknown name."""
    url = clip_package().clip._MODELS.get(name)
    return None if url is None else os.path.basename(url)


def missing_clip_message(name: str, root: Path, host: str | None = None) -> str:
    """One line telling the user how to make a CLIP checkpoint available offline (`host`: the download host, unreachable)."""
    filename = checkpoint_file(name) or name
    where = " offline" if offline() else f" (its download host {host} cannot be reached)" if host else ""
    return (
        f"CLIP model '{name}' is not available{where} ({root / filename} is missing): "
        f"download it once with `python -c \"import clip; clip.load('{name}', device='cpu', download_root='{root}')\"` "
        "on a machine with internet (or copy the file there; set HIFA_CLIP_DIR to use another folder), "
        "or pass --clip-models none"
    )


def check_available(name: str, root: str | Path | None = None) -> str:
    """The checkpoint a backbone name or file resolves to; a one-line error if unknown, or missing while offline."""
    clip_module = clip_package().clip

    root = Path(root) if root is not None else clip_root()
    if Path(name).is_file():
        return str(Path(name).resolve())
    filename = checkpoint_file(name)
    if filename is None:
        raise HifaError(f"unknown CLIP model {name!r}; use one of {', '.join(clip_module.available_models())} or a checkpoint file")
    if not (root / filename).is_file():
        if offline():
            raise HifaError(missing_clip_message(name, root))
        url = clip_module._MODELS[name]
        if not reachable(url):  # clip.load's download has no timeout: it would hang on a firewalled node
            raise HifaError(missing_clip_message(name, root, urllib.parse.urlsplit(url).hostname))
    return name


def load_clip(name: str, device: str | torch.device, root: str | Path | None = None):
    """(model, preprocess) by clip-anytorch's loader: a backbone name from `root` or a checkpoint file path."""
    import warnings

    clip = clip_package()
    root = Path(root) if root is not None else clip_root()
    check_available(name, root)
    try:
        with warnings.catch_warnings():  # clip.load tries torch.jit.load first, which warns that it is deprecated
            warnings.simplefilter("ignore", FutureWarning)
            model, preprocess = clip.load(name, device=device, jit=False, download_root=str(root))
    except Exception as exc:
        if Path(name).is_file():
            raise HifaError(f"cannot load CLIP checkpoint {name}: {exc.__class__.__name__} (not a CLIP state dict or JIT archive)") from None
        if isinstance(exc, (OSError, urllib.error.URLError, RuntimeError)):  # download failed or file corrupt
            raise HifaError(missing_clip_message(name, root)) from None
        raise
    return model.eval(), preprocess


@torch.no_grad()
def encode_images(model, preprocess, images: list[Path | np.ndarray], device: str | torch.device, batch: int = 32) -> torch.Tensor:
    """Unit CLIP image embeddings (V, D) of image files or (H, W, 3) arrays in [0, 1], through the model's own preprocessing."""
    from PIL import Image

    chunks = []
    for start in range(0, len(images), batch):
        pixels = []
        for item in images[start : start + batch]:
            if isinstance(item, np.ndarray):
                pixels.append(preprocess(Image.fromarray(to_uint8(item))))
                continue
            with Image.open(item) as image:
                pixels.append(preprocess(image.convert("RGB")))
        chunks.append(model.encode_image(torch.stack(pixels).to(device)).float())
    return torch.nn.functional.normalize(torch.cat(chunks), dim=-1).cpu()


@torch.no_grad()
def encode_texts(model, texts: list[str], device: str | torch.device, batch: int = 256) -> torch.Tensor:
    """Unit CLIP text embeddings (N, D); texts longer than the context are truncated."""
    clip = clip_package()

    chunks = []
    for start in range(0, len(texts), batch):
        tokens = clip.tokenize(texts[start : start + batch], truncate=True).to(device)
        chunks.append(model.encode_text(tokens).float())
    return torch.nn.functional.normalize(torch.cat(chunks), dim=-1).cpu()


def clip_score(image_emb: torch.Tensor, text_emb: torch.Tensor) -> dict[str, float | None]:
    """Mean over views of 100 * cos(image, text) and its standard error (None for one view)."""
    text = text_emb.reshape(-1)
    scores = 100.0 * torch.nn.functional.normalize(image_emb.double(), dim=-1) @ torch.nn.functional.normalize(text.double(), dim=0)
    se = float(scores.std(unbiased=True) / len(scores) ** 0.5) if len(scores) > 1 else None
    return {"mean": float(scores.mean()), "se": se}


def r_precision(image_emb: torch.Tensor, caption_emb: torch.Tensor, true_index: int) -> float:
    """Fraction of views (rows of image_emb [V, D]) whose most similar caption (rows of [C, D]) is `true_index`."""
    similarity = torch.nn.functional.normalize(image_emb.double(), dim=-1) @ torch.nn.functional.normalize(caption_emb.double(), dim=-1).T
    return float((similarity.argmax(dim=1) == true_index).double().mean())


def normalise_caption(text: str) -> str:
    """Dream Fields' caption normalisation: lower-case, trailing spaces/periods/commas stripped, a final period."""
    return text.strip().lower().rstrip(" .,") + "."


def caption_set(prompt: str, suite_prompts: list[str], captions: list[str]) -> tuple[list[str], int]:
    """(normalised texts, index of the prompt): suite prompts then captions, deduplicated, the prompt appended if missing."""
    texts: list[str] = []
    for text in [*suite_prompts, *captions, prompt]:
        norm = normalise_caption(text)
        if text.strip() and norm not in texts:
            texts.append(norm)
    return texts, texts.index(normalise_caption(prompt))


def read_lines(path: str | Path, what: str) -> list[str]:
    """Non-empty, non-comment lines of a text file, or a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise HifaError(f"{what} file {path} not found")
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
