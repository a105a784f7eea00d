"""The h2 connection object an upstream connection drives: our SETTINGS, and one patch.

Owns what we announce to a backend (ENABLE_PUSH 0, our stream window, the header-list bound;
then the connection window raised by a WINDOW_UPDATE: ``gateway/http/h2_upstream``) and
the one place where we change h2's behaviour: a received GOAWAY must let the streams up to
its last-stream-id finish (RFC 9113 §6.8), but h2 moves to CLOSED on it, rejects every later
frame and clears its outbound buffer (python-hyper/h2#1181). ``_ClientStateMachine`` stays
open instead; ``UpstreamH2`` keeps the queued frames. Whoever drives it must open no new
stream after a GOAWAY. Must never do I/O.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.settings

from gateway.http.h2_upstream import CONNECTION_WINDOW_BYTES, STREAM_WINDOW_BYTES

_DEFAULT_WINDOW_BYTES = 65_535  # RFC 9113 §6.9.2: every window starts here
_ConnectionState = h2.connection.ConnectionState
_ConnectionInputs = h2.connection.ConnectionInputs


class _ClientStateMachine(h2.connection.H2ConnectionStateMachine):  # type: ignore[misc]
    """h2's connection state machine, except that a received GOAWAY keeps an open client
    connection open: streams up to the GOAWAY's last-stream-id may still complete (RFC 9113
    §6.8). We stop opening streams ourselves once it arrived."""

    _transitions = {
        **h2.connection.H2ConnectionStateMachine._transitions,
        (_ConnectionState.CLIENT_OPEN, _ConnectionInputs.RECV_GOAWAY): (
            None,
            _ConnectionState.CLIENT_OPEN,
        ),
    }


class UpstreamH2(h2.connection.H2Connection):  # type: ignore[misc]
    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config)
        self.state_machine = _ClientStateMachine()

    def clear_outbound_data_buffer(self) -> None:
        """h2 calls this on a received GOAWAY only; the frames queued for the streams the
        GOAWAY lets finish must still go out (dropping a DATA frame would corrupt a body)."""


def new_upstream_h2(max_header_bytes: int) -> UpstreamH2:
    """A client h2 connection with its preface, SETTINGS and connection window queued."""
    conn = UpstreamH2(h2.config.H2Configuration(client_side=True, header_encoding=None))
    # initial_values: h2's setters would only queue a change for a later SETTINGS frame.
    conn.local_settings = h2.settings.Settings(
        client=True,
        initial_values={
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 0,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW_BYTES,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: max_header_bytes,
        },
    )
    # h2 applies MAX_HEADER_LIST_SIZE to its HPACK decoder only once the backend acknowledged
    # our SETTINGS; set it now so the bound holds from the first response on.
    conn.decoder.max_header_list_size = max_header_bytes
    conn.initiate_connection()
    conn.increment_flow_control_window(CONNECTION_WINDOW_BYTES - _DEFAULT_WINDOW_BYTES)
    return conn
