"""Check a composed config before any work starts: every option with a fixed set of values holds
one of them, every number is in its range, every `_target_` names something importable, and the
choices fit together.

A typo (`mode=trian`, `model.select=bets`) or an impossible number (`aug.synthetic.ratio=-1`,
`split.n_val_speakers=-1`) fails here in seconds, naming the valid values, instead of minutes later
or, worse, never. The valid choices come from the modules that use them.
"""

from __future__ import annotations

from pathlib import Path

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from ser.data.build import DATASET_KINDS, FRONT_ENDS
from ser.data.splits import PROTOCOLS
from ser.diffusion.autoencoder import AUTOENCODER_SETTINGS
from ser.diffusion.ddpm import LR_SCHEDULES, UNET_SETTINGS
from ser.diffusion.generator import SAMPLERS
from ser.diffusion.mixing import CLASSES, GENERATE
from ser.diffusion.selection import CLASSIFIER_JUDGE, JUDGES
from ser.errors import ConfigError, invalid_choice
from ser.features.encoder import WINDOWS
from ser.features.transforms import NORMALIZATIONS, PAD_MODES, RESIZE_METHODS
from ser.models.classical import COPIES_NORMS, FUSIONS, input_names

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

MODEL_KINDS = ("neural", "classical")
SPACES = ("mel", "encoder_input")  # what a generator models (conf/diffusion/*.yaml: space)
CLASSICAL_INPUTS = ("functionals", "encoder_layers")  # ser.models.classical
ENCODER_ARCHS = ("encoder_probe",)  # networks that read an encoder's hidden layers
FINETUNE_ARCHS = ("encoder_finetune",)  # networks that run (and fine-tune) the encoder on its own input
SELECT = ("best", "last")  # the checkpoint a neural run is scored with
CLASS_WEIGHTS = ("balanced", "none")
SCHEDULER_INTERVALS = ("step", "epoch")
GENERATE_MODES = ("train", "sample", "train_sample", "enhance", "quality")
EVALUATE_METRICS = ("ua", "wa", "macro_f1")


def _count(low: int):
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low), f"an integer >= {low}"


def _number(low: float, high: float | None = None, *, above: bool = False, below: bool = False):
    """A number in [low, high]; `above`/`below` exclude the bound."""
    def ok(v) -> bool:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            return False
        return (v > low if above else v >= low) and (high is None or (v < high if below else v <= high))
    if high is None:
        return ok, f"a number {'>' if above else '>='} {low}"
    return ok, f"a number in {'(' if above else '['}{low}, {high}{')' if below else ']'}"


def _or_null(rule):
    ok, text = rule
    return (lambda v: v is None or ok(v)), f"{text}, or null"


# Numeric options and their ranges. A key the composed config lacks (aug.synthetic outside
# aug=ddpm, model.epochs of a classical model) is not checked; an impossible value would otherwise
# run silently (a negative ratio or variant count adds nothing, a negative n_val_speakers makes most
# training speakers validation speakers) or fail late with an error that names no option.
COMMON_NUMBERS = (
    ("seed", _count(0)),
    ("dataset.train_fraction", _number(0, 1, above=True)),  # 1: every training clip; 0.25: the low-data regime
)
TRAIN_NUMBERS = COMMON_NUMBERS + (
    ("split.n_val_speakers", _count(0)),  # the upper bound (training speakers left) is checked by the split
    ("split.k", _count(2)),
    ("split.val_fraction", _number(0, 1, above=True, below=True)),
    ("model.epochs", _count(1)),
    ("model.batch_size", _count(1)),
    ("aug.mixup_alpha", _number(0)),  # 0: no mixup
    ("aug.synthetic.ratio", _number(0)),  # 0: no synthetic clips (the real-only point of a ratio sweep)
    ("aug.audio.variants", _count(0)),
    ("aug.sdedit.variants", _count(0)),
    ("aug.sdedit.strength", _number(0, 1)),  # 0: the clips unchanged; 1: plain sampling
    ("aug.synthetic.filter", _or_null(_number(0, 1, above=True, below=True))),  # the judge's probability threshold
    ("features.encoder.trim_db", _or_null(_number(0, above=True))),  # dB below the peak that counts as silence
)
RECIPE_NUMBERS = (
    ("diffusion.batch_size", _count(1)),
    ("diffusion.epochs", _count(1)),
    ("diffusion.max_steps", ((lambda v: v == -1 or _count(1)[0](v)), "an integer >= 1, or -1 (epochs decide)")),
    ("diffusion.lr", _number(0, above=True)),
    ("diffusion.p_uncond", _number(0, 1, below=True)),
    ("diffusion.ema_decay", _number(0, 1, below=True)),
)
SAMPLING_NUMBERS = (
    ("generator.sampling.steps", _count(1)),
    ("generator.sampling.guidance", _number(0)),
)
GENERATE_NUMBERS = COMMON_NUMBERS + SAMPLING_NUMBERS + (
    ("sample.n_per_emotion", _count(1)),
    ("sample.steps", _count(1)),
    ("sample.guidance", _number(0)),
    ("sample.frames", _or_null(_count(1))),
    ("enhance.strength", _number(0, 1)),
    ("enhance.n", _count(1)),
    ("enhance.steps", _count(1)),
    ("enhance.guidance", _number(0)),
    ("quality.knn_k", _count(1)),
    ("quality.memorization_quantile", _number(0, 1, above=True, below=True)),
    ("listen.n_per_emotion", _count(0)),
    ("listen.griffin_lim_iters", _count(1)),
)


def check_train_config(cfg: DictConfig) -> None:
    _check_common(cfg)
    _check_numbers(cfg, TRAIN_NUMBERS)
    _choice(cfg, "model.kind", MODEL_KINDS)
    if cfg.model.kind == "neural":
        for key, choices in (("model.select", SELECT), ("model.class_weights", CLASS_WEIGHTS),
                             ("model.input.pad", PAD_MODES), ("model.input.normalization", NORMALIZATIONS),
                             ("model.input.resize_method", RESIZE_METHODS)):
            _choice(cfg, key, choices)
        _check_optimizer(cfg)
        _check_combination(cfg)
    else:
        for name in input_names(cfg.model.inputs):
            if name not in CLASSICAL_INPUTS:
                raise invalid_choice("model.inputs", name, CLASSICAL_INPUTS)
        _choice(cfg, "model.fusion", FUSIONS)
        _choice(cfg, "model.copies_norm", COPIES_NORMS)
        vw = cfg.model.view_weights
        if isinstance(vw, str) and vw != "balanced":
            raise invalid_choice("model.view_weights", vw, ["null", "balanced", "[w1, w2, ...]"])
        if cfg.aug.specaug or cfg.aug.mixup_alpha:
            # They act on a network's input tensors and batches; a classical model would silently ignore them.
            raise ConfigError(f"aug={cfg.aug.name} (SpecAugment / mixup) changes a network's input batches; "
                              f"model={cfg.model.name} is classical: use aug=audio, ddpm or sdedit, or none")
    _check_encoder(cfg)
    _check_synthetic(cfg)


def check_generate_config(cfg: DictConfig) -> None:
    _check_common(cfg)
    _check_numbers(cfg, GENERATE_NUMBERS)
    _choice(cfg, "mode", GENERATE_MODES)
    _choice(cfg, "sample.sampler", SAMPLERS)
    _choice(cfg, "enhance.sampler", SAMPLERS)
    _check_recipe(cfg)
    _require_log_mel(cfg, "generate.py")
    if cfg.diffusion.space != "mel":
        raise ConfigError(f"diffusion={cfg.diffusion.name} models Whisper's input; train.py makes it on demand for the "
                          "encoder probes (aug=ddpm or sdedit with features=encoder). generate.py makes log-mel generators")


def check_evaluate_config(cfg: DictConfig) -> None:
    _choice(cfg, "metric", EVALUATE_METRICS)
    check_targets(cfg)


def _check_common(cfg: DictConfig) -> None:
    _choice(cfg, "dataset.kind", DATASET_KINDS)
    _choice(cfg, "features.kind", FRONT_ENDS)
    _choice(cfg, "split.protocol", PROTOCOLS)
    check_targets(cfg)


def _choice(cfg: DictConfig, key: str, choices) -> None:
    value = OmegaConf.select(cfg, key)
    if value not in choices:
        raise invalid_choice(key, value, choices)


_ABSENT = object()


def _check_numbers(cfg: DictConfig, rules) -> None:
    for key, (ok, text) in rules:
        node = OmegaConf.select(cfg, key, default=_ABSENT)
        if node is not _ABSENT and not ok(node):
            raise ConfigError(f"{key}={node!r} is not a valid value: it must be {text}")


def check_targets(cfg: DictConfig, path: str = "") -> None:
    """Every `_target_` in the config names an importable class or function."""
    if isinstance(cfg, DictConfig):
        if "_target_" in cfg:
            try:
                get_object(cfg._target_)
            except Exception as err:
                raise ConfigError(f"{path}._target_={cfg._target_!r} cannot be imported ({err})") from None
        for key in cfg:
            if key != "hydra" and OmegaConf.is_config(cfg._get_node(key)):
                check_targets(cfg[key], f"{path}.{key}" if path else str(key))
    elif isinstance(cfg, ListConfig):
        for i, item in enumerate(cfg):
            check_targets(item, f"{path}[{i}]")


def _group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _check_optimizer(cfg: DictConfig) -> None:
    m = cfg.model
    if not isinstance(m.optimizer, DictConfig) or "_target_" not in m.optimizer:
        raise ConfigError(f"model.optimizer={m.optimizer!r} is not an optimizer config. Optimizers are a config "
                          f"group: model/optimizer=<{'|'.join(_group_options('model/optimizer'))}>")
    s = m.scheduler
    if not isinstance(s, DictConfig) or "schedule" not in s or "_target_" not in (s.schedule or {}):
        raise ConfigError(f"model.scheduler={s!r} is not a scheduler config. Schedulers are a config group: "
                          f"model/scheduler=<{'|'.join(_group_options('model/scheduler'))}>")
    _choice(cfg, "model.scheduler.interval", SCHEDULER_INTERVALS)


def _check_combination(cfg: DictConfig) -> None:
    m, f = cfg.model, cfg.features
    if m.input.normalization == "none" and f.kind != "mel":
        # "none" is a fixed map of the [-80, 0] dB range; descriptors in Hz, dB and ratios need statistics.
        raise ConfigError(f"model.input.normalization=none only suits log-mel dB; with features.kind={f.kind!r} "
                          "use global or speaker")
    reads_functionals = m.backbone.arch == "hybrid_tdnn"
    if reads_functionals and not f.functionals:
        raise ConfigError("model=hybrid_tdnn reads per-clip openSMILE functionals beside the frames: set "
                          "features.functionals (e.g. features=compare_lld_functionals, or features.functionals=ComParE_2016)")
    if f.functionals and not reads_functionals:
        raise ConfigError(f"features.functionals={f.functionals} is read only by model=hybrid_tdnn, "
                          f"not by {m.backbone.arch}; drop it or switch model")
    if m.select == "best" and cfg.split.protocol != "random" and cfg.split.n_val_speakers == 0:
        raise ConfigError("model.select=best picks the checkpoint on validation speakers, and split.n_val_speakers=0 "
                          "leaves none; set split.n_val_speakers>0 or model.select=last")


def _check_encoder(cfg: DictConfig) -> None:
    m, on_encoder = cfg.model, cfg.features.kind == "encoder"
    if on_encoder:
        _choice(cfg, "features.encoder.window", WINDOWS)
    reads_layers = (m.kind == "classical" and "encoder_layers" in input_names(m.inputs)) or \
        (m.kind == "neural" and m.backbone.arch in ENCODER_ARCHS)
    if reads_layers and not on_encoder:
        raise ConfigError(f"model={m.name} reads a speech encoder's hidden layers: set features=encoder "
                          "(and features.encoder.name=<hub id or local dir>)")
    fine_tunes, on_input = m.kind == "neural" and m.backbone.arch in FINETUNE_ARCHS, cfg.features.kind == "encoder_input"
    if fine_tunes != on_input:
        raise ConfigError("model=encoder_finetune runs the encoder on its own input, and features=encoder_input serves "
                          f"only that model (here model={m.name}, features.kind={cfg.features.kind}); use both together")
    if m.kind == "neural" and m.input.normalization == "identity" and not on_input:
        raise ConfigError(f"model.input.normalization=identity leaves features unscaled, which suits only an "
                          f"encoder's own input (features=encoder_input), not features.kind={cfg.features.kind!r}; "
                          "use global or speaker")
    if on_encoder and m.kind == "neural" and m.backbone.arch not in ENCODER_ARCHS:
        raise ConfigError(f"features=encoder gives (layers, dim, frames) per clip, which model={m.name} does not "
                          f"read; use model=encoder_probe or model=encoder_linear")
    if reads_layers and m.kind == "classical" and not (m.layers in ("all", "each") or isinstance(m.layers, int)):
        raise ConfigError(f"model.layers={m.layers!r}: use all, each (one view per layer) or a layer index "
                          "(0 = the input embeddings)")


def voices_for_encoder(cfg: DictConfig) -> bool:
    """Generated spectrograms reach a linear probe on a frozen speech encoder by being voiced and
    encoded like real audio (ser/diffusion/encoded.py)."""
    m = cfg.model
    return m.kind == "classical" and input_names(m.inputs) == ["encoder_layers"] and cfg.features.kind == "encoder"


def _check_synthetic(cfg: DictConfig) -> None:
    generated = [k for k in ("synthetic", "sdedit") if k in cfg.aug]
    if not generated:
        return
    what = f"aug={cfg.aug.name}"
    _choice(cfg, "generator.sampling.sampler", SAMPLERS)
    _check_numbers(cfg, SAMPLING_NUMBERS)
    _choice(cfg, "diffusion.space", SPACES)
    _check_recipe(cfg)
    if cfg.diffusion.space == "encoder_input" and not voices_for_encoder(cfg):
        raise ConfigError(f"diffusion={cfg.diffusion.name} models Whisper's input, which only the linear probes on a "
                          "Whisper encoder read (features=encoder, model=encoder_linear or encoder_lda); use a log-mel "
                          "recipe (diffusion=cpu) here")
    if "sdedit" in cfg.aug:
        _choice(cfg, "aug.sdedit.generate", GENERATE)
    if "synthetic" in cfg.aug:
        _choice(cfg, "aug.synthetic.generate", GENERATE)
        _choice(cfg, "aug.synthetic.classes", CLASSES)
        _choice(cfg, "aug.synthetic.judge", JUDGES)
        if cfg.aug.synthetic.filter is not None and cfg.aug.synthetic.judge == "classifier" and not voices_for_encoder(cfg):
            raise ConfigError(f"{CLASSIFIER_JUDGE}; model={cfg.model.name} with features (kind {cfg.features.kind}) "
                              "has none. Use aug.synthetic.judge=bands")
    if voices_for_encoder(cfg):
        if "synthetic" in cfg.aug and cfg.aug.synthetic.only:
            raise ConfigError(f"{what} (synthetic clips alone) is built for networks on log-mels; with model={cfg.model.name} "
                              "mix them with the real clips (aug=ddpm)")
        return
    if cfg.model.kind != "neural":
        raise ConfigError(f"{what} adds generated spectrograms to a network on log-mels, or (voiced and encoded) to a "
                          f"linear probe on a speech encoder (model=encoder_linear or encoder_lda with features=encoder); "
                          f"model={cfg.model.name} is neither")
    _require_log_mel(cfg, f"{what} (generated log-mel spectrograms)")
    if cfg.features.functionals:
        raise ConfigError(f"generated spectrograms have no openSMILE functionals; {what} cannot feed model=hybrid_tdnn")


def _check_recipe(cfg: DictConfig) -> None:
    """The generator recipe's choices, and the keys of its network blocks: a misspelt UNet or
    autoencoder setting would otherwise fail only after the autoencoder trained, or be ignored."""
    _choice(cfg, "diffusion.lr_schedule", LR_SCHEDULES)
    _check_numbers(cfg, RECIPE_NUMBERS)
    for block, settings in (("unet", UNET_SETTINGS), ("autoencoder", AUTOENCODER_SETTINGS)):
        for key in cfg.diffusion.get(block) or {}:
            if key not in settings:
                raise ConfigError(f"diffusion.{block}.{key} is not a setting of the recipe's {block}; "
                                  f"the settings: {', '.join(settings)}")


def _require_log_mel(cfg: DictConfig, what: str) -> None:
    # The generators learn and emit log-mel dB images; other front ends (openSMILE LLDs) have no such
    # fixed range and no inverse to audio.
    if cfg.features.kind != "mel":
        raise ConfigError(f"{what} needs the log-mel front end (features=default); this run uses "
                          f"features.kind={cfg.features.kind!r}")
