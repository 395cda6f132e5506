"""Handing a session's sockets to the relay thread and taking them back (mixed into ClientConnection).

``_hand_off`` gives a session that is between statements to the C relay thread
(``relay_thread.py``): a pass-through one for good, a governed one with a lane
(``session/lane.py``). The thread gives a governed session back (``relay_returned``) at the
first message Python must judge: new uvloop transports are made for its sockets
(``_take_back``), what the thread had read and what arrives meanwhile is relayed first, in
order, and the session goes back once idle (``_rehand``). The attributes used are
ClientConnection's; the socket I/O of the live session stays in ``server.py``.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket

from .session import events as ev
from .relay_thread import take_back
from .session.lane import absorb, lane_tables

log = logging.getLogger("pgveil.server")

# ClientConnection.pair between closing the transports and the relay thread taking the sockets,
# and between the relay thread giving a governed session back and its new transports being made.
HANDING_OFF = object()
RETURNING = object()
# A lane that relayed fewer statements than this before returning was not worth it: the session
# waits twice as many statements on the loop as the last time before the next hand-off.
LANE_WORTH = 32
LANE_MAX_WAIT = 4096


class HandOff:
    """Mixed into ClientConnection: the relay thread's side of a session's life."""

    def _hand_off(self) -> None:
        """Give the session's sockets to the relay thread, where there is one and it can take them.

        Only at a point where nothing is pending on either side: every byte read so far was
        relayed, both transports' write buffers are empty and both streams are on message
        boundaries. The transports are closed (uvloop stops reading at once; dups keep the
        sockets open) before the thread sees the sockets, so no byte is read twice or lost.
        """
        relay = self.proxy.relay_thread
        backend = self.backend
        if (relay is None or self.closed or self.pair is not None or self._held_client or self._held_backend
                or not self.session.can_hand_off()):
            return
        lane = None
        if self.session.governed is not None:
            generation = relay.lane_generation()  # before the tables: a swap from here on voids them
            tables = lane_tables(self.session.governed, relay.lane_queries)
            if tables is None:
                return
            lane = (generation, *tables)
        client_t, backend_t = self.transport, backend.transport
        if client_t.get_write_buffer_size() or backend_t.get_write_buffer_size():
            return
        if any(t.get_extra_info(k) is not None for t in (client_t, backend_t) for k in ("sslcontext", "ssl_object")):
            return
        client_sock, backend_sock = client_t.get_extra_info("socket"), backend_t.get_extra_info("socket")
        if client_sock is None or backend_sock is None:
            return
        client_fd, backend_fd = os.dup(client_sock.fileno()), os.dup(backend_sock.fileno())
        session = self.session
        # Closed first: from here on uvloop reads neither socket (the dups keep them open).
        backend.client = None  # its transport closing now is not the session's end
        self.pair = HANDING_OFF
        client_t.close()
        backend_t.close()
        try:
            self.pair = relay.adopt(self, client_fd, backend_fd, session.in_flight, session.transaction_status,
                                    self.proxy.settings.max_message_size, lane)
        except Exception:  # the core closed the fds: the session ends as if the client had left
            log.exception("the relay thread could not take a session")
            self.pair = None
            if session.in_flight:
                self.proxy.cancel_backend(session)
            session.ended_elsewhere()
            self._close()
            return
        backend._relay = None
        backend._after_write = None
        self._backend_write = None

    def _rehand(self) -> None:
        """A governed session back from the relay thread goes there again once idle and its wait is over."""
        session = self.session
        if session.in_flight == 0 and session.governed.syncs_sent >= self._lane_after:
            self._hand_off()

    def relay_returned(self) -> None:
        """The relay thread gives this governed session back: a message waits for Python's judgement."""
        pair = self.pair
        back = take_back(pair)
        client_fd, backend_fd = back.client_fd, back.backend_fd
        self.pair = RETURNING
        syncs = back.syncs
        absorb(self.session, back)
        self._lane_wait = 0 if syncs >= LANE_WORTH else min(max(1, 2 * self._lane_wait), LANE_MAX_WAIT)
        self._lane_after = self.session.governed.syncs_sent + self._lane_wait
        if self.closed:
            self.pair = None
            os.close(client_fd)
            os.close(backend_fd)
            return
        if self._final is not None:  # ended while the thread was giving it back
            self._end_returned(client_fd, backend_fd, self._final)
            return
        self._held_client[:] = back.client_bytes
        self._held_backend[:] = back.backend_bytes
        self._spawn(self._take_back(client_fd, backend_fd))

    def _end_returned(self, client_fd: int, backend_fd: int, final: bytes) -> None:
        """End a session whose sockets came back from the thread, without making transports for them."""
        try:
            os.write(client_fd, final)  # a short FATAL error on an idle, non-blocking socket
        except OSError:
            pass
        try:
            os.write(backend_fd, b"X\x00\x00\x00\x04")
        except OSError:
            pass
        os.close(client_fd)
        os.close(backend_fd)
        if self.session.in_flight:
            self.proxy.cancel_backend(self.session)
        self.pair = None
        self.session.ended_elsewhere()
        self._close()

    async def _take_back(self, client_fd: int, backend_fd: int) -> None:
        """New transports for the sockets; the bytes the thread had read, and any read meanwhile, relayed first.

        Until the session has both transports, what they read is held (``data_received``,
        ``on_backend_data``) and their closing ignored; it is looked at here afterwards.
        """
        loop = asyncio.get_running_loop()
        backend = self.backend
        old = (self.transport, backend.transport)
        socks = [None, None]
        try:
            socks[0] = socket.socket(fileno=client_fd)
            socks[1] = socket.socket(fileno=backend_fd)
            await loop.connect_accepted_socket(lambda: self, sock=socks[0])
            backend.client = self
            await loop.create_connection(lambda: backend, sock=socks[1])
        except Exception:  # fail closed: the session ends (its statement, if any, is cancelled)
            log.exception("a session could not be taken back from the relay thread")
            # each fd closed once: by the transport made from it, else its socket object, else here
            for fd, sock, before, now in zip((client_fd, backend_fd), socks, old, (self.transport, backend.transport)):
                if now is not before:
                    now.close()
                elif sock is not None:
                    sock.close()
                else:
                    os.close(fd)
            self.pair = None
            if self.session.in_flight:
                self.proxy.cancel_backend(self.session)
            self.session.ended_elsewhere()
            self._close()
            return
        self.pair = None
        backend.relay_to(self)
        self._backend_write = backend.transport.write
        if self._final is not None:
            self.terminate_now(self._final)
            return
        held_backend, held_client = bytes(self._held_backend), bytes(self._held_client)
        self._held_backend.clear()
        self._held_client.clear()
        # All of it relayed before the session may be handed off again (_after_write still None here).
        if held_backend:
            self.on_backend_data(held_backend)
        if held_client and not self.closed:
            self.data_received(held_client)
        if backend.transport.is_closing():  # it closed while held: its connection_lost was ignored
            self.on_backend_closed()
        if self.transport.is_closing() and not self.closed:
            self._apply(self.session.handle(ev.ClientClosed()))
            self._close()
        if not self.closed:
            backend._after_write = self._rehand
            self._rehand()

    def relay_closed(self, cancel: bool) -> None:
        """The relay thread closed this session's sockets; cancel what the client left running."""
        if cancel:
            self.proxy.cancel_backend(self.session)
        self.session.ended_elsewhere()
        self._close()
