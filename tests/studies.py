"""Optuna studies for tests, where the tune step keeps its own."""

from __future__ import annotations


def make_study(home_root, name: str, trials: int = 4) -> None:
    """A real Optuna study where the tune step keeps its studies (``<home>/optuna.db``)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{home_root}/optuna.db", direction="maximize")

    def objective(trial):
        lr, dim = trial.suggest_float("train.learning_rate", 1e-4, 1e-1, log=True), trial.suggest_categorical("model.embed_dim", [8, 16])
        for epoch in (1, 2):
            trial.report(0.6 + 0.01 * epoch + lr, epoch)
        return 0.62 + lr + dim / 1000

    study.optimize(objective, n_trials=trials)
