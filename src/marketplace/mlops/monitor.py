"""The drift monitor: do the listings people send still look like the training data?

    python -m marketplace.mlops.monitor                 # the production version, last 24 h
    python -m marketplace.mlops.monitor --version 7 --hours 6 --out reports/monitor

It reads a window of the answers serving logged (``predictions``, role ``served``, of one
version) and compares them, per query kind (photo only, text only, photo + text), with
the training reference that version was registered with (``mlops.reference``):

* predicted-category mix against the training labels: Jensen-Shannon distance (base 2),
  less the distance sampling alone gives a window of that size;
* embedding drift: a domain classifier (logistic regression on a PCA of the frozen
  encoders' vectors, fitted on the reference) tells logged vectors from training ones;
  its 5-fold cross-validated ROC AUC is 0.5 when they cannot be told apart;
* text length: Kolmogorov-Smirnov statistic against the training listings' texts;
* confidence: KS statistic of the top-1 probability against the val split's (same kind);
* and, over all kinds, the share of photo / text / both: total variation distance.

Distances, not p-values, are thresholded (``monitor`` in params.yaml): a p-value shrinks
with the window's size, so a busy hour would alert on differences nobody cares about.
A kind with fewer than ``min_rows`` answers is reported, not judged. The monitor also
reports live accuracy (sellers' feedback) and shadow agreement per version and kind
(``mlops.evidence``), writes an HTML report and a JSON summary, logs an MLflow run
linked to the version (and tags the version with it), and exits 1 when a threshold is
crossed, 0 otherwise (2 on an error such as a version without a reference), so cron or
CI can alert on it.

Evidently (0.7.23, the current release) was the first choice; it cannot be imported
with the project's pandas 3.1 (``pandas.core.dtypes.common.infer_dtype_from_object`` is
gone), and alibi-detect and frouros would downgrade numpy, scipy or pandas. The checks
above are a few calls into scipy and scikit-learn, both already dependencies.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from marketplace.core.config import MonitorParams
from marketplace.mlops.evidence import Agreement, LiveAccuracy
from marketplace.mlops.log_schema import predictions
from marketplace.mlops.reference import Reference

log = logging.getLogger("marketplace.mlops.monitor")
QUERY_KINDS = ("image", "text", "image+text")  # marketplace.models.query (no torch here)
SPACES = {"image": ("image",), "text": ("text",), "image+text": ("image", "text")}
MAX_DOMAIN_ROWS = 2000  # window rows the domain classifier sees at most (seconds, not minutes)
WINDOW_COLUMNS = (
    "request_id",
    "ts",
    "model_version",
    "query_kind",
    "category",
    "probability",
    "text_chars",
    "image_bytes",
    "price_present",
    "image_vector",
    "text_vector",
)


@dataclass(frozen=True)
class Check:
    """One measured statistic against its threshold."""

    name: str  # category_distance | embedding_auc:<space> | text_length_ks | ...
    value: float
    threshold: float

    @property
    def alert(self) -> bool:
        return self.value > self.threshold


@dataclass
class KindResult:
    """Everything measured for one query kind of the window."""

    kind: str
    n: int
    judged: bool  # n >= min_rows
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)  # reported, not thresholded


@dataclass
class MonitorResult:
    """The monitor's verdict on a window (see the module docstring)."""

    model_name: str
    model_version: str
    window_start: float
    window_end: float
    n: int
    kinds: list[KindResult]
    overall: list[Check]
    live_accuracy: list[LiveAccuracy] = field(default_factory=list)
    agreement: list[Agreement] = field(default_factory=list)

    @property
    def alerts(self) -> list[str]:
        out = [f"all: {c.name} {c.value:.3f} > {c.threshold}" for c in self.overall if c.alert]
        for kind in self.kinds:
            out += [
                f"{kind.kind}: {c.name} {c.value:.3f} > {c.threshold}"
                for c in kind.checks
                if c.alert
            ]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "n": self.n,
            "alert": bool(self.alerts),
            "alerts": self.alerts,
            "overall": [asdict(c) | {"alert": c.alert} for c in self.overall],
            "kinds": [
                {
                    "kind": k.kind,
                    "n": k.n,
                    "judged": k.judged,
                    "checks": [asdict(c) | {"alert": c.alert} for c in k.checks],
                    "figures": k.figures,
                }
                for k in self.kinds
            ],
            "live_accuracy": [asdict(a) | {"accuracy": a.accuracy} for a in self.live_accuracy],
            "agreement": [asdict(a) | {"rate": a.rate} for a in self.agreement],
        }


# -- reading the log ------------------------------------------------------------------


def read_window(
    engine: sa.Engine,
    model_name: str,
    model_version: str,
    *,
    since: float | None,
    max_rows: int,
) -> pd.DataFrame:
    """The newest ``max_rows`` served answers of the version (since ``since``), oldest first."""
    columns = [predictions.c[name] for name in WINDOW_COLUMNS]
    query = (
        sa.select(*columns)
        .where(predictions.c.model_name == model_name)
        .where(predictions.c.model_version == str(model_version))
        .where(predictions.c.role == "served")
        .where(predictions.c.endpoint == "predict")
        .order_by(predictions.c.ts.desc(), predictions.c.id.desc())
        .limit(max_rows)
    )
    if since is not None:
        query = query.where(predictions.c.ts >= since)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    frame = pd.DataFrame(rows, columns=list(WINDOW_COLUMNS))
    return frame.iloc[::-1].reset_index(drop=True)


def _vectors(cells: pd.Series) -> np.ndarray:
    """float16 bytes per row -> float32 [n, d] (rows without a vector dropped)."""
    present = [np.frombuffer(c, np.float16) for c in cells if c is not None and len(c)]
    if not present:
        return np.zeros((0, 0), np.float32)
    return np.stack(present).astype(np.float32)


# -- the statistics ---------------------------------------------------------------------


def category_distance(
    predicted: pd.Series, reference_share: np.ndarray, categories: list[str], seed: int = 0
) -> tuple[float, float, np.ndarray]:
    """Jensen-Shannon distance (base 2, in [0, 1]) of the predicted mix to the reference's
    (a category the reference does not know counts in an extra bucket), and the same
    distance less its noise floor: the median distance of as many answers drawn from the
    reference mix itself. A window of 100 answers over 13 categories sits ~0.15 from the
    mix it was drawn from, one of 500 ~0.06; the excess is what the threshold judges,
    so a quiet hour is judged as fairly as a busy one."""
    from scipy.spatial.distance import jensenshannon

    position = {c: i for i, c in enumerate(categories)}
    counts = np.zeros(len(categories) + 1)
    for category, n in predicted.value_counts().items():
        counts[position.get(str(category), len(categories))] += n
    reference = np.append(reference_share, 0.0)
    n = int(counts.sum())
    distance = float(jensenshannon(counts / max(n, 1), reference, base=2))
    draws = np.random.default_rng(seed).multinomial(max(n, 1), reference, size=200)
    floor = np.median([jensenshannon(d / max(n, 1), reference, base=2) for d in draws])
    return distance, max(0.0, distance - float(floor)), counts[:-1]


def domain_auc(reference: np.ndarray, window: np.ndarray, seed: int = 0) -> float:
    """Cross-validated ROC AUC of a classifier telling ``window`` rows from ``reference``.

    The vectors are L2-normalised and projected on the reference's first 16 principal
    components (fitted on the reference alone), and the classifier is a strongly
    regularised logistic regression: enough to see a population move (one category, grey
    photos, another language), not enough to memorise a few hundred individual points
    (a window of requests that repeat the same listings reads ~0.5, not 1).
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    rng = np.random.default_rng(seed)
    if len(window) > MAX_DOMAIN_ROWS:
        window = window[rng.choice(len(window), MAX_DOMAIN_ROWS, replace=False)]

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    reference, window = unit(reference.astype(np.float32)), unit(window.astype(np.float32))
    components = max(1, min(16, reference.shape[1], len(reference) - 1))
    pca = PCA(components, random_state=seed).fit(reference)
    x = np.vstack([pca.transform(reference), pca.transform(window)])
    x /= np.maximum(x[: len(reference)].std(axis=0), 1e-6)
    y = np.r_[np.zeros(len(reference)), np.ones(len(window))]
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    classifier = LogisticRegression(C=0.1, class_weight="balanced", max_iter=500)
    scores = cross_val_predict(classifier, x, y, cv=folds, method="decision_function")
    return float(roc_auc_score(y, scores))


def ks(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import ks_2samp

    return float(ks_2samp(a, b).statistic)


def compare(
    reference: Reference,
    window: pd.DataFrame,
    params: MonitorParams,
    *,
    model_name: str = "",
    model_version: str = "",
) -> MonitorResult:
    """Judge ``window`` (``read_window``'s columns) against ``reference``."""
    kinds = []
    label_share = reference.label_share()
    for kind in QUERY_KINDS:
        rows = window[window["query_kind"] == kind]
        result = KindResult(kind, len(rows), len(rows) >= params.min_rows)
        kinds.append(result)
        if not len(rows):
            continue
        distance, excess, counts = category_distance(
            rows["category"], label_share, reference.categories
        )
        result.figures["category_js_distance"] = round(distance, 4)
        result.figures["predicted_mix"] = {
            c: int(n) for c, n in zip(reference.categories, counts, strict=True) if n
        }
        result.figures["mean_confidence"] = round(float(rows["probability"].mean()), 4)
        if kind in reference.confidences and len(reference.confidences[kind]):
            result.figures["val_mean_confidence"] = round(
                float(reference.confidences[kind].mean()), 4
            )
        if kind != "image":
            result.figures["median_text_chars"] = float(rows["text_chars"].median())
        if kind != "text":
            result.figures["median_image_bytes"] = float(rows["image_bytes"].median())
        if not result.judged:
            continue
        result.checks.append(Check("category_distance", excess, params.category_distance))
        for space in SPACES[kind]:
            logged = _vectors(rows[f"{space}_vector"])
            ref = reference.image_vectors if space == "image" else reference.text_vectors
            if len(logged) >= params.min_rows and len(ref) and logged.shape[1] == ref.shape[1]:
                auc = domain_auc(ref, logged)
                result.checks.append(Check(f"embedding_auc:{space}", auc, params.embedding_auc))
            elif len(logged) and len(ref) and logged.shape[1] != ref.shape[1]:
                result.figures[f"embedding_{space}"] = (
                    f"logged vectors have {logged.shape[1]} dimensions, the reference "
                    f"{ref.shape[1]}: another encoder?"
                )
        if kind != "image" and len(reference.text_chars):
            chars = rows["text_chars"].dropna().to_numpy(float)
            if len(chars) >= params.min_rows:
                value = ks(chars, reference.text_chars)
                result.checks.append(Check("text_length_ks", value, params.text_length_ks))
        confidences = reference.confidences.get(kind)
        if confidences is not None and len(confidences) >= 2:
            value = ks(rows["probability"].dropna().to_numpy(float), confidences)
            result.checks.append(Check("confidence_ks", value, params.confidence_ks))
    overall = []
    judged = window[window["query_kind"].isin(QUERY_KINDS)]
    if len(judged) >= params.min_rows:
        share = judged["query_kind"].value_counts(normalize=True)
        distance = 0.5 * sum(
            abs(float(share.get(k, 0.0)) - reference.kind_share.get(k, 0.0)) for k in QUERY_KINDS
        )
        overall.append(Check("kind_share_distance", distance, params.kind_share_distance))
    ts = window["ts"] if len(window) else pd.Series([time.time()])
    return MonitorResult(
        model_name,
        str(model_version),
        float(ts.min()),
        float(ts.max()),
        len(window),
        kinds,
        overall,
    )


# -- the report -------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def render_html(result: MonitorResult, reference: Reference) -> str:
    """A self-contained HTML page: verdict, checks per kind, mixes, live evidence."""
    verdict = "ALERT" if result.alerts else "OK"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Drift monitor: {html.escape(result.model_name)} v{result.model_version}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}"
        "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}"
        ".alert{color:#b00;font-weight:bold}.ok{color:#070;font-weight:bold}"
        ".bar{background:#4a7;height:.8em;display:inline-block}</style></head><body>",
        f"<h1>Drift monitor: {html.escape(result.model_name)} version "
        f"{html.escape(result.model_version)}</h1>",
        f"<p class='{'alert' if result.alerts else 'ok'}'>{verdict}</p>",
        f"<p>{result.n} served answers from {_time(result.window_start)} to "
        f"{_time(result.window_end)}, against the training reference of this version.</p>",
    ]
    if result.alerts:
        items = "".join(f"<li>{html.escape(a)}</li>" for a in result.alerts)
        parts.append(f"<ul class='alert'>{items}</ul>")
    rows = [
        [c.name, f"{c.value:.3f}", c.threshold, "ALERT" if c.alert else "ok"]
        for c in result.overall
    ]
    share_rows = [[k.kind, k.n, _pct(reference.kind_share.get(k.kind, 0.0))] for k in result.kinds]
    parts += [
        "<h2>Query kinds</h2>",
        _table(["kind", "answers", "training share"], share_rows),
        _table(["check", "value", "threshold", ""], rows) if rows else "",
    ]
    for kind in result.kinds:
        parts.append(f"<h2>{html.escape(kind.kind)}: {kind.n} answers</h2>")
        if not kind.judged:
            parts.append("<p>Too few answers to judge (<code>monitor.min_rows</code>).</p>")
        if kind.checks:
            parts.append(
                _table(
                    ["check", "value", "threshold", ""],
                    [
                        [c.name, f"{c.value:.3f}", c.threshold, "ALERT" if c.alert else "ok"]
                        for c in kind.checks
                    ],
                )
            )
        figures = {k: v for k, v in kind.figures.items() if k != "predicted_mix"}
        if figures:
            parts.append(_table(["figure", "value"], [[k, v] for k, v in figures.items()]))
        mix = kind.figures.get("predicted_mix")
        if mix:
            total = sum(mix.values())
            share = reference.label_share()
            body = "".join(
                f"<tr><td>{html.escape(c)}</td><td>{_pct(mix.get(c, 0) / total)}</td>"
                f"<td><span class='bar' style='width:{300 * mix.get(c, 0) / total:.0f}px'>"
                f"</span></td><td>{_pct(float(share[i]))}</td></tr>"
                for i, c in enumerate(reference.categories)
            )
            parts.append(
                "<table><thead><tr><th>category</th><th>predicted</th><th></th>"
                f"<th>training labels</th></tr></thead><tbody>{body}</tbody></table>"
            )
    parts.append("<h2>Live accuracy (sellers' feedback)</h2>")
    if result.live_accuracy:
        parts.append(
            _table(
                ["version", "role", "kind", "feedback", "accuracy"],
                [
                    [a.model_version, a.role, a.query_kind, a.n, _pct(a.accuracy)]
                    for a in result.live_accuracy
                ],
            )
        )
    else:
        parts.append("<p>No feedback in the window.</p>")
    parts.append("<h2>Shadow agreement</h2>")
    if result.agreement:
        parts.append(
            _table(
                ["served version", "shadow version", "kind", "requests", "agreement"],
                [
                    [a.served_version, a.shadow_version, a.query_kind, a.n, _pct(a.rate)]
                    for a in result.agreement
                ],
            )
        )
    else:
        parts.append("<p>No shadow answers in the window.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(result: MonitorResult, reference: Reference, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    page, summary = folder / "monitor.html", folder / "monitor.json"
    page.write_text(render_html(result, reference), encoding="utf-8")
    summary.write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    return [page, summary]


def metrics_of(result: MonitorResult) -> dict[str, float]:
    """Flat MLflow metrics: ``<kind>.<check>`` (``image_text.embedding_auc_text`` ...)."""
    out: dict[str, float] = {"n": float(result.n), "alert": float(bool(result.alerts))}
    for check in result.overall:
        out[check.name] = check.value
    for kind in result.kinds:
        slug = kind.kind.replace("+", "_")
        out[f"{slug}.n"] = float(kind.n)
        for check in kind.checks:
            out[f"{slug}.{check.name.replace(':', '_')}"] = check.value
    for acc in result.live_accuracy:
        if acc.accuracy is not None:
            slug = acc.query_kind.replace("+", "_")
            out[f"live_accuracy.v{acc.model_version}.{acc.role}.{slug}"] = acc.accuracy
    for agreed in result.agreement:
        if agreed.rate is not None:
            slug = agreed.query_kind.replace("+", "_")
            out[f"agreement.v{agreed.shadow_version}.{slug}"] = agreed.rate
    return out


def log_run(result: MonitorResult, files: list[Path], version: Any) -> str:
    """An MLflow run with the figures and the report, linked to the monitored version
    (its logged model's metrics, and a ``monitor.last_run`` tag on the version)."""
    import mlflow
    from mlflow import MlflowClient

    from marketplace.mlops.model_card import refresh_links
    from marketplace.mlops.registry import NotRegisteredError, logged_model_id
    from marketplace.mlops.tracking import standard_tags

    try:
        model_id: str | None = logged_model_id(version)
    except NotRegisteredError:
        model_id = None
    tags = {
        **standard_tags("monitor"),
        "model_name": result.model_name,
        "model_version": result.model_version,
        "alert": str(bool(result.alerts)).lower(),
    }
    run_name = f"monitor {result.model_name}/{result.model_version}"
    with mlflow.start_run(run_name=run_name, tags=tags) as active:
        mlflow.log_metrics(metrics_of(result), model_id=model_id)
        for path in files:
            mlflow.log_artifact(str(path), artifact_path="monitor")
    client = MlflowClient()
    run_id = active.info.run_id
    client.set_model_version_tag(
        result.model_name, result.model_version, "monitor.last_run", run_id
    )
    client.set_model_version_tag(
        result.model_name, result.model_version, "monitor.alert", tags["alert"]
    )
    refresh_links(client, result.model_name, result.model_version)
    return run_id


# -- the command ----------------------------------------------------------------------


def monitor(
    engine: sa.Engine,
    params: MonitorParams,
    *,
    model_name: str,
    version: Any,
    reference: Reference,
    hours: float | None = None,
    now: float | None = None,
    evidence_days: float | None = None,
) -> MonitorResult:
    """Read the version's window, compare it with its reference, add the live evidence."""
    from marketplace.mlops.evidence import agreement, live_accuracy

    now = time.time() if now is None else now
    window_hours = params.window_hours if hours is None else hours
    window = read_window(
        engine,
        model_name,
        str(version),
        since=now - window_hours * 3600,
        max_rows=params.max_rows,
    )
    result = compare(reference, window, params, model_name=model_name, model_version=str(version))
    days = window_hours / 24 if evidence_days is None else evidence_days
    result.live_accuracy = live_accuracy(engine, model_name, window_days=days, now=now)
    result.agreement = agreement(engine, model_name, window_days=days, now=now)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("vision", "text", "combined"), default="combined")
    parser.add_argument("--version", help="version to monitor (default: the alias's)")
    parser.add_argument("--alias", default=None, help="default: promote.alias (production)")
    parser.add_argument("--hours", type=float, help="window (default: monitor.window_hours)")
    parser.add_argument("--db", help="prediction log URL (default: MARKETPLACE_PREDICTION_LOG_URL)")
    parser.add_argument("--out", type=Path, default=Path("reports/monitor"))
    parser.add_argument("--no-mlflow", action="store_true", help="write the report only")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    outcome = {"alert": False}

    def body() -> None:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        from marketplace.core.config import load_params
        from marketplace.core.db import default_url, engine, redacted
        from marketplace.core.errors import StageError
        from marketplace.mlops.log_schema import create
        from marketplace.mlops.reference import NoReferenceError, load_reference
        from marketplace.mlops.tracking import setup_tracking

        params = load_params(args.params)
        name = getattr(params.registry, args.kind)
        alias = args.alias or params.promote.alias
        setup_tracking()
        client = MlflowClient()
        try:
            version = (
                client.get_model_version(name, args.version)
                if args.version
                else client.get_model_version_by_alias(name, alias)
            )
        except MlflowException as exc:
            raise StageError(f"{name} {args.version or '@' + alias}: {exc.message}") from None
        try:
            reference = load_reference(str(version.run_id))
        except NoReferenceError as exc:
            raise StageError(f"{name} version {version.version}: {exc}") from None
        url = args.db or default_url("prediction_log")
        db = engine(url)
        create(db)
        result = monitor(
            db,
            params.monitor,
            model_name=name,
            version=version.version,
            reference=reference,
            hours=args.hours,
        )
        files = write_report(result, reference, args.out)
        log.info(
            "%s version %s: %d served answers in %s (%s)",
            name,
            version.version,
            result.n,
            redacted(url),
            ", ".join(f"{k.kind} {k.n}" for k in result.kinds),
        )
        if not args.no_mlflow:
            run_id = log_run(result, files, version)
            log.info("logged MLflow run %s", run_id)
        for line in result.alerts:
            log.warning("ALERT %s", line)
        log.info("report: %s", files[0])
        outcome["alert"] = bool(result.alerts)

    from marketplace.cli import run

    code = run(body, "marketplace.mlops.monitor")
    return 1 if code == 0 and outcome["alert"] else code


if __name__ == "__main__":
    from marketplace.cli import exit_process

    exit_process(main())
