#!/usr/bin/env python3
"""Launch to first answer and resident memory of builds of an app, in alternating rounds (docs/kernel-speed.md).

    ip netns add ab && ip -n ab link set lo up
    ip netns exec ab python3 load/tools/launch-memory-ab.py 15 \
        before=/path/to/old/EchoServer.dll:sw after=artifacts/bin/EchoServer/release/EchoServer.dll:sw \
        disabled=artifacts/bin/EchoServer/release/EchoServer.dll:disabled
    ip netns del ab

Each variant is NAME=DLL:MODE, MODE "sw" (a first generation of Switchover namespace abN, alone) or "disabled"
(Switchover:Mode=Disabled). Every round starts each variant once, in an order that rotates from round to round: the
time from starting `dotnet DLL` until a new connection to 127.0.0.1:8090 first gets a 200 (asked every 2 ms), then
200 keep-alive requests on one connection and VmRSS. The last variant is the baseline the others are compared with.
Run it in a network namespace of its own: it listens on port 8090 and creates Switchover tables there. Bounded: each
launch gives up after 20 s, each request after 5 s.
"""
import os, signal, socket, statistics, subprocess, sys, time

PORT = 8090

def first_answer(t0):
    while time.monotonic() - t0 < 20:
        try:
            with socket.create_connection(("127.0.0.1", PORT), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: ab\r\nConnection: close\r\n\r\n")
                data = b""
                while (chunk := s.recv(4096)):
                    data += chunk
            if b" 200 " in data.split(b"\r\n")[0]:
                return (time.monotonic() - t0) * 1000
        except OSError:
            pass
        time.sleep(0.002)
    raise SystemExit("no answer within 20 s")

def keep_alive_requests(count=200):
    with socket.create_connection(("127.0.0.1", PORT), timeout=5) as s:
        f = s.makefile("rb")
        for _ in range(count):
            s.sendall(b"GET / HTTP/1.1\r\nHost: ab\r\n\r\n")
            status = f.readline()
            if b" 200 " not in status:
                raise SystemExit(f"unexpected answer {status!r}")
            length, chunked = 0, False
            while (header := f.readline()) not in (b"\r\n", b""):
                name, _, value = header.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                elif name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            if not chunked:
                f.read(length)
                continue
            while (size := int(f.readline().strip(), 16)) != 0:
                f.read(size + 2)
            f.readline()

def rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmRSS:")) / 1024

def main():
    rounds = int(sys.argv[1])
    variants = []
    for argument in sys.argv[2:]:
        name, rest = argument.split("=", 1)
        dll, mode = rest.rsplit(":", 1)
        if mode not in ("sw", "disabled"):
            raise SystemExit(f"{argument}: the mode must be sw or disabled")
        variants.append((name, dll, mode))
    if len(variants) < 2:
        raise SystemExit(__doc__)
    results = {name: ([], []) for name, _, _ in variants}
    for r in range(rounds):
        shift = r % len(variants)
        for name, dll, mode in variants[shift:] + variants[:shift]:
            arguments = ["dotnet", dll, "--urls", f"http://*:{PORT}", "--contentRoot", os.path.dirname(dll),
                         f"--Switchover:Namespace=ab{r}" if mode == "sw" else "--Switchover:Mode=Disabled"]
            t0 = time.monotonic()
            process = subprocess.Popen(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                ms = first_answer(t0)
                time.sleep(0.3)
                keep_alive_requests()
                time.sleep(0.5)
                mb = rss_mb(process.pid)
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(30)
            results[name][0].append(ms)
            results[name][1].append(mb)
            time.sleep(0.3)
    base_ms, base_mb = (statistics.median(v) for v in results[variants[-1][0]])
    for name, _, _ in variants:
        ms, mb = results[name]
        print(f"{name:10} launch median {statistics.median(ms):6.0f} ms ({statistics.median(ms) - base_ms:+5.0f})  "
              f"RSS median {statistics.median(mb):5.1f} MB ({statistics.median(mb) - base_mb:+.2f})  "
              f"ms {sorted(round(x) for x in ms)}  MB {sorted(round(x, 1) for x in mb)}")

if __name__ == "__main__":
    main()
