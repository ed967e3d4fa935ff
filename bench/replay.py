#!/usr/bin/env python3
"""Segmenter replay on Apache Kafka beside Kafka's own ConsumerPerformance, in one run.

Starts one Apache Kafka KRaft node (scripts/kafka.py), makes the pipeline's topics with
`tierflow topics ensure`, then runs `segmenter/examples/bench_replay.rs` against it (which
produces RECORDS realistic ~7 KB order webhooks, reads them with a plain librdkafka consumer,
then replays them through the segmenter: decide, produce updates and changelog, commit), and
finally Kafka's ConsumerPerformance reading the same records (a Java consumer, no processing).
Reports the segmenter's rate against both floors. Between producing and reading, one
ConsumerPerformance pass (not measured) warms the fresh broker's JIT for both readers.

    python3 bench/replay.py [--records 50000] [--partitions 6] [--rounds 3]

Each round uses a fresh broker. Medians over rounds are printed.
"""
import argparse
import json
import os
import re
import statistics
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "release")
KAFKA_PY = os.path.join(ROOT, "scripts", "kafka.py")


def consumer_perf(bootstrap, records, group):
    return subprocess.run(
        [KAFKA_PY, "tool", "--heap", "512m", "consumer-perf", "--bootstrap-server", bootstrap,
         "--topic", "shopify.orders", "--messages", str(records),
         "--group", group, "--timeout", "60000"],
        check=True, capture_output=True, text=True).stdout


def one_round(args):
    kafka = json.loads(subprocess.run([KAFKA_PY, "start", "--json", "--heap", "1g"], check=True,
                                      capture_output=True, text=True).stdout)
    b = kafka["bootstrap"]
    try:
        subprocess.run([os.path.join(REL, "tierflow"), "topics", "ensure", "--config",
                        os.path.join(ROOT, "config", "dev.toml"), "--brokers", b,
                        "--partitions", str(args.partitions), "--replication-factor", "1",
                        "--min-insync-replicas", "1", "--execute"],
                       check=True, stdout=subprocess.DEVNULL)
        # A fresh broker's JIT is still compiling its fetch path (C2 threads took ~20% of the
        # CPU during the first replay): read the backlog once with ConsumerPerformance before
        # anything is measured, so neither reader pays for the warm-up. bench_replay's own
        # produce of the backlog warms the produce path.
        env = dict(os.environ, BENCH_BROKERS=b, BENCH_PARTITIONS=str(args.partitions), RUST_LOG="warn")
        bench = [os.path.join(REL, "examples", "bench_replay"), str(args.records)]
        out = subprocess.run(bench, env=dict(env, BENCH_PHASE="produce"), check=True,
                             capture_output=True, text=True).stdout
        consumer_perf(b, args.records, "bench-warm-up")
        out += subprocess.run(bench, env=dict(env, BENCH_PHASE="replay"), check=True,
                              capture_output=True, text=True).stdout
        print(out, end="", flush=True)
        plain = float(re.search(r"plain consumer, no processing:\s+(\d+)", out).group(1))
        replay = float(re.search(r"segmenter replay.*?:\s+(\d+) records/s", out).group(1))
        perf = consumer_perf(b, args.records, "bench-consumer-perf")
        # CSV: start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg,
        # nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
        row = [l for l in perf.splitlines() if l and l[0].isdigit()][-1].split(",")
        cperf = float(row[9].strip())
        print(f"ConsumerPerformance (fetch.nMsg.sec, after its group join): {cperf:9.0f} records/s",
              flush=True)
        return {"replay": replay, "plain": plain, "consumer_perf": cperf}
    finally:
        subprocess.run([KAFKA_PY, "stop", "--dir", kafka["dir"], "--clean"], check=False)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=50000)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "segmenter", "-p", "tierflow",
                    "--example", "bench_replay", "--bin", "tierflow"], cwd=ROOT, check=True)
    rounds = [one_round(args) for _ in range(args.rounds)]
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    print(f"\nmedians over {args.rounds} rounds, {args.records} records of ~7 KB, "
          f"{args.partitions} partitions, one Apache Kafka node:")
    print(f"segmenter replay        {med['replay']:9.0f} records/s")
    print(f"librdkafka consumer     {med['plain']:9.0f} records/s  (ratio {med['replay'] / med['plain']:.2f})")
    print(f"ConsumerPerformance     {med['consumer_perf']:9.0f} records/s  (ratio {med['replay'] / med['consumer_perf']:.2f})")
    per_round = [r["replay"] / r["consumer_perf"] for r in rounds]
    print("segmenter/ConsumerPerformance per round: "
          + ", ".join(f"{x:.2f}" for x in per_round)
          + f" (median {statistics.median(per_round):.2f})")


if __name__ == "__main__":
    main()
