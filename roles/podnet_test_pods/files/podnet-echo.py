#!/usr/bin/python3
"""podnet-echo: the tiny server every podnet test pod runs.

It answers on every port it is given, TCP (as HTTP/1.0, so curl works) and
UDP, with one JSON line saying who answered and whom it saw:

    {"pod": "web-0", "ip": "10.244.1.2", "port": 8080, "proto": "tcp",
     "client": "10.244.2.3", "client_port": 40312}

"client" is the source address as the pod saw it, which is how the tests tell
a masqueraded connection from one that kept the client's address.

Usage: podnet-echo.py --name web-0 --listen tcp:8080 --listen udp:8080
Standard library only: it runs on any node's /usr/bin/python3.
"""

import argparse
import json
import socket
import socketserver
import sys
import threading


def answer(name, local, peer, proto):
    return json.dumps({
        "pod": name,
        "ip": local[0],
        "port": local[1],
        "proto": proto,
        "client": peer[0],
        "client_port": peer[1],
    }) + "\n"


class TCPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.settimeout(2)
        try:
            # Read the request head if there is one; a bare connection with no
            # request (a port probe) still gets its answer.
            data = b""
            while b"\r\n\r\n" not in data and b"\n\n" not in data and len(data) < 65536:
                chunk = self.request.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        body = answer(self.server.pod_name, self.request.getsockname(),
                      self.client_address, "tcp").encode()
        head = ("HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)).encode()
        try:
            self.request.sendall(head + body)
        except OSError:
            pass


class UDPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request[1]
        # A UDP socket bound to 0.0.0.0 does not know which local address the
        # datagram was sent to; the pod has one address, so report that.
        local = (self.server.pod_ip or sock.getsockname()[0], sock.getsockname()[1])
        sock.sendto(answer(self.server.pod_name, local, self.client_address, "udp").encode(),
                    self.client_address)


class TCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    # socketserver's default backlog is 5: a burst of probes (a NetworkPolicy truth table
    # opens nine connections to one port at once) would overflow it, and a dropped SYN
    # is only sent again after a second.
    request_queue_size = 128


class UDPServer(socketserver.ThreadingUDPServer):
    allow_reuse_address = True
    daemon_threads = True


def own_ip():
    """The first non-loopback IPv4 address, found without any traffic."""
    try:
        import fcntl
        import struct
        for _index, ifname in socket.if_nameindex():
            if ifname == "lo":
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    packed = fcntl.ioctl(s.fileno(), 0x8915,  # SIOCGIFADDR
                                         struct.pack("256s", ifname.encode()[:15]))
                except OSError:
                    continue
                return socket.inet_ntoa(packed[20:24])
    except Exception:  # noqa: BLE001 - best effort only
        pass
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--listen", action="append", required=True,
                        help="proto:port, proto is tcp or udp; repeatable")
    args = parser.parse_args(argv)

    ip = own_ip()
    servers = []
    for spec in args.listen:
        proto, _sep, port = spec.partition(":")
        cls, handler = {"tcp": (TCPServer, TCPHandler), "udp": (UDPServer, UDPHandler)}[proto.lower()]
        server = cls(("0.0.0.0", int(port)), handler)
        server.pod_name = args.name
        server.pod_ip = ip
        servers.append(server)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    sys.stdout.write("podnet-echo %s listening on %s\n" % (args.name, ", ".join(args.listen)))
    sys.stdout.flush()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
