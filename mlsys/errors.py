"""Every error mlsys raises on purpose, in one place.

Each message says what was wrong, with which value, and what to do next. The
CLI prints ``str(error)`` as one line and exits 2, never a stack trace.
"""

from __future__ import annotations


def _rebuild(cls: type, message: str) -> "MlsysError":
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    return error


class MlsysError(Exception):
    """Base class: an error whose message is meant for the user as is."""

    def __reduce__(self):
        # Subclasses build their message from other arguments; pickle the message
        # itself, so errors raised inside Ray tasks reach the driver intact.
        return _rebuild, (type(self), str(self)), self.__dict__


class ConfigError(MlsysError, ValueError):
    """A Hydra override or config value that cannot be used."""

    def __init__(self, detail: str):
        super().__init__(
            f"Bad configuration: {detail}. "
            "Run `mlsys run --cfg job` to see the composed config and its keys."
        )


class MissingDependencyError(MlsysError):
    """An optional package (or a data set shipped in a package) is not installed."""

    def __init__(self, what: str, package: str, extra: str = ""):
        flags = f" {extra}" if extra else ""
        super().__init__(
            f"{what} needs the package `{package}`, which is not installed. "
            f"Install it with `pip install{flags} {package}` (or run `make setup`)."
        )


class ClusterUnreachableError(MlsysError):
    def __init__(self, address: str, reason: str):
        super().__init__(
            f"Cannot reach the Ray cluster at {address!r} ({reason}). Start one with "
            "`ray start --head`, fix `cluster.address`, or unset RAY_ADDRESS to run "
            "on the embedded local default."
        )


class PortInUseError(MlsysError):
    """``key`` (``serve.port``, ``ui.port``) names a port something else already holds."""

    def __init__(self, host: str, port: int, key: str = "serve.port"):
        super().__init__(
            f"{key}={port}: port {port} on {host} is already in use. Stop whatever holds it "
            f"(`lsof -i :{port}`) or pick another port, e.g. {key}={port + 1}."
        )


def require_free_port(host: str, port: int, key: str) -> None:
    """Raise :class:`PortInUseError` naming ``key`` unless ``host:port`` can be bound now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            raise PortInUseError(host, port, key) from None


def _summary(cause: BaseException) -> str:
    """One line for a cause; Ray's wrapper for unpicklable errors ends with the original."""
    lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    if type(cause).__name__ == "UnserializableException" and lines:
        return lines[-1]
    return f"{type(cause).__name__}: {lines[0] if lines else ''}".rstrip(". ")


class StepFailedError(MlsysError):
    def __init__(self, step: str, cause: BaseException):
        super().__init__(
            f"Step '{step}' failed: {_summary(cause)}. Fix the cause and run "
            f"the same command again: finished steps are reused and the pipeline "
            f"resumes at '{step}'."
        )
        self.step = step
        self.cause = cause


class PipelineDefinitionError(MlsysError):
    """A step declaration that cannot be wired (caught before anything runs)."""


class ModelNotFoundError(MlsysError):
    def __init__(self, uri: str, reason: str):
        super().__init__(
            f"No model at {uri!r}: {reason}. Run `mlsys run` to train and register one, "
            "or list versions in the MLflow UI (`mlflow ui --backend-store-uri "
            "sqlite:///.mlsys/mlflow.db`)."
        )


class ArtifactIntegrityError(MlsysError):
    def __init__(self, path: str, expected: str, actual: str):
        super().__init__(
            f"Artifact {path!r} does not match its checksum (expected sha256 {expected[:12]}…, "
            f"found {actual[:12]}…). The package was modified or truncated; re-register "
            "the model with `mlsys run` instead of editing package files."
        )


class InvalidRequestError(MlsysError):
    """A ranking request that cannot be scored (answered as HTTP 400)."""


class TooManyBadRowsError(MlsysError):
    """More malformed rows in a source than ``data.max_bad_fraction`` (or ``predict.max_bad_fraction``) allows."""

    def __init__(self, source: str, bad: int, rows: int, max_fraction: float, by_reason: dict[str, int], quarantine: str,
                 setting: str = "data.max_bad_fraction"):
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0])))
        percent = 100.0 * bad / rows if rows else 0.0
        super().__init__(
            f"{percent:.3g}% of the rows of {source!r} are malformed ({bad} of {rows}: {reasons}), "
            f"above {setting}={max_fraction}. The rows and their reasons are in {quarantine}; "
            f"fix the source or raise {setting}."
        )
        self.source, self.bad, self.rows = source, bad, rows
        self.max_fraction, self.by_reason, self.quarantine = max_fraction, dict(by_reason), quarantine


class OutputExistsError(MlsysError):
    """A command would write into an output that is already there."""

    def __init__(self, flag: str, path: str, setting: str):
        super().__init__(f"{flag} {path} already exists: remove it, choose another path, or pass {setting}=true to replace it")
        self.path = path


class DataFormatError(MlsysError):
    """A data file does not hold what the declared schema says (a missing column, a value of the wrong kind)."""


class DataValidationError(MlsysError):
    """Validation found ``error`` anomalies: the pipeline stops before training."""

    def __init__(self, dataset: str, lines: list[str], report: str):
        shown = "; ".join(lines[:5]) + (f"; and {len(lines) - 5} more" if len(lines) > 5 else "")
        super().__init__(
            f"Data validation of {dataset} found {len(lines)} error(s): {shown}. The report is {report}. "
            "Fix the data, or if the change is expected, update the schema (validation.schema_file) "
            "or the thresholds (validation.drift.*, validation.features.<name>.*)."
        )


class VersionMismatchError(MlsysError):
    """A model version's halves met a different version's: the graph refuses to score with them mixed."""

    def __init__(self, stage: str, expected: str, got: str):
        super().__init__(
            f"the {stage} deployment serves package {expected} but was sent rows embedded by package {got}; "
            "a model version's deployments move together: retry once the deploy has finished"
        )
        self.stage, self.expected, self.got = stage, expected, got


class AliasMoveError(MlsysError):
    """A push or rollback of a serving alias that cannot happen now (a release in progress, no earlier champion)."""

    def __init__(self, model: str, alias: str, why: str):
        self.model, self.alias, self.why = model, alias, why
        super().__init__(f"cannot move {model}@{alias}: {why}")


class TuningFailedError(MlsysError):
    """No trial of a tuning run produced a metric."""

    def __init__(self, trials: int, first_error: str, experiment: str):
        super().__init__(
            f"tuning failed: none of its {trials} trials reported a metric (first error: {first_error}). "
            f"The trials' logs are under {experiment}; fix the cause and run the same command again to resume"
        )
