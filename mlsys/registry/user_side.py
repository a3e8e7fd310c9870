"""User-sequence caching: score a request's candidates against its user's history, encoded once.

For models whose dense part is :class:`~mlsys.models.blocks.UserSide` (DIN, BST-cached) a package
holds two more ONNX graphs beside the fused ``model.onnx``, and what splits them::

    user.onnx          history (1, L), categorical (1, F), numeric (1, N): the user's row -> its state
    candidates.onnx    categorical (N, F), multi_hot (N, K W), numeric (N, N_num), the state -> score (N,)
    user_side.json     the state's names and the user fields (read from the user's row, not per candidate)

:func:`export_user_side` writes them; :class:`UserSideScorer` runs them with ONNX Runtime
and keeps encoded states in a :class:`UserStateCache` (per user, keyed by a version of the
user's inputs), so a request for a user seen with the same history runs only the candidate
graph. The user fields (the user id and the user table's categorical and numeric features)
are the same in every row of a request and are encoded once with the history; everything
else (the item, its features, multi-hot features, context) is read per candidate row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import warnings
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mlsys.models import InputSpec, UserFields
from mlsys.registry.onnx_graphs import onnx_session

if TYPE_CHECKING:  # exporting needs torch; scoring (UserSideScorer) does not
    import torch

    from mlsys.models.blocks import CtrModel

USER_GRAPH, CANDIDATE_GRAPH, SPLIT = "user.onnx", "candidates.onnx", "user_side.json"
FORMAT = "mlsys.user-side/1"
CANDIDATE_INPUTS = ("categorical", "multi_hot", "numeric")

UserState = tuple[np.ndarray, ...]
"""One user's encoded inputs: the user graph's outputs, in the model's ``state_names`` order."""


def supports_user_side(model: torch.nn.Module) -> bool:
    """Whether ``model`` scores in two parts (its dense part is :class:`~mlsys.models.blocks.UserSide`)."""
    from mlsys.models.blocks import CtrModel

    return isinstance(model, CtrModel) and model.supports_user_side


def _graphs(model: CtrModel, user: UserFields) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The two exported graphs: the user's row -> its state; the candidates and the state -> scores."""
    import torch

    class UserGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, history, categorical, numeric):
            return self.model.encode_user(history, categorical, numeric, user)

    class CandidateGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, categorical, multi_hot, numeric, state):
            return torch.sigmoid(self.model.score_candidates(state, categorical, multi_hot, numeric, user))

    return UserGraph().eval(), CandidateGraph().eval()


def user_fields_of(directory: Path) -> tuple[str, ...]:
    """The user's own fields by the package's declared feature schema (``preprocessor.json`` in ``directory``):
    the user id and the user table's features; ``()`` when the folder has no preprocessor."""
    from mlsys.data.feature_schema import USER, FeatureSchema, Table

    path = Path(directory) / "preprocessor.json"
    if not path.exists():
        return ()
    schema = FeatureSchema.from_dict(json.loads(path.read_text())["schema"])
    return (USER, *schema.table_features(Table.users))


def export_user_side(model: torch.nn.Module, spec: InputSpec, directory: Path,
                     user_fields: Iterable[str] | None = None) -> list[str]:
    """Write ``user.onnx``, ``candidates.onnx`` and ``user_side.json`` into the package folder ``directory``.

    ``user_fields``: the names of the inputs that are the same in every row of a user's request
    (encoded once with the history); by default :func:`user_fields_of` the folder's preprocessor.
    Returns the names written, relative to ``directory`` (``[]`` for a model without a user side,
    so a caller can list them in its manifest either way)::

        files = export_user_side(model, spec, package_dir)   # ["user.onnx", "candidates.onnx", "user_side.json"]
    """
    import torch

    if not supports_user_side(model):
        return []
    directory = Path(directory)
    model = model.eval()
    user = UserFields.of(spec, user_fields_of(directory) if user_fields is None else user_fields)
    names = tuple(model.dense.state_names)
    history = torch.ones(1, spec.history_length, dtype=torch.int64)
    history[:, spec.history_length // 2 :] = 0  # padding in the example, as in a short history
    row = (torch.ones(1, len(spec.categorical_fields), dtype=torch.int64), torch.zeros(1, len(spec.numeric_fields)))
    with torch.no_grad():
        state = model.encode_user(history, *row, user)
    n = 2
    candidates = (
        torch.ones(n, len(spec.categorical_fields), dtype=torch.int64),
        torch.ones(n, len(spec.multi_hot_fields) * spec.multi_hot_length, dtype=torch.int64),
        torch.zeros(n, len(spec.numeric_fields), dtype=torch.float32),
    )
    user_graph, candidate_graph = _graphs(model, user)
    batch = torch.export.Dim("candidates", min=1)
    for name in ("torch.onnx", "onnxscript"):  # "torchvision is not installed", "Skipping constant folding"
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(user_graph, (history, *row), str(directory / USER_GRAPH),
                          input_names=["history", "categorical", "numeric"], output_names=list(names),
                          external_data=False, dynamo=True, verbose=False)
        torch.onnx.export(
            candidate_graph, (*candidates, list(state)), str(directory / CANDIDATE_GRAPH),
            input_names=[*CANDIDATE_INPUTS, *names], output_names=["score"],
            dynamic_shapes=({0: batch}, {0: batch}, {0: batch}, [None for _ in names]),
            external_data=False, dynamo=True, verbose=False,
        )
    (directory / SPLIT).write_text(json.dumps({
        "format": FORMAT, "state": list(names),
        "user_categorical": [spec.categorical_fields[i] for i in user.categorical],
        "user_numeric": [spec.numeric_fields[i] for i in user.numeric],
    }, indent=2))
    return [USER_GRAPH, CANDIDATE_GRAPH, SPLIT]


def user_version(history: np.ndarray, categorical: np.ndarray, numeric: np.ndarray) -> str:
    """A digest of what a user's state is computed from (the history row and the user fields' values):
    a cache version that changes whenever any of them does."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (np.ascontiguousarray(history, np.int64), np.ascontiguousarray(categorical, np.int64),
                 np.ascontiguousarray(numeric, np.float32)):
        digest.update(part.tobytes())
    return digest.hexdigest()


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    invalidations: int = 0


class UserStateCache:
    """An LRU of encoded user states, one entry per user: ``(version, state)``.

    ``get(user_id, version)`` returns the state only if it was stored for that version (a
    newer history is a miss, never a stale state); ``put`` replaces the user's entry;
    ``invalidate(user_id)`` drops it (an event push for that user). Thread-safe. One cache
    per model package: a state is only valid for the weights that encoded it.

    >>> cache = UserStateCache(max_entries=10_000)
    >>> cache.put(42, "v1", (np.zeros(3),)); cache.get(42, "v1") is not None, cache.get(42, "v2")
    (True, None)
    """

    def __init__(self, max_entries: int = 10_000):
        if max_entries < 1:
            raise ValueError(f"UserStateCache max_entries={max_entries} must be >= 1")
        self.max_entries = max_entries
        self.stats = CacheStats()
        self._entries: OrderedDict[Hashable, tuple[Hashable, UserState]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, user_id: Hashable, version: Hashable) -> UserState | None:
        with self._lock:
            entry = self._entries.get(user_id)
            if entry is None or entry[0] != version:
                self.stats.misses += 1
                return None
            self._entries.move_to_end(user_id)
            self.stats.hits += 1
            return entry[1]

    def put(self, user_id: Hashable, version: Hashable, state: UserState) -> None:
        with self._lock:
            self._entries[user_id] = (version, state)
            self._entries.move_to_end(user_id)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def invalidate(self, user_id: Hashable) -> bool:
        """Drop ``user_id``'s state (its history changed); True if there was one."""
        with self._lock:
            dropped = self._entries.pop(user_id, None) is not None
            self.stats.invalidations += dropped
            return dropped

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, user_id: Hashable) -> bool:
        return user_id in self._entries


class UserSideScorer:
    """``UserSideScorer(package_dir, spec).score(categorical, multi_hot, history, numeric, user_id=7)`` -> (N,) probabilities.

    The arrays are the preprocessor's for one request (N candidates of one user):
    ``categorical`` (N, F) int64, ``multi_hot`` (N, K W) int64, ``history`` (N or 1, L) int64,
    ``numeric`` (N, N_num) float32; the history and the user fields (``user_side.json``) must be
    the same in every row. With ``user_id`` the encoded state is read from / written to ``cache``
    under ``version`` (default: :func:`user_version`, a digest of the history and user fields, so
    a changed user is never served a stale state; a caller's own version must change whenever
    they do). ``threads``: ONNX Runtime intra-op threads (1 for a serving replica).
    """

    def __init__(self, directory: Path, spec: InputSpec, cache: UserStateCache | None = None, threads: int = 1):
        directory = Path(directory)
        missing = [name for name in (USER_GRAPH, CANDIDATE_GRAPH, SPLIT) if not (directory / name).exists()]
        if missing:
            raise FileNotFoundError(f"{directory} has no {', '.join(missing)}: export them with "
                                    f"mlsys.registry.user_side.export_user_side (models whose dense part is UserSide)")
        split = json.loads((directory / SPLIT).read_text())
        if split.get("format") != FORMAT:
            raise ValueError(f"{directory / SPLIT} has format {split.get('format')!r}, this mlsys reads {FORMAT!r}")
        self.spec = spec
        self.user = UserFields.of(spec, [*split["user_categorical"], *split["user_numeric"]])
        self._user_cat, self._user_num = list(self.user.categorical), list(self.user.numeric)
        self._cat_mask = np.isin(np.arange(len(spec.categorical_fields)), self._user_cat)
        self._num_mask = np.isin(np.arange(len(spec.numeric_fields)), self._user_num)
        self.cache = cache if cache is not None else UserStateCache()
        self._user = onnx_session(directory / USER_GRAPH, threads)
        self._candidates = onnx_session(directory / CANDIDATE_GRAPH, threads)
        self.state_names = tuple(split["state"])
        self._user_inputs = tuple(i.name for i in self._user.get_inputs())
        self._candidate_inputs = tuple(i.name for i in self._candidates.get_inputs())

    @staticmethod
    def available(directory: Path) -> bool:
        """Whether the package folder has the two graphs (written by :func:`export_user_side`)."""
        return all((Path(directory) / name).exists() for name in (USER_GRAPH, CANDIDATE_GRAPH, SPLIT))

    def encode_user(self, history: np.ndarray, categorical: np.ndarray, numeric: np.ndarray) -> UserState:
        """One user's row: history (1, L), categorical (1, F), numeric (1, N) -> its state (no cache)."""
        feeds = {"history": np.ascontiguousarray(history, dtype=np.int64).reshape(1, self.spec.history_length),
                 "categorical": np.ascontiguousarray(categorical, dtype=np.int64).reshape(1, -1),
                 "numeric": np.ascontiguousarray(numeric, dtype=np.float32).reshape(1, -1)}
        return tuple(self._user.run(list(self.state_names), {name: feeds[name] for name in self._user_inputs}))

    def score_state(self, state: UserState, categorical: np.ndarray, multi_hot: np.ndarray, numeric: np.ndarray) -> np.ndarray:
        """N candidate rows against one user's state -> (N,) float32 probabilities (the rows' user fields are not read)."""
        if len(categorical) == 0:
            return np.zeros(0, np.float32)
        feeds = dict(zip(self.state_names, state))
        feeds.update(categorical=categorical, multi_hot=multi_hot, numeric=numeric)
        return self._candidates.run(["score"], {name: feeds[name] for name in self._candidate_inputs})[0]

    def score(self, categorical: np.ndarray, multi_hot: np.ndarray, history: np.ndarray, numeric: np.ndarray, *,
              user_id: Hashable | None = None, version: Hashable | None = None) -> np.ndarray:
        """One request's N candidates -> (N,) probabilities, the user encoded once (or read from the cache)."""
        if len(categorical) == 0:
            return np.zeros(0, np.float32)
        self._check_one_user(categorical, history, numeric)
        first = (history[:1], categorical[:1], numeric[:1])
        if user_id is None:
            return self.score_state(self.encode_user(*first), categorical, multi_hot, numeric)
        if version is None:
            version = user_version(history[0], categorical[0, self._user_cat], numeric[0, self._user_num])
        state = self.cache.get(user_id, version)
        if state is None:
            state = self.encode_user(*first)
            self.cache.put(user_id, version, state)
        return self.score_state(state, categorical, multi_hot, numeric)

    def _check_one_user(self, categorical: np.ndarray, history: np.ndarray, numeric: np.ndarray) -> None:
        if history.ndim != 2 or history.shape[1] != self.spec.history_length:
            raise ValueError(f"history has shape {history.shape}, expected (N or 1, {self.spec.history_length})")
        # One comparison per array against its first row (the user columns picked by a mask): no copies.
        same = np.array_equal(history[1:], history[:-1]) and all(
            bool((a[1:] == a[0])[:, mask].all()) for a, mask in ((categorical, self._cat_mask), (numeric, self._num_mask)) if mask.any()
        )
        if not same:
            raise ValueError("a user-side request scores one user: the history and the user fields "
                             f"({', '.join(self._user_field_names())}) must be the same in every row; "
                             "split the rows by user (or score them with the fused model.onnx)")

    def _user_field_names(self) -> list[str]:
        return [*(self.spec.categorical_fields[i] for i in self._user_cat), *(self.spec.numeric_fields[i] for i in self._user_num)]
