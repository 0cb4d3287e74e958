"""The oracle prior: an exact denoiser over ground-truth renders of the catalogue scenes (design.md §4).

For a view v of scene s the prior is the set of renders x_k at cameras c_k, weighted
pi_k ∝ exp(-angle(v, c_k)^2 / (2 tau^2)); its posterior mean given x_t is exact:
x0(x_t) = sum_k softmax_k(log pi_k - |x_t - sqrt(abar) x_k|^2 / (2 (1 - abar))) x_k.
The unconditional branch uses every scene's renders, so CFG behaves as with a text model.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from hifa.cameras import Cameras, sphere_cameras, spherical_to_position
from hifa.errors import HifaError, require, shorten
from hifa.guidance.losses import residual_gains
from hifa.guidance.oracle_views import angle_log_prior, bank_labels, sector_log_prior
from hifa.guidance.prior import VIEW_MODES, Conditioning, ViewMode
from hifa.guidance.schedules import stable_diffusion_alphas_cumprod
from hifa.guidance.views import perpneg_plan
from hifa.io import write_bytes_atomic
from hifa.scenes import CATALOGUE, GroundTruthRenderer, Scene, SceneSpec

log = logging.getLogger(__name__)

SUFFIX_VIEWS = ("sector", "canonical")
BANK_VERSION = 2  # 2: the cache file carries its key and a SHA-256 of its tensors, checked on every load
RESIDUAL_UNITS = ("reference", "pixels")
# The oracle's images in [0, 1] have this pixel standard deviation (0.305-0.322 over the catalogue
# scenes' banks, measured); Stable Diffusion's latents are scaled to 1 (losses.residual_gains).
ORACLE_PIXEL_STD = 0.32


@dataclass(frozen=True)
class OracleConfig:
    """Bank size and resolution, view uncertainty tau, and the cameras the bank is rendered with."""

    resolution: int = 64
    views: int = 400
    uncond_views_per_scene: int = 80
    tau_deg: float = 10.0
    view_cutoff_deg: float | None = None
    # What a view phrase ('front view': a suffix, or a Perp-Neg negative) tells the prior: 'sector', every
    # view the label names (at the camera's elevation, within tau / cut-off), as a text model knows it;
    # 'canonical', the one view at the label's centre (pins every front suffix to azimuth 0 and trains a
    # solid of revolution; as negatives, 4.5 dB worse for 'hifa' on the ball-on-box scene at the demo's size).
    suffix_views: str = "sector"
    # HiFA's L_lat and L_rgb sums: 'reference', multiplied by `residual_gains` (what the oracle's one image
    # stands in for: SD's unit-variance latent and its 512^2 image); 'pixels', summed as they are.
    residual_units: str = "reference"
    radius: float = 3.2
    fovy_deg: float = 20.0
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        require(self.resolution >= 8, "oracle.resolution", f"must be >= 8, got {self.resolution}")
        require(self.views >= 1, "oracle.views", f"must be positive, got {self.views}")
        require(1 <= self.uncond_views_per_scene <= self.views, "oracle.uncond_views_per_scene", "must lie in [1, views]")
        require(self.tau_deg > 0, "oracle.tau_deg", "must be positive")
        require(self.view_cutoff_deg is None or self.view_cutoff_deg > 0, "oracle.view_cutoff_deg", "must be positive or null")
        require(self.residual_units in RESIDUAL_UNITS, "oracle.residual_units", f"must be one of {RESIDUAL_UNITS}, got {self.residual_units!r}")
        require(self.suffix_views in SUFFIX_VIEWS, "oracle.suffix_views", f"must be one of {SUFFIX_VIEWS}, got {self.suffix_views!r}")
        require(self.radius > 1.0, "oracle.radius", "must be > 1")
        require(0 < self.fovy_deg < 180, "oracle.fovy_deg", "must lie in (0, 180)")

    def cache_root(self) -> Path:
        root = self.cache_dir or os.environ.get("HIFA_CACHE_DIR") or Path.home() / ".cache" / "hifa"
        return Path(root) / "oracle"


@dataclass
class SceneBank:
    """Ground-truth renders of one scene: unit view directions, images and disparity."""

    name: str
    directions: torch.Tensor  # (K, 3)
    images: torch.Tensor  # (K, 3, S, S) albedo on white
    disparity: torch.Tensor  # (K, S, S): mask / planar depth, 0 on background


@dataclass
class OracleView:
    """A conditioning handle: a scene (None: every scene, unconditional) seen from directions (B, 3)."""

    scene: str | None
    directions: torch.Tensor | None
    positive: bool = False
    sector: list[str] | None = None  # per item, a view label: only bank views with that label


def bank_key(scene: Scene, config: OracleConfig) -> str:
    """A content hash of the scene geometry, colours and bank settings: stale caches are never used."""
    digest = hashlib.sha256(f"v{BANK_VERSION}:{config.resolution}:{config.views}:{config.radius}:{config.fovy_deg}".encode())
    for part in scene.parts:
        digest.update(np.asarray(part.mesh.vertices, dtype=np.float64).tobytes())
        digest.update(np.asarray(part.mesh.triangles, dtype=np.int64).tobytes())
        digest.update(part.vertex_colors().astype(np.float64).tobytes())
    return digest.hexdigest()[:16]


def render_bank(scene: Scene, config: OracleConfig) -> SceneBank:
    """Ground truth at `views` cameras spread over the sphere."""
    cams = sphere_cameras(config.views, radius=config.radius, fovy_deg=config.fovy_deg)
    truth = GroundTruthRenderer(scene).render(cams, config.resolution, config.resolution, background=1.0)
    return SceneBank(scene.name, torch.nn.functional.normalize(cams.origins, dim=-1), truth.rgb.permute(0, 3, 1, 2).contiguous(), truth_disparity(truth))


def truth_disparity(truth) -> torch.Tensor:
    """Ground-truth disparity: mask / planar depth, 0 on background (method.md §9)."""
    return torch.where(truth.mask > 0.5, 1.0 / truth.depth.clamp(min=1e-6), torch.zeros_like(truth.depth))


def bank_digest(directions: torch.Tensor, images: torch.Tensor, disparity: torch.Tensor) -> str:
    """SHA-256 of a bank's tensors (shapes, dtypes and bytes)."""
    digest = hashlib.sha256()
    for tensor in (directions, images, disparity):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def read_bank(path: Path, scene: Scene, config: OracleConfig, key: str) -> tuple[SceneBank | None, str]:
    """A cached bank if the file is whole and is the one asked for (key, shapes, SHA-256), else (None, why not)."""
    try:
        data = torch.load(path, weights_only=True)
    except Exception as exc:
        return None, f"unreadable: {exc.__class__.__name__}"
    if not isinstance(data, dict) or data.get("key") != key or not isinstance(data.get("sha256"), str):
        return None, "not a bank of this scene and these settings"
    parts = [data.get(name) for name in ("directions", "images", "disparity")]
    if not all(isinstance(t, torch.Tensor) for t in parts):
        return None, "tensors missing"
    directions, images, disparity = parts
    k, size = config.views, config.resolution
    if directions.shape != (k, 3) or images.shape != (k, 3, size, size) or disparity.shape != (k, size, size):
        return None, "wrong shapes"
    if bank_digest(directions, images, disparity) != data["sha256"]:
        return None, "content does not match its SHA-256"
    return SceneBank(scene.name, directions, images, disparity), ""


def load_bank(scene: Scene, config: OracleConfig) -> SceneBank:
    """The scene's bank from the disk cache, built and cached (atomically) on first use.

    The file name carries a hash of the scene and settings (a stale bank is never looked up) and the file
    a SHA-256 of its tensors: a corrupt or tampered file is rebuilt, never used.
    """
    key = bank_key(scene, config)
    path = config.cache_root() / f"{scene.name}-{key}.pt"
    if path.is_file():
        bank, why = read_bank(path, scene, config, key)
        if bank is not None:
            return bank
        log.warning("oracle bank cache %s is corrupt (%s); rebuilding it", path, why)
        path.unlink(missing_ok=True)
    bank = render_bank(scene, config)
    buffer = io.BytesIO()
    payload = {"directions": bank.directions, "images": bank.images, "disparity": bank.disparity}
    torch.save({**payload, "key": key, "sha256": bank_digest(**payload)}, buffer)
    write_bytes_atomic(path, buffer.getvalue())
    return bank


def bank_distances(x_t: torch.Tensor, abar: torch.Tensor, flat_bank: torch.Tensor, bank_sq: torch.Tensor) -> torch.Tensor:
    """|x_t - sqrt(abar) x_k|^2 (B, K) in float64, for x_t (B, ...) and a float64 bank (K, D) with squared norms (K,)."""
    flat_x = x_t.flatten(1).double()
    a = abar.double().sqrt()[:, None]
    # Expanded, so the bank is read once (a GEMV); float64 because the three terms nearly cancel at low noise.
    return (flat_x**2).sum(-1, keepdim=True) - 2 * a * flat_x @ flat_bank.T + a**2 * bank_sq[None]


def posterior_weights(log_prior: torch.Tensor, distances: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """softmax_k(log pi_k - d_k / (2 (1 - abar))) in float64; log_prior (..., B, K) broadcasts over distances (B, K)."""
    return torch.softmax(log_prior.double() - distances / (2 * (1 - abar.double()))[:, None], dim=-1)


def exact_x0(
    x_t: torch.Tensor, abar: torch.Tensor, bank: torch.Tensor, log_prior: torch.Tensor, bank_sq: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean of x0 over a bank (K, C, H, W) given x_t (B, C, H, W): (x0, softmax weights (B, K)).

    `bank` may be given pre-flattened as float64 (K, C*H*W) with its squared norms `bank_sq` (K,).
    """
    flat_bank = bank if bank.dim() == 2 and bank.dtype == torch.float64 else bank.flatten(1).double()
    bank_sq = (flat_bank**2).sum(-1) if bank_sq is None else bank_sq
    weights = posterior_weights(log_prior, bank_distances(x_t, abar, flat_bank, bank_sq), abar)
    return (weights @ flat_bank).view_as(x_t).to(x_t.dtype), weights.to(x_t.dtype)


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar), per item."""
    abar = abar.to(x_t.dtype).view(-1, *([1] * (x_t.dim() - 1)))
    return (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()


def catalogue_entry(prompt: str) -> SceneSpec:
    """The catalogue entry a prompt names (by prompt or by name), or a clear error."""
    wanted = prompt.strip().lower()
    for spec in CATALOGUE:
        if wanted in (spec.prompt.lower(), spec.name):
            return spec
    known = "; ".join(f"'{spec.prompt}'" for spec in CATALOGUE)
    raise HifaError(f"the oracle prior has no scene for the prompt {shorten(prompt, 80)}; it knows: {known}")


def scene_for_prompt(prompt: str) -> Scene:
    """The catalogue scene a prompt names, built."""
    return catalogue_entry(prompt).scene()


class OraclePrior:
    """Exact pixel-space denoiser: identity 'VAE' at the bank resolution, epsilon prediction."""

    def __init__(self, config: OracleConfig | None = None, scenes: list[Scene] | None = None):
        self.config = config or OracleConfig()
        self.alphas_cumprod = stable_diffusion_alphas_cumprod()
        self.image_size = self.config.resolution
        self.residual_gains = residual_gains(self.image_size, ORACLE_PIXEL_STD) if self.config.residual_units == "reference" else (1.0, 1.0)
        self._banks: dict[str, SceneBank] = {}
        self._scenes = {s.name: s for s in (scenes or [spec.scene() for spec in CATALOGUE])}
        self._matrices: dict[tuple[str | None, torch.device], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}
        self._bank_labels: dict[str, list[str]] = {}
        self._rows_cache: dict[str | None, tuple] = {}
        self.last_disparity: torch.Tensor | None = None

    def disparity_at(self, prompt: str, cameras: Cameras, height: int, width: int) -> torch.Tensor:
        """Ground-truth disparity (B, H, W) of the prompt's scene at exactly these cameras (the limit tau -> 0)."""
        spec = catalogue_entry(prompt)
        if spec.name not in self._scenes:
            self._scenes[spec.name] = spec.scene()
        return truth_disparity(GroundTruthRenderer(self._scenes[spec.name]).render(cameras, height, width))

    def bank(self, name: str) -> SceneBank:
        if name not in self._banks:
            self._banks[name] = load_bank(self._scenes[name], self.config)
        return self._banks[name]

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return images

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.detach().clamp(0.0, 1.0)

    def conditions(self, prompt: str, cameras: Cameras, view_mode: ViewMode) -> Conditioning:
        """A view replaces text: Perp-Neg's positive is the camera; its negatives and suffixes name sectors (or canonical views)."""
        require(view_mode in VIEW_MODES, "guidance.view_mode", f"must be one of {VIEW_MODES}")
        # Called every training step: resolve the name only; the meshes are built once, when first needed.
        spec = catalogue_entry(prompt)
        if spec.name not in self._scenes:
            self._scenes[spec.name] = spec.scene()
        scene = self._scenes[spec.name]
        self._check_cameras(cameras)
        polar, azimuth = cameras.polar_deg.double(), cameras.azimuth_deg.double()
        own = spherical_to_position(torch.ones_like(polar), polar, azimuth)
        canonical = lambda az: spherical_to_position(torch.ones_like(polar), polar, az)  # noqa: E731
        side = torch.where(azimuth >= 0, torch.full_like(azimuth, 90.0), torch.full_like(azimuth, -90.0))
        views = {"front": canonical(torch.zeros_like(azimuth)), "side": canonical(side), "back": canonical(torch.full_like(azimuth, 180.0))}
        uncond = OracleView(None, None)
        positive = OracleView(scene.name, own.float(), positive=True)
        if view_mode == "none":
            return Conditioning(uncond, positive, [], None)
        if view_mode == "suffix":
            labels = cameras.labels()
            if self.config.suffix_views == "sector":
                return Conditioning(uncond, OracleView(scene.name, own.float(), positive=True, sector=labels), [], None)
            views["overhead"] = spherical_to_position(torch.ones_like(polar), torch.zeros_like(polar), azimuth)
            dirs = torch.stack([views[label][b] for b, label in enumerate(labels)])
            return Conditioning(uncond, OracleView(scene.name, dirs.float(), positive=True), [], None)
        plans = [perpneg_plan(float(a)) for a in azimuth]
        if self.config.suffix_views == "sector":
            # A negative embedding is a view phrase too: 'side view' names the side sector, not azimuth 90°.
            negatives = [OracleView(scene.name, own.float(), sector=[plan.negatives[j] for plan in plans]) for j in range(2)]
        else:
            negatives = [
                OracleView(scene.name, torch.stack([views[plan.negatives[j]][b] for b, plan in enumerate(plans)]).float())
                for j in range(2)
            ]
        weights = torch.tensor([plan.weights for plan in plans], dtype=torch.float32)
        return Conditioning(uncond, positive, negatives, weights)

    def _check_cameras(self, cameras: Cameras) -> None:
        cfg = self.config
        if not (torch.allclose(cameras.radius, torch.full_like(cameras.radius, cfg.radius), rtol=0.01)
                and torch.allclose(cameras.fovy_deg, torch.full_like(cameras.fovy_deg, cfg.fovy_deg), rtol=0.01)):
            raise HifaError(
                f"the oracle prior's renders use radius {cfg.radius} and fovy {cfg.fovy_deg}°; "
                "set cameras.radius and cameras.fovy_deg to those (the oracle profile does)"
            )

    @torch.no_grad()
    def predict_eps(self, latents: torch.Tensor, t: torch.Tensor, handles: list[OracleView]) -> list[torch.Tensor]:
        abar = self.alphas_cumprod.to(latents.device)[t.to(latents.device)]
        out: list[torch.Tensor | None] = [None] * len(handles)
        # Handles on one bank (Perp-Neg's positive and negatives) differ only in their view prior: the
        # distances to the bank are computed once and the posterior means in one product, so the bank
        # is read twice per call, not twice per handle.
        groups: dict[str | None, list[int]] = {}
        for i, handle in enumerate(handles):
            groups.setdefault(handle.scene, []).append(i)
        for scene, members in groups.items():
            flat, sq, low, log_prior, disparity = self._rows(scene, [handles[i] for i in members], latents.shape[0], latents.device)
            distances = bank_distances(latents, abar, flat, sq)
            weights = posterior_weights(log_prior.to(latents.device), distances, abar)  # (H, B, K)
            # The mean in the latents' precision (float32 halves the bank read); the distances above need float64.
            bank = flat if latents.dtype == torch.float64 else low
            x0 = (weights.to(bank.dtype).flatten(0, 1) @ bank).view(len(members), *latents.shape).to(latents.dtype)
            for j, i in enumerate(members):
                if handles[i].positive and scene is not None:
                    self.last_disparity = (weights[j].to(disparity.dtype) @ disparity.flatten(1)).view(-1, *disparity.shape[1:])
                out[i] = eps_from_x0(latents, x0[j], abar)
        return out  # type: ignore[return-value]

    def _rows(self, scene: str | None, handles: list[OracleView], batch: int, device: torch.device) -> tuple:
        """The bank rows these handles' priors allow (float64, squared norms, float32), their log priors (H, B, K) and
        disparities; the last result is reused while the handles are the same objects (one step's DDIM calls)."""
        cached = self._rows_cache.get(scene)
        if cached is not None and cached[0] == (batch, device) and len(cached[1]) == len(handles) \
                and all(a is b for a, b in zip(cached[1], handles)):
            return cached[2]
        flat, sq, low, disparity = self._matrix(scene, device)
        log_prior = torch.stack([self._log_prior(h, batch, len(flat)) for h in handles])  # (H, B, K)
        # Views the prior rules out for every handle carry no weight: leave them out of the (exact) posterior.
        allowed = torch.isfinite(log_prior).flatten(0, 1).any(0).nonzero().squeeze(-1)
        if len(allowed) < len(flat):  # an index copy of the whole unconditional bank would be ~180 MB
            flat, sq, low, log_prior = flat[allowed], sq[allowed], low[allowed], log_prior[..., allowed]
            disparity = None if disparity is None else disparity[allowed]
        rows = (flat, sq, low, log_prior, disparity)
        self._rows_cache[scene] = ((batch, device), handles, rows)  # holding the handles keeps their ids unique
        return rows

    def _log_prior(self, handle: OracleView, batch: int, views: int) -> torch.Tensor:
        """log pi_k (B, K) of a handle over its bank of `views` renders: uniform for the unconditional one."""
        if handle.scene is None:
            return torch.zeros(batch, views, dtype=torch.float64)
        bank = self.bank(handle.scene)
        tau = math.radians(self.config.tau_deg)
        cutoff = None if self.config.view_cutoff_deg is None else math.radians(self.config.view_cutoff_deg)
        if handle.sector is None:
            return angle_log_prior(handle.directions, bank.directions, tau, cutoff)
        return sector_log_prior(handle.directions, bank.directions, handle.sector, self._labels(handle.scene), tau, cutoff)

    def _labels(self, name: str) -> list[str]:
        if name not in self._bank_labels:
            self._bank_labels[name] = bank_labels(self.bank(name).directions)
        return self._bank_labels[name]

    def _matrix(self, scene: str | None, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """A scene's bank (None: the unconditional one) as float64 rows, their squared norms, a float32 copy and
        the disparity bank (None for the unconditional one), on a device, built once per device (hot in every DDIM
        call; the unconditional bank is ~180 MB to copy)."""
        key = (scene, torch.device(device))
        if key not in self._matrices:
            images = self._uncond_images() if scene is None else self.bank(scene).images
            flat = images.flatten(1).double().to(key[1])
            disparity = None if scene is None else self.bank(scene).disparity.to(key[1])
            self._matrices[key] = (flat, (flat**2).sum(-1), flat.float(), disparity)
        return self._matrices[key]

    def _uncond_images(self) -> torch.Tensor:
        # A sparser bank per scene: the unconditional branch needs every scene, not every view.
        sparse = replace(self.config, views=self.config.uncond_views_per_scene)
        return torch.cat([load_bank(self._scenes[name], sparse).images for name in sorted(self._scenes)])
