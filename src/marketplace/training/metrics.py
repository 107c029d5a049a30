"""Classification metrics and the figures logged with every run.

The same numbers go to MLflow and to the DVC metrics files, so the MLflow UI and
``dvc metrics diff`` never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix, f1_score


def top_k_accuracy(probabilities: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose true label is among the ``k`` most probable classes."""
    if len(labels) == 0:
        return float("nan")
    top = np.argsort(-probabilities, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = 15
) -> float:
    """ECE: the mean gap between confidence and accuracy over equal-width confidence bins,
    weighted by the rows in each bin (Guo et al., 2017; 15 bins as there)."""
    if len(labels) == 0:
        return float("nan")
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    gaps = [
        abs(correct[which == b].mean() - confidence[which == b].mean()) * np.mean(which == b)
        for b in range(bins)
        if np.any(which == b)
    ]
    return float(np.sum(gaps))


def classification_metrics(
    probabilities: np.ndarray, labels: np.ndarray, prefix: str = ""
) -> dict[str, float]:
    """Accuracy, macro-F1, top-3 accuracy, log-loss and expected calibration error, keyed
    ``<prefix>accuracy`` etc."""
    n_classes = probabilities.shape[1]
    if len(labels) == 0:
        return {
            f"{prefix}{name}": float("nan")
            for name in ("accuracy", "macro_f1", "top3_accuracy", "log_loss", "ece")
        } | {f"{prefix}n": 0.0}
    predicted = probabilities.argmax(axis=1)
    return {
        f"{prefix}accuracy": float((predicted == labels).mean()),
        f"{prefix}macro_f1": float(
            f1_score(labels, predicted, average="macro", labels=range(n_classes), zero_division=0)
        ),
        f"{prefix}top3_accuracy": top_k_accuracy(probabilities, labels, 3),
        f"{prefix}log_loss": float(
            -np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)).mean()
        ),
        f"{prefix}ece": expected_calibration_error(probabilities, labels),
        f"{prefix}n": float(len(labels)),
    }


def per_class_report(
    probabilities: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class (sklearn's report as a dict)."""
    return classification_report(
        labels,
        probabilities.argmax(axis=1),
        labels=list(range(len(class_names))),
        target_names=list(class_names),
        output_dict=True,
        zero_division=0,
    )


def confusion(probabilities: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``[true, predicted]``."""
    return confusion_matrix(labels, probabilities.argmax(axis=1), labels=list(range(n_classes)))


def plot_confusion(matrix: np.ndarray, class_names: Sequence[str], path: Path, title: str) -> None:
    """Row-normalised confusion matrix as a PNG (counts in the cells)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(9, 8))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    short = [name if len(name) <= 22 else name[:20] + "…" for name in class_names]
    ax.set_xticks(range(len(short)), short, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(short)), short, fontsize=8)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            if matrix[i, j]:
                ax.text(
                    j,
                    i,
                    str(matrix[i, j]),
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if rates[i, j] > 0.5 else "black",
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_learning_curves(history: list[dict[str, float]], path: Path, title: str) -> None:
    """Train/val loss and accuracy per epoch as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "val"):
        loss_ax.plot(epochs, [h[f"{split}_loss"] for h in history], label=split)
        acc_ax.plot(epochs, [h[f"{split}_accuracy"] for h in history], label=split)
    loss_ax.set_title("loss")
    acc_ax.set_title("accuracy")
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_run_reports(
    history: list[dict[str, float]],
    probabilities: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    folder: Path,
    title: str,
) -> list[Path]:
    """The files a training stage leaves for ``dvc plots`` and MLflow: curves and confusion.

    ``history.csv`` (per epoch), ``confusion.csv`` (actual/predicted names per test row),
    and the two PNGs. Returns the paths written.
    """
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(history).assign(epoch=lambda d: d["epoch"].astype(int)).to_csv(
        folder / "history.csv", index=False, lineterminator="\n"
    )
    names = np.asarray(class_names)
    pd.DataFrame(
        {"actual": names[labels], "predicted": names[probabilities.argmax(axis=1)]}
    ).to_csv(folder / "confusion.csv", index=False, lineterminator="\n")
    plot_confusion(
        confusion(probabilities, labels, len(names)),
        class_names,
        folder / "confusion.png",
        f"{title}: test confusion matrix",
    )
    plot_learning_curves(history, folder / "learning_curves.png", f"{title}: learning curves")
    return [
        folder / n for n in ("history.csv", "confusion.csv", "confusion.png", "learning_curves.png")
    ]
