"""Errors a user can act on. The CLI prints their message as one line and exits with code 2."""


class GPT2LabError(Exception):
    """Base class: the message says what went wrong and what to do about it."""


class ConfigError(GPT2LabError, ValueError):
    """A configuration that is invalid or describes a network gpt2lab does not implement."""


class CheckpointError(GPT2LabError, ValueError):
    """A checkpoint that is missing, unreadable, or does not fit the model."""


class InputError(GPT2LabError, ValueError):
    """An input that cannot be used as given: text too long for the context, a layer that does not exist..."""


class TokenizerError(GPT2LabError, ValueError):
    """A vocabulary that is missing or unreadable, an id outside it, or text it refuses to encode."""


class GenerationError(GPT2LabError, ValueError):
    """A decoding setting or input that cannot work (a negative temperature, top_p outside (0, 1], ...)."""


class DataError(GPT2LabError, ValueError):
    """Training or evaluation data that is missing, empty, too short, or does not fit the model."""


class TrainingError(GPT2LabError, RuntimeError):
    """A training run that cannot start or continue (diverged loss, full disk, a run directory in the way)."""
