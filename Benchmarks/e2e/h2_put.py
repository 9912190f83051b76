"""An HTTP/2 upload that uses the frame size and windows the server offers.

curl 7.88 and nghttp send 16 KiB DATA frames whatever the server allows, and
curl writes each frame's 9-byte header as a TLS record of its own. This client
(the `h2` package for the framing, `ssl` for TLS) sends DATA frames as large as
the server's SETTINGS_MAX_FRAME_SIZE allows, capped at a quarter of the stream
window so that the window's updates keep the pipe full; it is how a push over
HTTP/2 compares with one over HTTP/1.1 when the client is not the limit.
"""

import select
import socket
import ssl
import time
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events


def put(url: str, path: str, size: int, cafile: str, headers: dict[str, str]) -> tuple[int, float]:
    """PUTs the file at `path` (`size` bytes) to `url` over TLS with HTTP/2.

    Returns the response's status and the seconds from the request's first
    byte to the response.
    """
    parts = urlsplit(url)
    context = ssl.create_default_context(cafile=cafile)
    context.set_alpn_protocols(["h2"])
    raw = socket.create_connection((parts.hostname, parts.port))
    with context.wrap_socket(raw, server_hostname=parts.hostname) as sock, open(path, "rb") as body:
        if sock.selected_alpn_protocol() != "h2":
            raise RuntimeError(f"{url}: the server did not negotiate h2")
        connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        connection.initiate_connection()
        sock.sendall(connection.data_to_send())
        status: int | None = None
        settings_received = ended = False

        def receive() -> None:
            nonlocal status, settings_received, ended
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError(f"{url}: the server closed the connection")
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.RemoteSettingsChanged):
                    settings_received = True
                elif isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
                elif isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    raise RuntimeError(f"{url}: {event}")
            if pending := connection.data_to_send():
                sock.sendall(pending)

        while not settings_received:
            receive()
        start = time.perf_counter()
        stream = connection.get_next_available_stream_id()
        request = [(":method", "PUT"), (":scheme", "https"), (":authority", parts.netloc),
                   (":path", parts.path + (f"?{parts.query}" if parts.query else "")),
                   ("content-type", "application/octet-stream"), ("content-length", str(size))]
        connection.send_headers(stream, request + [(k.lower(), v) for k, v in headers.items()])
        sent = 0
        while sent < size:
            window = connection.local_flow_control_window(stream)
            frame = min(window, connection.max_outbound_frame_size, connection.remote_settings.initial_window_size // 4,
                        size - sent)
            if frame <= 0:
                receive()
                continue
            connection.send_data(stream, body.read(frame), end_stream=sent + frame == size)
            sent += frame
            sock.sendall(connection.data_to_send())
            # Take the window updates as they come, without waiting for them.
            while select.select([sock], [], [], 0)[0] or sock.pending():
                receive()
        while not ended:
            receive()
        elapsed = time.perf_counter() - start
    if status is None:
        raise RuntimeError(f"{url}: no response")
    return status, elapsed
