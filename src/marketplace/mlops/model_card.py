"""Model cards: what a registered version is, in its own description.

Set at registration (``registry.log_and_register``) as the version's MLflow description
(Markdown, which the MLflow UI renders on the version's page) and returned by the API's
``GET /model``. It says where the version came from (data version: ``data.dvc``'s hash,
product and photo counts; git commit; the params that matter), how it scored per query
kind on the test split (accuracy, macro-F1, top-3, log-loss, calibration error and the
temperature fitted on val), what it is for and what it is bad at (the weakest kind,
usually photo only), and links to its runs. The links section is rewritten when an
evaluation or monitor run is linked to the version (``refresh_links``).
"""

from __future__ import annotations

from typing import Any

QUERY_KINDS = ("image", "text", "image+text")  # marketplace.models.query (no torch here)
LINKS_HEADING = "## Runs"
FIGURES = (
    ("accuracy", "accuracy"),
    ("macro_f1", "macro-F1"),
    ("top3_accuracy", "top-3"),
    ("log_loss", "log-loss"),
    ("ece", "ECE"),
    ("n", "n"),
)
KIND_WORDS = {"image": "photo only", "text": "text only", "image+text": "photo + text"}


def _slug(kind: str) -> str:
    return kind.replace("+", "_")


def _fmt(value: float | None, figure: str) -> str:
    if value is None:
        return "-"
    if figure == "n":
        return f"{value:.0f}"
    if figure in ("accuracy", "macro_f1", "top3_accuracy"):
        return f"{100 * value:.1f} %"
    return f"{value:.3f}"


def render(
    *,
    name: str,
    version: str,
    model_kind: str,
    metrics: dict[str, float],
    calibration: dict[str, float],
    tags: dict[str, str],
    params: dict[str, Any],
    data: dict[str, Any],
    run_id: str | None,
) -> str:
    """The card's Markdown (see the module docstring); ``params`` are the flattened params
    that matter (``{"train.combined.hidden_dim": 512, ...}``), ``data`` the counts."""
    kinds = [k for k in QUERY_KINDS if f"test_{_slug(k)}_accuracy" in metrics]
    lines = [
        f"# {name} version {version}",
        "",
        f"A {model_kind} classifier of a Marketplace listing's root category "
        f"({int(data.get('categories', 13))} categories), answering "
        + ", ".join(KIND_WORDS[k] for k in kinds)
        + " queries.",
        "",
        "## Data",
        "",
        f"- data version: `data.dvc` md5 `{tags.get('data_dvc_md5', 'unknown')}`",
        f"- products: {data.get('products', '?')} ({data.get('train', '?')} train, "
        f"{data.get('val', '?')} val, {data.get('test', '?')} test); "
        f"photos: {data.get('photos', '?')}",
        f"- git commit: `{tags.get('git_commit', 'unknown')}`",
        "",
        "## Params",
        "",
        *[f"- `{key}`: {value}" for key, value in params.items()],
        "",
        "## Test metrics per query kind",
        "",
        "| query kind | " + " | ".join(label for _, label in FIGURES) + " | temperature |",
        "|---" * (len(FIGURES) + 2) + "|",
    ]
    for kind in ["all", *kinds]:
        prefix = "test_" if kind == "all" else f"test_{_slug(kind)}_"
        cells = [_fmt(metrics.get(prefix + figure), figure) for figure, _ in FIGURES]
        temperature = calibration.get(kind)
        label = "as they come" if kind == "all" else KIND_WORDS[kind]
        lines.append(
            f"| {label} | " + " | ".join(cells) + f" | {_fmt(temperature, 't')} |"
            if temperature is not None
            else f"| {label} | " + " | ".join(cells) + " | - |"
        )
    accuracies = {k: metrics[f"test_{_slug(k)}_accuracy"] for k in kinds}
    lines += ["", "## Intended use and known limits", ""]
    lines.append(
        "- Suggests a root category for a new listing from its photo and/or text; a seller "
        "confirms or changes it. Probabilities are calibrated per query kind (temperature "
        "fitted on val), so a low top-1 probability means: ask the seller."
    )
    if accuracies:
        weakest = min(accuracies, key=accuracies.__getitem__)
        best = max(accuracies, key=accuracies.__getitem__)
        lines.append(
            f"- Weakest on {KIND_WORDS[weakest]} queries ({_fmt(accuracies[weakest], 'accuracy')}"
            f" test accuracy, against {_fmt(accuracies[best], 'accuracy')} for "
            f"{KIND_WORDS[best]}): do not file a listing from "
            f"{'its photo alone' if weakest == 'image' else KIND_WORDS[weakest]} without "
            "the seller's confirmation."
        )
    lines.append(
        "- Trained on UK Gumtree-style listings in English; listings unlike them (other "
        "languages, currencies, categories) are out of scope: the drift monitor "
        "(`python -m marketplace.mlops.monitor`) watches for them."
    )
    lines += ["", *links_section(name, version, run_id, tags)]
    return "\n".join(lines)


def _run_link(run_id: str) -> str:
    """A link to a run in the MLflow UI when the tracking server is HTTP, else its id."""
    try:
        import mlflow

        uri = mlflow.get_tracking_uri()
        if uri.startswith(("http://", "https://")):
            experiment = mlflow.get_run(run_id).info.experiment_id
            return f"[{run_id}]({uri.rstrip('/')}/#/experiments/{experiment}/runs/{run_id})"
    except Exception:  # a link is a convenience: the id alone still finds the run
        pass
    return f"`{run_id}`"


def links_section(name: str, version: str, run_id: str | None, tags: dict[str, str]) -> list[str]:
    """``## Runs``: training, every evaluation (``evaluation.<export>`` tags) and the
    latest monitor run (``monitor.last_run``) of the version."""
    lines = [LINKS_HEADING, ""]
    if run_id:
        lines.append(f"- training: {_run_link(run_id)}")
    for key, value in sorted(tags.items()):
        if key.startswith("evaluation."):
            lines.append(f"- evaluation on `{key.partition('.')[2]}`: {_run_link(value)}")
    if "monitor.last_run" in tags:
        alert = " (alert)" if tags.get("monitor.alert") == "true" else ""
        lines.append(f"- latest drift monitor{alert}: {_run_link(tags['monitor.last_run'])}")
    if len(lines) == 2:
        lines.append("- none yet")
    return lines


def refresh_links(client: Any, name: str, version: str) -> None:
    """Rewrite the version's ``## Runs`` section from its current tags (the rest of the
    card is left as it was; a version without a card gets the section alone)."""
    mv = client.get_model_version(name, str(version))
    body = (mv.description or "").split(f"\n{LINKS_HEADING}\n")[0].rstrip()
    if body.startswith(LINKS_HEADING):
        body = ""
    links = "\n".join(links_section(name, str(version), mv.run_id, dict(mv.tags)))
    description = f"{body}\n\n{links}" if body else links
    client.update_model_version(name, str(version), description=description)


def card_inputs(model_kind: str, params: Any, listings: Any, splits: dict[str, list[str]]):
    """The card's ``data`` counts and the ``params`` that matter for a ``model_kind``
    classifier trained on ``listings`` (the cleaned table) with ``splits``."""
    from marketplace.mlops.tracking import flatten

    head = getattr(params.train, model_kind)
    chosen: dict[str, Any] = {f"train.{model_kind}": head, "train.seed": params.train.seed}
    if model_kind != "text":
        chosen["embed_images.encoder"] = params.embed_images.encoder
        chosen["embed_images.image_size"] = params.embed_images.image_size
    if model_kind != "vision":
        chosen["embed_text.encoder"] = params.embed_text.encoder
        chosen["embed_text.max_tokens"] = params.embed_text.max_tokens
        chosen["tfidf"] = params.tfidf
    chosen["split"] = params.split
    data = {
        "products": int(listings["product_id"].nunique()),
        "photos": int(listings["image_id"].notna().sum()),
        **{name: len(ids) for name, ids in splits.items()},
    }
    return {"data": data, "params": flatten(chosen)}
