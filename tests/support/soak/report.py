"""What a soak run counted and found."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Report:
    events: int = 0
    duplicates_sent: int = 0
    stale_sent: int = 0
    answers: Counter[str] = field(default_factory=Counter)  # what ingest answered, by result
    hand_edits: Counter[str] = field(default_factory=Counter)  # the therapists' own, by kind
    google_actions: Counter[str] = field(default_factory=Counter)  # in Google's UI, by kind
    negatives_sent: Counter[str] = field(default_factory=Counter)  # intended refusals, by rule
    refused: Counter[str] = field(default_factory=Counter)  # refusals seen, by rule
    kills: int = 0
    faults: Counter[str] = field(default_factory=Counter)  # by target and action
    passes: Counter[str] = field(default_factory=Counter)  # every pass, by outcome
    passes_with_changes: int = 0
    final_restarts: int = 0  # starts after the convergence, to deliver the last notifications
    targets: Counter[str] = field(default_factory=Counter)  # therapists per calendar server
    offers: dict[str, int] = field(default_factory=dict)
    checks: int = 0
    mismatches: list[str] = field(default_factory=list)
    expired_offers: int = 0
    # holds released: seconds after expiry with a daemon running; after the restarted daemon
    # was ready when none was running at expiry (<= 0: by its first sweep, before anything else)
    release_lag: list[float] = field(default_factory=list)
    release_after_restart: list[float] = field(default_factory=list)
    notifications: Counter[str] = field(default_factory=Counter)  # outbox rows, by topic
    deliveries: int = 0  # webhook POSTs received (at least once: repeats included)
    torn_posts: int = 0  # POSTs whose body was cut short (the sender was killed mid-send)
    seconds: float = 0.0

    def summary(self) -> str:
        lag = sorted(self.release_lag)
        lag_text = f"{lag[len(lag) // 2]:.3f}/{lag[-1]:.3f}" if lag else "-"
        after = self.release_after_restart
        after_text = f"{len(after)} (latest {max(after):+.3f}s after ready)" if after else "0"
        return "\n".join(
            [
                f"events={self.events} duplicates={self.duplicates_sent} "
                f"stale={self.stale_sent} kills={self.kills} seconds={self.seconds:.1f}",
                f"answers={dict(sorted(self.answers.items()))} "
                f"hand_edits={dict(sorted(self.hand_edits.items()))} "
                f"google_actions={dict(sorted(self.google_actions.items()))}",
                f"therapists={dict(self.targets)}",
                f"refused={sum(self.refused.values())} by_rule={dict(sorted(self.refused.items()))}"
                f" intended={dict(sorted(self.negatives_sent.items()))}",
                f"faults={sum(self.faults.values())} {dict(sorted(self.faults.items()))}",
                f"passes={sum(self.passes.values())} {dict(sorted(self.passes.items()))} "
                f"passes_with_changes={self.passes_with_changes}",
                f"offers={self.offers} expired_offers={self.expired_offers} "
                f"hold_release_s(median/max)={lag_text} expired_while_down={after_text}",
                f"notifications={sum(self.notifications.values())} "
                f"{dict(sorted(self.notifications.items()))} webhook_posts={self.deliveries} "
                f"torn_posts={self.torn_posts}",
                f"convergence_checks={self.checks} final_restarts={self.final_restarts} "
                f"mismatches={len(self.mismatches)}",
            ]
        )
