"""Map-style video classification dataset shared by Kinetics and SSv2: decode, sample, transform.

Items (see docs/data.md):

* train: ``{"video": (C, T, H, W) uint8, "label": int, "index": int, "skipped": int, "erase"}``, where
  ``erase`` (ERASE_FIELDS,) is the random-erasing box ``ClipPreprocessor`` fills on the device; with
  AUG.NUM_SAMPLE = k > 1, ``video`` is ``(k, C, T, H, W)``, ``label`` a (k,) tensor and ``erase``
  (k, ERASE_FIELDS) (one decode, k augmentations; ``collate_train`` flattens them).
* val: ``{"video": (C, T, S, S) uint8, "label", "index", "video_id"}``, the center view.
* test: ``{"frames": (N, T, H, W, 3) uint8, "crops": (S, 2), "label", "index", "video_id"}``: the
  N = NUM_ENSEMBLE_VIEWS temporal views decoded in one pass (at full size, or with the short side at
  TEST_CROP_SIZE by the decoder's scaler: DATA.EVAL_RESIZE) and the (top, left) corners of the
  S = NUM_SPATIAL_CROPS crops in frames of short side TEST_CROP_SIZE; ``transforms.views_of_test_batch``
  resizes full-size frames and makes the V = N x S views (V, C, T, S, S) ordered temporal-major
  (view = t * S + s), on the evaluator's device.

A training video that fails to decode is replaced by another sample (bounded retries, logged with its
path on logger ``stvideo.data``, counted in ``skipped``); after DATA.MAX_CONSECUTIVE_FAILURES failures in
a row a RuntimeError lists the files. A val or test video is never substituted (that would score one
video under another's label): it gives ``{"index", "video_id", "path", "error"}``, which ``collate_eval``
lists and the metric leaves out.

A damaged video (decodes, but truncated or with FFmpeg decoder errors: ``VideoFile.damage``) follows
DATA.ON_DAMAGED: ``warn`` uses its frames, logs it once per file and process and marks the item
(train: ``damaged`` count; val/test: ``damage`` = ``{"path", "reason"}``); ``skip`` treats it as
undecodable (replaced in training, left out at val/test) and marks it the same way.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import av
import decord
import numpy as np
import torch
from fvcore.common.config import CfgNode
from torch.utils.data import Dataset

from . import sampling
from .decoding import DamagedVideoError, DecodeError, VideoFile, require_backend
from .transforms import TestTransform, TrainTransform, resize_short_side_size

logger = logging.getLogger("stvideo.data")

MODES = ("train", "val", "test")
DECODE_ERRORS = (DecodeError, decord.DECORDError, av.FFmpegError, OSError)


@dataclass(frozen=True)
class Sample:
    """One annotated video: absolute ``path``, integer ``label`` and a unique ``video_id``."""

    path: str
    label: int
    video_id: str


_damage_logged: set[str] = set()


def resolve_path(cfg: CfgNode, path: str) -> str:
    """Absolute paths stay; relative ones join DATA.PATH_PREFIX (or DATA.PATH_TO_DATA_DIR if it is "")."""
    if os.path.isabs(path):
        return path
    return os.path.join(cfg.DATA.PATH_PREFIX or cfg.DATA.PATH_TO_DATA_DIR, path)


def sample_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (e.g. RNG_SEED, epoch, index, repeat) via numpy SeedSequence."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> 1)


class VideoDataset(Dataset):
    """Shared decode / sample / transform logic; subclasses only provide the annotation list."""

    default_sampling = "dense"
    allow_plain_flip = True

    def __init__(self, cfg: CfgNode, mode: str, samples: list[Sample]):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not samples:
            raise ValueError(f"{type(self).__name__} {mode}: the annotation list is empty")
        require_backend(cfg.DATA.DECODING_BACKEND)  # a missing decoder library fails here, not per video
        self.cfg = cfg
        self.mode = mode
        self.samples = samples
        self.epoch = 0
        d = cfg.DATA
        self.sampling = self.default_sampling if d.SAMPLING == "auto" else d.SAMPLING
        self.num_frames = d.NUM_FRAMES
        self.num_temporal_views = cfg.TEST.NUM_ENSEMBLE_VIEWS
        self.num_spatial_crops = cfg.TEST.NUM_SPATIAL_CROPS
        allow_flip = self.allow_plain_flip or bool(d.FLIP_LABEL_MAP)
        self.train_transform = TrainTransform(cfg, allow_flip=allow_flip) if mode == "train" else None
        num_crops = self.num_spatial_crops if mode == "test" else 1
        self.test_transform = TestTransform(cfg, num_crops) if mode != "train" else None
        self._failed_in_a_row: list[str] = []
        self._known_bad: set[int] = set()  # per worker: indices that failed, not drawn as replacements

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Epoch that seeds this epoch's temporal jitter, crops, flips and augmentations."""
        self.epoch = epoch

    @property
    def num_views(self) -> int:
        """Views per test video (temporal x spatial)."""
        return self.num_temporal_views * self.num_spatial_crops

    def empty_eval_video(self) -> torch.Tensor:
        """Video tensor of a val (0, C, T, S, S) or test (0, V, C, T, S, S) batch whose videos all failed."""
        s = self.cfg.DATA.TEST_CROP_SIZE
        shape = (0, self.cfg.DATA.INPUT_CHANNEL_NUM, self.num_frames, s, s)
        if self.mode == "test":
            shape = (0, self.num_views, *shape[1:])
        return torch.empty(shape, dtype=torch.uint8)

    # ------------------------------------------------------------------ index arithmetic
    def _open(self, path: str, short_side: int) -> VideoFile:
        d = self.cfg.DATA
        return VideoFile(
            path, d.DECODING_BACKEND, short_side, self.cfg.DATA_LOADER.DECODE_THREADS, d.DECODE_DEVICE
        )

    def _check_damage(self, vf: VideoFile) -> dict[str, str] | None:
        """DATA.ON_DAMAGED for a decoded file: None if clean; ``{"path", "reason"}`` (warn, logged once per
        file and process) or DamagedVideoError (skip)."""
        report = vf.damage
        if report is None:
            return None
        if self.cfg.DATA.ON_DAMAGED == "skip":
            raise DamagedVideoError(vf.path, report)
        level = logging.DEBUG if vf.path in _damage_logged else logging.WARNING
        _damage_logged.add(vf.path)
        logger.log(
            level, "damaged %s video %s used (DATA.ON_DAMAGED warn): %s", self.mode, vf.path, report.reason
        )
        return {"path": vf.path, "reason": report.reason}

    def train_frame_indices(self, num_video_frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
        """Frame indices of one random training clip."""
        if self.sampling == "segment":
            return sampling.segment_train_indices(num_video_frames, self.num_frames, rng)
        d = self.cfg.DATA
        stride = sampling.dense_stride(d.SAMPLING_RATE, fps, d.TARGET_FPS)
        return sampling.dense_train_indices(num_video_frames, self.num_frames, stride, rng, d.OUT_OF_BOUND)

    def test_frame_indices(self, num_video_frames: int, fps: float, num_views: int) -> np.ndarray:
        """(num_views, NUM_FRAMES) frame indices of the temporal test views."""
        if self.sampling == "segment":
            return sampling.segment_test_indices(num_video_frames, self.num_frames, num_views)
        d = self.cfg.DATA
        stride = sampling.dense_stride(d.SAMPLING_RATE, fps, d.TARGET_FPS)
        return sampling.dense_test_indices(
            num_video_frames, self.num_frames, stride, num_views, d.OUT_OF_BOUND
        )

    # ------------------------------------------------------------------ loading
    def _load_train(self, index: int, attempt: int) -> dict[str, Any]:
        s = self.samples[index]
        seed = self.cfg.RNG_SEED
        with self._open(s.path, self.cfg.DATA.DECODE_SHORT_SIDE) as vf:
            rng = np.random.default_rng(sample_seed(seed, self.epoch, index, attempt))
            frames = torch.from_numpy(
                vf.get_frames(self.train_frame_indices(vf.info.num_frames, vf.info.fps, rng))
            )
            damage = self._check_damage(vf)
        k = self.cfg.AUG.NUM_SAMPLE
        clips, labels, erases = [], [], []
        for r in range(k):
            clip, label, erase = self.train_transform(
                frames, s.label, sample_seed(seed, self.epoch, index, attempt, r)
            )
            clips.append(clip)
            labels.append(label)
            erases.append(erase)
        if k == 1:
            item = {"video": clips[0], "label": labels[0], "index": index, "erase": erases[0]}
        else:
            item = {
                "video": torch.stack(clips),
                "label": torch.tensor(labels),
                "index": index,
                "erase": torch.stack(erases),
            }
        item["damaged"] = int(damage is not None)
        return item

    def _eval_short_side(self) -> int:
        """Short side the decoder resizes val/test frames to (0: full size, resized by ``test_transform``)."""
        return self.cfg.DATA.TEST_CROP_SIZE if self.cfg.DATA.EVAL_RESIZE == "decoder" else 0

    def _load_val(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        with self._open(s.path, self._eval_short_side()) as vf:
            idx = self.test_frame_indices(vf.info.num_frames, vf.info.fps, 1)[0]
            frames = torch.from_numpy(vf.get_frames(idx))
            damage = self._check_damage(vf)
        video = self.test_transform(frames[None])[0]
        return {"video": video, "label": s.label, "index": index, "video_id": s.video_id, "damage": damage}

    def load_test(self, index: int) -> dict[str, Any]:
        """All views of video ``index`` from one decode (raises DecodeError and friends on bad input):
        the decoded temporal views and the crop corners; ``transforms.views_of_test_batch`` resizes (when
        decoded at full size) and cuts them on the evaluator's device."""
        s = self.samples[index]
        with self._open(s.path, self._eval_short_side()) as vf:
            idx = self.test_frame_indices(vf.info.num_frames, vf.info.fps, self.num_temporal_views)
            frames = torch.from_numpy(vf.get_frames(idx.reshape(-1)))
            damage = self._check_damage(vf)
        frames = frames.unflatten(0, idx.shape)  # (N, T, H, W, 3) as decoded: the evaluator resizes them
        resized = resize_short_side_size(*frames.shape[2:4], self.cfg.DATA.TEST_CROP_SIZE)
        crops = torch.tensor(self.test_transform.crop_boxes(*resized), dtype=torch.long)
        item = {"frames": frames, "crops": crops, "label": s.label, "index": index, "video_id": s.video_id}
        return {**item, "damage": damage}

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.mode == "train":
            return self._get_with_retries(index)
        try:
            return self.load_test(index) if self.mode == "test" else self._load_val(index)
        except DECODE_ERRORS as e:
            s = self.samples[index]
            reason = str(e).removeprefix(f"{s.path}: ")
            what = (
                "is damaged (DATA.ON_DAMAGED skip)"
                if isinstance(e, DamagedVideoError)
                else "cannot be decoded"
            )
            logger.warning("%s video %s (%s) %s, left out: %s", self.mode, s.video_id, s.path, what, reason)
            item = {"index": index, "video_id": s.video_id, "path": s.path, "error": str(e)}
            if isinstance(e, DamagedVideoError):
                item["damage"] = {"path": s.path, "reason": e.report.reason}
            return item

    def _get_with_retries(self, index: int) -> dict[str, Any]:
        d = self.cfg.DATA
        current = index
        damaged = 0  # damaged videos skipped for this item (DATA.ON_DAMAGED skip)
        for attempt in range(d.NUM_RETRIES + 1):
            try:
                item = self._load_train(current, attempt)
            except DECODE_ERRORS as e:
                path = self.samples[current].path
                self._failed_in_a_row.append(path)
                reason = str(e).removeprefix(f"{path}: ")
                if isinstance(e, DamagedVideoError):
                    damaged += 1
                    logger.warning("skipping damaged train video %s (DATA.ON_DAMAGED skip): %s", path, reason)
                else:
                    logger.warning("skipping undecodable train video %s: %s", path, reason)
                if len(self._failed_in_a_row) >= d.MAX_CONSECUTIVE_FAILURES:
                    raise RuntimeError(self._too_many_failures_message()) from e
                self._known_bad.add(current)
                current = self._replacement(index, attempt)
                continue
            self._failed_in_a_row.clear()
            item["skipped"] = attempt
            item["damaged"] += damaged
            return item
        raise RuntimeError(
            f"no decodable train video after {d.NUM_RETRIES + 1} tries starting at index {index}; "
            + self._too_many_failures_message()
        )

    def _replacement(self, index: int, attempt: int) -> int:
        """A random other sample (seeded by index and attempt), avoiding files this worker saw fail."""
        rng = np.random.default_rng(sample_seed(self.cfg.RNG_SEED, self.epoch, index, attempt, 1 << 20))
        candidate = int(rng.integers(len(self.samples)))
        for _ in range(100):
            if candidate not in self._known_bad:
                break
            candidate = int(rng.integers(len(self.samples)))
        return candidate

    def _too_many_failures_message(self) -> str:
        files = list(dict.fromkeys(self._failed_in_a_row))
        return (
            f"{len(self._failed_in_a_row)} videos in a row failed to decode ({len(files)} distinct files): "
            f"{', '.join(files)}. Check DATA.PATH_PREFIX / "
            "DATA.PATH_TO_DATA_DIR and run tools/check_videos.py on the annotation file."
        )
