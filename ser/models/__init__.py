"""Classifiers: timm backbones in a LightningModule, and a classical eGeMAPS + SVM baseline."""
