"""The gateway's retained status on a broker, and who owns a gateway id when two boxes claim it.

The status message (``gateway.fleet.message``) is published retained on the sink's ``status_topic``: at
connect (birth), every ``gateway.status_interval`` and within 2 s of a change (devices ok/bad, config);
the last will is the same message with ``state: offline``, refreshed with every heartbeat so it says when
the gateway was last seen. The sink also subscribes to that topic, which is how a box learns it was
replaced. The rules, applied in this order, need no clock agreement between boxes in the usual cases:

1. A process connecting for the first time never stands down: starting a gateway is somebody's intent
   (the replacement box, or the old one deliberately started again).
2. On every later connect (a link that came back), the retained message is read *before* anything is
   published: another instance ``online`` there means someone took this id while we were away (and
   took over our broker session, which is why we were disconnected): stand down.
3. While online, a message from another instance that is ``online`` and started later (two boxes with one
   id at once, e.g. under different client ids): the later start wins, the other stands down.

Standing down = disconnect cleanly (so no last will overwrites the other box's status), never reconnect,
and tell the gateway (``FleetMember.stand_down``), which stops collecting. The box that stays re-publishes
its status at once when another instance's will lands on the topic after its own birth.
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

    def replaced_by_retained(self, payload: bytes) -> GatewayStatus | None:
        """Rule 2: the retained status a reconnecting link found; the claim that replaced us, if any."""
        other = self._other(payload)
        return other if other is not None and other.state == "online" else None

    def stale_will(self, payload: bytes) -> bool:
        """Another instance's ``offline`` landing while we are online: the will of the box we replaced, which
        a broker may publish only when it drops that box's connection (after our birth). The retained
        status must be ours again at once, not at the next heartbeat."""
        other = self._other(payload)
        return other is not None and other.state == "offline"

    def replaced_by_live(self, payload: bytes) -> GatewayStatus | None:
        """Rule 3: a status published while we are online; the claim that wins over ours, if any."""
        other = self._other(payload)
        if other is None or other.state != "online":
            return None
        mine = (self.member.started_ns, self.member.instance)
        return other if (other.started_ns, other.instance) > mine else None
