"""Class predictions for any video files with a trained model, under the config's test protocol.

Each file is decoded like a test video (:class:`~stvideo.data.file_list.FileListDataset`: same decode,
sampling, crops and view order), its views are scored with the evaluator's
:func:`~stvideo.engine.evaluator.batch_view_logits` and aggregated with its
:func:`~stvideo.engine.evaluator.aggregate_views` (TEST.ENSEMBLE_METHOD), so a file gets the scores the
test run gives it. A file that is missing or cannot be decoded yields a record with ``error`` and the
other files go on.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from fvcore.common.config import CfgNode
from torch.utils.data import DataLoader
from tqdm import tqdm

from stvideo.data.build import collate_eval
from stvideo.data.file_list import FileListDataset, expand_inputs
from stvideo.data.labels import class_names
from stvideo.data.preprocessor import ClipPreprocessor
from stvideo.data.transforms import views_of_test_batch
from stvideo.models import build_model

from .checkpoint import load_model_weights
from .evaluator import aggregate_views, batch_view_logits
from .trainer import autocast_dtype


def predict_config(cfg: CfgNode, views: Sequence[int] | None = None) -> CfgNode:
    """``cfg`` for inference: TEST.NUM_ENSEMBLE_VIEWS / NUM_SPATIAL_CROPS from ``views`` (T, S) if
    given, and no MODEL.PRETRAINED (the checkpoint holds every weight)."""
    cfg = cfg.clone()
    cfg.defrost()
    if views is not None:
        if len(views) != 2 or min(views) < 1:
            raise ValueError(f"views must be (temporal clips, spatial crops) >= 1, got {list(views)}")
        cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS = int(views[0]), int(views[1])
    cfg.MODEL.PRETRAINED = ""
    cfg.freeze()
    return cfg


class Predictor:
    """A model with trained weights and its test protocol: video files -> top-k class names and scores."""

    def __init__(
        self,
        cfg: CfgNode,
        checkpoint: str | None,
        *,
        views: Sequence[int] | None = None,
        labels: str | None = None,
        device: str | torch.device | None = None,
        model: torch.nn.Module | None = None,
    ):
        self.cfg = predict_config(cfg, views)
        if device is None:
            device = "cuda" if self.cfg.NUM_GPUS > 0 and torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = model if model is not None else build_model(self.cfg)
        if checkpoint:
            load_model_weights(self.model, checkpoint)
        self.model.to(self.device).eval()
        self.preprocess = ClipPreprocessor(self.cfg, self.device)
        self.amp_dtype = autocast_dtype(self.cfg, self.device)
        self.names = class_names(self.cfg, labels)

    def dataset(self, inputs: Sequence[str]) -> FileListDataset:
        """Test-mode dataset of the files in ``inputs`` (folders expanded); ValueError when there are none."""
        paths = expand_inputs(list(inputs))
        if not paths:
            raise ValueError(f"no video files in {', '.join(inputs)}")
        return FileListDataset(self.cfg, paths)

    def scores(self, video: torch.Tensor) -> torch.Tensor:
        """(V, C, T, S, S) uint8 views of one video -> (K,) aggregated class scores (TEST.ENSEMBLE_METHOD)."""
        logits = batch_view_logits(self.model, video[None], self.preprocess, self.amp_dtype)
        return aggregate_views(logits, self.cfg.TEST.ENSEMBLE_METHOD)[0]

    def record(self, path: str, scores: torch.Tensor, topk: int) -> dict[str, Any]:
        """JSON-ready record of one scored file: top-k class ids, names and scores (best first)."""
        top = scores.topk(min(topk, scores.numel()))
        return {
            "path": path,
            "num_views": self.cfg.TEST.NUM_ENSEMBLE_VIEWS * self.cfg.TEST.NUM_SPATIAL_CROPS,
            "top_classes": top.indices.tolist(),
            "top_names": [self.names[i] for i in top.indices.tolist()],
            "top_scores": [round(float(s), 6) for s in top.values],
        }

    def __call__(
        self, inputs: Sequence[str], topk: int = 5, progress: bool = True
    ) -> Iterator[dict[str, Any]]:
        """One record per file, in input order; an undecodable or missing file gives ``{"path", "error"}``."""
        dataset = self.dataset(inputs)
        loader = DataLoader(
            dataset,
            batch_size=1,
            num_workers=self.cfg.DATA_LOADER.NUM_WORKERS,
            collate_fn=functools.partial(collate_eval, empty_video=dataset.empty_eval_video()),
        )
        for batch in tqdm(loader, desc="predict", unit="file", disable=not progress, mininterval=1.0):
            for bad in batch["skipped"]:
                yield {"path": dataset.samples[bad["index"]].video_id, "error": bad["error"]}
            video = views_of_test_batch(batch, self.device, self.cfg.DATA.TEST_CROP_SIZE)
            if video.shape[0]:
                path = dataset.samples[int(batch["index"][0])].video_id
                rec = self.record(path, self.scores(video[0]), topk)
                if batch["damage"][0] is not None:
                    rec["damage"] = batch["damage"][0]["reason"]
                yield rec


def predict(
    cfg: CfgNode | str,
    checkpoint: str | None,
    inputs: Sequence[str],
    *,
    topk: int = 5,
    views: Sequence[int] | None = None,
    labels: str | None = None,
    device: str | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Records of :class:`Predictor` for ``inputs`` (files or folders); ``cfg`` may be a config path."""
    if isinstance(cfg, str):
        from stvideo.config import load_config

        cfg = load_config(cfg)
    predictor = Predictor(cfg, checkpoint, views=views, labels=labels, device=device)
    return list(predictor(inputs, topk=topk, progress=progress))


def trained_model_parser(description: str) -> argparse.ArgumentParser:
    """Parser with the options of every tool on a trained model: --cfg, --checkpoint, --labels, --opts."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cfg", dest="cfg_file", required=True, help="YAML config file of the model")
    parser.add_argument("--checkpoint", required=True, help="stvideo checkpoint (.pyth) with the weights")
    parser.add_argument("--labels", help="class names: labels json, Kinetics-style csv or one name per line")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    return parser


def predictor_from_args(args: argparse.Namespace, views: Sequence[int] | None = None) -> Predictor:
    """The :class:`Predictor` of a :func:`trained_model_parser` command line; exits with one line on a
    bad config, checkpoint or labels file."""
    from stvideo.config import ConfigError, load_config
    from stvideo.utils.checkpoint_io import CheckpointError

    try:
        cfg = load_config(args.cfg_file, args.opts)
    except (ConfigError, FileNotFoundError) as e:
        sys.exit(f"Config error: {e}")
    try:
        return Predictor(cfg, args.checkpoint, views=views, labels=args.labels)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        sys.exit(f"Error: {e}")
