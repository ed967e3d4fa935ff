#!/usr/bin/env python3
"""Ingest benchmark: the real ingest and the bare floor, alternated, under the same loadgen.

Each round starts a target (embedded mock broker, 6 partitions; or with `--kafka` one Apache
Kafka node from scripts/kafka.py, topics made by `tierflow topics ensure`), warms up, drives it with
`loadgen` (256 connections, closed loop, ~7 KB bodies) and records throughput, latency
percentiles and the target's peak RSS (VmHWM). Targets alternate within a round so machine
noise hits both alike; the report gives medians over rounds and the ingest/floor ratio.

    python3 bench/ingest.py [--rounds 3] [--duration 15s] [--connections 256]
                            [--baseline-bin PATH] [--compression-variant] [--kafka]

`--baseline-bin` adds an ingest binary built from another commit (e.g. before a change) as a
third target in the same rounds; `--compression-variant` adds the bare floor with lz4
compression (`floor-lz4`), which prices compression alone (the ingest's producer uses lz4 and
refuses `compression.type=none` with a default 1 MiB topic limit, so it cannot be the variant).

`--kafka` also runs Kafka's own `ProducerPerformance` in every round (target `producer-perf`:
the same record size, `acks=all`, idempotence, lz4 like the ingest's producer, no HTTP): the
broker's ceiling for one producer on this machine.

Results are printed and saved to target/bench/ingest-<timestamp>.json.
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "release")
SECRET = "bench-secret"
PORT = 18080
ADMIN = 19090


def build():
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "-p", "ingest", "-p", "loadgen", "-p", "tierflow",
         "--bin", "ingest", "--bin", "loadgen", "--bin", "tierflow", "--example", "bare_floor"],
        cwd=ROOT, check=True)


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


KAFKA_PY = os.path.join(ROOT, "scripts", "kafka.py")


def start_kafka():
    """One Apache Kafka node with the pipeline's topics, made the way production makes them."""
    out = subprocess.run([KAFKA_PY, "start", "--json", "--heap", "1g"], check=True,
                         capture_output=True, text=True).stdout
    kafka = json.loads(out)
    subprocess.run([os.path.join(REL, "tierflow"), "topics", "ensure", "--config",
                    os.path.join(ROOT, "config", "dev.toml"), "--brokers", kafka["bootstrap"],
                    "--partitions", "6", "--replication-factor", "1",
                    "--min-insync-replicas", "1", "--execute"],
                   check=True, stdout=subprocess.DEVNULL)
    return kafka


def producer_perf(args, record_size):
    """Kafka's ProducerPerformance for about --duration: records/s and latency percentiles."""
    seconds = float(args.duration.rstrip("s"))
    # Sized from the previous run's rate so the tool runs about as long as a loadgen round.
    records = int(max(args.perf_rate, 1000) * seconds)
    out = subprocess.run(
        [KAFKA_PY, "tool", "--heap", "512m", "producer-perf", "--topic", "shopify.orders",
         "--num-records", str(records), "--record-size", str(record_size), "--throughput", "-1",
         "--producer-props", f"bootstrap.servers={args.bootstrap}", "acks=all",
         "enable.idempotence=true", "linger.ms=2", "compression.type=lz4"],
        check=True, capture_output=True, text=True).stdout
    last = [l for l in out.splitlines() if "records sent" in l][-1]
    # "N records sent, R records/sec (M MB/sec), A ms avg latency, X ms max latency,
    #  p50 ms 50th, p95 ms 95th, p99 ms 99th, p999 ms 99.9th."
    parts = [p.strip() for p in last.split(",")]
    rate = float(parts[1].split()[0])
    args.perf_rate = rate
    pct = {p.split()[-1]: float(p.split()[0]) for p in parts if p.split()[-1] in ("50th", "99th", "99.9th.")}
    return {"ok_per_sec": rate, "p50_ms": pct.get("50th", float("nan")),
            "p99_ms": pct.get("99th", float("nan")), "peak_rss_mb": float("nan"),
            "requests": records, "ok": records, "transport_errors": 0,
            "body_bytes_mean": record_size}


def start(target, args):
    env = dict(os.environ, RUST_LOG="warn")
    if not target.startswith("floor"):
        env.update({
            "TIERFLOW_KAFKA__BROKERS": args.bootstrap or "embedded",
            "TIERFLOW_SHOPIFY__WEBHOOK_SECRETS": SECRET,
            "TIERFLOW_INGEST__LISTEN": f"127.0.0.1:{PORT}",
            "TIERFLOW_INGEST__ADMIN_LISTEN": f"127.0.0.1:{ADMIN}",
        })
        cmd = [os.path.join(REL, "ingest")]
        if target == "baseline":
            cmd = [args.baseline_bin]
    else:
        cmd = [os.path.join(REL, "examples", "bare_floor"), f"127.0.0.1:{PORT}", SECRET,
               "lz4" if target == "floor-lz4" else "none"] + ([args.bootstrap] if args.bootstrap else [])
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_port(PORT)
    return proc


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_one(target, args):
    if target == "producer-perf":
        return producer_perf(args, args.record_size)
    proc = start(target, args)
    try:
        out = subprocess.run(
            [os.path.join(REL, "loadgen"), "--url", f"http://127.0.0.1:{PORT}/webhooks/shopify",
             "--secret", SECRET, "-c", str(args.connections), "-d", args.duration,
             "--warmup", args.warmup, "--json"],
            check=True, capture_output=True, text=True).stdout
        result = json.loads(out)
        result["peak_rss_mb"] = peak_rss_mb(proc.pid)
        args.record_size = int(result["body_bytes_mean"])
        args.perf_rate = max(args.perf_rate, result["ok_per_sec"])
        return result
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.returncode not in (0, -signal.SIGTERM):
            sys.stderr.write(proc.stderr.read().decode(errors="replace"))
            raise RuntimeError(f"{target} exited with {proc.returncode}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", default="15s")
    p.add_argument("--warmup", default="3s")
    p.add_argument("--connections", type=int, default=256)
    p.add_argument("--baseline-bin", help="an ingest binary from another commit, run as target `baseline`")
    p.add_argument("--compression-variant", action="store_true",
                   help="also run the bare floor with lz4 compression, as target `floor-lz4`")
    p.add_argument("--kafka", action="store_true",
                   help="run on one Apache Kafka node (scripts/kafka.py) and add ProducerPerformance")
    args = p.parse_args()
    args.bootstrap, args.record_size, args.perf_rate = None, 7022, 0.0
    build()
    kafka = None
    if args.kafka:
        kafka = start_kafka()
        args.bootstrap = kafka["bootstrap"]
    try:
        run_all(args)
    finally:
        if kafka:
            subprocess.run([KAFKA_PY, "stop", "--dir", kafka["dir"], "--clean"], check=False)


def run_all(args):
    targets = ["ingest", "floor"]
    if args.baseline_bin:
        targets.append("baseline")
    if args.compression_variant:
        targets.append("floor-lz4")
    if args.kafka:
        targets.append("producer-perf")
    runs = {t: [] for t in targets}
    if args.kafka:
        # A freshly started broker JVM is cold (JIT, page cache): the first target would pay
        # for it. One unrecorded round of the floor warms it.
        run_one("floor", args)
    for r in range(args.rounds):
        # Rotate the order so no target always runs first (or right after the same one).
        order = targets[r % len(targets):] + targets[:r % len(targets)]
        for target in order:
            res = run_one(target, args)
            runs[target].append(res)
            print(f"round {r + 1} {target:8}: {res['ok_per_sec']:8.0f} 2xx/s  p50 {res['p50_ms']:6.2f} ms"
                  f"  p99 {res['p99_ms']:6.2f} ms  peak RSS {res['peak_rss_mb']:6.1f} MB"
                  f"  non-2xx {res['requests'] - res['ok']}  errors {res['transport_errors']}", flush=True)
    med = {t: {k: statistics.median(x[k] for x in rs) for k in ("ok_per_sec", "p50_ms", "p99_ms", "peak_rss_mb")}
           for t, rs in runs.items()}
    print(f"\nmedians over {args.rounds} rounds, {args.connections} connections, {args.duration} each, "
          f"{runs['ingest'][0]['body_bytes_mean']} B bodies, broker: "
          f"{'Apache Kafka ' + args.bootstrap if args.kafka else 'embedded mock'}:")
    print(f"{'target':8} {'2xx/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'peak RSS MB':>12}")
    for t in targets:
        m = med[t]
        print(f"{t:8} {m['ok_per_sec']:9.0f} {m['p50_ms']:8.2f} {m['p99_ms']:8.2f} {m['peak_rss_mb']:12.1f}")
    ratio = med["ingest"]["ok_per_sec"] / med["floor"]["ok_per_sec"]
    print(f"ingest/floor throughput ratio: {ratio:.3f}")
    for t in targets[1:]:
        per_round = [i["ok_per_sec"] / f["ok_per_sec"] for i, f in zip(runs["ingest"], runs[t])]
        print(f"ingest/{t} per round: {', '.join(f'{r:.2f}' for r in per_round)} "
              f"(median {statistics.median(per_round):.3f})")
    for t in targets[2:]:
        print(f"ingest/{t} throughput ratio: {med['ingest']['ok_per_sec'] / med[t]['ok_per_sec']:.3f}")
    if "floor-lz4" in med:
        print(f"floor-lz4/floor throughput ratio (the price of lz4): "
              f"{med['floor-lz4']['ok_per_sec'] / med['floor']['ok_per_sec']:.3f}")
    out_dir = os.path.join(ROOT, "target", "bench")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, time.strftime("ingest-%Y%m%dT%H%M%S.json"))
    with open(path, "w") as f:
        json.dump({"args": vars(args), "runs": runs, "medians": med, "ratio": ratio}, f, indent=2)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
