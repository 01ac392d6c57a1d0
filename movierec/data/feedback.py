"""Feedback events from users of the API: durable storage and their meaning as ratings.

Storage is one SQLite file (`settings.feedback_db`) in WAL mode with `synchronous=FULL`: an event
is acknowledged only after its transaction is committed and synced, so an acknowledged event
survives a crash of the server (kill -9) or of the machine. The event id is the primary key:
a retried request stores its event once. Every writer opens its own connection and SQLite
serialises them (with a busy timeout), so concurrent writers lose nothing.

Meaning. A `rating` event carries a rating on the dataset's scale; a `thumb` event +1 or -1,
taken as the top or the bottom of the scale; a `click` is kept for monitoring but is not a
rating. For each (user, movie) the latest rating-like event wins (`feedback_ratings`), and the
retrain flow merges those into the ratings of the next snapshot (`read_feedback`,
`merge_feedback`; `explain_feedback_failure` names the events at fault when the merged ratings
fail validation). The store lives with the data, below the API that writes it and the ingestion
that reads it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from movierec.data.schema import RatingScale, RawDataset
from movierec.data.sqlite import SQLiteStore, between
from movierec.errors import ValidationFailed
from movierec.settings import FeedbackSettings, Settings

KINDS = ("rating", "thumb", "click")
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL,
    movie_id INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('rating', 'thumb', 'click')),
    value REAL NOT NULL,
    timestamp TEXT NOT NULL,
    received_at TEXT NOT NULL,
    client TEXT,
    impression_id TEXT
);
CREATE TABLE IF NOT EXISTS quarantine (
    event_id TEXT NOT NULL REFERENCES events (event_id),
    dataset TEXT NOT NULL,
    rule TEXT NOT NULL,
    reason TEXT NOT NULL,
    quarantined_at TEXT NOT NULL,
    released_at TEXT,
    PRIMARY KEY (event_id, dataset)
);
"""
# Rules that put an event in quarantine (`screen_feedback`), per dataset (one store serves every
# dataset of a home: an event invalid for one may be valid for another). An invalid event stays
# out of that dataset for good; the others are suspicions an operator may release.
INVALID, MOVIE_BURST, COHORT_BURST, CLIENT_BURST = "invalid", "movie_burst", "cohort_burst", "client_burst"
RULES = (INVALID, MOVIE_BURST, COHORT_BURST, CLIENT_BURST)


@dataclass(frozen=True)
class FeedbackEvent:
    event_id: str
    user_id: int
    movie_id: int
    kind: Literal["rating", "thumb", "click"]
    value: float  # rating: on the dataset's scale; thumb: +1 or -1; click: 1
    timestamp: datetime  # timezone-aware
    # The impression (`movierec.data.impressions`) the event answers, if the client says so.
    impression_id: str | None = None

    def __post_init__(self) -> None:
        # SQLite's CHECK would reject a bad kind, but `INSERT OR IGNORE` used to turn that into a
        # silent "duplicate"; a naive timestamp would be read as the machine's local time.
        if self.kind not in KINDS:
            raise ValueError(f"feedback event {self.event_id!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if not math.isfinite(float(self.value)):
            raise ValueError(f"feedback event {self.event_id!r}: value must be a finite number, got {self.value!r}")
        if self.kind == "thumb" and float(self.value) not in (1.0, -1.0):
            raise ValueError(f"feedback event {self.event_id!r}: a thumb is +1 or -1, got {self.value!r}")
        if self.timestamp.tzinfo is None or self.timestamp.utcoffset() is None:
            raise ValueError(
                f"feedback event {self.event_id!r}: timestamp must be timezone-aware, got {self.timestamp!r}"
            )

    def content(self) -> tuple:
        """What the event says, as stored: equal content under one id is a retry."""
        return (
            int(self.user_id),
            int(self.movie_id),
            self.kind,
            float(self.value),
            self.timestamp.astimezone(UTC).isoformat(),
        )

    def as_dict(self) -> dict:
        return {
            "event_id": self.event_id,
            "user_id": int(self.user_id),
            "movie_id": int(self.movie_id),
            "type": self.kind,
            "value": float(self.value),
            "timestamp": self.timestamp.astimezone(UTC).isoformat(),
        }


@dataclass(frozen=True)
class Appended:
    """What storing an event did: "stored" (new), "duplicate" (the same content was stored under
    its id before: a retry) or "conflict" (its id holds other content, which is kept); `stored`
    is the event already stored under the id (None when new)."""

    status: Literal["stored", "duplicate", "conflict"]
    stored: FeedbackEvent | None = None


class FeedbackStore(SQLiteStore):
    SYNCHRONOUS = "FULL"  # acknowledged means synced

    def __init__(self, path: Path) -> None:
        super().__init__(path, SCHEMA)
        connection = self._connection()
        columns = {row[1] for row in connection.execute("PRAGMA table_info(events)")}
        for column in ("client", "impression_id"):  # a store written before they were recorded
            if column not in columns:
                connection.execute(f"ALTER TABLE events ADD COLUMN {column} TEXT")

    def append(self, event: FeedbackEvent, client: str | None = None) -> Appended:
        """Store `event` durably (sent by `client`, e.g. its address); see `Appended`."""
        return self.append_many([event], client)[0]

    def append_many(self, events: Iterable[FeedbackEvent], client: str | None = None) -> list[Appended]:
        """Store events in one transaction; per event, what storing it did (`Appended`)."""
        received_at = datetime.now(UTC).isoformat()
        outcomes = []
        with self._transaction() as connection:
            for event in events:
                # Only a repeated id is left alone; any other constraint violation raises.
                cursor = connection.execute(
                    "INSERT INTO events (event_id, user_id, movie_id, kind, value, timestamp, received_at, client, "
                    "impression_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(event_id) DO NOTHING",
                    (event.event_id, *event.content(), received_at, client, event.impression_id),
                )
                if cursor.rowcount == 1:
                    outcomes.append(Appended("stored"))
                    continue
                stored = self._stored(event.event_id)
                same = stored.content() == event.content()
                outcomes.append(Appended("duplicate" if same else "conflict", stored))
        return outcomes

    def _stored(self, event_id: str) -> FeedbackEvent:
        row = (
            self._connection()
            .execute("SELECT user_id, movie_id, kind, value, timestamp FROM events WHERE event_id = ?", (event_id,))
            .fetchone()
        )
        user_id, movie_id, kind, value, timestamp = row
        return FeedbackEvent(event_id, user_id, movie_id, kind, value, datetime.fromisoformat(timestamp))

    # ------------------------------------------------------------------ quarantine

    def quarantine(self, records: pd.DataFrame, dataset: str) -> int:
        """Put events in quarantine for `dataset` (`records`: event_id, rule, reason); an event
        already there keeps its first record, a released one stays released. Returns how many
        were added."""
        now = datetime.now(UTC).isoformat()
        added = 0
        with self._transaction() as connection:
            for event_id, rule, reason in records[["event_id", "rule", "reason"]].itertuples(index=False):
                cursor = connection.execute(
                    "INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, NULL) ON CONFLICT(event_id, dataset) DO NOTHING",
                    (event_id, dataset, rule, reason, now),
                )
                added += cursor.rowcount
        return added

    def quarantined(self, include_released: bool = False, dataset: str | None = None) -> pd.DataFrame:
        """Quarantined events with their record (dataset, rule, reason, quarantined_at,
        released_at), in the order they were quarantined; of one dataset if given."""
        conditions = [] if include_released else ["q.released_at IS NULL"]
        if dataset is not None:
            conditions.append("q.dataset = ?")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        frame = pd.read_sql_query(
            "SELECT q.event_id, q.dataset, e.user_id, e.movie_id, e.kind, e.value, e.timestamp, e.client, q.rule, "
            f"q.reason, q.quarantined_at, q.released_at FROM quarantine q JOIN events e USING (event_id) {where} "
            "ORDER BY q.quarantined_at, q.event_id, q.dataset",
            self._connection(),
            params=[] if dataset is None else [dataset],
        )
        return frame.astype({"user_id": "int64", "movie_id": "int64", "value": "float64"})

    def release(self, event_ids: Iterable[str], dataset: str | None = None) -> list[str]:
        """Release quarantined events (for `dataset`, or every dataset holding them) so the next
        ingestion merges them; invalid events cannot be released (ValueError naming them).
        Returns the ids released now."""
        event_ids = list(dict.fromkeys(event_ids))
        held = self.quarantined(dataset=dataset)
        held = held[held["event_id"].isin(event_ids)]
        unknown = [event_id for event_id in event_ids if event_id not in set(held["event_id"])]
        if unknown:
            raise ValueError(f"not in quarantine (or released already): {', '.join(unknown[:20])}")
        invalid = sorted(set(held.loc[held["rule"] == INVALID, "event_id"]))
        if invalid:
            raise ValueError(
                f"invalid events cannot be released, ingestion would reject them: {', '.join(invalid[:20])}"
            )
        now = datetime.now(UTC).isoformat()
        with self._transaction() as connection:
            connection.executemany(
                "UPDATE quarantine SET released_at = ? WHERE event_id = ? AND dataset = ?",
                [(now, event_id, name) for event_id, name in held[["event_id", "dataset"]].itertuples(index=False)],
            )
        return event_ids

    def released(self) -> dict[str, set[str]]:
        """dataset -> ids of the events an operator released from quarantine for it."""
        rows = self._connection().execute(
            "SELECT dataset, event_id FROM quarantine WHERE released_at IS NOT NULL ORDER BY dataset, event_id"
        )
        found: dict[str, set[str]] = {}
        for dataset, event_id in rows:
            found.setdefault(dataset, set()).add(event_id)
        return found

    def count(self) -> int:
        return self._connection().execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def events(self, since: datetime | None = None, until: datetime | None = None) -> pd.DataFrame:
        """The stored events received in [since, until) (every one by default), in the order
        received (then by id)."""
        where, params = between("received_at", since, until)
        frame = pd.read_sql_query(
            "SELECT event_id, user_id, movie_id, kind, value, timestamp, received_at, client, impression_id "
            f"FROM events{where} ORDER BY received_at, event_id",
            self._connection(),
            params=params,
        )
        for column in ("timestamp", "received_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
        return frame.astype({"user_id": "int64", "movie_id": "int64", "value": "float64"})

    def digest(self, kinds: Iterable[str] = KINDS) -> str:
        """Content hash of the stored events (of the given kinds) and of which of them were
        released from quarantine: changes exactly when such an event is added or released."""
        kinds = sorted(set(kinds))
        digest = hashlib.sha256()
        query = (
            f"SELECT event_id, user_id, movie_id, kind, value, timestamp, client FROM events "
            f"WHERE kind IN ({', '.join('?' * len(kinds))}) ORDER BY event_id"
        )
        for row in self._connection().execute(query, kinds):
            digest.update(repr(row).encode())
        released = sorted((dataset, sorted(ids)) for dataset, ids in self.released().items())
        if released:  # a store nothing was released from hashes as before releases existed
            digest.update(repr(("released", released)).encode())
        return digest.hexdigest()

    def read(self, kinds: Iterable[str] = KINDS) -> tuple[pd.DataFrame, str, dict[str, set[str]], pd.DataFrame]:
        """`events()`, `digest(kinds)`, `released()` and `quarantined()` of one consistent state
        of the store (one read transaction), even while writers append."""
        with self._transaction("DEFERRED"):
            return self.events(), self.digest(kinds), self.released(), self.quarantined()


RATING_KINDS = ("rating", "thumb")


def feedback_ratings(events: pd.DataFrame, scale: RatingScale) -> pd.DataFrame:
    """Ratings implied by feedback (user_id, movie_id, rating, timestamp, and the event_id each
    comes from): rating events as given, thumbs up/down as the scale's max/min; clicks are not
    ratings. For each (user, movie) the latest event wins (equal timestamps: the greater event id,
    so the result does not depend on storage order)."""
    rated = events[events["kind"].isin(RATING_KINDS)].copy()
    rated["value"] = rated["value"].astype("float64")
    thumbs = (rated["kind"] == "thumb").to_numpy()
    rated.loc[thumbs, "value"] = np.where(rated.loc[thumbs, "value"].to_numpy() > 0, scale.max, scale.min)
    rated = rated.sort_values(["timestamp", "event_id"], kind="stable").drop_duplicates(
        ["user_id", "movie_id"], keep="last"
    )
    return (
        rated.rename(columns={"value": "rating"})[["user_id", "movie_id", "rating", "timestamp", "event_id"]]
        .sort_values(["user_id", "movie_id"], kind="stable")
        .reset_index(drop=True)
    )


# ---------------------------------------------------------------------- what may become a rating


@dataclass(frozen=True)
class FeedbackRules:
    """What a feedback event must be to count: one definition, checked by the API when an event
    arrives (422 naming the field) and by ingestion on what is stored (an event breaking it is
    quarantined, never merged, so it cannot block a retrain): a movie of the catalogue, a
    timestamp in the plausible window (`earliest` .. now + `max_future_days`, the raw suites'
    window), a rating on the scale's grid, a thumb of +1 or -1, a click of 1."""

    scale: RatingScale
    movie_ids: frozenset[int]
    earliest: datetime
    max_future_days: int

    @classmethod
    def of(cls, settings: Settings, scale: RatingScale, movie_ids: Iterable[int]) -> FeedbackRules:
        earliest = settings.validation.earliest_timestamp
        return cls(
            scale=scale,
            movie_ids=frozenset(int(movie) for movie in movie_ids),
            earliest=earliest if earliest.tzinfo else earliest.replace(tzinfo=UTC),
            max_future_days=settings.validation.max_future_days,
        )

    def problems(
        self, kind: str, movie_id: int, value: float, timestamp: datetime, now: datetime | None = None
    ) -> dict[str, str]:
        """field -> what is wrong with it; empty when the event may count."""
        found = {}
        if int(movie_id) not in self.movie_ids:
            found["movie_id"] = f"movie {movie_id} is not in the catalogue ({len(self.movie_ids):,} movies)"
        latest = (now or datetime.now(UTC)) + timedelta(days=self.max_future_days)
        if not self.earliest <= timestamp <= latest:
            found["timestamp"] = (
                f"{timestamp.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC is outside the plausible window "
                f"{self.earliest:%Y-%m-%d} .. {latest:%Y-%m-%d}"
            )
        value = float(value)
        if kind == "rating" and round(value, 4) not in self.scale.values():
            found["value"] = (
                f"rating {value:g} is not on the scale {self.scale.min:g}-{self.scale.max:g} (step {self.scale.step:g})"
            )
        elif kind == "thumb" and value not in (1.0, -1.0):
            found["value"] = f"a thumb is +1 or -1, got {value:g}"
        elif kind == "click" and value != 1.0:
            found["value"] = f"a click has value 1, got {value:g}"
        return found


def screen_feedback(
    events: pd.DataFrame,
    rules: FeedbackRules,
    known_users: Iterable[int],
    settings: FeedbackSettings,
    released: Iterable[str] = (),
    now: datetime | None = None,
) -> pd.DataFrame:
    """The rating-like events (`events`: `FeedbackStore.events()`) to keep out of the next
    snapshot, one row each: event_id, rule, reason. Clicks are never ratings and are not screened.

    - `invalid`: the event breaks `rules` (an event stored before the API checked them).
    - `movie_burst`: more than `settings.movie_burst_new_users` new users (not in `known_users`,
      the dataset's) rated one movie within `settings.burst_window_minutes` of arrival: their
      events on that movie in that window. Real users' events are never caught by it.
    - `cohort_burst`: more than `settings.cohort_new_users` new users first arrived within one
      window and more than `settings.cohort_top_movie_share` of their rating events are on a
      single movie: every event of that cohort (accounts made for one purpose).
    - `client_burst`: more than `settings.client_burst_events` events from one client within one
      window: that client's events in the window.

    Times are arrival times (`received_at`), which clients cannot forge. Events an operator
    released (`released`) still count towards a burst but are only held back when invalid."""
    rated = events[events["kind"].isin(RATING_KINDS)]
    found: dict[str, tuple[str, str]] = {}
    now = now or datetime.now(UTC)
    for row in rated.itertuples(index=False):
        problems = rules.problems(row.kind, row.movie_id, row.value, row.timestamp.to_pydatetime(), now)
        if problems:
            found[row.event_id] = (INVALID, "; ".join(f"{field}: {text}" for field, text in problems.items()))
    released = set(released)
    suspects = rated[~rated["event_id"].isin(found)]
    window = pd.Timedelta(minutes=settings.burst_window_minutes)
    new_users = suspects[~suspects["user_id"].isin(set(int(user) for user in known_users))]

    for movie, group in new_users.groupby("movie_id", sort=True):
        for members in _bursts(group, window, settings.movie_burst_new_users, distinct="user_id"):
            reason = (
                f"{members['user_id'].nunique()} new users rated movie {movie} within "
                f"{settings.burst_window_minutes:g} minutes (limit {settings.movie_burst_new_users})"
            )
            found.update(dict.fromkeys(members["event_id"], (MOVIE_BURST, reason)))

    firsts = new_users.sort_values("received_at", kind="stable").drop_duplicates("user_id")
    for cohort in _bursts(firsts, window, settings.cohort_new_users, distinct="user_id"):
        their = new_users[new_users["user_id"].isin(cohort["user_id"])]
        top_movie, top_count = Counter(their["movie_id"].tolist()).most_common(1)[0]
        share = top_count / len(their)
        if share > settings.cohort_top_movie_share:
            reason = (
                f"{cohort['user_id'].nunique()} new users arrived within {settings.burst_window_minutes:g} minutes "
                f"(limit {settings.cohort_new_users}) and {share:.0%} of their ratings are of movie {top_movie}"
            )
            for event_id in their["event_id"]:
                found.setdefault(event_id, (COHORT_BURST, reason))

    for client, group in suspects[suspects["client"].notna()].groupby("client", sort=True):
        for members in _bursts(group, window, settings.client_burst_events):
            reason = (
                f"client {client} sent {len(members)} events within {settings.burst_window_minutes:g} minutes "
                f"(limit {settings.client_burst_events})"
            )
            for event_id in members["event_id"]:
                found.setdefault(event_id, (CLIENT_BURST, reason))
    return pd.DataFrame(
        [
            (event_id, rule, reason)
            for event_id, (rule, reason) in found.items()
            if rule == INVALID or event_id not in released
        ],
        columns=["event_id", "rule", "reason"],
    )


def _bursts(group: pd.DataFrame, window: pd.Timedelta, limit: int, distinct: str | None = None) -> list[pd.DataFrame]:
    """Maximal runs of `group`'s rows (by arrival) in which some window of length `window` holds
    more than `limit` rows (or distinct values of column `distinct`): each run's rows."""
    if len(group) <= limit:
        return []
    ordered = group.sort_values("received_at", kind="stable")
    if distinct is not None:  # the first arrival of each value stands for it
        firsts = ordered.drop_duplicates(distinct)
        if len(firsts) <= limit:
            return []
        times = _seconds(firsts["received_at"])
    else:
        times = _seconds(ordered["received_at"])
    start = np.searchsorted(times, times - window.total_seconds(), side="left")
    crowded = np.flatnonzero(np.arange(len(times)) - start + 1 > limit)
    if not len(crowded):
        return []
    # Each crowded window [times[start[i]], times[i]]; overlapping windows form one run.
    runs, begin, end = [], times[start[crowded[0]]], times[crowded[0]]
    for i in crowded[1:]:
        if times[start[i]] <= end:
            end = times[i]
        else:
            runs.append((begin, end))
            begin, end = times[start[i]], times[i]
    runs.append((begin, end))
    arrival = _seconds(ordered["received_at"])
    if distinct is None:
        return [ordered[(arrival >= low) & (arrival <= high)] for low, high in runs]
    # Every row of a value whose first arrival falls in the run (a burst user's later events too).
    first = _seconds(ordered.groupby(distinct)["received_at"].transform("min"))
    return [ordered[(first >= low) & (first <= high)] for low, high in runs]


def _seconds(times: pd.Series) -> np.ndarray:
    """Seconds since the epoch (float64) of timezone-aware times, whatever their resolution."""
    return ((times - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(np.float64)


# ---------------------------------------------------------------------- into the next snapshot


@dataclass
class Feedback:
    """The stored feedback events at the time of reading."""

    path: Path
    events: pd.DataFrame  # FeedbackStore.events()
    digest: str  # FeedbackStore.digest of the rating-like events (clicks do not change a snapshot)
    # dataset -> ids released from quarantine for it
    released_by_dataset: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    # Events in quarantine and not released (FeedbackStore.quarantined()): never merged.
    held: pd.DataFrame = dataclasses.field(
        default_factory=lambda: pd.DataFrame(columns=["event_id", "dataset", "rule", "reason"])
    )

    @property
    def rating_events(self) -> int:
        return int(self.events["kind"].isin(RATING_KINDS).sum())


def read_feedback(path: Path) -> Feedback | None:
    """The events of the feedback store at `path`; None if there is no store or it holds no
    rating or thumb events (clicks are not ratings), so that such inputs fingerprint as before."""
    path = Path(path)
    if not path.is_file():
        return None
    store = FeedbackStore(path)
    try:
        events, digest, released, held = store.read(kinds=RATING_KINDS)
    finally:
        store.close()
    feedback = Feedback(path, events, digest, released, held)
    return feedback if feedback.rating_events else None


def hold_back(raw: RawDataset, feedback: Feedback, settings: Settings) -> pd.DataFrame:
    """The events to keep out of the snapshot made from `raw` and `feedback` (event_id, rule,
    reason, and `new`: quarantined by this screening rather than before): what `screen_feedback`
    finds, against the dataset's catalogue, scale and users, plus what is in quarantine already
    (until an operator releases it)."""
    rules = FeedbackRules.of(settings, raw.rating_scale, raw.movies["movie_id"].to_numpy(np.int64))
    known = set(raw.ratings["user_id"].unique().tolist())
    if raw.users is not None:
        known |= set(raw.users["user_id"].unique().tolist())
    held = feedback.held[feedback.held["dataset"] == raw.name]
    released = feedback.released_by_dataset.get(raw.name, set())
    found = screen_feedback(feedback.events, rules, known, settings.feedback, released)
    before = held[["event_id", "rule", "reason"]].assign(new=False)
    found = found[~found["event_id"].isin(before["event_id"])].assign(new=True)
    return pd.concat([before, found], ignore_index=True)


def merge_feedback(
    raw: RawDataset, feedback: Feedback, held: pd.DataFrame | None = None
) -> tuple[RawDataset, pd.DataFrame, dict]:
    """`raw` with the feedback's ratings appended to its ratings, in the raw ratings' dtypes and
    timestamp representation (Unix seconds), so that the raw suites validate them like the rest.

    Per (user, movie) the latest feedback event gives one rating (`feedback_ratings`); preprocessing
    then keeps the latest rating of each pair, so a feedback rating replaces a dataset rating
    exactly when it is later. A feedback rating stamped the same second as a dataset rating of the
    pair replaces it here (the raw suites reject equal timestamps for a pair: preprocessing could
    not tell which is latest). Events in `held` (`hold_back`) are left out. Returns the merged
    dataset, the feedback ratings (with their event ids, in merge order) and counts for the
    lineage.
    """
    held = held if held is not None else pd.DataFrame(columns=["event_id", "rule", "reason", "new"])
    kept_events = feedback.events[~feedback.events["event_id"].isin(held["event_id"])]
    ratings = feedback_ratings(kept_events, raw.rating_scale)
    seconds = ((ratings["timestamp"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)
    existing = raw.ratings
    merged_rows = pd.DataFrame(
        {
            "user_id": ratings["user_id"].to_numpy(np.int64),
            "movie_id": ratings["movie_id"].to_numpy(np.int64),
            "rating": ratings["rating"].to_numpy(np.float64),
            "timestamp": seconds,
        }
    )
    if pd.api.types.is_datetime64_any_dtype(existing["timestamp"]):
        merged_rows["timestamp"] = pd.to_datetime(seconds, unit="s", utc=True)
    merged_rows = merged_rows[list(existing.columns)].astype(existing.dtypes.to_dict())

    # Where each feedback rating stands against the dataset's ratings of its pair.
    keys = ["user_id", "movie_id"]
    latest = existing.groupby(keys, sort=False)["timestamp"].max().rename("dataset_timestamp").reset_index()
    against = merged_rows[[*keys, "timestamp"]].merge(latest, on=keys, how="left")
    known_pair = against["dataset_timestamp"].notna().to_numpy()
    stamp = against["timestamp"].to_numpy()
    later = known_pair & (stamp > against["dataset_timestamp"].to_numpy())
    same_second = known_pair & (stamp == against["dataset_timestamp"].to_numpy())

    kept = existing
    if same_second.any():
        columns = [*keys, "timestamp"]
        ties = pd.MultiIndex.from_frame(merged_rows.loc[same_second, columns])
        kept = existing[~pd.MultiIndex.from_frame(existing[columns]).isin(ties)]
    merged = dataclasses.replace(raw, ratings=pd.concat([kept, merged_rows], ignore_index=True))

    dataset_users = set(existing["user_id"].unique())
    if raw.users is not None:
        dataset_users |= set(raw.users["user_id"].unique())
    counts = {
        "path": str(feedback.path),
        "digest": feedback.digest,
        "events": len(feedback.events),
        "rating_events": feedback.rating_events,
        "clicks": int((feedback.events["kind"] == "click").sum()),
        "ratings": len(merged_rows),  # the latest rating-like event of each (user, movie)
        "new_pairs": int((~known_pair).sum()),
        "replaced": int((later | same_second).sum()),  # later than the dataset's rating of the pair
        "older_than_dataset": int((known_pair & ~later & ~same_second).sum()),  # the dataset's rating stays
        "new_users": len(set(merged_rows["user_id"].unique()) - dataset_users),
        "quarantined": {
            "events": len(held),
            "new": int(held["new"].sum()) if len(held) else 0,
            "by_rule": {rule: int(count) for rule, count in held["rule"].value_counts().sort_index().items()},
            "reasons": sorted(set(held["reason"]))[:20],
        },
    }
    return merged, ratings, counts


def explain_feedback_failure(
    error: ValidationFailed,
    raw: RawDataset,
    feedback_rows: pd.DataFrame,
    dataset_rows: int,
    settings: Settings,
    path: Path,
) -> ValidationFailed:
    """`error` of the raw suites, with lines naming the feedback events at fault (if any): raw
    row numbers beyond the dataset's rows are feedback, which has no file line to point at."""
    rules = FeedbackRules.of(settings, raw.rating_scale, raw.movies["movie_id"].to_numpy(np.int64))
    notes = []
    for row in feedback_rows.itertuples(index=False):
        # Merged feedback ratings are on the scale already (a thumb became its top or bottom).
        problems = list(rules.problems("rating", row.movie_id, row.rating, row.timestamp.to_pydatetime()).values())
        if problems:
            notes.append(
                f"feedback event {row.event_id!r} (user {row.user_id}, movie {row.movie_id}): {'; '.join(problems)}"
            )
    header = (
        f"ratings rows {dataset_rows + 1}..{dataset_rows + len(feedback_rows)} are the "
        f"{len(feedback_rows)} feedback rating(s) merged from {path}"
    )
    explained = ValidationFailed(error.suite, error.failures, error.report)
    explained.feedback_notes = [header, *notes]
    lines = str(error).split("\n")
    at = len(lines) - 1 if error.report is not None else len(lines)  # before the "report:" line
    explained.args = ("\n".join([*lines[:at], *(f"  {note}" for note in explained.feedback_notes), *lines[at:]]),)
    return explained
