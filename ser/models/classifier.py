"""The classifier LightningModule: a backbone, cross-entropy (class-weighted), Adam, UA/WA/F1 metrics."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from ser.evaluation.metrics import UnweightedAccuracy
from ser.features.transforms import map_input
from ser.models.backbones import build_backbone


class EmotionClassifier(pl.LightningModule):
    def __init__(self, backbone: dict, num_classes: int, emotions: list[str], lr: float = 1e-3,
                 weight_decay: float = 0.0, optimizer: str = "adam", scheduler: str = "none",
                 class_weights: list[float] | None = None, label_smoothing: float = 0.0,
                 mixup_alpha: float = 0.0):
        super().__init__()
        # The backbone is rebuilt from its config (never pickled), so a run's weights load anywhere.
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
        params = self.parameters()
        if self.hparams.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        elif self.hparams.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        elif self.hparams.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=self.hparams.lr, momentum=0.9, weight_decay=self.hparams.weight_decay)
        else:
            raise ValueError(f"unknown optimizer {self.hparams.optimizer!r}")
        if self.hparams.scheduler == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.trainer.max_epochs))
            return {"optimizer": opt, "lr_scheduler": sched}
        if self.hparams.scheduler == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr,
                                                        total_steps=self.trainer.estimated_stepping_batches)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        return opt
