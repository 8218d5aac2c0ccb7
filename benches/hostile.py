#!/usr/bin/env python3
"""Hostile inputs against a running `setr serve`: status, time and peak memory of each.

Replays the request corpus that the Rust generator writes (crates/setr/tests/common/hostile.rs,
through the ignored test `write_hostile_corpus`) one request at a time, resetting the
server's VmHWM before each (`5` > /proc/PID/clear_refs, Linux), and prints a table:
case, route, body size, status, seconds, the server's peak RSS during the request. Then a
probe of the issue-13 target "a 15 MB text refused without delaying other requests": a
small embed sent while the 15 MB text is in flight.

Marks (issue 13's targets with the default limits): 5xx, a dead server, a peak over 1 GiB,
more than 5 s, or an answer the corpus does not expect (`expect` in the manifest).

Standard library only. Usage:

    SETR_HOSTILE_CORPUS=/tmp/hostile cargo nextest run -p setr --test hostile \
        --run-ignored only write_hostile_corpus
    cargo build --release -p setr
    # either let the script start the server (default configuration, port chosen by setr):
    python3 benches/hostile.py --corpus /tmp/hostile --setr target/release/setr --max-as-gib 8
    # or point it at one already running (its pid for /proc):
    python3 benches/hostile.py --corpus /tmp/hostile --url http://127.0.0.1:8080 --pid 1234

Arguments after `--` go to `setr serve` (e.g. `-- --store /tmp/s --demo-images 100`).
"""

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

PEAK_LIMIT_KB = 1 << 20
TIME_LIMIT_S = 5.0


def status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak(pid):
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def alive(pid):
    return os.path.exists(f"/proc/{pid}") and status_kb(pid, "VmRSS") is not None


def send(url, method, path, content_type, body, timeout=120.0, answer=None):
    """(status, error type or '', seconds); status is a string on transport errors. The
    body of a 2xx answer goes into `answer` (a list) when given."""
    req = urllib.request.Request(
        url + path, data=body if method != "GET" else None, method=method,
        headers={"Content-Type": content_type},
    )
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            if answer is not None:
                answer.append(raw)
            return r.status, "", time.perf_counter() - t
    except urllib.error.HTTPError as e:
        raw = e.read()
        kind = ""
        try:
            kind = json.loads(raw).get("type", "")
        except (ValueError, AttributeError):
            kind = "(not JSON)"
        if len(raw) > 64 << 10:
            kind += f" ({len(raw)} B body)"
        return e.code, kind, time.perf_counter() - t
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", e)
        return f"ERR {type(reason).__name__}", str(reason)[:40], time.perf_counter() - t


def allowed(expect, status):
    if not isinstance(status, int):
        return False
    ok, refused = 200 <= status < 300, 400 <= status < 500
    if expect == "Accept":
        return ok
    if expect == "AcceptOrRefuse":
        return ok or refused
    if expect == "Refuse":
        return refused
    m = re.match(r"Exactly\((\d+)", expect)
    return bool(m) and status == int(m.group(1))


class Server:
    """A `setr serve` started here (restartable), or one given by --url and --pid."""

    def __init__(self, args):
        self.args = args
        self.proc = None
        if args.setr:
            self.start()
        else:
            self.url, self.pid = args.url.rstrip("/"), args.pid

    def start(self):
        cmd = [self.args.setr, "serve", "--listen", "127.0.0.1:0"] + self.args.serve_args
        limit = self.args.max_as_gib

        def guard():
            # Address-space cap: a runaway allocation aborts the server instead of the
            # machine (VmHWM, not this, is what the table reports).
            if limit:
                resource.setrlimit(resource.RLIMIT_AS, (limit << 30, limit << 30))

        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, preexec_fn=guard)
        deadline = time.time() + 900
        for line in self.proc.stderr:
            m = re.search(r"serving on (http://\S+)", line)
            if m:
                self.url = m.group(1)
                break
            if time.time() > deadline:
                sys.exit("setr serve did not start in 15 minutes")
        else:
            sys.exit(f"setr serve exited ({self.proc.wait()}) before listening")
        self.pid = self.proc.pid
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()

    def restart_if_dead(self):
        if alive(self.pid):
            return False
        if not self.proc:
            sys.exit("the server died and was not started by this script; stopping")
        self.proc.wait()
        self.start()
        return True

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, help="directory written by write_hostile_corpus")
    p.add_argument("--setr", help="setr binary to start (`setr serve --listen 127.0.0.1:0 ...`)")
    p.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8080")
    p.add_argument("--pid", type=int, help="its process id (for VmHWM)")
    p.add_argument("--only", help="regular expression on case names")
    p.add_argument("--max-as-gib", type=int, default=0,
                   help="with --setr: cap the server's address space (GiB; 0 = none) so that a "
                        "hole aborts the server rather than exhausting the machine")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for an answer")
    p.add_argument("serve_args", nargs="*", help="after --: extra `setr serve` arguments")
    args = p.parse_args()
    if not args.setr and not (args.url and args.pid):
        p.error("give --setr, or --url and --pid")
    with open(os.path.join(args.corpus, "manifest.json")) as f:
        manifest = json.load(f)
    if args.only:
        manifest = [m for m in manifest if re.search(args.only, m["case"])]

    server = Server(args)
    if not reset_peak(server.pid):
        print("warning: cannot write /proc/PID/clear_refs: peaks are since the server's start", file=sys.stderr)
    print(f"server {server.url} (pid {server.pid}), baseline RSS {status_kb(server.pid, 'VmRSS') // 1024} MiB")
    # VmHWM is reset to the current RSS before each request, so it never reads below what
    # the allocator kept from earlier requests: "RSS before" shows that floor.
    header = (f"{'input':<42} {'route':<20} {'bytes':>10}  {'status':<26} {'seconds':>8} "
              f"{'RSS before':>10} {'VmHWM MiB':>9}  marks")
    print(header)
    print("-" * len(header))
    bad = 0
    for m in manifest:
        with open(os.path.join(args.corpus, m["body"]), "rb") as f:
            body = f.read()
        reset_peak(server.pid)
        before = status_kb(server.pid, "VmRSS") or 0
        answer = []
        status, kind, secs = send(server.url, m["method"], m["path"], m["content_type"], body,
                                  timeout=args.timeout, answer=answer)
        peak = status_kb(server.pid, "VmHWM") or 0
        marks = []
        parts = re.match(r"(\d+)_image_parts$", m["case"])
        if parts and answer and m["path"] == "/v1/images":
            # Several `image` parts: a 2xx must account for every one of them.
            n, j = int(parts.group(1)), json.loads(answer[0])
            arrays = [v for v in ([j] + list(j.values() if isinstance(j, dict) else [])) if isinstance(v, list)]
            if not any(len(a) == n for a in arrays):
                marks.append(f"{n} parts, answer accounts for fewer")
        if isinstance(status, int) and status >= 500:
            marks.append("5xx")
        if not allowed(m["expect"], status):
            marks.append(f"expected {m['expect']}")
        if peak > PEAK_LIMIT_KB:
            marks.append(">1GiB")
        if secs > TIME_LIMIT_S:
            marks.append(">5s")
        if server.restart_if_dead():
            marks.append("SERVER DIED (restarted)")
        else:
            h, _, _ = send(server.url, "GET", "/health", "application/json", b"", timeout=30)
            if h != 200:
                marks.append(f"/health {h}")
        bad += bool(marks)
        route = m["path"] + (" form" if m["content_type"].startswith("multipart") else "")
        print(f"{m['case'][:42]:<42} {route:<20} {m['bytes']:>10}  {str(status) + ' ' + kind:<26.26} "
              f"{secs:>8.2f} {before // 1024:>10} {peak // 1024:>9}  {' '.join(marks)}", flush=True)

    # Small requests while a 15 MB text is in flight: the slowest of them.
    huge = next((m for m in manifest if m["case"] == "text_15mb" and m["path"] == "/v1/embed"), None)
    if huge:
        with open(os.path.join(args.corpus, huge["body"]), "rb") as f:
            body = f.read()
        small = json.dumps({"text": "a red dress"}).encode()
        send(server.url, "POST", "/v1/embed", "application/json", small)
        result = {}
        t = threading.Thread(target=lambda: result.update(
            huge=send(server.url, "POST", "/v1/embed", "application/json", body, timeout=args.timeout)))
        t.start()
        smalls = []
        while t.is_alive():
            smalls.append(send(server.url, "POST", "/v1/embed", "application/json", small, timeout=args.timeout))
            time.sleep(0.05)
        t.join()
        h_status, h_kind, h_secs = result["huge"]
        worst = max((s[2] for s in smalls), default=0.0)
        statuses = sorted({str(s[0]) for s in smalls})
        print(f"\n15 MB text: {h_status} {h_kind} in {h_secs:.3f} s; {len(smalls)} small embed(s) meanwhile "
              f"({', '.join(statuses) or 'none'}), the slowest {worst:.3f} s")
        if h_secs > 0.1 or worst > 0.1:
            bad += 1
            print("  over the 100 ms target")
    print(f"\n{bad} row(s) marked out of {len(manifest)}")
    server.stop()
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
