"""ser: speech emotion recognition with speaker-independent evaluation and diffusion augmentation.

The package mirrors the pipeline:

    ser.data        corpora -> clips (path, emotion, speaker), speaker-independent splits
    ser.features    audio -> log-mel spectrogram tensors, cached on disk
    ser.models      classifiers (timm backbones in Lightning, a classical eGeMAPS + SVM baseline)
    ser.evaluation  metrics, confidence intervals, paired tests, plots
    ser.training    one experiment = one Hydra config -> results.json
    ser.predict     a trained run -> emotions of new audio files
"""

from ser.emotions import EMOTIONS

__all__ = ["EMOTIONS", "Predictor"]
__version__ = "0.1.0"


def __getattr__(name):
    # The predictor pulls in torch and timm; keep `import ser` cheap for config-only users.
    if name == "Predictor":
        from ser.predict import Predictor

        return Predictor
    raise AttributeError(name)
