"""A pretrained speech encoder fine-tuned with an emotion head (model=encoder_finetune).

The encoder (Whisper's encoder half, or a wav2vec 2.0 / HuBERT / WavLM / data2vec-audio model)
reads its own input (features=encoder_input: Whisper's log-mel, or the normalised waveform) and
its hidden layers go through the head of `EncoderProbe` (learned layer weights, attentive
statistics pooling, a linear layer). Only the top `train_layers` transformer layers learn; the
convolutional feature encoder, the positional embeddings and the lower layers stay frozen, as in
the usual SER fine-tuning recipes: a few hundred clips per emotion cannot retrain 90 M parameters,
and the bottom of the network holds acoustics the task does not need to change.

Layer-wise learning-rate decay: `param_groups` gives the head the optimizer's lr and the k-th
trainable layer from the top lr x layer_decay^k, so the layers nearest the pretrained input move
least. Mixed precision comes from the hardware group (hardware=gpu: 16-mixed).

Exported runs carry the encoder's architecture (`encoder_config`, a plain dict) with the weights,
so prediction rebuilds it without the original checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel

from ser.errors import ConfigError, PretrainedWeightsUnavailable
from ser.features.encoder import whisper_at_length
from ser.models.probe import EncoderProbe


def without_layerdrop(config):
    """The config with LayerDrop off. The head reads every layer's hidden state, and a layer that
    LayerDrop skips is missing from them (the wav2vec-family configs on the hub train with it:
    transformers' default is 0.1), so the head would see fewer layers than it weighs."""
    for key in ("layerdrop", "encoder_layerdrop"):  # wav2vec 2.0, HuBERT, WavLM, data2vec-audio; Whisper
        if hasattr(config, key):
            setattr(config, key, 0.0)
    return config


class EncoderFinetune(nn.Module):
    def __init__(self, num_classes: int, name: str, train_layers: int = 2, layer_decay: float = 0.8,
                 pretrained: bool = True, encoder_config: dict | None = None, in_chans: int = 1,
                 drop_rate: float = 0.3):
        """`name`: the encoder, a hub id or a local directory (from_pretrained). `pretrained=False`
        with `encoder_config` builds the architecture alone, for loading exported weights."""
        super().__init__()
        if pretrained:
            try:
                config = without_layerdrop(AutoConfig.from_pretrained(name))
                model = AutoModel.from_pretrained(name, config=config, dtype=torch.float32)
            except (OSError, ValueError) as err:
                raise PretrainedWeightsUnavailable(
                    f"cannot load the speech encoder {name!r} to fine-tune ({type(err).__name__}: "
                    f"{str(err).splitlines()[0]}). Set features.encoder.name to a local directory in "
                    "transformers' format or to a hub id in your Hugging Face cache.") from None
        else:
            if not encoder_config:
                raise ConfigError("encoder_finetune without pretrained weights needs encoder_config (an exported run's model.json has it)")
            config = without_layerdrop(AutoConfig.for_model(**encoder_config))
            model = AutoModel.from_config(config, dtype=torch.float32)
        self.encoder = model.get_encoder() if config.is_encoder_decoder else model
        self.whisper = config.model_type == "whisper"
        layers = self._transformer_layers()
        if not 0 <= train_layers <= len(layers):
            raise ConfigError(f"model.backbone.train_layers={train_layers}: this encoder has {len(layers)} layers")
        self.train_layers, self.layer_decay = train_layers, layer_decay
        self.encoder.requires_grad_(False)
        for layer in layers[len(layers) - train_layers:]:
            layer.requires_grad_(True)
        if train_layers:
            self._final_norm().requires_grad_(True)
        width = config.d_model if self.whisper else config.hidden_size
        self.probe = EncoderProbe(num_classes, in_chans=len(layers) + 1, feat_dim=width,
                                  drop_rate=drop_rate)

    def _transformer_layers(self) -> nn.ModuleList:
        # Whisper: encoder.layers; wav2vec-family: encoder.encoder.layers.
        return self.encoder.layers if self.whisper else self.encoder.encoder.layers

    def _final_norm(self) -> nn.Module:
        """The layer norm after the top layer that the head reads, which learns with that layer:
        Whisper's. The wav2vec-family models have none to learn. The base wav2vec 2.0, HuBERT, WavLM
        and data2vec-audio models put theirs before the first layer, where training it would shift
        every frozen layer's input; the hidden states transformers returns for the large ones
        (do_stable_layer_norm) are the layers' own outputs, before their final norm."""
        return self.encoder.layer_norm if self.whisper else nn.ModuleList()  # an empty list: no parameters

    def encoder_config(self) -> dict:
        """The architecture, for model.json: prediction rebuilds the network from it."""
        return self.encoder.config.to_dict()

    def layer_weights(self) -> torch.Tensor:
        return self.probe.layer_weights()

    def hidden_layers(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, rows, T) encoder input -> (B, layers, width, frames)."""
        x = x[:, 0]
        if self.whisper:  # (B, 80, T): whole encoder frames, at most Whisper's 30-s window
            t = min(x.shape[-1] - x.shape[-1] % 2, 2 * self.encoder.config.max_source_positions)
            with whisper_at_length(self.encoder, t):
                hidden = self.encoder(x[..., :t], output_hidden_states=True).hidden_states
        else:  # (B, 1, samples)
            hidden = self.encoder(x[:, 0], output_hidden_states=True).hidden_states
        return torch.stack(hidden, dim=1).transpose(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probe(self.hidden_layers(x))

    def param_groups(self, lr: float) -> list[dict]:
        """Layer-wise learning-rate decay: the head at `lr`, the k-th trainable layer from the top
        (and the final norm, where there is one, with the top layer) at lr x layer_decay^(k+1). Frozen weights are left out."""
        groups = [{"params": list(self.probe.parameters()), "lr": lr, "lr_scale": 1.0}]
        layers = self._transformer_layers()
        for k in range(self.train_layers):
            params = list(layers[len(layers) - 1 - k].parameters())
            if k == 0:
                params += list(self._final_norm().parameters())
            scale = self.layer_decay ** (k + 1)
            groups.append({"params": params, "lr": lr * scale, "lr_scale": scale})
        return groups
