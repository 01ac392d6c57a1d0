"""Flow `ingest`: dataset -> validated canonical tables -> Parquet snapshot.

    locate (local folder, zip, cache or download)  |  generate (synthetic)
      -> read feedback (the API's feedback store, if any)
      -> unchanged inputs (files, parameters, feedback)? return the existing snapshot
      -> parse -> merge feedback -> validate raw -> canonical tables (+ TMDB) -> validate canonical
      -> write snapshot

Feedback: events that break the API's rules (stored before it checked them) or arrive in a burst
(many new users on one movie, a cohort of new accounts, one client: `screen_feedback`) are held
back in the store's quarantine, reported in the lineage, never deleted. Of the rest, the latest
rating or thumb event of each (user, movie) becomes a raw rating (a thumb is
the top or the bottom of the scale), appended to the dataset's ratings before the raw suites run,
so feedback is validated like any other rating; preprocessing then keeps the latest rating per
pair, so a feedback rating replaces the dataset's only when it is later. The digest of the stored
rating-like events is part of the inputs fingerprint: new feedback gives a new snapshot, unchanged
feedback reuses it, and without feedback the fingerprint is what it was before feedback existed.

A failing step raises, so nothing after it runs and no snapshot is written.
"""

from __future__ import annotations

import logging
import time

from prefect import flow

from movierec.data.datasets import get_spec
from movierec.data.feedback import explain_feedback_failure
from movierec.data.snapshot import Snapshot, SnapshotStore, inputs_fingerprint
from movierec.errors import ValidationFailed
from movierec.settings import get_settings
from tasks.ingest import (
    build_canonical,
    generate_synthetic,
    hold_back_feedback,
    locate_dataset,
    locate_tmdb,
    merge_feedback,
    parse_dataset,
    parse_tmdb,
    read_feedback,
    write_snapshot,
)
from tasks.validate import validate_canonical, validate_raw

log = logging.getLogger("movierec")


@flow(name="ingest", description="Ingest a MovieLens dataset (and TMDB metadata) into a validated Parquet snapshot.")
def ingest(
    dataset: str = "ml-latest-small",
    synthetic_ratings: int | None = None,
    seed: int | None = None,
    use_tmdb: bool | None = None,
) -> dict:
    settings = get_settings()
    spec = get_spec(dataset)
    store = SnapshotStore(settings.snapshots_dir)
    use_tmdb = settings.ingest.use_tmdb if use_tmdb is None else use_tmdb

    if spec.format == "synthetic":
        n_ratings = synthetic_ratings or settings.ingest.synthetic_ratings
        seed = settings.ingest.synthetic_seed if seed is None else seed
        inputs = {"dataset": dataset, "synthetic": {"n_ratings": n_ratings, "seed": seed}}
        source_files, tmdb_source = None, None
    else:
        source_files = locate_dataset(spec, settings)
        tmdb_source = locate_tmdb(settings) if use_tmdb else None
        inputs = {
            "dataset": dataset,
            "files": {name: meta["sha256"] for name, meta in source_files.files.items()},
            "tmdb": {name: meta["sha256"] for name, meta in tmdb_source.files.items()} if tmdb_source else None,
        }
        log.info("found %s (%s)", dataset, source_files.origin.get("path") or source_files.origin.get("url"))

    feedback = read_feedback(settings.feedback_db)
    if feedback is not None:
        # Only with feedback: snapshots made without any keep their fingerprint (and are reused).
        # What is held back depends on the events, the releases (both in the digest) and the
        # screening thresholds.
        inputs["feedback"] = {"events": feedback.digest, "screening": settings.feedback.model_dump()}
    fingerprint = inputs_fingerprint(inputs)
    existing = store.find_by_fingerprint(dataset, fingerprint)
    damaged = store.damaged(existing) if existing is not None else []
    if existing is not None and not damaged:
        log.info("inputs unchanged: snapshot %s already holds them", existing.id)
        existing.reused = True
        return summarize(existing)
    if damaged:
        log.warning(
            "snapshot %s holds these inputs but its files changed since it was written (%s); ingesting again",
            existing.path,
            ", ".join(damaged),
        )

    if source_files is None:
        raw = generate_synthetic(n_ratings, seed)
        tmdb = None
    else:
        raw = parse_dataset(spec, source_files)
        tmdb = parse_tmdb(tmdb_source) if tmdb_source else None
    log.info("parsed %s ratings, %s movies", f"{len(raw.ratings):,}", f"{len(raw.movies):,}")

    feedback_counts = None
    if feedback is not None:
        held = hold_back_feedback(raw, feedback, settings)
        raw, feedback_rows, feedback_counts = merge_feedback(raw, feedback, held)
        log.info(
            "merged %s feedback rating(s) from %s feedback event(s)",
            feedback_counts["ratings"],
            feedback_counts["events"],
        )
        quarantined = feedback_counts["quarantined"]
        if quarantined["events"]:
            log.warning(
                "held back %d feedback event(s) in quarantine (%d new; %s): %s. "
                "List them with `movierec feedback quarantined`, release with `movierec feedback release`.",
                quarantined["events"],
                quarantined["new"],
                ", ".join(f"{rule} {count}" for rule, count in quarantined["by_rule"].items()),
                "; ".join(quarantined["reasons"][:3]),
            )

    started = time.perf_counter()
    try:
        raw_report = validate_raw(raw, settings)
    except ValidationFailed as error:
        if feedback is None:
            raise
        dataset_rows = len(raw.ratings) - len(feedback_rows)
        raise explain_feedback_failure(error, raw, feedback_rows, dataset_rows, settings, feedback.path) from error
    validation_seconds = time.perf_counter() - started
    tables, preprocessing = build_canonical(raw, tmdb)
    started = time.perf_counter()
    canonical_report = validate_canonical(tables, raw.rating_scale, settings, dataset)
    validation_seconds += time.perf_counter() - started
    log.info("validation passed; report: %s", canonical_report.docs_path)

    lineage = {
        "source": raw.source,
        "files": raw.files,
        "tmdb_files": tmdb_source.files if tmdb_source else None,
        "inputs_fingerprint": fingerprint,
        "feedback": feedback_counts,
        "preprocessing": preprocessing,
        "validation": {
            "raw": raw_report.suites,
            "canonical": canonical_report.suites,
            "data_docs": str(canonical_report.docs_path),
        },
    }
    snapshot = write_snapshot(store, dataset, tables, lineage)
    # When every feedback rating was held back the tables equal an existing snapshot's, which is
    # reused with its own lineage: what this run merged and held back is reported all the same.
    return summarize(snapshot, validation_seconds, feedback_counts)


def summarize(snapshot: Snapshot, validation_seconds: float = 0.0, feedback_counts: dict | None = None) -> dict:
    """What the CLI prints and the retrain flow records; `validation_seconds` is 0 for a reused
    snapshot (nothing was validated again); `feedback_counts` this run's feedback record (default:
    the snapshot's)."""
    lineage = snapshot.lineage
    return {
        "dataset": snapshot.dataset,
        "snapshot_id": snapshot.id,
        "path": str(snapshot.path),
        "reused": snapshot.reused,
        "rows": {name: meta["rows"] for name, meta in lineage["tables"].items()},
        "rating_scale": lineage["preprocessing"]["rating_scale"],
        "tmdb": lineage["preprocessing"].get("tmdb"),
        # Feedback merged into this snapshot's ratings (None: none), see movierec.data.feedback.merge_feedback.
        "feedback": feedback_summary(feedback_counts if feedback_counts is not None else lineage.get("feedback")),
        "data_docs": lineage["validation"]["data_docs"],
        "validation": {"raw": lineage["validation"]["raw"], "canonical": lineage["validation"]["canonical"]},
        "validation_seconds": validation_seconds,
    }


def feedback_summary(record: dict | None) -> dict | None:
    """The counts of a snapshot's feedback record (its path and digest stay in the lineage)."""
    if not record:
        return None
    return {key: value for key, value in record.items() if key not in ("path",)}
