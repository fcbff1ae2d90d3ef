"""aug=ddpm / ddpm_filtered / sdedit for a linear probe on a frozen speech encoder: what mixing.py's
synthetic_training_set and edited_training_set do for the log-mel networks. The clips are drawn
(or edited) in the generator's space exactly as there, then encoded (ser/diffusion/encoded.py) so
the probe reads them like real clips' pooled layers. When the filter's judge is the run's own
classifier, it judges the samples in that encoded form."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ser.data.build import front_end_from, same_clips_with
from ser.data.datamodule import ExtraClips
from ser.diffusion.encoded import encode_spectrograms, encode_whisper_inputs
from ser.diffusion.mixing import draw_synthetic, fold_edits, wants_synthetic
from ser.diffusion.selection import CLASSIFIER_JUDGE, ProbeJudge
from ser.diffusion.synthetic_set import SYNTHETIC_SPEAKER
from ser.errors import ConfigError
from ser.features.encoder import EncoderInput, WhisperInputDb, load_extractor
from ser.features.mel import LogMel
from ser.models.linear_model import LinearModel


def generated_for_encoder(cfg, data, split, real_only: LinearModel | None = None) -> tuple[ExtraClips, dict]:
    """aug=ddpm / aug=sdedit for a linear probe on a speech encoder. The fold's generator models
    log-mels of the same clips (diffusion.space=mel: its spectrograms are voiced, then encoded) or
    Whisper's own input (encoder_input: encoded directly); ser/diffusion/encoded.py. `real_only`:
    the probe fitted on the real training clips alone, the filter's judge when
    aug.synthetic.judge=classifier."""
    encoder = front_end_from(cfg.features)
    whisper_space = cfg.diffusion.space == "encoder_input"
    if whisper_space and load_extractor(encoder.name)[1] != "whisper":
        raise ConfigError(f"diffusion={cfg.diffusion.name} models Whisper's input, and features.encoder.name={encoder.name} "
                          "is not a Whisper encoder; use a log-mel recipe (diffusion=cpu: voiced, then encoded)")
    gen_data = same_clips_with(cfg, data, WhisperInputDb(encoder.name) if whisper_space else LogMel())
    if whisper_space:
        inputs = same_clips_with(cfg, data, EncoderInput(encoder.name))
        peak = {c.path: float(x.max()) for c, x in zip(inputs.clips, inputs.features)}
        # A synthetic clip gets the training clips' typical level; an edited one keeps its source's.
        typical = float(np.median([peak[data.clips[i].path] for i in split.train]))

        def encode_now(mels, sources):
            peaks = [typical] * len(mels) if sources is None else [peak[p] for p in sources]
            return encode_whisper_inputs(mels, peaks, encoder, Path(cfg.generator.synthetic_dir))
        route = "generated Whisper inputs, encoded directly"
    else:
        def encode_now(mels, sources):
            return encode_spectrograms(mels, encoder, Path(cfg.generator.synthetic_dir))
        route = "log-mels voiced with Griffin-Lim, then encoded"
    encoding = {"route": route, "seconds": 0.0}  # the filter's judge encodes the whole pool: counted too

    def encode(mels, sources=None):
        started = time.time()
        out = encode_now(mels, sources)
        encoding["seconds"] = round(encoding["seconds"] + time.time() - started, 1)
        return out
    if wants_synthetic(cfg.aug):
        judge = None
        if cfg.aug.synthetic.judge == "classifier":
            if real_only is None:
                raise ConfigError(f"{CLASSIFIER_JUDGE}, one that exports as a linear map; model={cfg.model.name} "
                                  "does not. Use aug.synthetic.judge=bands")
            judge = ProbeJudge(cfg, data, real_only, encode,
                               f"the run's classifier ({cfg.model.name}) fitted on the real training clips alone, on the samples "
                               f"encoded as the run feeds them ({route})")
        mels, labels, report = draw_synthetic(cfg, gen_data, split, cfg.seed, judge=judge)
        speakers, sources = [SYNTHETIC_SPEAKER] * len(mels), None
    else:
        mels, labels, speakers, report = fold_edits(cfg, gen_data, split)
        sources = report.pop("sources")
    encoded = encode(mels, sources)
    report["voiced_and_encoded"] = encoding
    return ExtraClips(encoded, np.asarray(labels), list(speakers)), report
