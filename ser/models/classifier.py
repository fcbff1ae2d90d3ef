"""The classifier LightningModule: a backbone, cross-entropy (class-weighted, optional mixup), the
optimizer and LR schedule its config names, and UA/WA/F1 on validation."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from ser.evaluation.metrics import UnweightedAccuracy
from ser.features.transforms import map_input
from ser.models.backbones import build_backbone


class EmotionClassifier(pl.LightningModule):
    def __init__(self, backbone: dict, num_classes: int, emotions: list[str], optimizer: dict,
                 scheduler: dict | None = None, class_weights: list[float] | None = None,
                 label_smoothing: float = 0.0, mixup_alpha: float = 0.0):
        """`optimizer`: a `_partial_` `_target_` config (conf/model/optimizer/*.yaml); `scheduler`:
        {"interval": "step" | "epoch", "schedule": a `_partial_` `_target_` config} (conf/model/scheduler/).
        Both stay configs (plain data) until `configure_optimizers`, so checkpoints hold no code
        and load with `weights_only=True`; the backbone is likewise rebuilt from its config."""
        super().__init__()
        self.save_hyperparameters()
        self.net = build_backbone(num_classes=num_classes, **backbone)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else torch.ones(num_classes)
        self.register_buffer("class_weights", weights)
        metrics = MetricCollection({
            "ua": UnweightedAccuracy(num_classes),
            "wa": MulticlassAccuracy(num_classes, average="micro"),
            "macro_f1": MulticlassF1Score(num_classes, average="macro"),
        })
        self.val_metrics = metrics.clone(prefix="val/")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _loss(self, logits, y):
        return F.cross_entropy(logits, y, weight=self.class_weights, label_smoothing=self.hparams.label_smoothing)

    def _logits_for_training(self, x):
        # An ensemble trains each member on its own loss (independent members), not the average.
        if hasattr(self.net, "member_logits"):
            return self.net.member_logits(x)
        return [self(x)]

    def training_step(self, batch, batch_idx):
        x, y = batch
        alpha = self.hparams.mixup_alpha
        if alpha > 0:
            # mixup (Zhang et al. 2018): train on convex combinations of pairs of examples.
            lam = float(torch.distributions.Beta(alpha, alpha).sample())
            perm = torch.randperm(len(y), device=y.device)
            outs = self._logits_for_training(map_input(lambda t: lam * t + (1 - lam) * t[perm], x))
            loss = sum(lam * self._loss(z, y) + (1 - lam) * self._loss(z, y[perm]) for z in outs) / len(outs)
        else:
            outs = self._logits_for_training(x)
            loss = sum(self._loss(z, y) for z in outs) / len(outs)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y), sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val/loss", self._loss(logits, y), on_epoch=True, prog_bar=False, batch_size=len(y), sync_dist=True)
        self.val_metrics.update(logits, y)

    def on_validation_epoch_end(self):
        self.log_dict(self.val_metrics.compute(), prog_bar=True, sync_dist=True)
        self.val_metrics.reset()

    def predict_step(self, batch, batch_idx):
        x, _ = batch  # (inputs, labels), as the DataModule's loaders give them
        return torch.softmax(self(x).float(), dim=-1)

    def configure_optimizers(self):
        # A network with layer-wise learning rates (a fine-tuned encoder) gives its parameter groups;
        # each carries `lr_scale`, its lr relative to the optimizer's.
        lr = self.hparams.optimizer["lr"]
        groups = self.net.param_groups(lr) if hasattr(self.net, "param_groups") else None
        optimizer = instantiate(self.hparams.optimizer)(params=groups or self.parameters())
        if not self.hparams.scheduler:
            return optimizer
        schedule = instantiate(self.hparams.scheduler["schedule"])
        runtime = {}
        if schedule.keywords.get("total_steps", 0) is None:
            # `total_steps: null` (one-cycle): the run's length in optimizer steps, which only the
            # Trainer knows once it has seen the data.
            runtime["total_steps"] = self.trainer.estimated_stepping_batches
        if groups and "max_lr" in schedule.keywords:
            # One-cycle sets every group to the same peak unless told each group's own.
            runtime["max_lr"] = [schedule.keywords["max_lr"] * g["lr_scale"] for g in optimizer.param_groups]
        scheduler = schedule(optimizer, **runtime)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams.scheduler["interval"]}}
