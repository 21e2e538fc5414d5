#!/usr/bin/env python3
"""tapgate's benchmark suite (run it through bench/run, which installs and
builds what this needs and passes the paths in the environment).

Four parts, every figure a median over interleaved rounds, every ratio
against a peer measured in the same run:

1. proxy path: wrk against (a) nginx returning a fixed body, (b) nginx
   proxy_pass with upstream keep-alive, (c) nginx auth_request ->
   tapgate /.tapgate/auth, (d) tapgate's reverse proxy; at c=1/64/256.
2. ceremony verification on one core: tapgate, py_webauthn, SimpleWebAuthn,
   raw P-256 verify (aws-lc-rs, OpenSSL).
3. cold start and footprint: exec -> first 200, RSS idle and with 1,000
   idle keep-alive connections, stripped binary size; nginx for reference.
4. scale shape: 1 vs 2 tapgate instances behind an nginx round-robin
   balancer on the sign-in paths.

Only the standard library; Python 3.9+.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SAMPLE = os.path.join(REPO, "crates/webauthn/tests/data/chromium-virtual-authenticator-sample.json")
CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1

# The request every proxy configuration serves: it matches only the last
# route, so tapgate evaluates the whole policy.
PROXY_PATH = "/app/items?id=42"
BODY = "hello from upstream\n"
CONFIGS = ["a", "b", "c", "d"]
CONFIG_NAMES = {
    "a": "(a) nginx direct (limit)",
    "b": "(b) nginx proxy_pass",
    "c": "(c) nginx auth_request -> tapgate",
    "d": "(d) tapgate proxy",
}


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Broken(Exception):
    """Something does not work: the run fails (smoke mode included)."""


# ---------------------------------------------------------------- helpers

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            # utime, stime are fields 14 and 15 (1-based), i.e. 11, 12 after ')'.
            total += int(fields[11]) + int(fields[12])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
        if ppid == pid:
            out.append(int(d))
    return out


def wait_http(url, timeout=15.0, expect=200, headers=None):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == expect:
                    return r.read().decode()
                last = f"status {r.status}"
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last = e
        time.sleep(0.05)
    raise Broken(f"{url} did not answer {expect} within {timeout}s: {last}")


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def rnd(x, nd=2):
    return None if x is None else round(x, nd)


def pinned(cmd, cpus):
    """Prefix a command with taskset when pinning is on."""
    return (["taskset", "-c", cpus] + cmd) if cpus else cmd


class Proc:
    """A server we started: killed (by pid) when the run ends."""

    all = []

    def __init__(self, name, cmd, env=None, logpath=None, cpus=None):
        self.name = name
        out = open(logpath, "ab") if logpath else subprocess.DEVNULL
        self.p = subprocess.Popen(pinned(cmd, cpus), env=env, stdout=out, stderr=out,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        Proc.all.append(self)

    @property
    def pid(self):
        return self.p.pid

    def pids(self):
        """The process and its children (nginx workers)."""
        return [self.pid] + children(self.pid)

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        if self.p.poll() is None:
            try:
                self.p.send_signal(signal.SIGTERM)
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        if self in Proc.all:
            Proc.all.remove(self)

    @classmethod
    def stop_all(cls):
        for p in list(cls.all):
            p.stop()


# ------------------------------------------------------------------ setup

class Env:
    def __init__(self, args):
        self.args = args
        self.smoke = args.smoke
        self.work = tempfile.mkdtemp(prefix="tapgate-bench-")
        self.tapgate = os.environ.get("TAPGATE_BIN") or shutil.which("tapgate")
        self.tool = os.environ.get("BENCH_TOOL")
        self.py = os.environ.get("BENCH_PYTHON", sys.executable)
        self.node = os.environ.get("BENCH_NODE", "node")
        self.coldstart = os.environ.get("BENCH_COLDSTART")
        for what, path in [("TAPGATE_BIN", self.tapgate), ("BENCH_TOOL", self.tool),
                           ("BENCH_COLDSTART", self.coldstart)]:
            if not path or not os.access(path, os.X_OK):
                raise Broken(f"{what} is not an executable ({path!r}); run bench/run")
        self.key = os.path.join(self.work, "signing-key.pem")
        with open(self.key, "w") as f:
            f.write(subprocess.check_output([self.tapgate, "keygen"], text=True))
        os.chmod(self.key, 0o600)
        # The load generator on one core, servers on the other (when pinning).
        self.wrk_cpus = args.wrk_cpus
        self.server_cpus = args.server_cpus
        try:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
        except (ValueError, OSError):
            pass

    def path(self, *p):
        return os.path.join(self.work, *p)


NGINX_MAIN = """
daemon off;
master_process on;
worker_processes {workers};
pid {work}/{name}.pid;
error_log {work}/{name}-error.log warn;
worker_rlimit_nofile 8192;
events {{ worker_connections 4096; multi_accept on; }}
http {{
    access_log off;
    default_type text/plain;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    client_body_temp_path {work}/{name}-tmp/body;
    proxy_temp_path {work}/{name}-tmp/proxy;
    fastcgi_temp_path {work}/{name}-tmp/fastcgi;
    uwsgi_temp_path {work}/{name}-tmp/uwsgi;
    scgi_temp_path {work}/{name}-tmp/scgi;
{body}
}}
"""


def nginx(env, name, body, workers="auto", cpus=None):
    os.makedirs(env.path(f"{name}-tmp"), exist_ok=True)
    conf = env.path(f"{name}.conf")
    with open(conf, "w") as f:
        f.write(NGINX_MAIN.format(work=env.work, name=name, body=body, workers=workers))
    t = subprocess.run(["nginx", "-t", "-q", "-c", conf], capture_output=True, text=True)
    if t.returncode != 0:
        raise Broken(f"nginx -t {conf}: {t.stderr}")
    return conf, Proc(name, ["nginx", "-c", conf], cpus=cpus)


def upstream_body(port):
    return f"""
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{ return 200 "{BODY.strip()}\\n"; }}
        # What the gate forwarded, for the pre-flight check only.
        location = /app/check {{
            return 200 "user=$http_x_tapgate_user assertion=$http_x_tapgate_assertion cookie=$http_cookie\\n";
        }}
    }}"""


def front_proxy_body(port, up):
    return f"""
    upstream app {{ server 127.0.0.1:{up}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""


def auth_request_body(port, up, tg):
    # The forward-auth pattern of oauth2-proxy / Authelia deployments: the
    # identity headers and the assertion tapgate answers with are passed on.
    return f"""
    upstream app {{ server 127.0.0.1:{up}; keepalive 128; }}
    upstream gate {{ server 127.0.0.1:{tg}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{
            auth_request /_tapgate_auth;
            auth_request_set $tg_user $upstream_http_x_tapgate_user;
            auth_request_set $tg_email $upstream_http_x_tapgate_email;
            auth_request_set $tg_roles $upstream_http_x_tapgate_roles;
            auth_request_set $tg_assertion $upstream_http_x_tapgate_assertion;
            proxy_set_header X-Tapgate-User $tg_user;
            proxy_set_header X-Tapgate-Email $tg_email;
            proxy_set_header X-Tapgate-Roles $tg_roles;
            proxy_set_header X-Tapgate-Assertion $tg_assertion;
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location = /_tapgate_auth {{
            internal;
            proxy_pass http://gate/.tapgate/auth;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Forwarded-Host $host;
        }}
    }}"""


def balancer_body(port, instances):
    servers = "".join(f" server 127.0.0.1:{p};" for p in instances)
    name = f"tapgates_{len(instances)}"
    return f"""
    upstream {name} {{{servers} keepalive 128; }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{
            proxy_pass http://{name};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
        }}
    }}"""


TAPGATE_TOML = """
public_url = "{public}"
listen = "127.0.0.1:{port}"
upstream = "http://127.0.0.1:{up}"
roles = ["admin", "member", "deployer", "auditor"]

[store]
url = "{store}"

[keys]
signing_key_file = "{key}"

# The ceremony benchmarks measure the endpoints, not the rate limits that
# would answer most of their requests with 429.
[limits]
enabled = false

# Several routes; the benchmark's request ({path}) matches only the last
# one, so every request is evaluated against all of them.
[[route]]
path = "/healthz"
public = true

[[route]]
path = "/admin/"
allow_roles = ["admin"]
max_auth_age = "5m"

[[route]]
path = "/api/*/deploy"
methods = ["POST", "PUT"]
allow_roles = ["deployer"]

[[route]]
host = "*.internal.example.com"
path = "/"
allow_roles = ["admin"]

[[route]]
path = "/reports/**"
allow_roles = ["auditor", "admin"]

[[route]]
path = "/"
allow_roles = ["member", "admin"]
"""


def tapgate_config(env, name, port, up, public=None, store=None):
    cfg = env.path(f"{name}.toml")
    with open(cfg, "w") as f:
        f.write(TAPGATE_TOML.format(
            public=public or f"http://localhost:{port}", port=port, up=up,
            store=store or f"sqlite://{env.path('tapgate.db')}", key=env.key,
            path=PROXY_PATH))
    return cfg


def check_config(env, cfg):
    r = subprocess.run([env.tapgate, "check", "--config", cfg], capture_output=True, text=True)
    if r.returncode != 0:
        raise Broken(f"tapgate check {cfg} failed:\n{r.stdout}{r.stderr}")


def start_tapgate(env, name, cfg, port, cpus=None):
    p = Proc(name, [env.tapgate, "serve", "--config", cfg],
             env=dict(os.environ, RUST_LOG=os.environ.get("BENCH_RUST_LOG", "info")),
             logpath=env.path(f"{name}.log"), cpus=cpus)
    try:
        wait_http(f"http://127.0.0.1:{port}/.tapgate/healthz")
    except Broken:
        raise Broken(f"{name} did not start; log:\n" + open(env.path(f"{name}.log")).read()[-3000:])
    return p


def mint_session(env, issuer):
    return subprocess.check_output(
        [env.tool, "session", "--key", env.key, "--issuer", issuer, "--ttl", "7200"],
        text=True).strip()


# ------------------------------------------------------------------- wrk

def run_wrk(env, port, path, conns, seconds, cookie=None, method=None, body=None):
    threads = 1 if conns < 16 else 2
    # wrk takes whole seconds.
    cmd = pinned(["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{max(1, round(seconds))}s",
                  "--timeout", "5s", "-s", os.path.join(HERE, "wrk/report.lua"),
                  f"http://127.0.0.1:{port}{path}"], env.wrk_cpus)
    wenv = dict(os.environ, BENCH_COOKIE=cookie or "", BENCH_METHOD=method or "GET",
                BENCH_BODY=body or "")
    out = subprocess.run(cmd, env=wenv, capture_output=True, text=True, timeout=seconds + 60)
    m = re.search(r"^BENCH_JSON (.*)$", out.stdout, re.M)
    if out.returncode != 0 or not m:
        raise Broken(f"wrk failed ({out.returncode}): {out.stdout}{out.stderr}")
    r = json.loads(m.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["errors"] = sum(r[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
    return r


def measured(env, procs, fn):
    """Run fn() and add CPU seconds per 10k requests of each named process group."""
    before = {k: cpu_ticks(v) for k, v in procs.items()}
    r = fn()
    after = {k: cpu_ticks(v) for k, v in procs.items()}
    n = r.get("requests") or r.get("logins") or 0
    for k in procs:
        secs = (after[k] - before[k]) / CLK_TCK
        r[f"cpu_{k}_s"] = secs
        r[f"cpu_{k}_per_10k"] = secs / n * 10000 if n else None
    return r


# ------------------------------------------------------ part 1: the proxy

def part_proxy(env, res):
    a = env.args
    up_port, b_port, c_port, tg_port = free_port(), free_port(), free_port(), free_port()
    cpus = env.server_cpus
    _, upstream = nginx(env, "upstream", upstream_body(up_port), workers=1, cpus=cpus)
    _, front = nginx(env, "proxy-pass", front_proxy_body(b_port, up_port), cpus=cpus)
    _, authreq = nginx(env, "auth-request", auth_request_body(c_port, up_port, tg_port), cpus=cpus)
    cfg = tapgate_config(env, "tapgate", tg_port, up_port)
    check_config(env, cfg)
    tapgate = start_tapgate(env, "tapgate", cfg, tg_port, cpus=cpus)
    cookie = mint_session(env, f"http://localhost:{tg_port}")
    ports = {"a": up_port, "b": b_port, "c": c_port, "d": tg_port}
    hdr = {"Cookie": f"theme=dark; tapgate_session={cookie}", "Accept": "application/json"}

    # Pre-flight: every path answers 200 with the upstream's body, and the
    # gated paths carry the identity (and tapgate's cookie is not forwarded).
    for k, port in ports.items():
        got = wait_http(f"http://127.0.0.1:{port}{PROXY_PATH}", headers=hdr)
        if got != BODY:
            raise Broken(f"{CONFIG_NAMES[k]}: unexpected body {got!r}")
    for k in ("c", "d"):
        got = wait_http(f"http://127.0.0.1:{ports[k]}/app/check", headers=hdr)
        if "user=u_bench" not in got or "assertion=ey" not in got:
            raise Broken(f"{CONFIG_NAMES[k]}: identity not forwarded: {got!r}")
        if k == "d" and "tapgate_session" in got:
            raise Broken("tapgate forwarded its own session cookie")
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{tg_port}{PROXY_PATH}", timeout=2)
        raise Broken("tapgate let a request without a session through")
    except urllib.error.HTTPError as e:
        if e.code != 401:
            raise Broken(f"tapgate without a session: {e.code}, expected 401")

    procs = {
        "a": {"proxy": lambda: [], "upstream": upstream.pids},
        "b": {"proxy": front.pids, "upstream": upstream.pids},
        "c": {"proxy": lambda: authreq.pids() + [tapgate.pid], "nginx": authreq.pids,
              "tapgate": lambda: [tapgate.pid], "upstream": upstream.pids},
        "d": {"proxy": lambda: [tapgate.pid], "upstream": upstream.pids},
    }
    secs = a.seconds
    log(f"proxy path: warm-up ({a.warmup}s per configuration)")
    for k in CONFIGS:
        run_wrk(env, ports[k], PROXY_PATH, 64, a.warmup, cookie=cookie)

    runs = {k: {c: [] for c in a.conns} for k in CONFIGS}
    for rnd_i in range(a.rounds):
        for c in a.conns:
            # Rotate the order every round: no configuration always runs first.
            order = CONFIGS[rnd_i % 4:] + CONFIGS[:rnd_i % 4]
            for k in order:
                pids = {g: f() for g, f in procs[k].items()}
                r = measured(env, pids, lambda: run_wrk(env, ports[k], PROXY_PATH, c, secs, cookie=cookie))
                r["round"] = rnd_i
                runs[k][c].append(r)
                log(f"round {rnd_i + 1}/{a.rounds} c={c:<3} {CONFIG_NAMES[k]:<36} "
                    f"{r['rps']:>9.0f} req/s  p99 {r['p99_us'] / 1000:.2f} ms  "
                    f"cpu/10k {r['cpu_proxy_per_10k'] or 0:.3f} s  errors {r['errors']}")
                if r["errors"]:
                    raise Broken(f"{CONFIG_NAMES[k]} c={c}: {r['errors']} failed requests: {r}")
    if not (upstream.alive() and front.alive() and authreq.alive() and tapgate.alive()):
        raise Broken("a server died during the proxy benchmark")

    summary = {}
    for k in CONFIGS:
        summary[k] = {}
        for c in a.conns:
            rs = runs[k][c]
            summary[k][str(c)] = {
                "rps": rnd(median([r["rps"] for r in rs]), 0),
                "p50_ms": rnd(median([r["p50_us"] for r in rs]) / 1000, 3),
                "p99_ms": rnd(median([r["p99_us"] for r in rs]) / 1000, 3),
                "p999_ms": rnd(median([r["p999_us"] for r in rs]) / 1000, 3),
                "cpu_s_per_10k": rnd(median([r["cpu_proxy_per_10k"] for r in rs]), 4)
                if k != "a" else None,
                "upstream_cpu_s_per_10k": rnd(median([r["cpu_upstream_per_10k"] for r in rs]), 4),
                **({"nginx_cpu_s_per_10k": rnd(median([r["cpu_nginx_per_10k"] for r in rs]), 4),
                    "tapgate_cpu_s_per_10k": rnd(median([r["cpu_tapgate_per_10k"] for r in rs]), 4)}
                   if k == "c" else {}),
                "rounds": len(rs),
            }
    ratios = {}
    for c in a.conns:
        def per_round(k1, k2, field, c=c):
            return rnd(median([r1[field] / r2[field] for r1, r2 in zip(runs[k1][c], runs[k2][c])]), 3)
        ratios[str(c)] = {
            "d_over_b_rps": per_round("d", "b", "rps"),
            "d_over_b_p99": per_round("d", "b", "p99_us"),
            "d_over_c_rps": per_round("d", "c", "rps"),
            "c_over_b_rps": per_round("c", "b", "rps"),
            "d_over_a_rps": per_round("d", "a", "rps"),
            "d_over_b_cpu": rnd(median([r1["cpu_proxy_s"] / r1["requests"] / (r2["cpu_proxy_s"] / r2["requests"])
                                        for r1, r2 in zip(runs["d"][c], runs["b"][c]) if r2["cpu_proxy_s"] > 0]), 3),
        }
    res["proxy"] = {
        "path": PROXY_PATH, "seconds_per_run": secs, "rounds": a.rounds, "connections": a.conns,
        "configs": CONFIG_NAMES, "median": summary, "ratios": ratios, "runs": runs,
        "tapgate_rss_kib_after": rss_kib([tapgate.pid]),
    }
    for p in (upstream, front, authreq, tapgate):
        p.stop()


# --------------------------------------------- part 2: ceremony verification

VERIFY_CASES = [
    # (key, group, label, command builder)
    ("tapgate_auth", "auth", "tapgate (parse JSON + verify_authentication)",
     lambda e, s: [e.tool, "verify", "--sample", SAMPLE, "--what", "auth", "--seconds", s]),
    ("tapgate_auth_struct", "auth", "tapgate (verify_authentication, parsed struct)",
     lambda e, s: [e.tool, "verify", "--sample", SAMPLE, "--what", "auth-struct", "--seconds", s]),
    ("py_webauthn_auth", "auth", "py_webauthn verify_authentication_response",
     lambda e, s: [e.py, os.path.join(HERE, "peers/py_verify.py"), SAMPLE, "auth", s]),
    ("simplewebauthn_auth", "auth", "@simplewebauthn/server verifyAuthenticationResponse",
     lambda e, s: [e.node, os.path.join(HERE, "peers/swa_verify.mjs"), SAMPLE, "auth", s]),
    ("raw_awslc", "raw", "raw P-256 verify, aws-lc-rs (tapgate's backend)",
     lambda e, s: [e.tool, "verify", "--sample", SAMPLE, "--what", "raw", "--seconds", s]),
    ("raw_openssl", "raw", "raw P-256 verify, OpenSSL (Python cryptography)",
     lambda e, s: [e.py, os.path.join(HERE, "peers/py_verify.py"), SAMPLE, "raw", s]),
    ("tapgate_reg", "reg", "tapgate verify_registration (packed, x5c)",
     lambda e, s: [e.tool, "verify", "--sample", SAMPLE, "--what", "reg", "--seconds", s]),
    ("py_webauthn_reg", "reg", "py_webauthn verify_registration_response",
     lambda e, s: [e.py, os.path.join(HERE, "peers/py_verify.py"), SAMPLE, "reg", s]),
    ("simplewebauthn_reg", "reg", "@simplewebauthn/server verifyRegistrationResponse",
     lambda e, s: [e.node, os.path.join(HERE, "peers/swa_verify.mjs"), SAMPLE, "reg", s]),
]


def part_verify(env, res):
    a = env.args
    core = a.verify_cpu
    runs = {k: [] for k, *_ in VERIFY_CASES}
    wall = {k: [] for k, *_ in VERIFY_CASES}
    for r_i in range(a.rounds):
        for key, _, label, cmd in VERIFY_CASES:
            out = subprocess.run(["taskset", "-c", core] + cmd(env, str(a.verify_seconds)),
                                 capture_output=True, text=True, cwd=HERE, timeout=120)
            if out.returncode != 0:
                raise Broken(f"{label}: exit {out.returncode}: {out.stderr[-2000:]}")
            v = json.loads(out.stdout.strip().splitlines()[-1])
            # Per CPU-second: what one core does, whatever else ran meanwhile.
            runs[key].append(v["per_cpu_sec"])
            wall[key].append(v["per_sec"])
            log(f"round {r_i + 1}/{a.rounds} {label:<55} {v['per_cpu_sec']:>9.0f}/CPU-s "
                f"({v['per_sec']:.0f}/s wall)")
    med = {k: rnd(median(v), 0) for k, v in runs.items()}

    def ratio(x, y):
        return rnd(median([p / q for p, q in zip(runs[x], runs[y])]), 3)

    res["verify"] = {
        "core": core, "seconds_per_run": a.verify_seconds, "rounds": a.rounds,
        "sample": os.path.relpath(SAMPLE, REPO),
        "labels": {k: label for k, _, label, _ in VERIFY_CASES},
        "per_cpu_sec": med, "per_wall_sec": {k: rnd(median(v), 0) for k, v in wall.items()},
        "runs_per_cpu_sec": runs, "runs_per_wall_sec": wall,
        "ratios": {
            "tapgate_auth_over_raw_awslc": ratio("tapgate_auth", "raw_awslc"),
            "tapgate_auth_over_py_webauthn": ratio("tapgate_auth", "py_webauthn_auth"),
            "tapgate_auth_over_simplewebauthn": ratio("tapgate_auth", "simplewebauthn_auth"),
            "py_webauthn_auth_over_raw_openssl": ratio("py_webauthn_auth", "raw_openssl"),
            "raw_awslc_over_raw_openssl": ratio("raw_awslc", "raw_openssl"),
            "tapgate_reg_over_py_webauthn": ratio("tapgate_reg", "py_webauthn_reg"),
            "tapgate_reg_over_simplewebauthn": ratio("tapgate_reg", "simplewebauthn_reg"),
        },
    }


# ------------------------------------------------ part 3: cold start, RSS

def open_idle(port, n, path):
    """n keep-alive connections, each after one answered request, left open."""
    socks = []
    req = f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(req)
        socks.append(s)
    for s in socks:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                raise Broken("connection closed while opening idle connections")
            data += chunk
        if not data.startswith(b"HTTP/1.1 200"):
            raise Broken(f"idle connection: {data[:40]!r}")
    return socks


def coldstart_once(env, port, cmd, idle_conns=0):
    p = subprocess.Popen([env.coldstart, str(port), "/.tapgate/healthz", str(env.args.poll_us), "--"] + cmd,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline().split()
    if not line or line[0] != "READY":
        p.kill()
        raise Broken(f"cold start of {cmd[0]} failed: {' '.join(line)}")
    pid, ms, attempts = int(line[1]), float(line[2]), int(line[3])
    time.sleep(0.3)
    pids = [pid] + children(pid)
    r = {"ms": ms, "attempts": attempts, "rss_kib": rss_kib(pids)}
    if idle_conns:
        socks = open_idle(port, idle_conns, "/.tapgate/healthz")
        time.sleep(0.5)
        r["rss_idle_conns_kib"] = rss_kib([pid] + children(pid))
        for s in socks:
            s.close()
    p.stdin.write("\n")
    p.stdin.close()
    p.wait(timeout=15)
    return r


def part_coldstart(env, res):
    a = env.args
    n = a.cold_trials
    tg_port, ng_port, up_port = free_port(), free_port(), free_port()
    cfg = tapgate_config(env, "tapgate-cold", tg_port, up_port,
                         store=f"sqlite://{env.path('cold.db')}")
    tg_cmd = [env.tapgate, "serve", "--config", cfg]
    ng_conf = env.path("nginx-cold.conf")
    os.makedirs(env.path("nginx-cold-tmp"), exist_ok=True)
    with open(ng_conf, "w") as f:
        f.write(NGINX_MAIN.format(work=env.work, name="nginx-cold", workers="auto", body=f"""
    server {{
        listen 127.0.0.1:{ng_port};
        location = /.tapgate/healthz {{ return 200 "ok"; }}
    }}"""))
    ng_cmd = ["nginx", "-c", ng_conf]
    # The first start creates and migrates the SQLite file: reported apart.
    first = coldstart_once(env, tg_port, tg_cmd)
    log(f"tapgate first start (creates the store): {first['ms']:.1f} ms")
    variants = {"tapgate_sqlite": (tg_port, tg_cmd), "nginx": (ng_port, ng_cmd)}
    pg = postgres_url(env)
    if pg:
        pg_port = free_port()
        pg_cfg = tapgate_config(env, "tapgate-cold-pg", pg_port, up_port, store=pg)
        pg_cmd = [env.tapgate, "serve", "--config", pg_cfg]
        try:
            coldstart_once(env, pg_port, pg_cmd)
            variants["tapgate_postgres"] = (pg_port, pg_cmd)
        except Broken as e:
            log(f"PostgreSQL variant skipped: {e}")
            pg = None
    trials = {k: [] for k in variants}
    for i in range(n):
        for k, (port, cmd) in variants.items():
            trials[k].append(coldstart_once(env, port, cmd, idle_conns=a.idle_conns if i == n - 1 else 0))
    out = {"trials": n, "poll_interval_us": a.poll_us, "first_start_ms": rnd(first["ms"]),
           "idle_conns": a.idle_conns, "postgres": "measured" if pg else "pending: no working postgres:// store"}
    for k, ts in trials.items():
        out[k] = {
            "first_200_ms_median": rnd(median([t["ms"] for t in ts])),
            "first_200_ms_min": rnd(min(t["ms"] for t in ts)),
            "first_200_ms_max": rnd(max(t["ms"] for t in ts)),
            "rss_idle_mib": rnd(median([t["rss_kib"] for t in ts]) / 1024),
            "rss_idle_conns_mib": rnd(ts[-1]["rss_idle_conns_kib"] / 1024),
            # What the poll interval really was (sleeps overshoot on a busy machine).
            "poll_effective_us_median": rnd(median([t["ms"] * 1000 / t["attempts"] for t in ts]), 0),
            "runs_ms": [rnd(t["ms"]) for t in ts],
        }
        log(f"cold start {k}: median {out[k]['first_200_ms_median']} ms, RSS idle "
            f"{out[k]['rss_idle_mib']} MiB, with {a.idle_conns} idle connections {out[k]['rss_idle_conns_mib']} MiB")
    stripped = env.path("tapgate.stripped")
    shutil.copy(env.tapgate, stripped)
    subprocess.run(["strip", stripped], check=True)
    out["binary_bytes"] = os.path.getsize(env.tapgate)
    out["binary_stripped_mib"] = rnd(os.path.getsize(stripped) / 2**20)
    out["binary_path"] = env.tapgate
    res["coldstart"] = out


def postgres_url(env):
    url = os.environ.get("BENCH_POSTGRES_URL")
    if url:
        return url
    if env.args.no_postgres or not shutil.which("psql"):
        return None
    base = "postgresql://postgres@127.0.0.1:5432"
    chk = subprocess.run(["psql", f"{base}/postgres", "-tAc",
                          "SELECT 1 FROM pg_database WHERE datname='tapgate_bench'"],
                         capture_output=True, text=True, timeout=10)
    if chk.returncode != 0:
        return None
    if chk.stdout.strip() != "1":
        subprocess.run(["psql", f"{base}/postgres", "-qc", "CREATE DATABASE tapgate_bench"],
                       capture_output=True, timeout=10)
    return f"{base}/tapgate_bench"


# ------------------------------------------------------ part 4: scale shape

def part_scale(env, res):
    a = env.args
    lb1, lb2 = free_port(), free_port()
    t1, t2 = free_port(), free_port()
    up = free_port()
    public = f"http://localhost:{lb1}"
    pg = postgres_url(env)
    store = None
    store_name = "sqlite"
    if pg:
        store, store_name = pg, "postgres"
    else:
        store = f"sqlite://{env.path('scale.db')}"
    _, upstream = nginx(env, "scale-upstream", upstream_body(up), workers=1)
    cfgs = [tapgate_config(env, f"scale-{i}", p, up, public=public, store=store)
            for i, p in ((1, t1), (2, t2))]
    try:
        inst = [start_tapgate(env, "scale-1", cfgs[0], t1)]
    except Broken as e:
        if not pg:
            raise
        log(f"PostgreSQL store did not start ({e}); scale part falls back to SQLite")
        pg, store, store_name = None, f"sqlite://{env.path('scale.db')}", "sqlite"
        cfgs = [tapgate_config(env, f"scale-{i}", p, up, public=public, store=store)
                for i, p in ((1, t1), (2, t2))]
        inst = [start_tapgate(env, "scale-1", cfgs[0], t1)]
    inst.append(start_tapgate(env, "scale-2", cfgs[1], t2))
    _, lb = nginx(env, "balancer", balancer_body(lb1, [t1]) + balancer_body(lb2, [t1, t2]))
    wait_http(f"http://127.0.0.1:{lb2}/.tapgate/healthz")

    # A real user with a real (software) passkey, registered through the API.
    email = f"bench-{int(time.time())}@example.com"
    invite = subprocess.run([env.tapgate, "admin", "invite", "--config", cfgs[0], "--email", email,
                             "--role", "member"], capture_output=True, text=True)
    if invite.returncode != 0:
        raise Broken(f"tapgate admin invite: {invite.stderr}")
    token = invite.stdout.strip().splitlines()[-1].split("invite=")[-1]
    cred = env.path("bench-credential.json")
    reg = subprocess.run([env.tool, "register", "--base", f"http://127.0.0.1:{lb2}", "--origin", public,
                          "--invite", token, "--out", cred], capture_output=True, text=True)
    if reg.returncode != 0:
        raise Broken(f"registering the bench passkey: {reg.stderr}")

    workloads = {
        "login_options": ("POST /.tapgate/api/login/options {} (no store)", '{}'),
        "login_options_email": ("POST /.tapgate/api/login/options {email} (store read)",
                                json.dumps({"email": email})),
        "login_full": ("full sign-in: options + verify (store: challenge burn, counter write)", None),
    }
    ports = {1: lb1, 2: lb2}
    runs = {w: {n: [] for n in ports} for w in workloads}
    for r_i in range(a.rounds):
        for w, (label, body) in workloads.items():
            for n, port in ports.items():
                pids = {"tapgate": [p.pid for p in inst], "balancer": lb.pids()}
                if body is not None:
                    r = measured(env, pids, lambda: run_wrk(env, port, "/.tapgate/api/login/options",
                                                            a.scale_conns, a.seconds, method="POST", body=body))
                else:
                    def login_run(port=port):
                        out = subprocess.run(pinned([env.tool, "login-load", "--base", f"http://127.0.0.1:{port}",
                                                     "--origin", public, "--cred", cred, "--concurrency",
                                                     str(a.login_conns), "--seconds", str(a.seconds)], env.wrk_cpus),
                                             capture_output=True, text=True, timeout=a.seconds + 60)
                        if out.returncode != 0:
                            raise Broken(f"login-load: {out.stderr[-2000:]}")
                        v = json.loads(out.stdout.strip().splitlines()[-1])
                        v["rps"] = v["per_sec"]
                        v["requests"] = v["logins"]
                        return v
                    r = measured(env, pids, login_run)
                r["round"] = r_i
                runs[w][n].append(r)
                errs = r.get("errors", 0)
                log(f"round {r_i + 1}/{a.rounds} {label:<70} {n} instance(s): {r['rps']:>8.0f}/s errors {errs}")
                if errs:
                    raise Broken(f"scale {w} with {n} instance(s): {errs} errors: "
                                 f"{r.get('first_error') or r}")
    summary = {}
    for w, (label, _) in workloads.items():
        s = {"label": label}
        for n in ports:
            rs = runs[w][n]
            s[f"{n}"] = {
                "per_sec": rnd(median([r["rps"] for r in rs]), 0),
                "p99_ms": rnd(median([r.get("p99_us", 0) for r in rs]) / 1000, 3),
                "tapgate_cpu_s_per_10k": rnd(median([r["cpu_tapgate_per_10k"] for r in rs]), 4),
            }
        s["two_over_one"] = rnd(median([r2["rps"] / r1["rps"] for r1, r2 in zip(runs[w][1], runs[w][2])]), 3)
        summary[w] = s
    res["scale"] = {"store": store_name, "store_url": re.sub(r"//[^@/]*@", "//…@", store),
                    "connections_wrk": a.scale_conns, "login_concurrency": a.login_conns,
                    "seconds_per_run": a.seconds, "rounds": a.rounds, "workloads": summary, "runs": runs,
                    "postgres": "measured" if pg else "pending: no working postgres:// store"}
    for p in inst + [lb, upstream]:
        p.stop()


# ------------------------------------------------------------------ report

def machine_info(env):
    def first(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip() or \
                subprocess.run(cmd, capture_output=True, text=True, timeout=10).stderr.strip()
        except Exception:  # noqa: BLE001
            return None
    cpu = None
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    commit = first(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    # Dirty = tapgate's own code differs from the commit (bench/ and docs/ do not count).
    changed = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True).stdout.splitlines()
    dirty = any(not line[3:].startswith(("bench/", "docs/")) for line in changed)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(), "kernel": platform.release(), "cpu": cpu, "cpus": NCPU,
        "mem_gib": round(mem_kib / 2**20, 1),
        "loadavg_start": os.getloadavg(),
        "tapgate_commit": commit, "tapgate_tree_dirty": dirty, "tapgate_bin": env.tapgate,
        "tapgate_version": first([env.tapgate, "--version"]),
        "nginx": first(["nginx", "-v"]), "wrk": (first(["wrk", "-v"]) or "").splitlines()[0],
        "python": platform.python_version(),
        "py_webauthn": first([env.py, "-c", "import webauthn; print(webauthn.__version__)"]),
        "cryptography": first([env.py, "-c", "import cryptography; print(cryptography.__version__)"]),
        "node": first([env.node, "--version"]),
        "simplewebauthn": swa_version(),
        "pinning": {"wrk": env.wrk_cpus, "servers": env.server_cpus, "verify": env.args.verify_cpu},
    }


def swa_version():
    try:
        with open(os.path.join(HERE, "node_modules/@simplewebauthn/server/package.json")) as f:
            return json.load(f)["version"]
    except (OSError, ValueError, KeyError):
        return None


def fmt(x, nd=0):
    if x is None:
        return "–"
    if isinstance(x, float) and nd == 0:
        return f"{x:,.0f}"
    return f"{x:,.{nd}f}" if isinstance(x, (int, float)) else str(x)


def verdict(ok):
    return "met" if ok else "**missed**"


def markdown(res):
    m = res["machine"]
    L = []
    L.append(f"Run: {res['mode']} · {m['date']} · {m['cpu']} ({m['cpus']} CPUs, {m['mem_gib']} GiB) · "
             f"kernel {m['kernel']} · tapgate {m['tapgate_commit']}{' (dirty tree)' if m['tapgate_tree_dirty'] else ''} · "
             f"load average at start {m['loadavg_start'][0]:.2f}, at end {res['loadavg_end'][0]:.2f}")
    L.append("")
    L.append(f"Peers: {m['nginx']}, {m['wrk']}, py_webauthn {m['py_webauthn']} + cryptography "
             f"{m['cryptography']} (Python {m['python']}), @simplewebauthn/server {m['simplewebauthn']} "
             f"(Node {m['node']}).")
    L.append("")
    if "proxy" in res:
        p = res["proxy"]
        L.append(f"### 1. Proxy path (`GET {p['path']}`, {p['rounds']} interleaved round(s) × {p['seconds_per_run']} s; medians)")
        L.append("")
        L.append("| configuration | conns | req/s | p50 ms | p99 ms | p99.9 ms | proxy CPU s / 10k req |")
        L.append("|---|---:|---:|---:|---:|---:|---:|")
        for c in p["connections"]:
            for k in CONFIGS:
                s = p["median"][k][str(c)]
                cpu = fmt(s["cpu_s_per_10k"], 3)
                if k == "c":
                    cpu += f" (nginx {fmt(s['nginx_cpu_s_per_10k'], 3)} + tapgate {fmt(s['tapgate_cpu_s_per_10k'], 3)})"
                if k == "a":
                    cpu = f"– (upstream {fmt(s['upstream_cpu_s_per_10k'], 3)})"
                L.append(f"| {CONFIG_NAMES[k]} | {c} | {fmt(s['rps'])} | {fmt(s['p50_ms'], 3)} | "
                         f"{fmt(s['p99_ms'], 3)} | {fmt(s['p999_ms'], 3)} | {cpu} |")
        L.append("")
        L.append("| conns | (d)/(b) req/s | (d)/(b) p99 | (d)/(c) req/s | (c)/(b) req/s | (d)/(a) req/s | (d)/(b) CPU per request |")
        L.append("|---:|---:|---:|---:|---:|---:|---:|")
        for c in p["connections"]:
            r = p["ratios"][str(c)]
            L.append(f"| {c} | {fmt(r['d_over_b_rps'], 2)} | {fmt(r['d_over_b_p99'], 2)} | {fmt(r['d_over_c_rps'], 2)} | "
                     f"{fmt(r['c_over_b_rps'], 2)} | {fmt(r['d_over_a_rps'], 2)} | {fmt(r['d_over_b_cpu'], 2)} |")
        L.append("")
    if "verify" in res:
        v = res["verify"]
        L.append(f"### 2. Ceremony verification (one core, CPU {v['core']}; {v['rounds']} round(s) × {v['seconds_per_run']} s; medians)")
        L.append("")
        L.append("| what | verifications per CPU-second | per wall second |")
        L.append("|---|---:|---:|")
        for k, label in v["labels"].items():
            L.append(f"| {label} | {fmt(v['per_cpu_sec'][k])} | {fmt(v['per_wall_sec'][k])} |")
        L.append("")
        L.append("| ratio | value |")
        L.append("|---|---:|")
        for k, x in v["ratios"].items():
            L.append(f"| {k.replace('_over_', ' / ').replace('_', ' ')} | {fmt(x, 2)} |")
        L.append("")
    if "coldstart" in res:
        c = res["coldstart"]
        eff = c["tapgate_sqlite"]["poll_effective_us_median"]
        L.append(f"### 3. Cold start and footprint (median of {c['trials']}; poll every {c['poll_interval_us']} µs, "
                 f"{fmt(eff)} µs effective for tapgate)")
        L.append("")
        L.append(f"| server | exec → first 200 (median) | min–max | RSS idle | RSS with {c['idle_conns']:,} idle keep-alive conns |")
        L.append("|---|---:|---:|---:|---:|")
        for k in ("tapgate_sqlite", "tapgate_postgres", "nginx"):
            if k in c:
                s = c[k]
                L.append(f"| {k.replace('_', ' (').replace('sqlite', 'SQLite').replace('postgres', 'PostgreSQL') + (')' if '_' in k else '')} | "
                         f"{fmt(s['first_200_ms_median'], 1)} ms | {fmt(s['first_200_ms_min'], 1)}–{fmt(s['first_200_ms_max'], 1)} ms | "
                         f"{fmt(s['rss_idle_mib'], 1)} MiB | {fmt(s['rss_idle_conns_mib'], 1)} MiB |")
        L.append("")
        L.append(f"Stripped release binary: {c['binary_stripped_mib']} MiB. First start (creates and migrates the "
                 f"SQLite store): {c['first_start_ms']} ms. PostgreSQL: {c['postgres']}.")
        L.append("")
    if "scale" in res:
        s = res["scale"]
        L.append(f"### 4. Scale shape (nginx round-robin → 1 or 2 tapgate instances, shared {s['store']} store; "
                 f"{s['rounds']} round(s) × {s['seconds_per_run']} s; medians)")
        L.append("")
        L.append("| workload | 1 instance /s | 2 instances /s | 2 / 1 | tapgate CPU s / 10k (1 → 2) |")
        L.append("|---|---:|---:|---:|---:|")
        for w in s["workloads"].values():
            L.append(f"| {w['label']} | {fmt(w['1']['per_sec'])} | {fmt(w['2']['per_sec'])} | {fmt(w['two_over_one'], 2)} | "
                     f"{fmt(w['1']['tapgate_cpu_s_per_10k'], 3)} → {fmt(w['2']['tapgate_cpu_s_per_10k'], 3)} |")
        L.append("")
        L.append(f"wrk with {s['connections_wrk']} connections for the options paths; the full sign-in is driven by "
                 f"`tapgate-bench-tool login-load` with {s['login_concurrency']} concurrent clients (it signs each "
                 f"assertion with P-256 on the same machine). PostgreSQL: {s['postgres']}.")
        L.append("")
    if res.get("targets"):
        L.append("### Targets (issue 6)")
        L.append("")
        L.append("| target | measured | |")
        L.append("|---|---:|---|")
        for t in res["targets"]:
            L.append(f"| {t['target']} | {t['measured']} | {verdict(t['met'])} |")
        L.append("")
    return "\n".join(L)


def targets(res):
    out = []

    def add(target, value, ok, fmtd=None):
        if value is None:
            return
        out.append({"target": target, "value": value, "measured": fmtd or f"{value:.2f}", "met": bool(ok)})
    if "proxy" in res:
        r = res["proxy"]["ratios"].get("64")
        if r:
            add("(d) req/s ≥ 1.0 × (b), c=64", r["d_over_b_rps"], r["d_over_b_rps"] >= 1.0, f"{r['d_over_b_rps']:.2f}×")
            add("(d) p99 ≤ 1.2 × (b), c=64", r["d_over_b_p99"], r["d_over_b_p99"] <= 1.2, f"{r['d_over_b_p99']:.2f}×")
            add("(d) req/s ≥ 2 × (c), c=64", r["d_over_c_rps"], r["d_over_c_rps"] >= 2.0, f"{r['d_over_c_rps']:.2f}×")
    if "verify" in res:
        v = res["verify"]["ratios"]
        add("assertion verify ≥ 0.8 × raw P-256 verify (aws-lc-rs)", v["tapgate_auth_over_raw_awslc"],
            v["tapgate_auth_over_raw_awslc"] >= 0.8, f"{v['tapgate_auth_over_raw_awslc']:.2f}×")
        add("assertion verify ≥ 2 × py_webauthn", v["tapgate_auth_over_py_webauthn"],
            v["tapgate_auth_over_py_webauthn"] >= 2, f"{v['tapgate_auth_over_py_webauthn']:.2f}×")
        add("assertion verify ≥ 5 × SimpleWebAuthn", v["tapgate_auth_over_simplewebauthn"],
            v["tapgate_auth_over_simplewebauthn"] >= 5, f"{v['tapgate_auth_over_simplewebauthn']:.2f}×")
    if "coldstart" in res:
        c = res["coldstart"]
        t = c["tapgate_sqlite"]
        add("cold start ≤ 20 ms (median to first 200)", t["first_200_ms_median"], t["first_200_ms_median"] <= 20,
            f"{t['first_200_ms_median']:.1f} ms (nginx {c['nginx']['first_200_ms_median']:.1f} ms)")
        add("idle RSS ≤ 12 MiB", t["rss_idle_mib"], t["rss_idle_mib"] <= 12, f"{t['rss_idle_mib']:.1f} MiB")
        add(f"RSS ≤ 64 MiB with {c['idle_conns']:,} idle connections", t["rss_idle_conns_mib"],
            t["rss_idle_conns_mib"] <= 64, f"{t['rss_idle_conns_mib']:.1f} MiB")
        add("stripped binary ≤ 20 MiB", c["binary_stripped_mib"], c["binary_stripped_mib"] <= 20,
            f"{c['binary_stripped_mib']:.1f} MiB")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="seconds, not minutes; no thresholds")
    ap.add_argument("--parts", default="proxy,verify,coldstart,scale")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--seconds", type=float, help="per load run")
    ap.add_argument("--warmup", type=float)
    ap.add_argument("--conns", default="1,64,256")
    ap.add_argument("--verify-seconds", type=float)
    ap.add_argument("--verify-cpu", default=str(NCPU - 1))
    ap.add_argument("--cold-trials", type=int)
    ap.add_argument("--idle-conns", type=int, default=1000)
    ap.add_argument("--poll-us", type=int, default=200)
    ap.add_argument("--scale-conns", type=int, default=64)
    ap.add_argument("--login-conns", type=int, default=16)
    ap.add_argument("--wrk-cpus", default=None, help="taskset list for wrk and load tools (default: no pinning)")
    ap.add_argument("--server-cpus", default=None, help="taskset list for the servers (default: no pinning)")
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--markdown", help="write the markdown table here too")
    ap.add_argument("--docs", help="replace the table between the bench markers in this markdown file")
    args = ap.parse_args()
    smoke = args.smoke
    args.rounds = args.rounds or (1 if smoke else 3)
    args.seconds = args.seconds or (1 if smoke else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if smoke else 2)
    args.verify_seconds = args.verify_seconds or (0.3 if smoke else 3)
    args.cold_trials = args.cold_trials or (3 if smoke else 20)
    if smoke:
        args.idle_conns = min(args.idle_conns, 200)
    args.conns = [int(c) for c in args.conns.split(",")]
    parts = args.parts.split(",")

    env = Env(args)
    res = {"mode": "smoke" if smoke else "full", "machine": machine_info(env),
           "command": "bench/run" + (" --smoke" if smoke else "")}
    started = time.time()
    status = 0
    try:
        for part, fn in (("verify", part_verify), ("coldstart", part_coldstart),
                         ("proxy", part_proxy), ("scale", part_scale)):
            if part in parts:
                log(f"part: {part}")
                fn(env, res)
    except Broken as e:
        log(f"BROKEN: {e}")
        res["broken"] = str(e)
        status = 1
    finally:
        Proc.stop_all()
    res["loadavg_end"] = os.getloadavg()
    res["elapsed_s"] = round(time.time() - started, 1)
    res["targets"] = [] if smoke else targets(res)
    md = markdown(res)
    print(md)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1, default=str)
            f.write("\n")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(md + "\n")
    if args.docs and status == 0:
        with open(args.docs) as f:
            doc = f.read()
        begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
        if begin in doc and end in doc:
            doc = doc.split(begin)[0] + begin + "\n" + md + "\n" + end + doc.split(end, 1)[1]
            with open(args.docs, "w") as f:
                f.write(doc)
    if status == 0:
        shutil.rmtree(env.work, ignore_errors=True)
    else:
        log(f"logs and configs kept in {env.work}")
    log(f"done in {res['elapsed_s']} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
