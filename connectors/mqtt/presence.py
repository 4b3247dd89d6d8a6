"""The gateway's retained status on a broker, and who owns a gateway id when two boxes claim it.

The status message (``gateway.fleet.message``) is published retained on the sink's ``status_topic``: at
connect (birth), every ``gateway.status_interval`` and within 2 s of a change (devices ok/bad, config);
the last will is the same message with ``state: offline``, refreshed with every heartbeat so it says when
the gateway was last seen. The sink also subscribes to that topic, which is how a box learns it was
replaced. One rule decides who keeps a gateway id: **of two instances, the one started later** (a start
is somebody's intent: the replacement box, or the old one deliberately started again). Applied:

1. A process connecting for the first time never stands down.
2. On every later connect (a link that came back, whose broker session another box may have taken, which is
   why it was disconnected), the retained status is read *before* anything is published: another instance
   ``online`` there that started later took the id while we were away: stand down. An older instance's
   status there (the box we replaced, or a message of ours it re-sent on its way out) does not count: our
   birth replaces it.
3. While online, the same for every status that arrives (two boxes with one id at once).

Standing down = disconnect cleanly (so no last will overwrites the other box's status), never reconnect,
and tell the gateway (``FleetMember.stand_down``), which stops collecting. The box that stays re-publishes
its status at once when another instance's will (or anything else of an older instance) lands on the topic
after its own birth. Boxes' clocks need
to agree to better than the time between starting the two (NTP does; minutes are typical).
"""

from __future__ import annotations

import structlog

from gateway.fleet.member import FleetMember
from gateway.fleet.message import GatewayStatus

RETAINED_WAIT = 2.0
"""Seconds a reconnecting link waits for the retained status before it publishes without having seen one
(a broker that lost it). It usually arrives within milliseconds: the gateway published it before."""


class Presence:
    def __init__(self, member: FleetMember, topic: str, log: structlog.stdlib.BoundLogger) -> None:
        self.member = member
        self.topic = topic
        self.log = log

    @property
    def interval(self) -> float:
        return self.member.status_interval

    def status(self, state: str = "online") -> GatewayStatus:
        return self.member.status("offline" if state == "offline" else "online")

    def _other(self, payload: bytes) -> GatewayStatus | None:
        """The status in ``payload`` if it is another instance's of this gateway id, else None."""
        try:
            status = GatewayStatus.parse(payload)
        except ValueError:
            return None  # an older gateway's plain `online`, or something else on the topic: not a claim
        if status.instance == self.member.instance or status.id != self.member.id:
            return None
        return status

    def replaced_by(self, payload: bytes) -> GatewayStatus | None:
        """Rules 2 and 3: the claim in ``payload`` that wins over ours (another instance of our id, online,
        started later), if it is one."""
        other = self._other(payload)
        if other is None or other.state != "online":
            return None
        mine = (self.member.started_ns, self.member.instance)
        return other if (other.started_ns, other.instance) > mine else None

    def overwritten(self, payload: bytes) -> bool:
        """Another instance's status that does not win landed while we are online: the will of the box we
        replaced (a broker may publish it only when it drops that box's connection, after our birth), or a
        status that box had queued and re-sent on its way out. The retained status must be ours again at
        once, not at the next heartbeat."""
        return self._other(payload) is not None and self.replaced_by(payload) is None
