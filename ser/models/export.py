"""A trained classifier as two files anyone can load without unpickling code:
`model.safetensors` (network weights + normalisation statistics, of the frames and, for models
that read them, of the functionals) and `model.json` (how to rebuild the network and its input
pipeline)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ser.errors import ConfigError, DataError, NotFound
from ser.features.transforms import (FeatureNormalizer, FunctionalsNormalizer, InputPipeline, collate_inputs,
                                     input_frames, map_input)
from ser.io import atomic_dir
from ser.models.backbones import DeepEnsemble, build_backbone

NORM_PREFIX = "normalizer."
FUNCTIONALS_NORM_PREFIX = "functionals_normalizer."


def export_classifier(out_dir: str | Path, net: torch.nn.Module, normalizer: FeatureNormalizer, spec: dict,
                      functionals_normalizer: FunctionalsNormalizer | None = None) -> Path:
    """`spec`: backbone (dict), emotions, input (normalization/size/frames/resize_method/pad),
    front_end (with `functionals` when the model reads them, and then `functionals_normalizer` is
    required). The two files appear together or not at all."""
    if bool(spec["front_end"]["functionals"]) != (functionals_normalizer is not None):
        raise ConfigError("a model that reads functionals is exported with their normaliser, and only such a model")
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tensors.update({NORM_PREFIX + k: v for k, v in normalizer.state_dict().items()})
    if functionals_normalizer is not None:
        tensors.update({FUNCTIONALS_NORM_PREFIX + k: v for k, v in functionals_normalizer.state_dict().items()})
    with atomic_dir(out_dir) as tmp:
        save_file(tensors, str(tmp / "model.safetensors"))
        (tmp / "model.json").write_text(json.dumps(spec, indent=1))
    return Path(out_dir)


def model_dir_of(run_or_model_dir: str | Path) -> Path:
    """A train.py run dir or its model/ folder -> the folder holding model.json."""
    path = Path(run_or_model_dir)
    model_dir = path / "model" if (path / "model").is_dir() else path
    if not (model_dir / "model.json").is_file():
        raise NotFound(f"{run_or_model_dir} holds no trained model (expected {model_dir}/model.json)")
    return model_dir


def load_classifier(model_dir: str | Path) -> tuple[torch.nn.Module, FeatureNormalizer, dict]:
    model_dir = model_dir_of(model_dir)
    spec = json.loads((model_dir / "model.json").read_text())
    tensors = load_file(str(model_dir / "model.safetensors"))
    backbone = dict(spec["backbone"], pretrained=False, weights=None)
    try:
        net = build_backbone(num_classes=len(spec["emotions"]), **backbone)
        net.load_state_dict({k: v for k, v in tensors.items()
                             if not k.startswith((NORM_PREFIX, FUNCTIONALS_NORM_PREFIX))})
    except (TypeError, RuntimeError) as e:  # settings or weights this version's network does not have
        raise DataError(f"{model_dir}/model.json: the exported {backbone.get('arch')} does not fit this version of "
                        f"ser ({e}); retrain it with this version, or predict with the version that exported it") from e
    net.eval()
    normalizer = FeatureNormalizer(spec["input"]["normalization"])
    normalizer.load_state_dict({k[len(NORM_PREFIX):]: v for k, v in tensors.items() if k.startswith(NORM_PREFIX)})
    return net, normalizer, spec


def load_functionals_normalizer(model_dir: str | Path, spec: dict) -> FunctionalsNormalizer | None:
    """The functionals' statistics of an exported model that reads functionals (else None)."""
    if not spec["front_end"]["functionals"]:
        return None
    tensors = load_file(str(model_dir_of(model_dir) / "model.safetensors"))
    norm = FunctionalsNormalizer(spec["input"]["normalization"])
    n = len(FUNCTIONALS_NORM_PREFIX)
    norm.load_state_dict({k[n:]: v for k, v in tensors.items() if k.startswith(FUNCTIONALS_NORM_PREFIX)})
    return norm


def eval_pipeline(normalizer: FeatureNormalizer, spec: dict) -> InputPipeline:
    i = spec["input"]
    return InputPipeline(normalizer, size=i["size"], frames=i["frames"], resize_method=i["resize_method"], pad=i["pad"])


def pooled_features(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The embedding the classifier's last layer reads (timm: pre-logits; ours: pooled statistics;
    an ensemble: its members' embeddings side by side)."""
    if isinstance(net, DeepEnsemble):
        return torch.cat([pooled_features(m, x) for m in net.members], dim=1)
    if hasattr(net, "forward_head"):
        return net.forward_head(net.forward_features(x), pre_logits=True)
    return net.forward_features(x)


@torch.no_grad()
def predict_proba(net: torch.nn.Module, inputs: list[torch.Tensor], batch_size: int = 32,
                  device: str | torch.device = "cpu", pad: str = "repeat") -> torch.Tensor:
    """Class probabilities for already-prepared inputs (1, H, W) (or (frames, functionals) pairs), in order.

    Inputs of different lengths (native-length models) are scored one at a time, so no clip is
    padded at test time.
    """
    return _batched(lambda x: torch.softmax(net(x).float(), dim=-1), net, inputs, batch_size, device, pad)


@torch.no_grad()
def embed(net: torch.nn.Module, inputs: list[torch.Tensor], batch_size: int = 32,
          device: str | torch.device = "cpu", pad: str = "repeat") -> torch.Tensor:
    """`pooled_features` of already-prepared inputs, in order (N, D)."""
    return _batched(lambda x: pooled_features(net, x).float(), net, inputs, batch_size, device, pad)


def _batched(fn, net, inputs, batch_size, device, pad) -> torch.Tensor:
    net = net.to(device).eval()
    if len({tuple(input_frames(x).shape) for x in inputs}) > 1:
        batch_size = 1
    out = [fn(map_input(lambda t: t.to(device), collate_inputs(inputs[start:start + batch_size], pad))).cpu()
           for start in range(0, len(inputs), batch_size)]
    return torch.cat(out) if out else torch.empty(0)
