#!/usr/bin/python3
"""Record what a real NBD client sends, as a seed for fuzz-nbd-server.

    record-nbd-client.py [--mode N] OUT CMD [ARG...]

Starts `vdisk serve` on mem:1M ($VDISK, else build/vdisk), with -r when
bit 0 of N is set and --discard=unmap for bit 1, puts a recording proxy in
front of it and runs CMD, whose arguments may contain {uri}. The bytes the
client sends on its first connection go to OUT, after one byte N (the
fuzz target reads its options from that byte). Example:

    fuzz/record-nbd-client.py fuzz/corpus/nbd-server/nbdinfo-map \\
        nbdinfo --map {uri}
"""

import argparse
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def forward(client, server, record):
    """Copy both ways until either side closes; keep the client's bytes."""
    socks = [client, server]
    try:
        while True:
            ready, _, _ = select.select(socks, [], [], 30)
            if not ready:
                return
            for s in ready:
                data = s.recv(65536)
                if not data:
                    return
                if s is client:
                    if record is not None:
                        record += data
                    server.sendall(data)
                else:
                    client.sendall(data)
    finally:
        client.close()
        server.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", type=int, default=0)
    ap.add_argument("out")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    vdisk = os.environ.get("VDISK", os.path.join(REPO, "build", "vdisk"))

    with tempfile.TemporaryDirectory() as tmp:
        srv_sock = os.path.join(tmp, "srv.sock")
        px_sock = os.path.join(tmp, "proxy.sock")
        pidfile = os.path.join(tmp, "pid")
        serve = [vdisk, "serve", "-t", "-e", "8", "-k", srv_sock,
                 "--pid-file", pidfile]
        if args.mode & 1:
            serve.append("-r")
        if args.mode & 2:
            serve.append("--discard=unmap")
        server = subprocess.Popen(serve + ["mem:1M"])
        try:
            for _ in range(200):
                if os.path.exists(pidfile):
                    break
                time.sleep(0.05)
            listener = socket.socket(socket.AF_UNIX)
            listener.bind(px_sock)
            listener.listen(8)
            uri = f"nbd+unix:///?socket={px_sock}"
            client = subprocess.Popen([a.replace("{uri}", uri)
                                       for a in args.cmd])
            record = bytearray()
            threads = []
            first = True
            listener.settimeout(0.2)
            while client.poll() is None:
                try:
                    conn, _ = listener.accept()
                except socket.timeout:
                    continue
                upstream = socket.socket(socket.AF_UNIX)
                upstream.connect(srv_sock)
                t = threading.Thread(target=forward, args=(
                    conn, upstream, record if first else None))
                t.start()
                threads.append(t)
                first = False
            for t in threads:
                t.join(timeout=30)
            if client.returncode != 0:
                sys.exit(f"client failed with status {client.returncode}")
            with open(args.out, "wb") as f:
                f.write(bytes([args.mode]) + bytes(record))
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
