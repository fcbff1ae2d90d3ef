"""What happens to cached frame features (log-mel bands or openSMILE descriptors) between the disk
and the model: normalise, size, augment.

All functions take and return tensors shaped (1, rows, frames).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ser.errors import ConfigError, DataError, invalid_choice

NORMALIZATIONS = ("global", "speaker", "none", "identity")
PAD_MODES = ("zero", "repeat")
RESIZE_METHODS = ("bilinear", "bicubic", "nearest", "area")


class FeatureNormalizer:
    """Per-row standardisation (each mel band or descriptor) with statistics from a group of clips.

    mode="global": one set of statistics from the training clips.
    mode="speaker": statistics per speaker, from that speaker's clips. It uses no labels, so it
    is available at test time for a new speaker with a few unlabelled clips (it is transductive:
    results.json records it).
    mode="none": a fixed affine map of the [-80, 0] dB range to about [-2, 2].
    mode="identity": the features as the front end gives them: a pretrained encoder's own input
    (features=encoder_input), which its feature extractor has already scaled as the encoder expects.
    """

    def __init__(self, mode: str = "global", min_std: float = 1e-3):
        if mode not in NORMALIZATIONS:
            raise invalid_choice("model.input.normalization", mode, NORMALIZATIONS)
        self.mode, self.min_std = mode, min_std
        self.stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _stats(self, clips: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        # One mean and std per row of each channel ((1, C, 1) for frames (1, C, T); (L, D, 1) for an
        # encoder's layers (L, D, T)), over every frame of every clip; float16 caches count in float32.
        frames = torch.cat([x.float() for x in clips], dim=-1)
        return frames.mean(dim=-1, keepdim=True), frames.std(dim=-1, keepdim=True).clamp_min(self.min_std)

    def fit(self, clips: list[torch.Tensor], speakers: list[str]) -> "FeatureNormalizer":
        if self.mode == "global":
            self.stats["*"] = self._stats(clips)
        elif self.mode == "speaker":
            for spk in sorted(set(speakers)):
                self.stats[spk] = self._stats([x for x, s in zip(clips, speakers) if s == spk])
        return self

    def add_speaker(self, speaker: str, clips: list[torch.Tensor]) -> None:
        if self.mode == "speaker":
            self.stats[speaker] = self._stats(clips)

    def __call__(self, x: torch.Tensor, speaker: str | None = None) -> torch.Tensor:
        if self.mode == "none":
            return (x + 40.0) / 20.0
        if self.mode == "identity":
            return x
        key = "*" if self.mode == "global" else speaker
        if key not in self.stats:
            raise KeyError(f"no normalisation statistics for speaker {speaker!r}")
        mean, std = self.stats[key]
        return (x - mean) / std

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for key, (mean, std) in self.stats.items():
            out[f"{key}.mean"], out[f"{key}.std"] = mean.contiguous(), std.contiguous()
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        keys = {k.rsplit(".", 1)[0] for k in state}
        self.stats = {k: (state[f"{k}.mean"], state[f"{k}.std"]) for k in keys}


class FunctionalsNormalizer:
    """Per-feature standardisation of per-clip vectors (openSMILE functionals), globally or per
    speaker like `FeatureNormalizer`, then clipped to +-`clip`: a few of ComParE's 6373 functionals
    have tails long enough to swamp a linear layer. Per speaker needs at least two clips of
    each speaker (one clip has no spread to divide by)."""

    def __init__(self, mode: str = "speaker", clip: float = 6.0):
        if mode == "none":
            raise ConfigError("openSMILE functionals mix Hz, dB and ratios; normalise them globally or per speaker, not none")
        # Nearly-constant functionals are legitimate (they are zero for every clip of a speaker).
        self.inner, self.clip = FeatureNormalizer(mode, min_std=1e-6), clip

    @property
    def mode(self) -> str:
        return self.inner.mode

    @staticmethod
    def _column(v: torch.Tensor) -> torch.Tensor:
        return v.reshape(1, -1, 1)

    def fit(self, vectors: list[torch.Tensor], speakers: list[str]) -> "FunctionalsNormalizer":
        if self.mode == "speaker":
            counts = {s: speakers.count(s) for s in set(speakers)}
            lonely = sorted(s for s, n in counts.items() if n < 2)
            if lonely:
                raise DataError(f"per-speaker functionals need >= 2 clips per speaker; speaker(s) {lonely} have one")
        self.inner.fit([self._column(v) for v in vectors], speakers)
        return self

    def add_speaker(self, speaker: str, vectors: list[torch.Tensor]) -> None:
        if self.mode == "speaker" and len(vectors) < 2:
            raise DataError("this model standardises openSMILE functionals per speaker, which needs at least two "
                             "clips (or windows) of the speaker scored together; pass more files of the speaker, "
                             "or score a long recording with --window")
        self.inner.add_speaker(speaker, [self._column(v) for v in vectors])

    def __call__(self, v: torch.Tensor, speaker: str | None = None) -> torch.Tensor:
        return self.inner(self._column(v), speaker).reshape(-1).clamp(-self.clip, self.clip)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.inner.load_state_dict(state)


def resize(mel: torch.Tensor, size: tuple[int, int], method: str = "bilinear") -> torch.Tensor:
    """Resample a spectrogram to an image size (the reference recipe uses 224x224)."""
    kwargs = {} if method in ("nearest", "area") else {"align_corners": False}
    return F.interpolate(mel.unsqueeze(0), size=tuple(size), mode=method, **kwargs).squeeze(0)


def crop_or_pad(x: torch.Tensor, frames: int, random: bool, generator: torch.Generator | None = None,
                pad: str = "zero") -> torch.Tensor:
    """Fix the time axis to `frames`: a random (training) or centred crop of long clips; short
    clips are zero-padded around (pad="zero") or repeated end to end (pad="repeat", which keeps
    the clip's statistics, so pooling over time is not diluted by silence)."""
    t = x.shape[-1]
    if t > frames:
        start = int(torch.randint(0, t - frames + 1, (1,), generator=generator)) if random else (t - frames) // 2
        return x[..., start:start + frames]
    if t < frames:
        if pad == "repeat":
            return x.repeat(1, 1, -(-frames // t))[..., :frames]
        if pad != "zero":
            raise invalid_choice("model.input.pad", pad, PAD_MODES)
        left = (frames - t) // 2
        return F.pad(x, (left, frames - t - left))
    return x


def spec_augment(mel: torch.Tensor, freq_masks: int = 2, freq_width: int = 12, time_masks: int = 2,
                 time_width: float = 0.1, generator: torch.Generator | None = None) -> torch.Tensor:
    """SpecAugment (Park et al. 2019) masking: zero random mel bands and time spans (after normalisation)."""
    mel = mel.clone()
    n_mels, frames = mel.shape[-2], mel.shape[-1]
    for _ in range(freq_masks):
        w = int(torch.randint(0, freq_width + 1, (1,), generator=generator))
        f0 = int(torch.randint(0, max(1, n_mels - w), (1,), generator=generator))
        mel[..., f0:f0 + w, :] = 0
    max_t = max(1, int(time_width * frames))
    for _ in range(time_masks):
        w = int(torch.randint(0, max_t + 1, (1,), generator=generator))
        t0 = int(torch.randint(0, max(1, frames - w), (1,), generator=generator))
        mel[..., t0:t0 + w] = 0
    return mel


class InputPipeline:
    """Normalise, then size, then (training only) augment: the model's view of cached frame features.

    size=[H, W] resizes to an image (the reference recipe: 224x224); frames=N crops or pads the
    time axis to N frames at native mel resolution; neither keeps each clip's own length (batches
    are then padded to their longest clip by `pad_batch`).
    """

    def __init__(self, normalizer: FeatureNormalizer, size=None, frames: int | None = None,
                 resize_method: str = "bilinear", specaug: dict | None = None, pad: str = "zero"):
        if pad not in PAD_MODES:
            raise invalid_choice("model.input.pad", pad, PAD_MODES)
        if resize_method not in RESIZE_METHODS:
            raise invalid_choice("model.input.resize_method", resize_method, RESIZE_METHODS)
        self.normalizer, self.size, self.frames = normalizer, size, frames
        self.resize_method, self.specaug, self.pad = resize_method, specaug, pad

    def __call__(self, features: torch.Tensor, speaker: str | None, train: bool) -> torch.Tensor:
        x = self.normalizer(features, speaker)
        if self.frames is not None:
            x = crop_or_pad(x, self.frames, random=train, pad=self.pad)
        if self.size is not None:
            x = resize(x, self.size, self.resize_method)
        if train and self.specaug:
            x = spec_augment(x, **self.specaug)
        return x


def pad_batch(inputs: list[torch.Tensor], pad: str = "repeat") -> torch.Tensor:
    """Stack inputs of different lengths, padding each to the longest (for native-length models)."""
    longest = max(x.shape[-1] for x in inputs)
    return torch.stack([crop_or_pad(x, longest, random=False, pad=pad) for x in inputs])


# A model input is a tensor (1, H, W), or, for models that also read per-clip functionals
# (model=hybrid_tdnn), a pair (tensor (1, H, W), vector (D,)). These helpers treat both alike.

def collate_inputs(inputs: list, pad: str = "repeat"):
    """Batch model inputs: frames padded to the longest; the vectors of pairs stacked."""
    if isinstance(inputs[0], (tuple, list)):
        frames, vectors = zip(*inputs)
        return pad_batch(list(frames), pad), torch.stack(list(vectors))
    return pad_batch(inputs, pad)


def input_frames(x):
    """The frame tensor of an input or batch (its first part, for pairs)."""
    return x[0] if isinstance(x, (tuple, list)) else x


def map_input(fn, x):
    """Apply `fn` to every tensor of an input or batch (e.g. moving to a device, mixing)."""
    return tuple(fn(t) for t in x) if isinstance(x, (tuple, list)) else fn(x)
