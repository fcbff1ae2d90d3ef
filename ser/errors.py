"""Every error ser raises on purpose, under one root: `except SerError` catches them all.

Each class also derives from the built-in type a caller would expect (a missing file is still a
`FileNotFoundError`, a bad value a `ValueError`), so code written against the built-ins keeps
working. Messages name the file or option at fault and, where there is one, the fix.
"""

from __future__ import annotations


class SerError(Exception):
    """Root of ser's own errors."""


class ConfigError(SerError, ValueError):
    """A config value that is unknown, misspelt, or does not fit the rest of the config."""


def invalid_choice(key: str, value, choices) -> ConfigError:
    """The error for an option with a fixed set of values: names the option and every valid value."""
    return ConfigError(f"{key}={value!r} is not a valid choice; choose one of: {', '.join(map(str, choices))}")


class BadAudio(SerError, ValueError):
    """An audio file that cannot be used (corrupt, empty, silent, too short). Callers skip the
    file and record `reason`; one bad file never stops a run."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class UnknownEmotion(SerError, ValueError):
    """A label that is not a known spelling of any emotion."""


class NotFound(SerError, FileNotFoundError):
    """A corpus, run, model or generator that is not where the config or the caller says."""


class DataError(SerError, ValueError):
    """A corpus, split or feature set that cannot serve the run (no clips, too few speakers, ...)."""


class LeakageError(SerError):
    """Something that learned from a test speaker was about to reach that speaker's evaluation."""


class SpeakerLeak(LeakageError):
    """A test speaker in the training or validation side of a split."""


class GeneratorFoldLeak(LeakageError):
    """A generator (or its samples) trained on one of the run's test speakers, or on real clips a
    low-data run may not use."""


class MissingSyntheticData(NotFound):
    """aug=ddpm found no synthetic set for its fold."""


class PretrainedWeightsUnavailable(SerError, RuntimeError):
    """Pretrained weights that were asked for but cannot be found offline."""


class ChecksumMismatch(SerError, RuntimeError):
    """A downloaded archive whose checksum differs from the published one."""


class UnsafeArchive(SerError, RuntimeError):
    """An archive member that would escape the target folder, a link, or an archive too large."""


class MissingDependency(SerError, ImportError):
    """An optional extra that a chosen option needs is not installed; the message names the pip command."""
