"""Which Litestream replicates this worker's databases right now: ours, when this
worker leads, or the leading worker's, when it stands by (the locks are _locks/workers.py)."""

from __future__ import annotations

import os
from pathlib import Path

from .._litestream.control import ControlClient, ControlError
from .._locks.leader_info import LeaderInfo
from .._locks.workers import Leadership
from .._state import Role, State


class Election:
    """This worker's role, the leader it follows, and the control socket to ask."""

    def __init__(self, leadership: Leadership, own_control: ControlClient) -> None:
        self.leadership = leadership
        self.role: Role | None = None
        self.leader = LeaderInfo(pid=None)  # what the leading worker published
        self.leader_ok = False  # the leader's Litestream answered when last asked
        self._own_control = own_control
        self._leader_control: ControlClient | None = None
        self._stale: list[ControlClient] = []

    def lead(self) -> None:
        self.role, self.leader_ok = Role.LEADER, False
        self.leader = LeaderInfo(pid=os.getpid())

    def stand_by(self) -> None:
        self.role = Role.STANDBY

    async def find_leader(self) -> bool:
        """True once another worker leads and its Litestream answers as published."""
        info = self.leadership.leader_info()
        if info is None or info.state is not State.RUNNING:
            return False
        self.role, self.leader = Role.STANDBY, info
        control = self.control()
        if control is None:
            return False
        try:
            found = await control.info()
        except ControlError:
            return False
        self.leader_ok = found.get("pid") == info.litestream_pid
        return self.leader_ok

    def heard_from_leader(self, answered: bool) -> None:
        """Whether the leader's Litestream answered the last health poll."""
        self.leader_ok = answered

    def leader_running(self) -> bool:
        """Re-read what the leader published; whether it says it replicates."""
        self.leader = self.leadership.leader_info() or self.leader
        running = self.leader.state is State.RUNNING
        self.leader_ok = self.leader_ok and running
        return running

    def control(self) -> ControlClient | None:
        """Our own control socket when leading; the leader's when standing by."""
        if self.role is not Role.STANDBY:
            return self._own_control
        socket = self.leader.socket
        if not socket:
            return None
        if self._leader_control is None or str(self._leader_control.socket_path) != socket:
            if self._leader_control is not None:
                self._stale.append(self._leader_control)  # a new leader, a new socket
            self._leader_control = ControlClient(Path(socket))
        return self._leader_control

    async def aclose(self) -> None:
        for client in (self._own_control, *self._stale, self._leader_control):
            if client is not None:
                await client.aclose()
