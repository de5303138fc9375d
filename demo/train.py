"""Train, save and load the iris RandomForest model used by the demo."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

logger = logging.getLogger(__name__)

DEFAULT_TREES = 100


def default_model_path() -> Path:
    """Return `$DEMO_MODEL_PATH`, or `model.joblib` next to this package."""
    env = os.environ.get("DEMO_MODEL_PATH")
    return Path(env) if env else Path(__file__).resolve().parent / "model.joblib"


def default_n_estimators() -> int:
    """Return `$DEMO_TREES` as an int (default 100)."""
    return int(os.environ.get("DEMO_TREES", str(DEFAULT_TREES)))


def train(path: Path, n_estimators: int, seed: int = 0) -> RandomForestClassifier:
    """Fit a RandomForest (random_state=`seed`) on the bundled iris data and save it atomically to `path`."""
    iris = load_iris()
    model = RandomForestClassifier(n_estimators=n_estimators, random_state=seed)
    model.fit(iris.data, iris.target)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        joblib.dump(model, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("trained RandomForest with %d trees, saved to %s", n_estimators, path)
    return model


def load_or_train(path: Path, n_estimators: int) -> RandomForestClassifier:
    """Load the model at `path`; retrain if missing, unreadable, or not built with `n_estimators` trees."""
    if path.exists():
        try:
            model = joblib.load(path)
        except Exception:
            logger.warning("could not load model from %s; retraining", path, exc_info=True)
        else:
            if isinstance(model, RandomForestClassifier) and model.n_estimators == n_estimators:
                return model
            logger.info("model at %s does not have %d trees; retraining", path, n_estimators)
    return train(path, n_estimators)


def main() -> None:
    """Train with the env-configured settings and print where the model was saved."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    path = default_model_path()
    train(path, default_n_estimators())
    print(f"model saved to {path}")


if __name__ == "__main__":
    main()
