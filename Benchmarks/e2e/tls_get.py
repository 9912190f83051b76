"""A TLS blob GET that is not the bottleneck of the measurement.

curl 7.88 takes a TLS stream at about 1.3 GB/s on this machine kind, at 91-99 %
of one core: OpenSSL without read-ahead makes two `read`s per 16 KiB record (its
5-byte header, then its body), and curl copies each record out again. This
client reads the socket in 1 MiB gulps into an OpenSSL memory BIO and decrypts
from there into one reused buffer, so it spends about half of curl's CPU per
byte, and the figure it reports is the server's.
"""

import resource
import socket
import ssl
import time
from urllib.parse import urlsplit


def get(url: str, cafile: str, authorization: str | None = None) -> tuple[int, float, float]:
    """GETs `url` over TLS (HTTP/1.1) and discards the body.

    Returns the body's length, the seconds from the request to its last byte,
    and the client's CPU seconds in that time.
    """
    parts = urlsplit(url)
    context = ssl.create_default_context(cafile=cafile)
    context.set_alpn_protocols(["http/1.1"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=parts.hostname)
    gulp = bytearray(1 << 20)
    gulp_view = memoryview(gulp)
    with socket.create_connection((parts.hostname, parts.port)) as sock:

        def send_pending() -> None:
            if data := outgoing.read():
                sock.sendall(data)

        def receive() -> None:
            n = sock.recv_into(gulp)
            if n == 0:
                raise ConnectionError("the server closed the connection")
            incoming.write(gulp_view[:n])

        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                send_pending()
                receive()
        send_pending()
        head = f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n"
        if authorization:
            head += f"Authorization: {authorization}\r\n"
        tls.write((head + "\r\n").encode())
        send_pending()

        start, cpu_start = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        buffer = bytearray(1 << 16)
        view = memoryview(buffer)
        response = b""
        while b"\r\n\r\n" not in response:
            try:
                response += bytes(view[: tls.read(len(buffer), buffer)])
            except ssl.SSLWantReadError:
                receive()
        head_bytes, _, body_start = response.partition(b"\r\n\r\n")
        status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
        if status_line.split()[1] != "200":
            raise RuntimeError(f"GET {url}: {status_line}")
        length = next(int(line.split(":", 1)[1]) for line in header_lines if line.lower().startswith("content-length:"))
        received = len(body_start)
        read = tls.read
        while received < length:
            try:
                received += read(len(buffer), buffer)
            except ssl.SSLWantReadError:
                receive()
        elapsed = time.perf_counter() - start
        cpu_end = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_end.ru_utime - cpu_start.ru_utime) + (cpu_end.ru_stime - cpu_start.ru_stime)
    return received, elapsed, cpu
