"""What the simulated wedding platform runs: services, their query mixes, seasonal profiles, pacing.

Pure (no I/O): ``streams.demo.simulate`` executes it. Queries use psycopg ``%s`` parameters;
those marked ``inline`` are sent with their values merged into the SQL text as literals (as
many real services do), which the SDK must strip before anything leaves the process.

The one designed slow path is ``booking.vendor_schedule``: on the primary-key-only demo
database it scans all of ``bookings``; a partial index on ``bookings (vendor_id, event_date)
WHERE status IN ('confirmed','pending')`` makes it (and ``vendor.availability``) fast.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import threading
from dataclasses import dataclass, field
from typing import Callable, Mapping

from streams.demo.schema import (
    CITIES,
    EVENT_DATE_DAYS,
    EVENT_DATE_START,
    FIRST_NAMES,
    LAST_NAMES,
    MEAL_CHOICES,
    NOTIFICATION_CHANNELS,
    PAYMENT_METHODS,
    RSVP_STATUSES,
    TIMELINE_TITLES,
    VENDOR_CATEGORIES,
)

SERVICES: tuple[str, ...] = ("booking", "vendor", "payment", "timeline", "guest", "notification", "analytics")
# each service's share of the off-season base rate
BASE_SHARE: Mapping[str, float] = {
    "booking": 0.25,
    "vendor": 0.25,
    "payment": 0.10,
    "timeline": 0.10,
    "guest": 0.15,
    "notification": 0.10,
    "analytics": 0.05,
}


@dataclass(frozen=True)
class Population:
    """Row counts of the demo tables (highest loaded id), read once when the simulator starts."""

    vendors: int
    weddings: int
    bookings: int
    payments: int
    timeline_events: int
    guests: int
    notifications: int


@dataclass(frozen=True)
class Call:
    """One execution: the parameter values and the business context for the SDK event."""

    params: tuple[object, ...]
    context: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Query:
    name: str  # "<service>.<what>"
    sql: str  # psycopg %s placeholders
    weight: float
    make: Callable[[random.Random, Population], Call]
    inline: bool = False  # merge the values into the SQL text as literals


@dataclass(frozen=True)
class Profile:
    """A season: a rate multiplier per service over the off-season base rate.

    ``hold_ms``: how long a request of the service keeps its pooled connection after its query
    (the service's own work inside its transaction); ``pool_size``: the service's pool max_size.
    Unset: no hold, and a pool of one connection per worker thread.
    """

    name: str
    description: str
    multipliers: Mapping[str, float]
    hold_ms: Mapping[str, float] = field(default_factory=dict)
    pool_size: Mapping[str, int] = field(default_factory=dict)


# -- value generators ------------------------------------------------------------------------


def _id(rng: random.Random, count: int) -> int:
    return rng.randint(1, max(1, count))


def _date(rng: random.Random) -> dt.date:
    return dt.date.fromisoformat(EVENT_DATE_START) + dt.timedelta(days=rng.randrange(EVENT_DATE_DAYS))


def _amount(rng: random.Random) -> float:
    return round(rng.uniform(200, 10_000), 2)


def _token(rng: random.Random) -> str:
    return f"{rng.getrandbits(32):08x}"


def _wedding_of(row_id: int, pop: Population) -> int:
    """Wedding of a loaded guest or timeline event (the loader spreads them round-robin)."""
    return 1 + (row_id - 1) % pop.weddings


def _guest(rng: random.Random, pop: Population) -> tuple[int, int]:
    """(wedding_id, id) of a loaded guest."""
    guest = _id(rng, pop.guests)
    return _wedding_of(guest, pop), guest


def _for_wedding(wedding: int, *rest: object) -> Call:
    """Parameters starting with a wedding id, which also goes into the event's context."""
    return Call((wedding, *rest), {"wedding_id": str(wedding)})


def _wedding_call(rng: random.Random, pop: Population) -> Call:
    return _for_wedding(_id(rng, pop.weddings))


def _new_booking(rng: random.Random, pop: Population) -> Call:
    amount = _amount(rng)
    return Call((_id(rng, pop.weddings), _id(rng, pop.vendors), _date(rng), amount, round(amount * 0.2, 2)))


def _vendor_search(rng: random.Random, pop: Population) -> Call:
    category = rng.choice(VENDOR_CATEGORIES)
    return Call((category, rng.choice(CITIES)), {"vendor_category": category})


def _new_timeline_event(rng: random.Random, pop: Population) -> Call:
    starts = dt.datetime.combine(_date(rng), dt.time(rng.randrange(8, 22)), dt.timezone.utc)
    return _for_wedding(
        _id(rng, pop.weddings), rng.choice(TIMELINE_TITLES), starts, rng.choice((15, 30, 45, 60, 90)), rng.choice(CITIES)
    )


def _move_timeline_event(rng: random.Random, pop: Population) -> Call:
    event = _id(rng, pop.timeline_events)
    wedding = _wedding_of(event, pop)
    return Call((rng.choice((-30, -15, 15, 30)), wedding, event), {"wedding_id": str(wedding)})


def _rsvp(rng: random.Random, pop: Population) -> Call:
    wedding, guest = _guest(rng, pop)
    return Call((rng.choice(RSVP_STATUSES[1:]), rng.choice(MEAL_CHOICES), wedding, guest), {"wedding_id": str(wedding)})


def _new_guest(rng: random.Random, pop: Population) -> Call:
    """A guest whose name and e-mail carry a random tag, so a leak of either is easy to spot."""
    first, last, tag = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES), _token(rng)
    return _for_wedding(_id(rng, pop.weddings), f"{first} {last}-{tag}", f"{first.lower()}.{tag}@guests.example", "pending")


def _id_range(rng: random.Random, count: int, width: int = 1000) -> tuple[int, int]:
    lo = _id(rng, max(1, count - width))
    return lo, lo + width - 1


# -- the services' queries -------------------------------------------------------------------

QUERIES: Mapping[str, tuple[Query, ...]] = {
    "booking": (
        Query(
            "booking.get",
            "SELECT b.id, b.status, b.event_date, b.amount, v.name, v.category"
            " FROM bookings b JOIN vendors v ON v.id = b.vendor_id WHERE b.id = %s",
            25, lambda rng, pop: Call((_id(rng, pop.bookings),)), inline=True,
        ),
        Query(
            "booking.vendor_schedule",
            "SELECT id, event_date, amount FROM bookings"
            " WHERE vendor_id = %s AND status IN ('confirmed', 'pending') AND event_date >= %s"
            " ORDER BY event_date LIMIT 20",
            30, lambda rng, pop: Call((_id(rng, pop.vendors), _date(rng))),
        ),
        Query(
            "booking.create",
            "INSERT INTO bookings (wedding_id, vendor_id, status, event_date, amount, deposit)"
            " VALUES (%s, %s, 'pending', %s, %s, %s) RETURNING id",
            15, _new_booking,
        ),
        Query(
            "booking.confirm",
            "UPDATE bookings SET status = 'confirmed', updated_at = now() WHERE id = %s AND status = 'pending'",
            20, lambda rng, pop: Call((_id(rng, pop.bookings),)),
        ),
        Query(
            "booking.cancel",
            "UPDATE bookings SET status = %s, updated_at = now() WHERE id = %s",
            10, lambda rng, pop: Call(("cancelled", _id(rng, pop.bookings))),
        ),
    ),
    "vendor": (
        Query(
            "vendor.search",
            "SELECT id, name, rating, base_price FROM vendors"
            " WHERE category = %s AND city = %s AND is_active ORDER BY rating DESC, id LIMIT 20",
            40, _vendor_search, inline=True,
        ),
        Query(
            "vendor.profile",
            "SELECT id, name, category, city, rating, base_price FROM vendors WHERE id = %s",
            40, lambda rng, pop: Call((_id(rng, pop.vendors),)),
        ),
        Query(
            "vendor.availability",
            "SELECT count(*) FROM bookings"
            " WHERE vendor_id = %s AND event_date = %s AND status IN ('confirmed', 'pending')",
            10, lambda rng, pop: Call((_id(rng, pop.vendors), _date(rng))),
        ),
        Query(
            "vendor.rate",
            "UPDATE vendors SET rating = %s WHERE id = %s",
            10, lambda rng, pop: Call((round(rng.uniform(2.5, 5.0), 1), _id(rng, pop.vendors))),
        ),
    ),
    "payment": (
        Query(
            "payment.get",
            "SELECT id, booking_id, amount, status, paid_at FROM payments WHERE id = %s",
            40, lambda rng, pop: Call((_id(rng, pop.payments),)),
        ),
        Query(
            "payment.create",
            "INSERT INTO payments (booking_id, amount, method, status) VALUES (%s, %s, %s, 'pending') RETURNING id",
            30,
            lambda rng, pop: Call((_id(rng, pop.bookings), _amount(rng), rng.choice(PAYMENT_METHODS))),
            inline=True,
        ),
        Query(
            "payment.settle",
            "UPDATE payments SET status = 'settled', paid_at = now() WHERE id = %s AND status = 'pending'",
            30, lambda rng, pop: Call((_id(rng, pop.payments),)),
        ),
    ),
    "timeline": (
        Query(
            "timeline.day",
            "SELECT id, title, starts_at, duration_minutes, location FROM timeline_events"
            " WHERE wedding_id = %s ORDER BY starts_at",
            60, _wedding_call,
        ),
        Query(
            "timeline.add",
            "INSERT INTO timeline_events (wedding_id, title, starts_at, duration_minutes, location)"
            " VALUES (%s, %s, %s, %s, %s)",
            20, _new_timeline_event, inline=True,
        ),
        Query(
            "timeline.move",
            "UPDATE timeline_events SET starts_at = starts_at + %s * interval '1 minute'"
            " WHERE wedding_id = %s AND id = %s",
            20, _move_timeline_event,
        ),
    ),
    "guest": (
        Query(
            "guest.list",
            "SELECT id, full_name, rsvp_status, meal_choice, table_no FROM guests WHERE wedding_id = %s ORDER BY id",
            40, _wedding_call,
        ),
        Query(
            "guest.rsvp",
            "UPDATE guests SET rsvp_status = %s, meal_choice = %s WHERE wedding_id = %s AND id = %s",
            25, _rsvp,
        ),
        Query(
            "guest.add",
            "INSERT INTO guests (wedding_id, full_name, email, rsvp_status) VALUES (%s, %s, %s, %s)",
            20, _new_guest, inline=True,
        ),
        Query(
            "guest.tables",
            "SELECT table_no, count(*) FROM guests WHERE wedding_id = %s GROUP BY table_no ORDER BY table_no",
            10, _wedding_call,
        ),
        Query(
            "guest.remove",
            "DELETE FROM guests WHERE wedding_id = %s AND id = %s",
            5, lambda rng, pop: _for_wedding(*_guest(rng, pop)),
        ),
    ),
    "notification": (
        Query(
            "notification.pending_rsvps",
            "SELECT id, email FROM guests WHERE wedding_id = %s AND rsvp_status = 'pending'",
            40, _wedding_call,
        ),
        Query(
            "notification.enqueue",
            "INSERT INTO notifications (wedding_id, channel, kind, status) VALUES (%s, %s, %s, 'queued') RETURNING id",
            40,
            lambda rng, pop: _for_wedding(
                _id(rng, pop.weddings), rng.choice(NOTIFICATION_CHANNELS), rng.choice(("rsvp_reminder", "payment_due"))
            ),
        ),
        Query(
            "notification.mark_sent",
            "UPDATE notifications SET status = 'sent', sent_at = now() WHERE id = %s",
            20, lambda rng, pop: Call((_id(rng, pop.notifications),)),
        ),
    ),
    "analytics": (
        Query(
            "analytics.category_stats",
            "SELECT category, count(*), avg(rating) FROM vendors WHERE is_active GROUP BY category",
            40, lambda rng, pop: Call(()),
        ),
        Query(
            "analytics.wedding_budgets",
            "SELECT status, count(*), avg(budget) FROM weddings WHERE id BETWEEN %s AND %s GROUP BY status",
            40, lambda rng, pop: Call(_id_range(rng, pop.weddings)), inline=True,
        ),
        Query(
            "analytics.failed_notifications",
            "SELECT channel, count(*) FROM notifications WHERE id BETWEEN %s AND %s AND status = 'failed'"
            " GROUP BY channel",
            20, lambda rng, pop: Call(_id_range(rng, pop.notifications)),
        ),
    ),
}

SLOW_BOOKING_QUERY: Query = QUERIES["booking"][1]

PROFILES: Mapping[str, Profile] = {
    p.name: p
    for p in (
        Profile("off-season", "quiet months: the base rate", {s: 1.0 for s in SERVICES}),
        Profile(
            "peak-season",
            "April-October: ~4x traffic everywhere",
            {**{s: 4.0 for s in SERVICES}, "analytics": 2.0},
        ),
        Profile(
            "proposal-surge",
            "November-February: booking traffic up to 10x, payments and vendor browsing follow",
            {"booking": 10.0, "vendor": 3.0, "payment": 6.0, "timeline": 1.0, "guest": 1.0,
             "notification": 3.0, "analytics": 1.0},
        ),
        Profile(
            "saturday",
            "wedding day: timelines, guest lists and notifications dominate",
            {"booking": 1.0, "vendor": 1.0, "payment": 1.0, "timeline": 6.0, "guest": 5.0,
             "notification": 4.0, "analytics": 0.5},
        ),
        Profile(
            "wedding-day",
            "a peak-season Saturday: the saturday mix at 4x, and the notification service keeps its pooled "
            "connection while it calls the SMS provider (250 ms): its pool of 4 saturates, clients wait",
            {"booking": 4.0, "vendor": 4.0, "payment": 4.0, "timeline": 24.0, "guest": 20.0,
             "notification": 16.0, "analytics": 2.0},
            hold_ms={"notification": 250.0},
            pool_size={"notification": 4},
        ),
    )
}


# -- rates and pacing ------------------------------------------------------------------------


def service_rates(profile: Profile, base_rate: float, services: tuple[str, ...] = SERVICES) -> dict[str, float]:
    """Queries/s per service: base rate x the service's share x the profile's multiplier."""
    unknown = sorted(set(services) - set(SERVICES))
    if unknown:
        raise ValueError(f"unknown service(s) {unknown}; known: {', '.join(SERVICES)}")
    return {s: base_rate * BASE_SHARE[s] * profile.multipliers[s] for s in SERVICES if s in services}


def workers_for(rate: float, per_worker: float = 20.0, most: int = 4) -> int:
    """Connections a service needs for ``rate`` queries/s (each worker paces ~``per_worker``/s)."""
    return max(1, min(most, math.ceil(rate / per_worker)))


def threads_for(rate: float, hold_ms: float, most: int = 32) -> int:
    """Worker threads that offer ``rate`` requests/s when each keeps its connection ``hold_ms``
    (Little's law with half again as many, so a pool smaller than the demand has clients waiting)."""
    return max(workers_for(rate), min(most, math.ceil(rate * hold_ms / 1000 * 1.5) + 1))


def pick(rng: random.Random, service: str) -> Query:
    queries = QUERIES[service]
    return rng.choices(queries, weights=[q.weight for q in queries])[0]


class Pacer:
    """Open-loop schedule shared by a service's workers: slot i is due at ``start + i / rate``.

    Workers claim slots whatever the database's speed, so a slow database shows up as a lower
    achieved rate, not as a lower offered one. When the schedule falls more than ``max_lag``
    seconds behind, it restarts from now: the missed slots are skipped (counted in ``skipped``)
    instead of being fired in one burst.
    """

    def __init__(self, rate: float, start: float, end: float, max_lag: float = 1.0) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.start = start
        self.end = end
        self.max_lag = max_lag
        self.claimed = 0
        self.skipped = 0
        self._lock = threading.Lock()

    def claim(self, now: float) -> float | None:
        """The due time of the next slot, or None once the schedule has reached ``end``."""
        with self._lock:
            due = self.start + self.claimed / self.rate
            if now - due > self.max_lag:
                current = math.floor((now - self.start) * self.rate + 1e-9)  # the slot due at ``now``
                self.skipped += current - self.claimed
                self.claimed = current
                due = self.start + current / self.rate
            if due >= self.end:
                return None
            self.claimed += 1
            return due
