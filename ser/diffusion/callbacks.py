"""What a generator training records and leaves behind, as Lightning callbacks: its loss curve, a
checkpoint to resume from after a kill, and snapshots of the generator along the way."""

from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl

from ser.io import atomic_dir


class LossCurve(pl.Callback):
    """Training and held-out denoising loss after every epoch (validation has already run then)."""

    def __init__(self):
        self.rows: list[dict] = []

    def on_train_epoch_end(self, trainer, pl_module):
        m = trainer.callback_metrics
        self.rows.append({"epoch": trainer.current_epoch, "step": trainer.global_step,
                          **{k: round(float(m[k]), 5) for k in ("train/loss", "val/loss") if k in m}})

    # Kept in the checkpoint, so a resumed training's curve starts at epoch 0, not at the resume.
    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = list(state_dict["rows"])


class ResumeCheckpoint(pl.Callback):
    """The whole training state after every epoch, in one file replaced atomically (a kill while
    writing leaves the previous epoch's). Lightning's ModelCheckpoint writes `last.ckpt` only
    beside a top-k checkpoint, which a run without a monitored metric never makes."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_train_epoch_end(self, trainer, pl_module):
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        trainer.save_checkpoint(tmp, weights_only=False)  # the full state, optimizer included; rank 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, self.path)


class Snapshots(pl.Callback):
    """Every `every` optimizer steps, the generator as it would be saved then (EMA weights) in
    <root>/step_<N>/<sub>/: sample quality against training steps, measured afterwards with
    generate.py mode=sample and mode=quality on each (`generator.root=<snapshot>
    generator.dir=<snapshot>`: the snapshot's own lock, not the fold's, which the training holds).
    A snapshot's metadata is the finished generator's, so the same fold-safety checks apply to it."""

    def __init__(self, every: int, root: Path, sub: str, metadata: dict, vae=None):
        """`vae`: a latent recipe's trained autoencoder, part of every snapshot."""
        self.every, self.root, self.sub, self.metadata, self.vae = int(every), Path(root), sub, metadata, vae

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every or not trainer.is_global_zero:
            return
        target = self.root / f"step_{step}" / self.sub
        if (target / "metadata.json").is_file():
            return  # made before an interruption
        generator = pl_module.to_generator({**self.metadata, "training": {"snapshot_at_step": step}}, self.vae)
        with atomic_dir(target) as tmp:
            generator.write_into(tmp)
