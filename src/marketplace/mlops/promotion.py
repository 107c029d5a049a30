"""Gated promotion and rollback of a registered model through an alias.

MLflow's model stages ("Staging", "Production") are deprecated; a registered-model alias
does the same job: ``models:/marketplace-combined@production`` always names the version
the service should run. ``promote`` moves the alias only if the challenger is not worse
than the current production on the gate metric (within a tolerance) for the listings as
they come *and* for every query kind both versions were scored on (photo only, text
only, photo + text: ``test_image_accuracy`` etc. beside ``test_accuracy``), unless forced;
for ``test_accuracy`` both are scored on the same products (see ``shared_gate_rows``);
``rollback`` moves it back to the version it replaced. The alias history is kept on the
registered model (tag ``<alias>.history``, oldest first), and each move is recorded as
tags on the versions involved: when, what it replaced, the metrics compared.

Promotions and rollbacks of one alias hold a lock while they read and write the alias
and its history, so two at once cannot interleave (a read-modify-write race on the
history): ``<name>.<alias>.lock`` in the registry itself, with an owner and a lease
(``marketplace.mlops.registry_lock``). A second caller is refused at once with the
holder's name and age; a holder that died blocks others at most for its lease.

The command (``marketplace promote``, or ``python -m marketplace.mlops.promotion``)::

    marketplace promote                        # newest version of the combined model
    marketplace promote --version 7            # a given version
    marketplace promote --version 7 --force    # skip the metric gate
    marketplace promote --rollback             # back to the previous production

Not a DVC stage: promoting is a decision, not a derived file. The API picks the change up
on ``POST /admin/reload`` (or by polling).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from marketplace.cli import exit_process, run
from marketplace.core.config import PromoteLiveParams, PromoteParams, load_params
from marketplace.core.errors import StageError
from marketplace.mlops import registry_lock
from marketplace.mlops.registry import INDEX_TAG, OUTCOMES_TAG
from marketplace.models.query import QUERY_KINDS, kind_slug


class PromotionRefusedError(StageError):
    """The gate said no (or there is nothing to roll back to); the message says why."""


@dataclass(frozen=True)
class PromotionResult:
    """What a promote or rollback did."""

    model: str
    alias: str
    action: str  # promoted | unchanged | rolled_back
    version: str
    previous: str | None
    metric: str
    value: float | None
    previous_value: float | None
    forced: bool
    gate: tuple[GateRow, ...] = ()

    def describe(self) -> str:
        if self.action == "unchanged":
            return f"{self.model}@{self.alias} is already version {self.version}"
        verb = "rolled back to" if self.action == "rolled_back" else "now points to"
        was = f" (was {self.previous})" if self.previous else " (first production version)"
        gate = ""
        if self.value is not None:
            gate = f"; {self.metric} {self.value:.4f}"
            if self.previous_value is not None:
                gate += f" vs {self.previous_value:.4f}"
        forced = " [forced]" if self.forced else ""
        table = f"\n{gate_table(self.gate)}" if self.gate else ""
        return f"{self.model}@{self.alias} {verb} version {self.version}{was}{gate}{forced}{table}"


@dataclass(frozen=True)
class GateRow:
    """One comparison of the gate: a query kind (or the listings as they come)."""

    kind: str  # image | text | image+text | all
    tag: str
    challenger: float | None
    production: float | None

    def worse_by_more_than(self, tolerance: float) -> bool:
        return (
            self.challenger is not None
            and self.production is not None
            and self.challenger < self.production - tolerance
        )


def kind_tag(metric: str, kind: str) -> str:
    """The per-kind tag of a gate metric: ``test_accuracy`` -> ``test_image_accuracy``."""
    split, _, name = metric.partition("_")
    return f"{split}_{kind_slug(kind)}_{name}"


def gate_rows(challenger: Any, current: Any | None, metric: str) -> tuple[GateRow, ...]:
    """The listings as they come, then each query kind the challenger was scored on."""
    rows = [GateRow("all", metric, _metric(challenger, metric), _production(current, metric))]
    if metric.startswith(("val_", "test_")):
        for kind in QUERY_KINDS:
            tag = kind_tag(metric, kind)
            if tag in challenger.tags:
                rows.append(GateRow(kind, tag, _metric(challenger, tag), _production(current, tag)))
    return tuple(rows)


def _outcomes(client: Any, version: Any) -> pd.DataFrame | None:
    """A version's per-product test outcomes (``registry.OUTCOMES_TAG``), or ``None`` for a
    version trained before they were recorded."""
    uri = version.tags.get(OUTCOMES_TAG, "")
    if not uri.startswith("runs:/"):
        return None
    run_id, _, path = uri.removeprefix("runs:/").partition("/")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = client.download_artifacts(run_id, path, tmp)
            return pd.read_csv(local, dtype={"product_id": str, "kind": str})
    except Exception as exc:  # the gate must not pass on what it could not read
        raise PromotionRefusedError(
            f"{version.name} version {version.version}: cannot read its test outcomes "
            f"({uri}): {type(exc).__name__}: {exc}; nothing was changed"
        ) from None


def shared_gate_rows(
    client: Any, challenger: Any, current: Any | None, metric: str
) -> tuple[tuple[GateRow, ...], int] | None:
    """The gate's rows with both versions scored on the test products both were tested on.

    The comparison chosen: the challenger and production are each scored on the products
    their two test sets share (from the per-product outcomes each version's training
    logged), overall and per query kind, never on two different test sets. With the stable
    split (``data.split``) that is every test product of the older export still listed, so
    the shared set is nearly all of production's test set. Production is not re-scored on
    the challenger's test set: with the former split those products included many it had
    trained on, which would flatter it. Returns the rows and the number of shared products,
    or ``None`` (the tags are compared as before) where the metric is not ``test_accuracy``,
    there is no production yet, either version has no recorded outcomes (trained before
    they were) or the two test sets share no product.
    """
    if current is None or metric != "test_accuracy":
        return None
    ours, theirs = _outcomes(client, challenger), _outcomes(client, current)
    if ours is None or theirs is None:
        return None
    shared = set(ours.loc[ours["kind"] == "all", "product_id"]) & set(
        theirs.loc[theirs["kind"] == "all", "product_id"]
    )
    if not shared:
        return None
    rows = []
    for kind in ("all", *QUERY_KINDS):
        a = ours[(ours["kind"] == kind) & ours["product_id"].isin(shared)]
        b = theirs[(theirs["kind"] == kind) & theirs["product_id"].isin(shared)]
        both = set(a["product_id"]) & set(b["product_id"])  # e.g. products with a photo
        if not both:
            continue
        a, b = a[a["product_id"].isin(both)], b[b["product_id"].isin(both)]
        tag = metric if kind == "all" else kind_tag(metric, kind)
        rows.append(GateRow(kind, tag, float(a["correct"].mean()), float(b["correct"].mean())))
    return tuple(rows), len(shared)


def gate_table(rows: tuple[GateRow, ...]) -> str:
    """The per-kind comparison as a fixed-width table (what a refusal prints)."""

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    lines = [f"  {'query kind':<12}{'challenger':>12}{'production':>12}{'change':>10}"]
    for row in rows:
        change = (
            f"{row.challenger - row.production:+.4f}"
            if row.challenger is not None and row.production is not None
            else "-"
        )
        lines.append(
            f"  {row.kind:<12}{fmt(row.challenger):>12}{fmt(row.production):>12}{change:>10}"
        )
    return "\n".join(lines)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@contextlib.contextmanager
def alias_lock(
    client: Any, name: str, alias: str, lease_s: float = registry_lock.LEASE_S
) -> Iterator[None]:
    """Hold the lock of ``name@alias`` (see the module's docstring) or refuse at once."""
    try:
        with registry_lock.registry_lock(
            client, f"{name}.{alias}.lock", f"a promotion or rollback of {name}@{alias}", lease_s
        ):
            yield
    except registry_lock.LockHeldError as exc:
        raise PromotionRefusedError(str(exc)) from None


def _history_tag(alias: str) -> str:
    return f"{alias}.history"


def _history(client: Any, name: str, alias: str) -> list[str]:
    raw = client.get_registered_model(name).tags.get(_history_tag(alias))
    return [str(v) for v in json.loads(raw)] if raw else []


def _current(client: Any, name: str, alias: str) -> Any | None:
    aliases = client.get_registered_model(name).aliases
    version = aliases.get(alias)
    return None if version is None else client.get_model_version(name, str(version))


def _production(current: Any | None, metric: str) -> float | None:
    return None if current is None else _metric(current, metric)


def _metric(version: Any, metric: str) -> float | None:
    value = version.tags.get(metric)
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def promote(
    client: Any,
    name: str,
    version: str | None,
    params: PromoteParams,
    *,
    force: bool = False,
) -> PromotionResult:
    """``_promote`` under the alias's lock (a concurrent promotion is refused)."""
    with alias_lock(client, name, params.alias):
        return _promote(client, name, version, params, force=force)


def _promote(
    client: Any,
    name: str,
    version: str | None,
    params: PromoteParams,
    *,
    force: bool = False,
) -> PromotionResult:
    """Point ``params.alias`` at ``version`` (default: the newest) if it passes the gate.

    The gate: the challenger's ``params.metric`` tag must be at least production's minus
    ``params.tolerance``; ``force`` skips only this comparison. A version without a FAISS
    index (when ``params.require_index``) or without the metric is always refused, since
    the service could not load it or nothing could be compared.
    """
    alias = params.alias
    if version is None:
        versions = client.search_model_versions(f"name = '{name}'")
        if not versions:
            raise PromotionRefusedError(f"{name} has no registered versions")
        version = str(max(int(v.version) for v in versions))
    challenger = client.get_model_version(name, str(version))
    if str(challenger.status) != "READY":  # its registration failed or has not finished
        raise PromotionRefusedError(
            f"{name} version {version} is {challenger.status}, not READY: its artifacts "
            f"may be incomplete ({challenger.status_message or 'no message'})"
        )
    if params.require_index and INDEX_TAG not in challenger.tags:
        raise PromotionRefusedError(
            f"{name} version {version} has no FAISS index (tag {INDEX_TAG!r}); "
            "run the index stage for it first (`dvc repro --force --single-item index` if "
            "DVC finds it up to date: the registry is not part of DVC's state, so a version "
            "registered for an unchanged model, e.g. in a new or reset registry, is not "
            "indexed again)"
        )
    value = _metric(challenger, params.metric)
    if value is None:
        raise PromotionRefusedError(f"{name} version {version} has no {params.metric!r} tag")
    current = _current(client, name, alias)
    previous_value = None if current is None else _metric(current, params.metric)
    previous = None if current is None else str(current.version)
    if previous == str(version):
        return PromotionResult(
            name, alias, "unchanged", str(version), previous, params.metric, value, value, force
        )
    shared = shared_gate_rows(client, challenger, current, params.metric)
    if shared is None:
        rows = gate_rows(challenger, current, params.metric)
        basis = "each version's own test set (the tags)"
    else:
        rows, products = shared
        value, previous_value = rows[0].challenger, rows[0].production
        basis = f"the {products} test products both versions share"
    worse = [row for row in rows if row.worse_by_more_than(params.tolerance)]
    if not force and worse:
        which = ", ".join(f"{row.tag} {row.challenger:.4f}" for row in worse)
        raise PromotionRefusedError(
            f"{name} version {version} is worse than production (version {previous}) by "
            f"more than the tolerance {params.tolerance} on {which}, scored on {basis}; "
            f"use --force to promote anyway\n{gate_table(rows)}"
        )
    live = None
    if params.live.required and not force and previous is not None:
        live = check_live_evidence(name, str(version), previous, params.live)
    client.set_registered_model_alias(name, alias, str(version))
    history = [*_history(client, name, alias), str(version)]
    client.set_registered_model_tag(name, _history_tag(alias), json.dumps(history))
    gate = f"{value:.6g} (first)"
    if previous_value is not None:
        gate = f"{value:.6g} vs {previous_value:.6g} (tolerance {params.tolerance})"
    per_kind = {row.kind: [row.challenger, row.production] for row in rows if row.kind != "all"}
    for key, tag in {
        f"{alias}.promoted_at": _now(),
        f"{alias}.replaced": previous or "none",
        f"{alias}.gate": gate,
        f"{alias}.forced": str(force).lower(),
        **({f"{alias}.gate_basis": basis} if current is not None else {}),
        **({f"{alias}.gate_by_kind": json.dumps(per_kind)} if per_kind else {}),
        **({f"{alias}.live_gate": live} if live else {}),
    }.items():
        client.set_model_version_tag(name, str(version), key, tag)
    return PromotionResult(
        name,
        alias,
        "promoted",
        str(version),
        previous,
        params.metric,
        value,
        previous_value,
        force,
        rows,
    )


def check_live_evidence(
    name: str,
    challenger: str,
    production: str,
    live: PromoteLiveParams,
    log_url: str | None = None,
) -> str:
    """Refuse unless the prediction log holds live evidence for the challenger.

    Its answers (as a canary, or scored in shadow on production's requests) need at least
    ``live.min_feedback`` sellers' feedback rows in the last ``live.window_days``, and
    their accuracy must not be under production's (on its served answers with feedback,
    same window) by more than ``live.tolerance``. Returns the comparison, for the tag.
    """
    from marketplace.core.db import default_url, engine, redacted
    from marketplace.mlops.evidence import live_accuracy, version_accuracy
    from marketplace.mlops.log_schema import create

    url = log_url or default_url("prediction_log")
    db = engine(url)
    try:
        create(db)
        rows = live_accuracy(db, name, window_days=live.window_days)
    finally:
        db.dispose()
    mine = version_accuracy(rows, challenger)
    theirs = version_accuracy([r for r in rows if r.role == "served"], production)
    table = "\n".join(
        f"  v{r.model_version:<6}{r.role:<8}{r.query_kind:<12}{r.n:>8} feedback "
        f"{'-' if r.accuracy is None else f'{r.accuracy:.4f}':>8}"
        for r in rows
        if r.model_version in (challenger, production)
    )
    where = f"in {redacted(url)} over the last {live.window_days:g} days"
    if mine.n < live.min_feedback:
        raise PromotionRefusedError(
            f"{name} version {challenger} has {mine.n} feedback rows on its answers {where}; "
            f"promote.live needs {live.min_feedback}: run it as a shadow "
            "(MARKETPLACE_SHADOW_ALIAS) or canary first, or use --force\n" + table
        )
    if theirs.accuracy is None:
        raise PromotionRefusedError(
            f"production (version {production}) has no feedback on its answers {where}: "
            "nothing to compare the challenger's live accuracy with; use --force\n" + table
        )
    assert mine.accuracy is not None
    comparison = (
        f"{mine.accuracy:.4f} on {mine.n} vs {theirs.accuracy:.4f} on {theirs.n} "
        f"(tolerance {live.tolerance})"
    )
    if mine.accuracy < theirs.accuracy - live.tolerance:
        raise PromotionRefusedError(
            f"{name} version {challenger}'s live accuracy is worse than production's "
            f"(version {production}) by more than {live.tolerance}: {comparison}; use "
            "--force to promote anyway\n" + table
        )
    return comparison


def rollback(client: Any, name: str, params: PromoteParams) -> PromotionResult:
    """Move the alias back to the version the current production replaced (locked)."""
    with alias_lock(client, name, params.alias):
        return _rollback(client, name, params)


def _rollback(client: Any, name: str, params: PromoteParams) -> PromotionResult:
    alias = params.alias
    history = _history(client, name, alias)
    current = _current(client, name, alias)
    if current is None:
        raise PromotionRefusedError(f"{name} has no {alias!r} alias to roll back")
    if history and history[-1] == str(current.version):
        history = history[:-1]
    if not history:
        raise PromotionRefusedError(
            f"{name}@{alias} (version {current.version}) has no earlier production version"
        )
    target = history[-1]
    client.set_registered_model_alias(name, alias, target)
    client.set_registered_model_tag(name, _history_tag(alias), json.dumps(history))
    client.set_model_version_tag(name, str(current.version), f"{alias}.rolled_back_at", _now())
    client.set_model_version_tag(name, target, f"{alias}.restored_at", _now())
    restored = client.get_model_version(name, target)
    return PromotionResult(
        name,
        alias,
        "rolled_back",
        target,
        str(current.version),
        params.metric,
        _metric(restored, params.metric),
        _metric(current, params.metric),
        False,
    )


# The command line ------------------------------------------------------------
log = logging.getLogger("marketplace.mlops.promotion")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("vision", "text", "combined"), default="combined")
    parser.add_argument("--version", help="version to promote (default: the newest)")
    parser.add_argument("--force", action="store_true", help="skip the metric gate")
    parser.add_argument("--rollback", action="store_true", help="back to the previous version")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)

    def body() -> None:
        from mlflow import MlflowClient

        from marketplace.mlops.tracking import setup_tracking

        params = load_params(args.params)
        gate = params.promote
        if args.kind != "combined":  # only the served (combined) model carries an index
            gate = gate.model_copy(update={"require_index": False})
        setup_tracking()
        client = MlflowClient()
        name = getattr(params.registry, args.kind)
        if args.rollback:
            result = rollback(client, name, gate)
        else:
            result = promote(client, name, args.version, gate, force=args.force)
        log.info("%s", result.describe())

    return run(body, "marketplace.mlops.promotion")


if __name__ == "__main__":
    exit_process(main())
