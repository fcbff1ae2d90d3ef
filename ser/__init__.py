"""ser: speech emotion recognition with speaker-independent evaluation and diffusion augmentation.

The package mirrors the pipeline:

    ser.jobs        what train.py, generate.py and evaluate.py run: one config -> results
    ser.models      classifiers (timm backbones and our own in Lightning, openSMILE + SVM baseline)
    ser.diffusion   spectrogram generators: train, sample, edit, mix into training, assess
    ser.data        corpora -> clips (path, emotion, speaker), speaker-independent splits
    ser.features    audio -> log-mel or openSMILE feature tensors, cached on disk
    ser.evaluation  metrics, confidence intervals, paired tests, plots
    ser.predict     a trained run -> emotions of new audio files
    ser.errors      SerError, the root of every error ser raises
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
