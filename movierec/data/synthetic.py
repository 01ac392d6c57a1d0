"""Seeded MovieLens-shaped data: `generate(n_ratings, seed)` returns a `RawDataset`.

The data come from a small generative model, so that a recommender has something real to learn
and a test can check that it did:

* Movies. Release dates skew recent (ages are exponential, as the number of films per year
  grows), and the item index follows release order, so "movies out by time T" is a prefix of
  the catalogue. Movie ids increase with it, with gaps, as MovieLens ids do. Popularity follows
  a Zipf law over a random ranking; quality leans slightly towards popular movies. Each movie
  has 1-3 genres drawn by MovieLens genre frequency (a handful have none). Titles, overviews and
  tags are built from word lists; overviews and tags use genre-specific vocabulary.
* Users. Each user has genre tastes theta ~ Dirichlet (concentrated on a few genres), a
  long-tailed activity level, and an activity window whose length grows with activity. A user
  can only rate movies released before the window ends: their *pool*.
* Which movies. User u draws movies i.i.d. from p(i | u), proportional to
  popularity(i) * (affinity(u, i) + eps_u), where affinity is the mean of theta_u over the
  movie's genres. This is sampled as a mixture: with probability BROWSE_SHARE a movie from the
  pool by popularity alone, otherwise a genre g (weighted by theta_ug times g's popularity mass
  in the pool), then a movie of g by popularity. Keeping the first c_u distinct movies of that
  stream gives the user's c_u ratings (sampling without replacement).
* Rating value: global mean + user bias + movie quality + taste (affinity relative to the
  user's favourite genre) + noise, rounded to half stars (a share of users only ever give
  whole stars, as many MovieLens users do) and clipped to the scale.
* Timestamps fall uniformly in the part of the user's window after the movie's release, so
  every rating comes after its movie's release date and within 1996-01-01 .. 2023-12-31.
* Tags: a minority of users tag; each tags some of the movies they rated, with a genre word,
  some time after rating it.

Everything is vectorised with numpy (loops only over genres and sampling rounds), so 25M
ratings take well under a minute. The hard part is the exact count of unique (user, movie)
pairs: pairs are encoded as one int64 and deduplicated with a sort; users whose draws held
duplicates draw again, only for the shortfall, until every user has exactly c_u movies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.tables import GENRES
from movierec.data.schema import RatingScale, RawDataset

GENERATOR_VERSION = 1
HALF_STARS = RatingScale(0.5, 5.0, 0.5)

FIRST_SECOND = 820_454_400  # 1996-01-01T00:00:00Z
LAST_SECOND = 1_704_067_199  # 2023-12-31T23:59:59Z
DAY = 86_400
YEAR = 365.25 * DAY
OLDEST_RELEASE = -2_145_916_800  # 1902-01-01: the oldest films in MovieLens are about that old

# Dataset sizes as power laws of the number of ratings, fitted through ml-25m (25M ratings,
# 162k users, 59k movies) and a 1,000-rating toy set (40 users, 200 movies).
USERS_COEF, USERS_EXP = 0.14, 0.82
ITEMS_COEF, ITEMS_EXP = 4.13, 0.5615
MIN_ITEMS = 50
MIN_RATINGS_PER_USER = 5  # MovieLens keeps users with >= 20; small sets cannot afford that
MAX_MIN_RATINGS_PER_USER = 20
MAX_POOL_SHARE = 0.5  # nobody rates more than half the movies released in their window

ZIPF_EXPONENT = 1.0
RELEASE_AGE_SCALE = 20 * YEAR  # about a quarter of the movies predate 1996, as in MovieLens
NO_GENRE_SHARE = 0.003
GENRE_COUNT_PROBS = (0.45, 0.35, 0.20)  # a movie has 1, 2 or 3 genres
# Relative frequency of each genre in ml-25m's movies.csv, in GENRES order.
GENRE_FREQUENCY = (
    7348, 4145, 2929, 2935, 16870, 5319, 5605, 25606, 2731, 353, 5989, 195, 1054, 2925, 7719,
    3595, 8654, 1874, 1399,
)  # fmt: skip

TASTE_CONCENTRATION = 0.5  # Dirichlet total; small, so each user cares about a few genres
BROWSE_SHARE = 0.15  # share of draws by popularity alone, whatever the user's tastes
ACTIVITY_SIGMA = 1.2  # log-normal spread of ratings per user (ml-25m: mean 153, median 71)

RATING_MEAN = 3.85
USER_BIAS_SD = 0.35
QUALITY_SD = 0.45
QUALITY_POPULARITY = 0.25  # popular movies tend to be rated a little higher
TASTE_WEIGHT = 1.2
NOISE_SD = 0.75
WHOLE_STAR_SHARE = 0.35

TAG_SHARE = 0.035  # tags per rating (ml-latest-small 3.6%, ml-25m 4.4%)
MAX_TAGS = 1_000_000
TAGGER_SHARE = 0.1  # most MovieLens users never tag
GENERIC_TAG_SHARE = 0.25

MAX_SAMPLING_ROUNDS = 40

# Per genre (GENRES order, then one row for movies without genres): 4 characters, 4 plots and
# 4 tag words. Overviews and tags draw from the movie's genres' rows, so text carries genre.
VOCABULARY: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    (("ex-soldier", "rogue agent", "getaway driver", "bodyguard"),
     ("battles a private army", "races to defuse a bomb", "takes on a crime syndicate",
      "fights back after an ambush"),
     ("explosions", "car chase", "shootout", "martial arts")),
    (("treasure hunter", "young explorer", "sea captain", "mapmaker"),
     ("sets out across an uncharted jungle", "searches for a lost city", "sails to a forbidden island",
      "crosses a frozen mountain range"),
     ("quest", "treasure", "expedition", "journey")),
    (("talking rabbit", "little robot", "paper dragon", "toy soldier"),
     ("comes to life in a hand-drawn world", "escapes from a toy shop", "paints a village back to color",
      "learns to fly with cartoon friends"),
     ("animated", "cartoon", "stop motion", "colorful")),
    (("curious kid", "lost puppy", "class clown", "young inventor"),
     ("learns the value of friendship", "helps a family pet find its way home",
      "wins the school science fair", "saves the summer camp"),
     ("family", "kids", "friendship", "heartwarming")),
    (("hapless salesman", "stand-up comic", "bumbling cousin", "wedding planner"),
     ("stumbles through a disastrous road trip", "fakes an engagement to impress the boss",
      "swaps lives with a neighbor by accident", "throws the worst party in town"),
     ("funny", "hilarious", "slapstick", "witty")),
    (("detective", "mob accountant", "safecracker", "con artist"),
     ("plans one last heist", "infiltrates a crime family", "covers up a botched robbery",
      "hunts a killer through the city"),
     ("heist", "gangsters", "mafia", "police")),
    (("filmmaker", "marine biologist", "farmer", "journalist"),
     ("investigates the hidden cost of fast fashion", "follows a season on a failing farm",
      "documents a coral reef in decline", "interviews survivors of a forgotten war"),
     ("documentary", "true story", "informative", "real footage")),
    (("widowed father", "struggling nurse", "estranged daughter", "small-town teacher"),
     ("confronts the past after a family tragedy", "struggles to keep the family together",
      "returns home to care for a dying mother", "faces a painful choice"),
     ("emotional", "tearjerker", "family drama", "powerful acting")),
    (("young wizard", "exiled princess", "dragon rider", "enchanted knight"),
     ("seeks a magic sword to break a curse", "enters a realm of fairies and giants",
      "must defeat a dark sorcerer", "guards an ancient spellbook"),
     ("magic", "dragons", "wizards", "fairy tale")),
    (("private eye", "femme fatale", "crooked cop", "nightclub singer"),
     ("is drawn into a web of blackmail", "takes a case that smells of murder",
      "double-crosses a dangerous partner", "walks the rain-slick streets at midnight"),
     ("noir", "black and white", "hardboiled", "shadows")),
    (("babysitter", "paranormal investigator", "new homeowner", "camp counselor"),
     ("is stalked by a masked killer", "discovers the house is haunted",
      "awakens a demon in the cellar", "fights off flesh-eating zombies"),
     ("gore", "creepy", "zombies", "jump scares")),
    (("astronaut", "wildlife cameraman", "mountain climber", "deep-sea diver"),
     ("captures the planet in giant-screen detail", "soars over the Himalayas",
      "dives to the deepest ocean trench", "orbits Earth aboard the space station"),
     ("imax", "visually stunning", "big screen", "spectacle")),
    (("chorus girl", "jazz pianist", "street dancer", "Broadway hopeful"),
     ("sings and dances toward opening night", "puts on a show to save the theater",
      "falls in love through song", "auditions for the musical of the decade"),
     ("musical", "songs", "dancing", "broadway")),
    (("amateur sleuth", "village inspector", "crossword editor", "heiress"),
     ("unravels a locked-room puzzle", "searches for a missing sister",
      "uncovers secrets at a country manor", "follows clues left by a dead man"),
     ("whodunit", "twist ending", "clues", "puzzle")),
    (("florist", "young widow", "charming stranger", "childhood sweetheart"),
     ("finds love in Paris", "rekindles an old flame", "writes letters to a secret admirer",
      "falls for a rival"),
     ("love story", "romantic", "soulmates", "kissing")),
    (("starship pilot", "android", "time traveler", "alien linguist"),
     ("travels to a distant planet", "makes first contact with an alien race",
      "escapes a dystopian future", "hacks into a sentient computer"),
     ("space", "aliens", "time travel", "dystopia")),
    (("whistleblower", "hostage negotiator", "spy", "witness"),
     ("is hunted by a ruthless assassin", "uncovers a government conspiracy",
      "races against the clock to save a hostage", "trusts no one after a betrayal"),
     ("suspense", "tense", "conspiracy", "psychological")),
    (("infantry sergeant", "fighter pilot", "army medic", "resistance fighter"),
     ("leads a platoon behind enemy lines", "survives the battle of the trenches",
      "holds a bridge against a siege", "smuggles refugees past the front"),
     ("world war ii", "battle", "soldiers", "military")),
    (("gunslinger", "frontier marshal", "cattle rancher", "outlaw"),
     ("rides into a lawless frontier town", "defends the ranch from cattle rustlers",
      "faces a showdown at high noon", "drives a herd across the desert"),
     ("cowboys", "western", "gunfight", "frontier")),
    (("stranger", "family", "young couple", "old friend"),
     ("finds something unexpected", "spends a long weekend away", "meets again after many years",
      "changes everything"),
     ("classic", "must see", "overrated", "atmospheric")),
)  # fmt: skip
OVERVIEW_ADJECTIVES = ("young", "reluctant", "lonely", "retired", "ambitious", "disgraced", "determined",
                       "unlikely", "old", "eager", "idealistic", "obsessive")  # fmt: skip
OVERVIEW_OPENINGS = tuple(("An " if word[0] in "aeiou" else "A ") + word for word in OVERVIEW_ADJECTIVES)
GENERIC_TAGS = ("classic", "must see", "overrated", "atmospheric", "great soundtrack", "boring",
                "visually appealing", "based on a book", "cult film", "dialogue")  # fmt: skip
TITLE_ADJECTIVES = (
    "Silent", "Broken", "Golden", "Last", "Hidden", "Dark", "Crimson", "Lost", "Wild", "Frozen",
    "Burning", "Secret", "Final", "Eternal", "Midnight", "Little", "Great", "Savage", "Quiet",
    "Distant", "Electric", "Hollow", "Bitter", "Sweet", "Restless", "Iron", "Velvet", "Shattered",
    "Forgotten", "Endless", "Blue", "Red", "Black", "White", "Lucky", "Crooked", "Falling", "Rising",
)  # fmt: skip
TITLE_NOUNS = (
    "River", "Night", "City", "Heart", "Road", "Storm", "Dream", "Summer", "Winter", "Shadow",
    "Kingdom", "Fire", "Sky", "Garden", "House", "Island", "Mountain", "Star", "Highway", "Game",
    "Mirror", "Harbor", "Empire", "Frontier", "Promise", "Stranger", "Witness", "Voyage", "Echo",
    "Horizon", "Angel", "Hunter", "Ghost", "Machine", "Circus", "Desert", "Ocean", "Moon", "Sun",
    "Forest", "Station", "Letter", "Secret", "Legacy", "Paradise", "Return", "Revenge", "Edge",
)  # fmt: skip
OCCUPATIONS = (
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive",
    "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none", "other", "programmer",
    "retired", "salesman", "scientist", "student", "technician", "writer",
)  # fmt: skip
# Users per occupation in ml-100k, in OCCUPATIONS order.
OCCUPATION_COUNTS = (79, 28, 7, 95, 67, 18, 32, 16, 7, 12, 51, 26, 9, 105, 66, 14, 12, 31, 196, 27, 45)
MALE_SHARE = 0.71  # ml-100k

N_GENRES = len(GENRES)
NO_GENRE = N_GENRES  # padding index in a movie's genre slots and VOCABULARY's generic row
BROWSE = N_GENRES  # the sampling component that ignores genres


@dataclass
class _Catalogue:
    """Latent per-movie arrays, indexed by item index (= release order)."""

    release: np.ndarray  # int64 Unix seconds, ascending
    popularity: np.ndarray  # float64, Zipf weights
    quality: np.ndarray  # float32
    genre_slots: np.ndarray  # int8 (n_items, 3), genre indices ascending, NO_GENRE-padded
    n_genres: np.ndarray  # int8


@dataclass
class _Audience:
    """Latent per-user arrays, indexed by user index."""

    taste: np.ndarray  # float32 (n_users, N_GENRES + 1); rows sum to 1; last column 0 (padding)
    activity: np.ndarray  # float64, relative number of ratings
    start: np.ndarray  # int64 Unix seconds, start of the activity window
    end: np.ndarray  # int64 Unix seconds, end of the activity window
    pool: np.ndarray  # int64, number of movies released by `end`


def default_sizes(n_ratings: int) -> tuple[int, int]:
    """MovieLens-like (n_users, n_items) for a number of ratings, e.g. 1,000 -> (40, 200)."""
    n_users = round(USERS_COEF * n_ratings**USERS_EXP)
    n_items = round(ITEMS_COEF * n_ratings**ITEMS_EXP)
    return max(1, min(n_users, n_ratings // MIN_RATINGS_PER_USER)), max(MIN_ITEMS, n_items)


def generate(n_ratings: int, seed: int = 42, *, n_users: int | None = None, n_items: int | None = None) -> RawDataset:
    """A MovieLens-shaped dataset with exactly `n_ratings` ratings, all the same for one seed.

    `n_users` and `n_items` default to `default_sizes(n_ratings)`. Raises ValueError when the
    sizes cannot be met (fewer than 5 ratings per user, or more ratings than the users' pools).
    """
    if n_ratings < MIN_RATINGS_PER_USER:
        raise ValueError(f"n_ratings must be at least {MIN_RATINGS_PER_USER}, got {n_ratings}")
    default_users, default_items = default_sizes(n_ratings)
    n_users = default_users if n_users is None else n_users
    n_items = default_items if n_items is None else n_items
    if n_users < 1 or n_items < 1:
        raise ValueError(f"n_users and n_items must be positive, got {n_users} and {n_items}")

    rng = np.random.default_rng(seed)
    catalogue = _catalogue(rng, n_items)
    audience = _audience(rng, n_users, catalogue.release)
    counts = _ratings_per_user(rng, n_ratings, audience)
    pairs = _sample_pairs(rng, counts, audience, catalogue)
    user_idx = (pairs // n_items).astype(np.int32)
    item_idx = (pairs - user_idx.astype(np.int64) * n_items).astype(np.int32)
    del pairs

    movie_ids = _movie_ids(rng, n_items)
    timestamps = _timestamps(rng, user_idx, item_idx, audience, catalogue)
    ratings = pd.DataFrame(
        {
            "user_id": user_idx.astype(np.int64) + 1,
            "movie_id": movie_ids[item_idx],
            "rating": _rating_values(rng, user_idx, item_idx, audience, catalogue),
            "timestamp": timestamps,
        }
    )
    tags = _tags(rng, n_users, user_idx, item_idx, timestamps, catalogue, movie_ids)
    del user_idx, item_idx, timestamps
    return RawDataset(
        name="synthetic",
        ratings=ratings,
        movies=_movies_frame(rng, catalogue, movie_ids),
        users=_users_frame(rng, n_users),
        tags=tags,
        rating_scale=HALF_STARS,
        files={},
        source={
            "kind": "synthetic",
            "n_ratings": n_ratings,
            "n_users": n_users,
            "n_items": n_items,
            "seed": seed,
            "generator_version": GENERATOR_VERSION,
        },
    )


def _catalogue(rng: np.random.Generator, n_items: int) -> _Catalogue:
    # Stratified uniforms fix the share of old movies, so even a small catalogue has enough
    # movies for users whose window ends in 1996.
    u = (rng.permutation(n_items) + rng.random(n_items)) / n_items
    # Ages are exponential, truncated at the oldest release (inverse CDF).
    oldest = (LAST_SECOND - OLDEST_RELEASE) / RELEASE_AGE_SCALE
    age = -RELEASE_AGE_SCALE * np.log1p(-u * -np.expm1(-oldest))
    release = np.sort(np.floor((LAST_SECOND - age) / DAY).astype(np.int64) * DAY)

    popularity = (rng.permutation(n_items) + 1.0) ** -ZIPF_EXPONENT
    # Standardised as the ratings see it (weighted by popularity), so that the average rating
    # does not drift with the catalogue's size.
    log_pop = np.log(popularity)
    mean = np.average(log_pop, weights=popularity)
    sd = np.sqrt(np.average((log_pop - mean) ** 2, weights=popularity))
    quality = QUALITY_POPULARITY * (log_pop - mean) / max(sd, 1e-9)
    quality = (quality + rng.normal(0.0, QUALITY_SD, n_items)).astype(np.float32)

    # Gumbel top-k: the first k of a row's ordering are k genres drawn without replacement,
    # proportionally to genre frequency.
    frequency = np.asarray(GENRE_FREQUENCY, dtype=np.float64)
    keys = np.log(frequency / frequency.sum()) + rng.gumbel(size=(n_items, N_GENRES))
    top3 = np.argsort(-keys, axis=1)[:, :3].astype(np.int8)
    n_genres = rng.choice(np.arange(1, 4, dtype=np.int8), size=n_items, p=GENRE_COUNT_PROBS)
    n_genres[rng.permutation(n_items)[: round(NO_GENRE_SHARE * n_items)]] = 0
    slots = np.where(np.arange(3) < n_genres[:, None], top3, np.int8(NO_GENRE))
    return _Catalogue(release, popularity, quality, np.sort(slots, axis=1), n_genres)


def _audience(rng: np.random.Generator, n_users: int, release: np.ndarray) -> _Audience:
    frequency = np.asarray(GENRE_FREQUENCY, dtype=np.float64)
    alpha = TASTE_CONCENTRATION * np.sqrt(frequency) / np.sqrt(frequency).sum()
    # Dirichlet through gammas; the floor keeps a row from summing to zero when all its
    # (tiny-shape) gammas underflow.
    gammas = rng.gamma(alpha, size=(n_users, N_GENRES)) + 1e-12
    taste = np.zeros((n_users, N_GENRES + 1), dtype=np.float32)
    taste[:, :N_GENRES] = gammas / gammas.sum(axis=1, keepdims=True)

    log_activity = rng.normal(0.0, ACTIVITY_SIGMA, n_users)
    # Busy users stay longer: a median window of two days, growing with activity.
    log_length = np.log(2 * DAY) + log_activity + rng.normal(0.0, 2.0, n_users)
    span = LAST_SECOND - FIRST_SECOND
    length = np.clip(np.exp(log_length), 600, span).astype(np.int64)
    start = FIRST_SECOND + (rng.random(n_users) * (span - length)).astype(np.int64)
    end = start + length
    pool = np.searchsorted(release, end, side="right")
    return _Audience(taste, np.exp(log_activity), start, end, pool)


def _ratings_per_user(rng: np.random.Generator, n_ratings: int, audience: _Audience) -> np.ndarray:
    """How many ratings each user gives: a floor, then the rest in proportion to activity."""
    n_users = len(audience.activity)
    cap = np.floor(MAX_POOL_SHARE * audience.pool).astype(np.int64)
    if n_users * MIN_RATINGS_PER_USER > n_ratings:
        raise ValueError(
            f"{n_ratings} ratings cannot give each of {n_users} users {MIN_RATINGS_PER_USER}; use fewer users"
        )
    if cap.min() < MIN_RATINGS_PER_USER:
        raise ValueError(
            f"some users can choose among only {audience.pool.min()} movies (those released before "
            f"their window ends), too few for {MIN_RATINGS_PER_USER} ratings each; use more items"
        )
    if cap.sum() < n_ratings:
        raise ValueError(
            f"{n_ratings} ratings exceed what {n_users} users can give ({cap.sum()}); use more users or more items"
        )
    # The floor is a quarter of the mean, at most MovieLens's 20, so that the rest, spread by
    # activity, still makes a long tail.
    floor = int(np.clip(n_ratings // n_users // 4, MIN_RATINGS_PER_USER, MAX_MIN_RATINGS_PER_USER))
    floor = min(floor, int(cap.min()))
    counts = floor + rng.multinomial(n_ratings - n_users * floor, audience.activity / audience.activity.sum())
    # Users over their cap give the excess back to the others, by activity, until none is over.
    while (excess := int(np.maximum(counts - cap, 0).sum())) > 0:
        counts = np.minimum(counts, cap)
        room = counts < cap
        weights = audience.activity * room
        counts[room] += rng.multinomial(excess, weights[room] / weights.sum())
    return counts


@dataclass
class _Mixture:
    """p(item | user) as a mixture of components: genre g for g < N_GENRES, then BROWSE.

    Each component lists its member movies in item-index (release) order with cumulative
    weights, so the part of a component inside a user's pool is a prefix of that list.
    """

    members: list[np.ndarray]  # per component: item indices, ascending
    cumulative: list[np.ndarray]  # per component: 0, then cumulative weights of `members`
    in_pool: np.ndarray  # int64 (n_users, components): members released by the window's end
    mass: np.ndarray  # float64 (n_users, components): weight of those members
    weight: np.ndarray  # float64 (n_users, components): component probabilities, rows sum to 1

    @classmethod
    def build(cls, audience: _Audience, catalogue: _Catalogue) -> _Mixture:
        # A movie with k genres gets 1/k of its popularity in each, so that genre components
        # together weigh each movie by popularity times the mean taste over its genres.
        share = catalogue.popularity / np.maximum(catalogue.n_genres, 1)
        members, weights = [], []
        for genre in range(N_GENRES):
            member = np.flatnonzero((catalogue.genre_slots == genre).any(axis=1))
            members.append(member)
            weights.append(share[member])
        members.append(np.arange(len(catalogue.popularity)))
        weights.append(catalogue.popularity)
        cumulative = [np.concatenate(([0.0], np.cumsum(w))) for w in weights]
        in_pool = np.stack([np.searchsorted(m, audience.pool) for m in members], axis=1)
        mass = np.stack([c[k] for c, k in zip(cumulative, in_pool.T, strict=True)], axis=1)

        genre_weight = audience.taste[:, :N_GENRES] * mass[:, :N_GENRES]
        total = genre_weight.sum(axis=1)
        has_genres = total > 0  # false only for a pool holding nothing but genre-less movies
        weight = np.zeros_like(mass)
        weight[:, :N_GENRES] = (1 - BROWSE_SHARE) * genre_weight / np.where(has_genres, total, 1.0)[:, None]
        # BROWSE comes last: numpy's multinomial gives the last outcome whatever rounding
        # leaves over, and only BROWSE is sure to have movies in every pool.
        weight[:, BROWSE] = np.where(has_genres, BROWSE_SHARE, 1.0)
        return cls(members, cumulative, in_pool, mass, weight)

    def draw(self, rng: np.random.Generator, users: np.ndarray, n_draws: np.ndarray, n_items: int) -> np.ndarray:
        """`n_draws[j]` i.i.d. movies for each of `users`, as codes user * n_items + item."""
        per_component = rng.multinomial(n_draws, self.weight[users])
        codes = np.empty(int(per_component.sum()), dtype=np.int64)
        offset = 0
        for component, (member, cumulative) in enumerate(zip(self.members, self.cumulative, strict=True)):
            user = np.repeat(users, per_component[:, component])
            if not len(user):
                continue
            # Inverse-CDF sampling inside the user's pool prefix; the minimum guards against
            # rounding putting a draw exactly at the prefix's end.
            point = rng.random(len(user)) * self.mass[user, component]
            position = np.minimum(
                np.searchsorted(cumulative, point, side="right") - 1, self.in_pool[user, component] - 1
            )
            codes[offset : offset + len(user)] = user * np.int64(n_items) + member[position]
            offset += len(user)
        return codes


def _sample_pairs(
    rng: np.random.Generator, counts: np.ndarray, audience: _Audience, catalogue: _Catalogue
) -> np.ndarray:
    """Sorted codes user * n_items + item: exactly `counts[u]` distinct movies for each user u.

    Each round draws movies for the users still short, keeps the ones they do not have yet and,
    where a user got more than needed, those drawn first. Round one draws as many as needed, so
    only duplicates are drawn again; later rounds oversample more and more, since what is left
    to find for a heavy user is in the tail.
    """
    n_items = len(catalogue.popularity)
    mixture = _Mixture.build(audience, catalogue)
    need = counts.copy()
    accepted: list[np.ndarray] = []
    for round_ in range(MAX_SAMPLING_ROUNDS):
        users = np.flatnonzero(need)
        if not len(users):
            break
        codes = mixture.draw(rng, users, need[users] << min(round_, 10), n_items)
        codes.sort()
        starts_run = np.empty(len(codes), dtype=bool)
        starts_run[0] = True
        np.not_equal(codes[1:], codes[:-1], out=starts_run[1:])
        first = np.flatnonzero(starts_run)
        distinct = codes[first]
        multiplicity = np.diff(first, append=len(codes))
        del codes, starts_run, first
        new = ~_contains(accepted, distinct)
        distinct, multiplicity = distinct[new], multiplicity[new]
        keep = _first_drawn(rng, distinct // n_items, multiplicity, need)
        distinct = distinct[keep]
        need -= np.bincount(distinct // n_items, minlength=len(need))
        accepted.append(distinct)
    else:
        raise RuntimeError(f"{int(need.sum())} ratings still missing after {MAX_SAMPLING_ROUNDS} rounds")
    pairs = np.concatenate(accepted)
    # Each piece is sorted, and a stable sort (timsort) merges sorted runs in linear time.
    pairs.sort(kind="stable")
    return pairs


def _contains(sorted_arrays: list[np.ndarray], values: np.ndarray) -> np.ndarray:
    found = np.zeros(len(values), dtype=bool)
    for array in sorted_arrays:
        if len(array):
            position = np.minimum(np.searchsorted(array, values), len(array) - 1)
            found |= array[position] == values
    return found


def _first_drawn(rng: np.random.Generator, user: np.ndarray, multiplicity: np.ndarray, need: np.ndarray) -> np.ndarray:
    """Which distinct draws to keep so that no user gets more than `need[u]`.

    Keeping the first `need[u]` distinct movies of a user's draw stream is sampling without
    replacement. Within a round the draws are exchangeable, so a movie drawn m times first
    appears at the minimum of m uniform positions, a Beta(1, m) variable: sort by that.
    """
    keep = np.ones(len(user), dtype=bool)
    over = np.flatnonzero(np.bincount(user, minlength=len(need)) > need)
    if not len(over):
        return keep
    crowded = np.flatnonzero(np.isin(user, over))
    first_seen = -np.expm1(np.log(rng.random(len(crowded))) / multiplicity[crowded])
    order = crowded[np.lexsort((first_seen, user[crowded]))]
    grouped = user[order]
    rank = np.arange(len(order)) - np.searchsorted(grouped, grouped)
    keep[order[rank >= need[grouped]]] = False
    return keep


def _movie_ids(rng: np.random.Generator, n_items: int) -> np.ndarray:
    """Ids from 1, increasing with release, with gaps (ml-25m: 62k movies, ids up to 209k)."""
    gaps = rng.geometric(0.3, n_items)
    gaps[0] = 1
    return np.cumsum(gaps, dtype=np.int64)


def _timestamps(
    rng: np.random.Generator, user: np.ndarray, item: np.ndarray, audience: _Audience, catalogue: _Catalogue
) -> np.ndarray:
    """Uniform in the part of the user's window after the movie's release (never empty, as the
    movie is in the user's pool)."""
    low = np.maximum(audience.start[user], catalogue.release[item])
    return rng.integers(low, audience.end[user], endpoint=True)


def _rating_values(
    rng: np.random.Generator, user: np.ndarray, item: np.ndarray, audience: _Audience, catalogue: _Catalogue
) -> np.ndarray:
    n_users = len(audience.taste)
    bias = rng.normal(0.0, USER_BIAS_SD, n_users).astype(np.float32)
    step = np.where(rng.random(n_users) < WHOLE_STAR_SHARE, 1.0, 0.5).astype(np.float32)

    # Taste for a movie: mean taste over its genres, relative to the user's favourite genre.
    flat_taste = audience.taste.ravel()
    row = user.astype(np.int64) * audience.taste.shape[1]
    slots = catalogue.genre_slots[item]
    taste = flat_taste[row + slots[:, 0]] + flat_taste[row + slots[:, 1]] + flat_taste[row + slots[:, 2]]
    del row, slots
    taste /= np.maximum(catalogue.n_genres[item], 1)
    taste /= audience.taste.max(axis=1)[user]

    value = RATING_MEAN + bias[user] + catalogue.quality[item] + TASTE_WEIGHT * (taste - 0.5)
    value += rng.normal(0.0, NOISE_SD, len(user)).astype(np.float32)
    user_step = step[user]
    value = np.clip(np.round(value / user_step) * user_step, user_step, HALF_STARS.max)
    return value.astype(np.float64)


def _tags(
    rng: np.random.Generator,
    n_users: int,
    user: np.ndarray,
    item: np.ndarray,
    rated_at: np.ndarray,
    catalogue: _Catalogue,
    movie_ids: np.ndarray,
) -> pd.DataFrame:
    """A few taggers tag some of the movies they rated, with words of one of the movie's genres."""
    tagger = rng.random(n_users) < TAGGER_SHARE
    tagger[np.bincount(user).argmax()] = True  # the busiest user tags, so there are always tags
    candidates = np.flatnonzero(tagger[user])
    n_tags = min(MAX_TAGS, round(TAG_SHARE * len(user)), len(candidates))
    rows = np.sort(rng.choice(candidates, size=n_tags, replace=False))
    tagged = item[rows]

    slot = (rng.random(n_tags) * np.maximum(catalogue.n_genres[tagged], 1)).astype(np.int64)
    genre = catalogue.genre_slots[tagged, slot]
    words = _vocabulary(2)[genre, rng.integers(0, 4, n_tags)]
    generic = rng.random(n_tags) < GENERIC_TAG_SHARE
    words[generic] = _pick(GENERIC_TAGS, rng, int(generic.sum()))
    # Most tags come in the same sitting as the rating, a fifth of them days later.
    delay = rng.exponential(3600.0, n_tags) * np.where(rng.random(n_tags) < 0.2, 100.0, 1.0)
    return pd.DataFrame(
        {
            "user_id": user[rows].astype(np.int64) + 1,
            "movie_id": movie_ids[tagged],
            "tag": pd.array(words, dtype="str"),
            "timestamp": np.minimum(rated_at[rows] + delay.astype(np.int64), LAST_SECOND),
        }
    )


def _vocabulary(part: int) -> np.ndarray:
    """VOCABULARY's characters (0), plots (1) or tags (2) as an object array (genre, word)."""
    return np.array([row[part] for row in VOCABULARY], dtype=object)


def _pick(words: tuple[str, ...], rng: np.random.Generator, n: int) -> np.ndarray:
    return np.asarray(words, dtype=object)[rng.integers(0, len(words), n)]


def _movies_frame(rng: np.random.Generator, catalogue: _Catalogue, movie_ids: np.ndarray) -> pd.DataFrame:
    n_items = len(movie_ids)
    release = pd.to_datetime(catalogue.release, unit="s", utc=True).astype("datetime64[ns, UTC]")
    year = np.asarray(release.year).astype(str).astype(object)

    # Titles: "Adjective Noun", "Noun of the Noun", "Noun" or a sequel "Adjective Noun 2"; some
    # with MovieLens's trailing article, "Silent River, The (1987)".
    adjective = _pick(TITLE_ADJECTIVES, rng, n_items)
    noun, other = _pick(TITLE_NOUNS, rng, n_items), _pick(TITLE_NOUNS, rng, n_items)
    pattern = rng.choice(4, size=n_items, p=(0.45, 0.2, 0.2, 0.15))
    sequel = rng.integers(2, 5, n_items).astype(str).astype(object)
    base = np.select(
        [pattern == 0, pattern == 1, pattern == 2],
        [adjective + " " + noun, noun + " of the " + other, noun],
        adjective + " " + noun + " " + sequel,
    )
    article_draw = rng.random(n_items)
    article = np.where(article_draw < 0.18, ", The", np.where(article_draw < 0.21, ", A", ""))
    article = np.where(pattern == 1, "", article).astype(object)
    title = base + article + " (" + year + ")"

    names = np.array([*GENRES, ""], dtype=object)
    slots = catalogue.genre_slots
    genres = names[slots[:, 0]]
    for k in (1, 2):
        genres = genres + np.where(slots[:, k] != NO_GENRE, "|" + names[slots[:, k]], "")
    genres = np.where(catalogue.n_genres == 0, "(no genres listed)", genres).astype(object)

    # Overview: a character and plot of one of the movie's genres, themes of two of them.
    n_slots = np.maximum(catalogue.n_genres, 1)
    rows = np.arange(n_items)
    primary = slots[rows, (rng.random(n_items) * n_slots).astype(np.int64)]
    secondary = slots[rows, (rng.random(n_items) * n_slots).astype(np.int64)]
    first_theme = rng.integers(0, 4, n_items)
    second_theme = (first_theme + rng.integers(1, 4, n_items)) % 4  # never the same word twice
    opening = _pick(OVERVIEW_OPENINGS, rng, n_items)
    character = _vocabulary(0)[primary, rng.integers(0, 4, n_items)]
    plot = _vocabulary(1)[primary, rng.integers(0, 4, n_items)]
    themes = _vocabulary(2)[primary, first_theme] + " and " + _vocabulary(2)[secondary, second_theme]
    overview = opening + " " + character + " " + plot + " in this tale of " + themes + "."

    unknown = pd.arrays.IntegerArray(np.zeros(n_items, dtype=np.int64), np.ones(n_items, dtype=bool))
    return pd.DataFrame(
        {
            "movie_id": movie_ids,
            "title": pd.array(title, dtype="str"),
            "genres": pd.array(genres, dtype="str"),
            "release_date": release,
            "imdb_id": unknown,
            "tmdb_id": unknown.copy(),
            "overview": pd.array(overview, dtype="str"),
        }
    )


def _users_frame(rng: np.random.Generator, n_users: int) -> pd.DataFrame:
    counts = np.asarray(OCCUPATION_COUNTS, dtype=np.float64)
    occupation = rng.choice(len(OCCUPATIONS), size=n_users, p=counts / counts.sum())
    # Ages as in ml-100k (7..73, mostly 20-45); students younger, retirees older.
    age = rng.normal(33.0, 10.0, n_users)
    age = np.where(occupation == OCCUPATIONS.index("student"), rng.normal(22.0, 4.0, n_users), age)
    age = np.where(occupation == OCCUPATIONS.index("retired"), rng.normal(63.0, 6.0, n_users), age)
    age = np.clip(np.round(age), 7, 73).astype(np.int64)
    gender = np.where(rng.random(n_users) < MALE_SHARE, "M", "F").astype(object)
    zip_code = np.char.zfill(rng.integers(0, 100_000, n_users).astype(str), 5).astype(object)
    return pd.DataFrame(
        {
            "user_id": np.arange(1, n_users + 1, dtype=np.int64),
            "age": pd.array(age, dtype="Int64"),
            "gender": pd.array(gender, dtype="str"),
            "occupation": pd.array(np.asarray(OCCUPATIONS, dtype=object)[occupation], dtype="str"),
            "zip_code": pd.array(zip_code, dtype="str"),
        }
    )
