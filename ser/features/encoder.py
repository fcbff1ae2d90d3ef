"""A frozen pretrained speech encoder as a front end: every hidden layer's frames of a clip.

Any transformers audio encoder loads by one name, a hub id or a local directory, as
`from_pretrained` takes it: Whisper (its encoder half), wav2vec 2.0, HuBERT, WavLM, data2vec-audio.
A clip becomes (layers, dim, frames) in float16: the input embeddings plus each transformer
layer's output. The cache key includes a digest of the weights, so two names for the same
weights share entries and new weights never reuse old ones.

Whisper is trained on 30-s windows and transformers insists on them; by default (`window:
native`) it runs at the clip's own length with its positional table cut to that length, 10x faster
on a 2-s clip; `window: padded` pads to 30 s as Whisper was trained and keeps the clip's frames.
What the choice does to accuracy is measured in docs/benchmarks.md.

`EncoderInput` is the other front end here: what the encoder itself takes (Whisper's 80-mel log
spectrogram, or wav2vec-family models' normalised waveform), cached per clip for a model that
fine-tunes the encoder (model=encoder_finetune), which cannot start from frozen hidden states.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass

import librosa
import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

from ser.errors import BadAudio, ConfigError, PretrainedWeightsUnavailable
from ser.features.audio import load_audio

_LOADED: dict[str, tuple] = {}  # name -> (feature extractor, encoder, digest): load once per process
_EXTRACTORS: dict[str, tuple] = {}  # name -> (feature extractor, model type): no weights read


def fingerprint_without_name(described: dict) -> str:
    """A front end's cache key: its settings and the digest of its weights or extractor, not the
    name, so the same weights under another path or hub id share the cache."""
    keyed = {k: v for k, v in described.items() if k != "name"}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:12]


def load_encoder(name: str):
    """(feature extractor, frozen encoder in eval mode, weights digest) for a hub id or a local dir."""
    if name not in _LOADED:
        try:
            config = AutoConfig.from_pretrained(name)
            extractor = AutoFeatureExtractor.from_pretrained(name)
            model = AutoModel.from_pretrained(name, dtype=torch.float32)
        except (OSError, ValueError) as err:
            raise PretrainedWeightsUnavailable(
                f"cannot load the speech encoder {name!r} ({type(err).__name__}: {str(err).splitlines()[0]}). "
                "Set features.encoder.name to a local directory in transformers' format (for example "
                "../shared/models/whisper-tiny.en) or to a hub id that is in your Hugging Face cache "
                "(HF_HUB_OFFLINE=1 reads only the cache)."
            ) from None
        encoder = model.get_encoder() if config.is_encoder_decoder else model
        encoder.eval().requires_grad_(False)
        _LOADED[name] = (extractor, encoder, weights_digest(encoder))
    return _LOADED[name]


def load_extractor(name: str):
    """(feature extractor, model type) for a hub id or a local dir, without reading any weights."""
    if name not in _EXTRACTORS:
        try:
            _EXTRACTORS[name] = (AutoFeatureExtractor.from_pretrained(name), AutoConfig.from_pretrained(name).model_type)
        except (OSError, ValueError) as err:
            raise PretrainedWeightsUnavailable(
                f"cannot load the feature extractor of {name!r} ({type(err).__name__}: {str(err).splitlines()[0]}). "
                "Set features.encoder.name to a local directory in transformers' format (for example "
                "../shared/models/whisper-tiny.en) or to a hub id in your Hugging Face cache."
            ) from None
    return _EXTRACTORS[name]


def weights_digest(module: nn.Module) -> str:
    """SHA-256 over the parameter names and bytes: the same weights give the same digest, whatever
    file or hub id they came from."""
    h = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().to(torch.float32).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


@contextmanager
def whisper_at_length(encoder, frames: int):
    """Let a Whisper encoder take `frames` mel frames instead of 3000: cut its positional table to
    the first frames/2 positions for the duration of the call."""
    full, limit = encoder.embed_positions, encoder.config.max_source_positions
    n = frames // encoder.conv1.stride[0] // encoder.conv2.stride[0]
    cut = nn.Embedding(n, full.embedding_dim)
    cut.weight = nn.Parameter(full.weight[:n], requires_grad=False)
    encoder.embed_positions, encoder.config.max_source_positions = cut, n
    try:
        yield
    finally:
        encoder.embed_positions, encoder.config.max_source_positions = full, limit


WINDOWS = ("native", "padded")  # how Whisper sees a clip


@torch.no_grad()
def encode(name: str, y: np.ndarray, window: str = "native") -> np.ndarray:
    """Mono waveform at the encoder's rate -> (layers, dim, frames) float16: every hidden state."""
    extractor, encoder, _ = load_encoder(name)
    sr = extractor.sampling_rate
    if encoder.config.model_type == "whisper":
        x = extractor(y, sampling_rate=sr, return_tensors="pt", padding="longest", truncation=False)["input_features"]
        x = x[..., : x.shape[-1] - x.shape[-1] % 2]  # whole encoder frames (two mel frames each)
        frames = x.shape[-1] // 2
        if window == "padded":  # Whisper's own 30-s window; the clip's frames are kept
            hidden = encoder(extractor(y, sampling_rate=sr, return_tensors="pt")["input_features"],
                             output_hidden_states=True).hidden_states
            hidden = [h[:, :frames] for h in hidden]
        else:
            return encode_input(name, x[0].numpy())
    else:
        x = extractor(y, sampling_rate=sr, return_tensors="pt")["input_values"]
        hidden = encoder(x, output_hidden_states=True).hidden_states
    return torch.stack([h[0] for h in hidden]).transpose(1, 2).to(torch.float16).numpy()


@dataclass(frozen=True)
class SpeechEncoder:
    """Front end: a frozen encoder's hidden layers per clip, cached like log-mels (layers, dim, frames)."""

    name: str
    window: str = "native"
    min_duration: float = 0.25
    max_duration: float = 30.0
    version: int = 1
    kind: str = "encoder"
    trim_db: float | None = None  # cut leading/trailing silence this far below the peak first

    @property
    def sr(self) -> int:
        return load_encoder(self.name)[0].sampling_rate

    @property
    def digest(self) -> str:
        return load_encoder(self.name)[2]

    def describe(self) -> dict:
        _, encoder, digest = load_encoder(self.name)
        described = {"name": self.name, "weights_digest": digest, "model_type": encoder.config.model_type,
                     "window": self.window, "sr": self.sr, "min_duration": self.min_duration,
                     "max_duration": self.max_duration, "version": self.version}
        if self.trim_db is not None:  # only when set, so untrimmed caches keep their keys
            described["trim_db"] = float(self.trim_db)
        return described

    def fingerprint(self) -> str:
        return fingerprint_without_name(self.describe())

    def from_signal(self, y: np.ndarray) -> np.ndarray:
        if self.trim_db is not None:
            trimmed, _ = librosa.effects.trim(y, top_db=float(self.trim_db))
            # A clip that is nearly all "silence" at this threshold keeps its full length.
            y = trimmed if len(trimmed) >= self.min_duration * self.sr else y
        return encode(self.name, y, self.window)

    def compute(self, path: str) -> np.ndarray:
        y = load_audio(path, sr=self.sr, min_duration=self.min_duration, max_duration=self.max_duration)
        try:
            return self.from_signal(y)
        except RuntimeError as err:  # e.g. a clip shorter than the encoder's receptive field
            raise BadAudio(path, f"the encoder cannot take this clip ({err})") from None


@torch.no_grad()
def encode_input(name: str, x: np.ndarray) -> np.ndarray:
    """Whisper's own input (80, frames), from a clip or from a generator, at its length ->
    (layers, dim, frames / 2) float16: every hidden state, as `encode` gives for a clip."""
    _, encoder, _ = load_encoder(name)
    if encoder.config.model_type != "whisper":
        raise ConfigError(f"{name} is a {encoder.config.model_type} encoder, which reads the waveform; only Whisper "
                          "encoders take a log-mel input")
    x = torch.as_tensor(np.asarray(x, dtype=np.float32))[None]
    x = x[..., : x.shape[-1] - x.shape[-1] % 2]
    with whisper_at_length(encoder, x.shape[-1]):
        hidden = encoder(x, output_hidden_states=True).hidden_states
    return torch.stack([h[0] for h in hidden]).transpose(1, 2).to(torch.float16).numpy()


# Whisper's log-mel is log10 power clamped 8 decades (80 dB) below the clip's peak, then (x + 4) / 4:
# so 40 * (x - max x) is dB relative to the peak in [-80, 0], the generators' image range.
WHISPER_DB_PER_UNIT = 40.0


def whisper_input_to_db(x: np.ndarray) -> np.ndarray:
    return (WHISPER_DB_PER_UNIT * (x - x.max())).astype(np.float32)


def db_to_whisper_input(db: np.ndarray, peak: float) -> np.ndarray:
    """The inverse, given the peak level (a clip's own, or typical of the training clips)."""
    return (np.asarray(db, dtype=np.float32) / WHISPER_DB_PER_UNIT + peak).astype(np.float32)


def encoder_input(name: str, y: np.ndarray) -> np.ndarray:
    """Mono waveform at the encoder's rate -> what the encoder takes, (rows, frames) float32:
    Whisper's log-mel (80, an even number of frames, at the clip's own length), or the extractor's
    normalised waveform (1, samples) for wav2vec 2.0, HuBERT, WavLM, data2vec-audio."""
    extractor, model_type = load_extractor(name)
    sr = extractor.sampling_rate
    if model_type == "whisper":
        x = extractor(y, sampling_rate=sr, return_tensors="np", padding="longest", truncation=False)["input_features"][0]
        return x[:, : x.shape[-1] - x.shape[-1] % 2].astype(np.float32)
    return extractor(y, sampling_rate=sr, return_tensors="np")["input_values"][0][None].astype(np.float32)


@dataclass(frozen=True)
class EncoderInput:
    """Front end: the encoder's own input per clip (see `encoder_input`), for fine-tuning it."""

    name: str
    min_duration: float = 0.25
    max_duration: float = 30.0
    version: int = 1
    kind: str = "encoder_input"

    @property
    def sr(self) -> int:
        return load_extractor(self.name)[0].sampling_rate

    @property
    def digest(self) -> str:
        """The extractor's settings: the same settings give the same inputs, whatever the name."""
        settings = json.dumps(load_extractor(self.name)[0].to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(settings.encode()).hexdigest()[:16]

    def describe(self) -> dict:
        return {"name": self.name, "extractor_digest": self.digest, "model_type": load_extractor(self.name)[1],
                "sr": self.sr, "min_duration": self.min_duration, "max_duration": self.max_duration,
                "version": self.version}

    def fingerprint(self) -> str:
        return fingerprint_without_name(self.describe())

    def from_signal(self, y: np.ndarray) -> np.ndarray:
        return encoder_input(self.name, y)

    def compute(self, path: str) -> np.ndarray:
        return self.from_signal(load_audio(path, sr=self.sr, min_duration=self.min_duration, max_duration=self.max_duration))


@dataclass(frozen=True)
class WhisperInputDb(EncoderInput):
    """Front end: Whisper's input log-mel (80 bands, 16 kHz, 10 ms hop) as dB relative to the clip's
    peak, [-80, 0] (`whisper_input_to_db`), what a generator of Whisper inputs learns
    (diffusion.space: encoder_input)."""

    kind: str = "whisper_input_db"

    def describe(self) -> dict:
        return {**super().describe(), "scale": "40 * (x - max x): dB relative to the peak"}

    def from_signal(self, y: np.ndarray) -> np.ndarray:
        if load_extractor(self.name)[1] != "whisper":
            raise ConfigError(f"diffusion.space=encoder_input models Whisper's log-mel input; {self.name} is not Whisper")
        return whisper_input_to_db(encoder_input(self.name, y))
