"""The three-level cascade (paper §3.2, Fig. 3): image level → region level → pixel level.

Training step on a batch of B same-category pairs (different categories across the batch):

1. image level: `v_I = MVAM_I(F_s, F_t)`; negatives by batch shifting (target of the next pair);
   loss L_I = Eq. 2. PMPS on `v_I` (foreground-constrained, RHM) picks `region_pairs` suspected
   matches per pair; a `window × window`-cell box around each becomes a region pair.
2. region level: the region crops are re-encoded by the backbone at `region_input_size` (finer
   grid), `v_R = MVAM_R(...)`, negatives by shifting regions to the next image pair, loss L_R =
   Eq. 2; PMPS (foreground-constrained, RHM, one-to-one) picks `region_matches` cell pairs in each
   positive region volume (`region_select: argmax` = one best cell pair), they are mapped back to
   image pixels, pooled per image pair, and NMS keeps the best `pixel_pairs` (paper: 16).
3. pixel level: `v_P = MVAM_P(F_s, F_t)` trained towards those pseudo-labels (L_P, BCE or CE).

Total: λ1 L_I + λ2 L_R + λ3 L_P (Eq. 3). Each level has its own MVAM unless `shared_attention`
(Table 4 VII). Supervision flowing down the cascade is detached: each level learns from the
selections of the level above, as in the paper's MIL scheme. With a `teacher` (a slowly updated copy
of the model, `train.label_teacher: ema`), those selections come from the teacher's volumes while the
losses stay on the student's: the standard remedy for self-training's confirmation bias.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from sc_imagenet.matching.backbones.base import Backbone, Features
from sc_imagenet.matching.geometry import index_to_pixels, pixels_to_grid, pixels_to_index
from sc_imagenet.matching.losses import contrastive_loss, pixel_level_loss
from sc_imagenet.matching.mvam import MVAM, ConvTokenAdapter, TokenAdapter, correlation_4d
from sc_imagenet.matching.pmps import PMPS, nms_pairs
from sc_imagenet.matching.settings import LEVELS, CascadeConfig, CascadeSettings

# one pair's labels: source pixels (K, 2), target pixels (K, 2), confidence (K,)
Labels = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass
class PairBatch:
    """B image pairs. Images RGB uint8 `(H, W, 3)`; features from the image-level backbone;
    foreground masks float32 `(H, W)` in [0, 1] at original resolution (None = no constraint).

    `relabel` (ablations only, never in a build): replaces the pixel level's pseudo-labels of the batch
    before its loss, e.g. by the true correspondences at the same source points on synthetic data, which
    measures what the pixel level could learn from perfect labels (`benchmarks/generator_sweep.py`)."""

    src_images: Sequence[np.ndarray]
    trg_images: Sequence[np.ndarray]
    src: Features
    trg: Features
    src_fg: Sequence[np.ndarray] | None = None
    trg_fg: Sequence[np.ndarray] | None = None
    relabel: Callable[[list[Labels]], list[Labels]] | None = None


def grid_masks(masks: Sequence[np.ndarray] | None, grid: tuple[int, int], device: torch.device) -> Tensor | None:
    """Full-resolution masks → `(B, h, w)` fraction of each cell that is foreground."""
    if masks is None:
        return None
    h, w = grid
    out = [cv2.resize(np.asarray(m, np.float32), (w, h), interpolation=cv2.INTER_AREA) for m in masks]
    return torch.from_numpy(np.stack(out)).to(device)


def window_box(center_xy: np.ndarray, cell_wh: tuple[float, float], window: int,
               hw: tuple[int, int]) -> tuple[int, ...]:
    """Integer pixel box `[x0, y0, x1, y1)` of `window` cells around a point, shifted inside the image."""
    H, W = hw
    bw = min(W, max(2, round(window * cell_wh[0])))
    bh = min(H, max(2, round(window * cell_wh[1])))
    x0 = int(np.clip(round(center_xy[0] - bw / 2), 0, W - bw))
    y0 = int(np.clip(round(center_xy[1] - bh / 2), 0, H - bh))
    return x0, y0, x0 + bw, y0 + bh


def most_confident(labels: Labels, fraction: float) -> Labels:
    """The `fraction` of a pair's labels with the highest confidence (at least one when there are any)."""
    sxy, txy, score = labels
    n = max(1, int(np.ceil(fraction * len(score)))) if len(score) else 0
    order = np.argsort(-np.asarray(score), kind="stable")[:n]
    return sxy[order], txy[order], score[order]


class CascadeGenerator(nn.Module):
    """The trainable part (MVAMs; the backbone stays outside, frozen). `settings`: any `CascadeConfig`
    (`TrainConfig` included); the model keeps an immutable copy (`CascadeSettings`)."""

    def __init__(self, in_dim: int, settings: CascadeConfig) -> None:
        super().__init__()
        self.settings = settings = CascadeSettings.of(settings)
        make = lambda: MVAM(in_dim, **settings.mvam.model_dump())  # noqa: E731
        shared = make() if settings.shared_attention else None
        self.mvam = nn.ModuleDict({lvl: shared if shared is not None else make() for lvl in settings.level_order})
        # ReZero-style residual: a level's volume = cosine of the backbone tokens + β·MVAM(...), β = 0 at
        # start. Weak supervision is noisy early on; starting from the backbone's own matching (instead
        # of from a randomly projected one) keeps the first pseudo-labels as good as the backbone.
        adapter = ConvTokenAdapter if settings.adapter_kind == "conv3" else TokenAdapter
        self.adapter = nn.ModuleDict({lvl: adapter(in_dim) for lvl in settings.adapter_levels
                                      if lvl in settings.levels})
        # β = 0 gives MVAM no gradient at all (it enters the volume as β·MVAM): `beta_init` opens that path
        self.beta = nn.ParameterDict({lvl: nn.Parameter(torch.tensor(float(settings.beta_init)))
                                      for lvl in settings.level_order})
        # logit scale and offset of the pixel-level loss, learned by default: pseudo-labels are only partly
        # right, so the right sharpness is not known in advance (a fixed scale makes β act as a temperature knob)
        learn = settings.learn_logit_scale
        self.pixel_log_scale = nn.Parameter(torch.tensor(float(np.log(settings.pixel_logit_scale))),
                                            requires_grad=learn)
        self.pixel_bias = nn.Parameter(torch.zeros(()), requires_grad=learn)
        # softmax appearance (default): with relu, the broad positive similarities of non-negative descriptors
        # (dense SIFT) flood the Hough space with background votes (measured: PCK@0.1 0.16 vs 0.42)
        self.pmps = PMPS(L=settings.rhm_L, use_hough=settings.use_rhm, appearance=settings.rhm_appearance,
                         debias=settings.rhm_debias)
        # diagnostics, read by training monitors and never by the loss: the labels each level passed down in
        # the last step, per pair: "region" = the image level's suspected matches (the regions' centres),
        # "pixel" = the pseudo-labels the pixel level was trained on
        self.last_labels: dict[str, list[Labels]] = {}

    def diagnostics(self) -> dict[str, float | None]:
        """β of every level (None where the level is not trained) and the pixel loss's logit scale."""
        out: dict[str, float | None] = {f"beta_{lvl}": (float(self.beta[lvl].detach()) if lvl in self.beta else None)
                                        for lvl in LEVELS}
        out["logit_scale"] = float(self.pixel_log_scale.detach().exp())
        return out

    def volume(self, level: str, src: Features, trg: Features, trg_perm: Tensor | None = None) -> Tensor:
        """`(B, h_s, w_s, h_t, w_t)` volume of a level; `trg_perm` reorders the targets (negatives)."""
        s_tok, s_glob, t_tok, t_glob = src.tokens, src.global_token, trg.tokens, trg.global_token
        if trg_perm is not None:
            t_tok, t_glob = t_tok[trg_perm], t_glob[trg_perm]
        if level in self.adapter:
            adapt = self.adapter[level]
            s_tok, s_glob = adapt(s_tok, src.grid), adapt(s_glob)
            t_tok, t_glob = adapt(t_tok, trg.grid), adapt(t_glob)
        refined = self.mvam[level](s_tok, t_tok, s_glob, t_glob, src.grid, trg.grid)
        mix = self.settings.volume_mix
        if mix == "mvam":
            return refined
        raw = correlation_4d(s_tok, t_tok, src.grid, trg.grid)
        beta = self.beta[level]
        if mix == "residual":
            return raw + beta * refined
        # bounded: a convex-like mix that stays in [-1, 1] whatever β, so Eq. 2's −AP(pos) + AP(neg) can only
        # fall by separating positives from negatives, not by scaling β (which the residual mix allows)
        return (raw + beta * torch.tanh(refined)) / (1.0 + beta.abs())

    def forward(self, batch: PairBatch, region_backbone: Backbone | None,
                teacher: CascadeGenerator | None = None) -> dict[str, Tensor]:
        """The training step's losses (`forward` so that DistributedDataParallel can wrap the module)."""
        return self.training_losses(batch, region_backbone, teacher)

    def _label_volume(self, teacher: CascadeGenerator | None, level: str, src: Features, trg: Features,
                      own: Tensor) -> Tensor:
        """The volume a level's selections are read from: its own (detached) or the teacher's."""
        if teacher is None:
            return own.detach()
        with torch.no_grad():
            return teacher.volume(level, src, trg)

    def training_losses(self, batch: PairBatch, region_backbone: Backbone | None,
                        teacher: CascadeGenerator | None = None) -> dict[str, Tensor]:
        s = self.settings
        B = batch.src.tokens.shape[0]
        if B < 2:
            raise ValueError("batch shifting needs at least 2 pairs per batch")
        device = batch.src.tokens.device
        use_fg = s.use_foreground and batch.src_fg is not None
        fg_s = grid_masks(batch.src_fg, batch.src.grid, device) if use_fg else None
        fg_t = grid_masks(batch.trg_fg, batch.trg.grid, device) if use_fg else None
        shift = torch.roll(torch.arange(B, device=device), -1)
        losses: dict[str, Tensor] = {}

        v_pos = self.volume("image", batch.src, batch.trg)
        v_neg = self.volume("image", batch.src, batch.trg, shift)
        losses["image"] = contrastive_loss(v_pos, v_neg, fg_s, fg_t, None if fg_t is None else fg_t[shift])

        k_sup = s.region_pairs if "region" in s.levels else s.pixel_pairs
        sel = self.pmps(self._label_volume(teacher, "image", batch.src, batch.trg, v_pos), k_sup, fg_s, fg_t,
                        nms_radius=s.window / 2)
        src_hw = [img.shape[:2] for img in batch.src_images]
        trg_hw = [img.shape[:2] for img in batch.trg_images]
        pairs = [self._cells_to_pixels(sel, b, batch.src.grid, batch.trg.grid, src_hw[b], trg_hw[b]) for b in range(B)]

        labels: dict[str, list[Labels]] = {}
        if "region" in s.levels:
            if region_backbone is None:
                raise ValueError("the region level needs a region backbone")
            labels["region"] = pairs
            losses["region"], pairs = self._region_level(batch, pairs, region_backbone, use_fg, teacher)
        if s.label_keep < 1.0:
            pairs = [most_confident(p, s.label_keep) for p in pairs]
        if batch.relabel is not None:
            pairs = batch.relabel(pairs)
        labels["pixel"] = pairs
        if "pixel" in s.levels:
            src_idx, trg_grid, valid = self._pixel_targets(pairs, batch.src.grid, batch.trg.grid, src_hw, trg_hw,
                                                           device)
            v_pix = self.volume("pixel", batch.src, batch.trg)
            losses["pixel"] = pixel_level_loss(v_pix, src_idx, trg_grid, valid, self.pixel_log_scale.exp(),
                                               bias=self.pixel_bias, mode=s.pixel_loss)
        self.last_labels = labels
        weights = dict(zip(LEVELS, s.lambdas, strict=True))
        losses["total"] = sum(weights[k] * v for k, v in losses.items())
        return losses

    @staticmethod
    def _cells_to_pixels(sel: dict[str, Tensor], b: int, grid_s: tuple[int, int], grid_t: tuple[int, int],
                         hw_s: tuple[int, int], hw_t: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ok = (sel["src_idx"][b] >= 0).cpu().numpy()
        si = sel["src_idx"][b].cpu().numpy()[ok]
        ti = sel["trg_idx"][b].cpu().numpy()[ok]
        score = sel["score"][b].float().cpu().numpy()[ok]  # numpy has no bf16
        return index_to_pixels(si, grid_s, hw_s), index_to_pixels(ti, grid_t, hw_t), score

    def _region_level(self, batch: PairBatch, pairs: list[Labels], region_backbone: Backbone, use_fg: bool,
                      teacher: CascadeGenerator | None = None) -> tuple[Tensor, list]:
        s = self.settings
        B = len(pairs)
        crops_s, crops_t, boxes, owner, fg_s, fg_t = [], [], [], [], [], []
        for b, (sxy, txy, _) in enumerate(pairs):
            hs, ws_ = batch.src_images[b].shape[:2]
            ht, wt = batch.trg_images[b].shape[:2]
            cell_s = (ws_ / batch.src.grid[1], hs / batch.src.grid[0])
            cell_t = (wt / batch.trg.grid[1], ht / batch.trg.grid[0])
            for k in range(len(sxy)):
                bs = window_box(sxy[k], cell_s, s.window, (hs, ws_))
                bt = window_box(txy[k], cell_t, s.window, (ht, wt))
                crops_s.append(batch.src_images[b][bs[1]:bs[3], bs[0]:bs[2]])
                crops_t.append(batch.trg_images[b][bt[1]:bt[3], bt[0]:bt[2]])
                if use_fg:
                    fg_s.append(batch.src_fg[b][bs[1]:bs[3], bs[0]:bs[2]])
                    fg_t.append(batch.trg_fg[b][bt[1]:bt[3], bt[0]:bt[2]])
                boxes.append((bs, bt))
                owner.append(b)
        device = batch.src.tokens.device
        if len(set(owner)) < 2:  # no cross-pair negative possible: no region supervision this step
            return batch.src.tokens.sum() * 0.0, pairs
        rs, rt = region_backbone.encode(crops_s), region_backbone.encode(crops_t)
        rs = Features(rs.tokens.to(device), rs.grid, rs.global_token.to(device))
        rt = Features(rt.tokens.to(device), rt.grid, rt.global_token.to(device))
        # negatives: each region's target is a region of the next image pair that has regions
        order = sorted({*owner})
        nxt = {b: order[(i + 1) % len(order)] for i, b in enumerate(order)}
        first_of = {b: owner.index(b) for b in order}
        neg = torch.tensor([first_of[nxt[b]] for b in owner], device=device)
        gs = grid_masks(fg_s, rs.grid, device) if use_fg else None
        gt = grid_masks(fg_t, rt.grid, device) if use_fg else None
        v_pos = self.volume("region", rs, rt)
        v_neg = self.volume("region", rs, rt, neg)
        loss = contrastive_loss(v_pos, v_neg, gs, gt, None if gt is None else gt[neg])
        si, ti, score = self._region_matches(self._label_volume(teacher, "region", rs, rt, v_pos), gs, gt)
        # every region's matches in image pixels at once, (M, k, 2); rows with index -1 are masked out below
        src_px = np.stack([self._region_points(si[m], rs.grid, boxes[m][0]) for m in range(len(owner))])
        trg_px = np.stack([self._region_points(ti[m], rt.grid, boxes[m][1]) for m in range(len(owner))])
        out = []
        for b in range(B):
            rows = [m for m in range(len(owner)) if owner[m] == b]
            found = si[rows] >= 0  # (regions of pair b, k)
            if not found.any():
                out.append(pairs[b])
                continue
            sc = score[rows][found].astype(np.float32)
            out.append(self._nms_top(src_px[rows][found], trg_px[rows][found], sc, batch, b))
        return loss, out

    def _region_matches(self, v: Tensor, gs: Tensor | None, gt: Tensor | None) -> tuple[np.ndarray, ...]:
        """Matches inside each region pair → flat source / target cell indices and scores, `(M, k)` each
        (`-1` / 0 where a region has fewer). `pmps` (paper): RHM confidence, foreground-constrained, greedy
        one-to-one, `region_matches` per region. `argmax`: the single best foreground cell pair."""
        M = v.shape[0]
        if self.settings.region_select == "pmps":
            sel = self.pmps(v, self.settings.region_matches, gs, gt)
            return (sel["src_idx"].cpu().numpy(), sel["trg_idx"].cpu().numpy(),
                    sel["score"].float().cpu().numpy())  # numpy has no bf16
        flat_v = v.reshape(M, -1, v.shape[3] * v.shape[4])
        if gs is not None:
            fs, ft = gs.reshape(M, -1, 1), gt.reshape(M, 1, -1)
            flat_v = flat_v.masked_fill((fs <= 0.5) & (fs.amax(1, keepdim=True) > 0.5), float("-inf"))
            flat_v = flat_v.masked_fill((ft <= 0.5) & (ft.amax(2, keepdim=True) > 0.5), float("-inf"))
        flat = flat_v.reshape(M, -1).argmax(dim=1)
        score = flat_v.reshape(M, -1).gather(1, flat[:, None]).float().cpu().numpy()
        n_t = flat_v.shape[2]
        return (flat // n_t).cpu().numpy()[:, None], (flat % n_t).cpu().numpy()[:, None], score

    @staticmethod
    def _region_points(idx: np.ndarray, grid: tuple[int, int], box: tuple[int, ...]) -> np.ndarray:
        """Flat cell indices of one region's grid → `(k, 2)` pixel centres in the whole image."""
        x0, y0, x1, y1 = box
        return index_to_pixels(idx, grid, (y1 - y0, x1 - x0)) + np.array([x0, y0], np.float32)

    def _nms_top(self, sxy: np.ndarray, txy: np.ndarray, score: np.ndarray, batch: PairBatch, b: int) -> tuple:
        hs, ws_ = batch.src_images[b].shape[:2]
        radius = 0.5 * max(ws_ / batch.src.grid[1], hs / batch.src.grid[0])
        keep = nms_pairs(torch.from_numpy(sxy)[None], torch.from_numpy(txy)[None], torch.from_numpy(score)[None],
                         radius)[0].numpy()
        order = np.argsort(-score[keep])[: self.settings.pixel_pairs]
        return sxy[keep][order], txy[keep][order], score[keep][order]

    @staticmethod
    def _pixel_targets(pairs: list, grid_s: tuple[int, int], grid_t: tuple[int, int], src_hw: list, trg_hw: list,
                       device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        K = max(1, max(len(p[0]) for p in pairs))
        B = len(pairs)
        src_idx = torch.zeros(B, K, dtype=torch.long)
        trg_grid = torch.zeros(B, K, 2)
        valid = torch.zeros(B, K, dtype=torch.bool)
        for b, (sxy, txy, _) in enumerate(pairs):
            n = len(sxy)
            if n:
                src_idx[b, :n] = torch.from_numpy(pixels_to_index(sxy, grid_s, src_hw[b]))
                trg_grid[b, :n] = torch.from_numpy(pixels_to_grid(txy, grid_t, trg_hw[b]))
                valid[b, :n] = True
        return src_idx.to(device), trg_grid.to(device), valid.to(device)
