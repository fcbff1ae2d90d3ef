"""A trained classifier as two files anyone can load without unpickling code:
`model.safetensors` (network weights + normalisation statistics, of the frames and, for models
that read them, of the functionals) and `model.json` (how to rebuild the network and its input
pipeline)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ser.features.transforms import (FunctionalsNormalizer, InputPipeline, MelNormalizer, collate_inputs,
                                     input_frames, map_input)
from ser.models.backbones import build_backbone

NORM_PREFIX = "normalizer."
FUNCTIONALS_NORM_PREFIX = "functionals_normalizer."


def export_classifier(out_dir: str | Path, net: torch.nn.Module, normalizer: MelNormalizer, spec: dict,
                      functionals_normalizer: FunctionalsNormalizer | None = None) -> Path:
    """`spec`: backbone (dict), emotions, input (normalization/size/frames/resize_method), front_end
    (with `functionals` when the model reads them, and then `functionals_normalizer` is required)."""
    if bool(spec["front_end"].get("functionals")) != (functionals_normalizer is not None):
        raise ValueError("a model that reads functionals is exported with their normaliser, and only such a model")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tensors.update({NORM_PREFIX + k: v for k, v in normalizer.state_dict().items()})
    if functionals_normalizer is not None:
        tensors.update({FUNCTIONALS_NORM_PREFIX + k: v for k, v in functionals_normalizer.state_dict().items()})
    save_file(tensors, str(out / "model.safetensors"))
    (out / "model.json").write_text(json.dumps(spec, indent=1))
    return out


def load_classifier(model_dir: str | Path) -> tuple[torch.nn.Module, MelNormalizer, dict]:
    model_dir = Path(model_dir)
    spec = json.loads((model_dir / "model.json").read_text())
    tensors = load_file(str(model_dir / "model.safetensors"))
    backbone = dict(spec["backbone"], pretrained=False, weights=None)
    net = build_backbone(num_classes=len(spec["emotions"]), **backbone)
    net.load_state_dict({k: v for k, v in tensors.items()
                         if not k.startswith((NORM_PREFIX, FUNCTIONALS_NORM_PREFIX))})
    net.eval()
    normalizer = MelNormalizer(spec["input"]["normalization"])
    normalizer.load_state_dict({k[len(NORM_PREFIX):]: v for k, v in tensors.items() if k.startswith(NORM_PREFIX)})
    return net, normalizer, spec


def load_functionals_normalizer(model_dir: str | Path, spec: dict) -> FunctionalsNormalizer | None:
    """The functionals' statistics of an exported model that reads functionals (else None)."""
    if not spec["front_end"].get("functionals"):
        return None
    tensors = load_file(str(Path(model_dir) / "model.safetensors"))
    norm = FunctionalsNormalizer(spec["input"]["normalization"])
    n = len(FUNCTIONALS_NORM_PREFIX)
    norm.load_state_dict({k[n:]: v for k, v in tensors.items() if k.startswith(FUNCTIONALS_NORM_PREFIX)})
    return norm


def eval_pipeline(normalizer: MelNormalizer, spec: dict) -> InputPipeline:
    i = spec["input"]
    return InputPipeline(normalizer, size=i.get("size"), frames=i.get("frames"),
                         resize_method=i.get("resize_method", "bilinear"), pad=i.get("pad", "zero"))


def pooled_features(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The embedding the classifier's last layer reads (timm: pre-logits; ours: pooled statistics;
    an ensemble: its members' embeddings side by side)."""
    from ser.models.backbones import DeepEnsemble

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
