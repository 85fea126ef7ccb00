"""`xreport import`: a model trained elsewhere (a torchvision state_dict) as a run folder.

The run folder it writes is what `train` writes, less the training: ``config.toml`` (the
resolved config, the stem as the weights have it), ``best.pt`` (the weights with the full
checkpoint meta, ``imported`` naming the file and its sha256; no epoch, no validation
metrics) and ``class_distribution.json``; no ``history.csv``. `build` and studies read it
like any run. Every check runs before anything is written, and the folder appears whole
or not at all.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import torch

from . import artifacts, models, runs
from .config import RunConfig, to_toml
from .errors import ConfigError, DataError, RunError

logger = logging.getLogger(__name__)

IMPORTED_LOSS = "imported"   # meta["loss"] of an imported run: how it was trained is unknown


@dataclass
class ImportResult:
    run_dir: Path
    arch: str
    num_classes: int
    in_channels: int
    small_input_stem: bool
    sha256: str


def import_run(config: RunConfig, weights: str | Path, *, checkpoints_root: Path = runs.DEFAULT_CHECKPOINTS,
               command: Sequence[str] = (), overwrite: bool = False,
               recipe_choices: Sequence[artifacts.RecipeChoice] = ()) -> ImportResult:
    """Write ``checkpoints_root/config.name/`` from ``weights`` (a state_dict of
    ``config.model.arch``, bare or wrapped under "state_dict"/"model", DDP's ``module.``
    prefix allowed) and the data of ``config.data`` with ``config``'s preprocessing.

    The weights load with the bounded ``weights_only`` loader; the stem (input channels,
    3x3 small-input or 7x7 standard) is read from them; the classifier must have one output
    per class of the data. ``overwrite`` replaces an existing run of the same name.
    """
    from .data import class_distribution, resolve_normalization
    from .evaluate import _match_channels
    from .train import _RUN_FILES, _Setup, _check_data, _load_data, _static_meta

    weights = Path(weights).expanduser()
    if not weights.is_file():
        raise ConfigError(f"--weights {str(weights)!r}: no such file")
    arch = config.model.arch
    paths = runs.RunPaths(config.name, checkpoints_root=Path(checkpoints_root))
    _refuse_existing(paths, overwrite=overwrite, run_files=_RUN_FILES)
    state = models.load_weights_file(weights)
    channels, small = models.stem_from_state(arch, state, source=str(weights))
    # The stem is what the weights hold, whatever a config (or the auto recipe) says.
    if config.model.small_input_stem != "auto" and (config.model.small_input_stem == "on") != small:
        logger.debug("model.small_input_stem %r ignored: the weights' first conv is a %s stem",
                    config.model.small_input_stem, "3x3 small-input" if small else "7x7 standard")
    ds = _load_data(config)
    train_split, _ = _check_data(ds)
    if ds.channels == 3 and channels == 1:
        raise DataError(f"{weights}: the model takes 1-channel (grey) images but {ds.source} has colour "
                        "images; set [preprocess] to make them grey or import an RGB model")
    ds = _match_channels(ds, channels)      # grey data for an RGB model: the channel repeated
    train_split = ds.splits["train"]
    model = models.build_model(arch, num_classes=ds.num_classes, in_channels=channels,
                               small_input_stem=small, head="linear")
    models.load_trained_weights(model, state, source=f"{weights} ({arch})")
    weights_now = {k: v.detach().clone() for k, v in model.state_dict().items()}
    runs.check_finite(weights_now, path=weights)
    mean, std = resolve_normalization(config.preprocess, train_split)
    config = replace(config, model=replace(config.model, small_input_stem="on" if small else "off",
                                           pretrained=False, weights="", head="linear", dropout=0.0))
    sha = runs.sha256_file(weights)
    meta = _static_meta(config, ds, model=model, small_stem=small, head="linear", loss=IMPORTED_LOSS,
                        mean=mean, std=std, setup=_Setup(device=torch.device("cpu"), precision="fp32",
                                                         channels_last=False),
                        command=list(command), recipe=recipe_choices)
    meta.update({"epoch": None, "val_metrics": {}, "selected_by": "imported",
                 "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "imported": {"file": weights.name, "sha256": sha, "bytes": weights.stat().st_size}})
    artifacts.check_checkpoint_meta(meta, path=weights)   # what build will check, before writing
    distribution = class_distribution(ds)
    with runs.run_lock(paths.run_dir):
        _refuse_existing(paths, overwrite=overwrite, run_files=_RUN_FILES)   # again, under the lock
        with runs.staged_folder(paths.run_dir) as staged:
            for item in staged.iterdir():   # an overwritten run's files (history, last.pt) go
                if item.name != ".lock":
                    shutil.rmtree(item) if item.is_dir() else item.unlink()
            out = runs.RunPaths(paths.name, checkpoints_root=staged.parent)
            runs.write_text(out.config, to_toml(config))
            runs.save_checkpoint(out.best, state_dict=weights_now, meta=artifacts.stored_meta(meta))
            artifacts.save_class_distribution(out, distribution)
    logger.info("imported %s (%s, %d classes) from %s -> %s", config.name, arch, ds.num_classes,
                weights, paths.run_dir)
    return ImportResult(run_dir=paths.run_dir, arch=arch, num_classes=ds.num_classes,
                        in_channels=channels, small_input_stem=small, sha256=sha)


def _refuse_existing(paths: runs.RunPaths, *, overwrite: bool, run_files: Sequence[str]) -> None:
    existing = [name for name in run_files if (paths.run_dir / name).exists()]
    if existing and not overwrite:
        raise RunError(f"{paths.run_dir}: a run already exists ({', '.join(existing)}); use "
                       "--overwrite to replace it, or another --name")
