"""The project's own error types: every failure a user can cause ends in one of these, with a
message that names the file or field and says what was expected."""


class EclipseSegError(Exception):
    """Base class of every error eclipse-seg raises on purpose."""


class DataError(EclipseSegError):
    """A dataset file is missing, corrupt or inconsistent."""


class ConfigError(EclipseSegError):
    """A config file or override is invalid (unknown key, wrong type, unsupported option)."""


class ScenarioError(EclipseSegError):
    """A continual scenario or class order is malformed."""


class CheckpointError(EclipseSegError):
    """A checkpoint is corrupt, truncated or does not fit the model it is loaded into."""


class TrainingError(EclipseSegError):
    """Training cannot go on (non-finite loss, locked output directory, ...)."""
