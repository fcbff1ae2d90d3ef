"""Classifiers. Networks (one LightningModule, classifier.py): timm backbones, CPU-sized TDNN/CNNs,
the probe on a frozen speech encoder's layers (probe.py, pooling.py) and the fine-tuned encoder
(finetune.py), by name in backbones.py; export.py saves them for prediction. Classical (classical.py,
linear_model.py): an SVM on openSMILE functionals or a linear classifier on pooled encoder layers."""
