"""Typed configuration of batch prediction (``mlsys predict``, docs/predict.md)."""

from __future__ import annotations

from dataclasses import dataclass

ROW_ID, SCORE = "row_id", "score"  # the columns prediction adds to the input's


@dataclass
class PredictConfig:
    """``mlsys predict --model ctr@champion --input rows.parquet --output scores`` (the flags set
    ``predict.model``, ``predict.input``, ``predict.output``; every other key is a Hydra override)."""

    # A registered model `name@alias` or `name/version`, or a package folder (as serve.model).
    model: str = "ctr@champion"
    # Parquet (a file or a folder of them) or CSV (.csv, .csv.gz, .tsv) of (user_id, item_id[, context]) rows.
    input: str = ""
    # A folder of Parquet part files: the input's rows, their row_id and score.
    output: str = ""
    # Where bad rows go (bad_rows.parquet, replaced by every run); empty: `<output>.quarantine`.
    quarantine: str = ""
    # Rows per map_batches call: big batches amortise the per-user feature lookups and the ONNX call.
    batch_size: int = 100_000
    # Actors in the pool; 0: one per CPU of the cluster (the embedded Ray: at most one per core), one per GPU if it has GPUs.
    concurrency: int = 0
    # Stop with an error when more than this fraction of the rows is bad (as data.max_bad_fraction).
    max_bad_fraction: float = 0.01
    # ONNX Runtime intra-op threads per actor: 1, the actors are the parallelism.
    threads: int = 1
    # A multi-hot context feature given as text (CSV) holds values separated by this.
    separator: str = "|"
    # A progress line every this many rows scored (0: none).
    progress_rows: int = 1_000_000
    # Replace an existing output folder instead of refusing.
    overwrite: bool = False
    # Print Ray Data's Dataset.stats() at the end: where the time went, per operator.
    stats: bool = False

    def __post_init__(self):
        from mlsys.config import require

        require(bool(self.model), "predict.model", self.model, "a registered model (name@alias, name/version) or a package folder")
        require(self.batch_size >= 1, "predict.batch_size", self.batch_size, ">= 1")
        require(self.concurrency >= 0, "predict.concurrency", self.concurrency, ">= 0 (0: one actor per CPU)")
        require(0.0 <= self.max_bad_fraction <= 1.0, "predict.max_bad_fraction", self.max_bad_fraction, "between 0 and 1")
        require(self.threads >= 1, "predict.threads", self.threads, ">= 1")
        require(bool(self.separator), "predict.separator", self.separator, "a non-empty string")
        require(self.progress_rows >= 0, "predict.progress_rows", self.progress_rows, ">= 0 (0: no progress lines)")

    @property
    def quarantine_uri(self) -> str:
        return self.quarantine or f"{self.output.rstrip('/')}.quarantine"
