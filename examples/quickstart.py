"""Quickstart: train and register the default CTR model, then rank in-process.

    python examples/quickstart.py

Runs the default pipeline (MovieLens-100K, DeepFM, 1 epoch) on an embedded
Ray, then loads the champion from the MLflow registry and ranks a few items
for one user, without a server.
"""

import mlsys

result = mlsys.run_pipeline(overrides=["train.max_epochs=1"])
for step in result.steps:
    print(f"{step.name:<10} {step.status}")

model = mlsys.load_model("models:/ctr@champion")
ranking = model.rank(user_id=1, candidates=[50, 172, 181, 258, 1], k=3)
print(f"model version {model.version}: top 3 for user 1")
for item in ranking.items:
    print(f"  item {item.item_id:>4}  score {item.score:.4f}")
