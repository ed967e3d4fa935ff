#!/usr/bin/env python3
"""Apache Kafka for development and tests, from Maven Central's jars (no Docker, no tarball).

    scripts/kafka.py install                 # resolve the pinned jars into the per-machine cache
    scripts/kafka.py start [--nodes 1|3] [--dir DIR] [--heap 512m]
                                             # format + start KRaft node(s) on free ports, wait
                                             # until ready, print the bootstrap servers
    scripts/kafka.py stop --dir DIR [--clean] # stop what `start` started (data kept unless --clean)
    scripts/kafka.py kill|pause|resume|restart --dir DIR --node N|all
                                             # fault injection: SIGKILL, SIGSTOP, SIGCONT, start again
    scripts/kafka.py status --dir DIR        # which nodes run, and the bootstrap servers
    scripts/kafka.py tool NAME [ARGS...]     # one of Kafka's own tools from the same jars:
                                             # consumer-groups, topics, producer-perf, consumer-perf

`install` is idempotent and works offline once the jars are cached (~/.cache/tierflow/kafka-<v>,
or $TIERFLOW_CACHE). One node is a combined broker + controller (`--standalone` quorum); three
nodes are three combined nodes with a static voter set, replication factor 3 and
`min.insync.replicas=2` as defaults. Readiness is asked of the brokers themselves (a Kafka
Metadata request until every node is listed), never assumed after a sleep. Logs and data stay
in DIR (default: a fresh directory under /tmp, printed) so a failed test can be read afterwards;
`stop --clean` removes them.
"""
import argparse
import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"
CACHE = os.environ.get("TIERFLOW_CACHE", os.path.expanduser("~/.cache/tierflow"))
HOME = os.path.join(CACHE, f"kafka-{KAFKA_VERSION}")
LIBS = os.path.join(HOME, "libs")
READY_TIMEOUT = 120

POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>tierflow</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>{LOG4J_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>{LOG4J_VERSION}</version></dependency>
  </dependencies>
</project>
"""

# Log4j2's properties format needs no extra jar (YAML would need Jackson's YAML module).
LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = info
logger.zookeeper.name = org.apache.kafka.clients
logger.zookeeper.level = warn
"""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def install():
    """Resolve the jars once; later runs find the marker and touch no network."""
    marker = os.path.join(HOME, ".complete")
    if os.path.exists(marker):
        return LIBS
    os.makedirs(HOME, exist_ok=True)
    with open(os.path.join(HOME, "pom.xml"), "w") as f:
        f.write(POM)
    log(f"resolving Apache Kafka {KAFKA_VERSION} jars from Maven Central into {LIBS}")
    if os.path.isdir(LIBS):
        shutil.rmtree(LIBS)
    subprocess.run(
        ["mvn", "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime",
         f"-DoutputDirectory={LIBS}"],
        cwd=HOME, check=True)
    with open(marker, "w") as f:
        f.write(KAFKA_VERSION + "\n")
    return LIBS


# Kafka's command-line tools by the name of the shell script Kafka ships for each.
TOOLS = {
    "consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "topics": "org.apache.kafka.tools.TopicCommand",
    "producer-perf": "org.apache.kafka.tools.ProducerPerformance",
    "consumer-perf": "org.apache.kafka.tools.ConsumerPerformance",
}

# Tools log warnings and worse to stderr; their results go to stdout.
TOOL_LOG4J2 = """status = warn
appender.err.type = Console
appender.err.name = err
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.err.ref = err
"""


def tool(name, args, heap):
    """Replace this process with Kafka's tool `name` (stdout and exit status are the tool's)."""
    install()
    conf = os.path.join(HOME, "tools-log4j2.properties")
    if not os.path.exists(conf):
        with open(conf, "w") as f:
            f.write(TOOL_LOG4J2)
    cmd = ["java", f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
           f"-Dlog4j2.configurationFile={conf}", "-cp", os.path.join(LIBS, "*"), TOOLS[name]] + args
    os.execvp("java", cmd)


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def java(main, args, logs_dir, heap, cluster_dir):
    return ["java", f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={os.path.join(cluster_dir, 'log4j2.properties')}",
            f"-Dkafka.logs.dir={logs_dir}", "-cp", os.path.join(LIBS, "*"), main] + args


def node_properties(cluster, i):
    n = cluster["nodes"][i]
    single = len(cluster["nodes"]) == 1
    rf = 1 if single else 3
    props = {
        "process.roles": "broker,controller",
        "node.id": n["id"],
        "listeners": f"PLAINTEXT://127.0.0.1:{n['port']},CONTROLLER://127.0.0.1:{n['controller_port']}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{n['port']}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": n["data"],
        "num.partitions": 6,
        "default.replication.factor": rf,
        "min.insync.replicas": 1 if single else 2,
        "offsets.topic.replication.factor": rf,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": 1 if single else 2,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": 1 if single else 2,
        "group.initial.rebalance.delay.ms": 0,
        "auto.create.topics.enable": "false",
        # A development broker keeps at most 1 GiB per partition (benchmarks write gigabytes);
        # 128 MiB segments so that the retention can act.
        "log.retention.bytes": 1 << 30,
        "log.segment.bytes": 128 << 20,
        # Tests shrink these per topic; the broker's checks must run often enough to see it.
        "log.retention.check.interval.ms": 5000,
        "log.cleaner.backoff.ms": 1000,
    }
    if not single:
        # A killed broker is fenced after this long without heartbeats (default 9 s): shorter
        # here so failover tests see leadership move within a few seconds.
        props["broker.session.timeout.ms"] = 3000
        props["broker.heartbeat.interval.ms"] = 500
    if single:
        props["controller.quorum.bootstrap.servers"] = f"127.0.0.1:{n['controller_port']}"
    else:
        props["controller.quorum.voters"] = ",".join(
            f"{m['id']}@127.0.0.1:{m['controller_port']}" for m in cluster["nodes"])
    return "".join(f"{k}={v}\n" for k, v in props.items())


def state_path(d):
    return os.path.join(d, "cluster.json")


def load(d):
    with open(state_path(d)) as f:
        return json.load(f)


def save(cluster):
    with open(state_path(cluster["dir"]), "w") as f:
        json.dump(cluster, f, indent=2)


def alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A zombie (exited, not yet reaped by its parent) is not alive.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def launch(cluster, i):
    n = cluster["nodes"][i]
    logs = n["logs"]
    os.makedirs(logs, exist_ok=True)
    out = open(os.path.join(logs, "stdout.log"), "ab")
    proc = subprocess.Popen(
        java("kafka.Kafka", [n["properties"]], logs, cluster["heap"], cluster["dir"]),
        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    n["pid"] = proc.pid
    save(cluster)


def metadata_brokers(port, timeout=2.0):
    """Node ids and the controller a broker reports in a Metadata v4 response (Kafka 4 dropped
    v0-v3; v4 is the oldest left and not yet "flexible", so it is plain to encode)."""
    client = b"tierflow-kafka-py"
    # topics: null (all), allow_auto_topic_creation: false
    body = struct.pack(">ib", -1, 0)
    header = struct.pack(">hhih", 3, 4, 7, len(client)) + client
    req = header + body
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(struct.pack(">i", len(req)) + req)
        size = struct.unpack(">i", recv_exact(s, 4))[0]
        data = recv_exact(s, size)
    pos = 8  # correlation id, throttle time
    (count,) = struct.unpack_from(">i", data, pos)
    pos += 4
    ids = []
    for _ in range(count):
        (node_id,) = struct.unpack_from(">i", data, pos)
        pos += 4
        (hlen,) = struct.unpack_from(">h", data, pos)
        pos += 2 + hlen + 4  # host, port
        (rlen,) = struct.unpack_from(">h", data, pos)
        pos += 2 + max(rlen, 0)  # rack (nullable)
        ids.append(node_id)
    (clen,) = struct.unpack_from(">h", data, pos)
    pos += 2 + max(clen, 0)  # cluster id (nullable)
    (controller,) = struct.unpack_from(">i", data, pos)
    return ids, controller


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def wait_ready(cluster, nodes=None):
    """Until every running node answers Metadata listing every running node and a controller."""
    want = sorted(cluster["nodes"][i]["id"] for i in (nodes if nodes is not None else
                                                     range(len(cluster["nodes"]))))
    deadline = time.time() + READY_TIMEOUT
    last = None
    while time.time() < deadline:
        for n in cluster["nodes"]:
            if n["id"] in want and not alive(n["pid"]):
                raise RuntimeError(f"node {n['id']} exited; see {n['logs']}/server.log")
        try:
            ok = True
            for n in cluster["nodes"]:
                if n["id"] not in want:
                    continue
                ids, controller = metadata_brokers(n["port"])
                if sorted(i for i in ids if i in want) != want or controller < 0:
                    ok = False
                    last = f"node {n['id']} lists {ids}, controller {controller}"
                    break
            if ok:
                return
        except (OSError, ConnectionError, struct.error) as e:
            last = str(e)
        time.sleep(0.2)
    raise RuntimeError(f"Kafka not ready after {READY_TIMEOUT}s ({last}); logs in {cluster['dir']}")


def start(args):
    install()
    d = args.dir or tempfile.mkdtemp(prefix="tierflow-kafka-")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "log4j2.properties"), "w") as f:
        f.write(LOG4J2)
    ports = free_ports(2 * args.nodes)
    # Base64url of a random UUID, like Kafka's own `random-uuid`, which also never starts an id
    # with `-` (the storage tool would read it as an option).
    cluster_id = "-"
    while cluster_id.startswith("-"):
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    cluster = {"dir": d, "version": KAFKA_VERSION, "cluster_id": cluster_id, "heap": args.heap,
               "nodes": []}
    for i in range(args.nodes):
        nd = os.path.join(d, f"node{i + 1}")
        cluster["nodes"].append({
            "id": i + 1, "port": ports[2 * i], "controller_port": ports[2 * i + 1],
            "data": os.path.join(nd, "data"), "logs": os.path.join(nd, "logs"),
            "properties": os.path.join(nd, "server.properties"), "pid": 0})
    for i, n in enumerate(cluster["nodes"]):
        os.makedirs(n["logs"], exist_ok=True)
        with open(n["properties"], "w") as f:
            f.write(node_properties(cluster, i))
        fmt = ["format", "-t", cluster_id, "-c", n["properties"]]
        if args.nodes == 1:
            fmt.append("--standalone")
        subprocess.run(java("kafka.tools.StorageTool", fmt, n["logs"], "256m", d),
                       check=True, stdout=subprocess.DEVNULL)
    save(cluster)
    for i in range(args.nodes):
        launch(cluster, i)
    try:
        wait_ready(cluster)
    except Exception:
        stop_cluster(cluster, clean=False)
        raise
    bootstrap = ",".join(f"127.0.0.1:{n['port']}" for n in cluster["nodes"])
    cluster["bootstrap"] = bootstrap
    save(cluster)
    log(f"Apache Kafka {KAFKA_VERSION}: {args.nodes} node(s) ready in {d}")
    print(json.dumps({"dir": d, "bootstrap": bootstrap}) if args.json else bootstrap)


def stop_cluster(cluster, clean):
    for n in cluster["nodes"]:
        if n["pid"] and alive(n["pid"]):
            try:
                os.kill(n["pid"], signal.SIGCONT)
                os.kill(n["pid"], signal.SIGTERM)
            except OSError:
                pass
    deadline = time.time() + 30
    for n in cluster["nodes"]:
        while n["pid"] and alive(n["pid"]) and time.time() < deadline:
            time.sleep(0.1)
        if n["pid"] and alive(n["pid"]):
            os.kill(n["pid"], signal.SIGKILL)
    if clean:
        shutil.rmtree(cluster["dir"], ignore_errors=True)


def node_of(cluster, node_id):
    for i, n in enumerate(cluster["nodes"]):
        if n["id"] == node_id:
            return i, n
    raise SystemExit(f"no node {node_id} in {cluster['dir']}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install")
    s = sub.add_parser("start")
    s.add_argument("--nodes", type=int, choices=(1, 3), default=1)
    s.add_argument("--dir")
    s.add_argument("--heap", default="512m")
    s.add_argument("--json", action="store_true", help="print {dir, bootstrap} as JSON")
    st = sub.add_parser("stop")
    st.add_argument("--dir", required=True)
    st.add_argument("--clean", action="store_true")
    for name in ("kill", "pause", "resume", "restart"):
        c = sub.add_parser(name)
        c.add_argument("--dir", required=True)
        c.add_argument("--node", required=True, help="a node id, or `all`")
    ss = sub.add_parser("status")
    ss.add_argument("--dir", required=True)
    t = sub.add_parser("tool", help="run one of Kafka's tools: " + ", ".join(TOOLS))
    t.add_argument("name", choices=sorted(TOOLS))
    t.add_argument("--heap", default="256m")
    t.add_argument("args", nargs=argparse.REMAINDER)
    args = p.parse_args()
    if args.cmd == "install":
        print(install())
    elif args.cmd == "start":
        start(args)
    elif args.cmd == "stop":
        stop_cluster(load(args.dir), args.clean)
    elif args.cmd == "tool":
        tool(args.name, args.args, args.heap)
    elif args.cmd == "status":
        c = load(args.dir)
        for n in c["nodes"]:
            print(f"node {n['id']}: port {n['port']} pid {n['pid']} "
                  f"{'running' if alive(n['pid']) else 'stopped'}")
        print(c.get("bootstrap", ""))
    else:
        c = load(args.dir)
        if args.node == "all":
            picked = list(enumerate(c["nodes"]))
        else:
            picked = [node_of(c, int(args.node))]
        for i, n in picked:
            if args.cmd == "kill":
                os.kill(n["pid"], signal.SIGKILL)
            elif args.cmd == "pause":
                os.kill(n["pid"], signal.SIGSTOP)
            elif args.cmd == "resume":
                os.kill(n["pid"], signal.SIGCONT)
            elif args.cmd == "restart":
                if alive(n["pid"]):
                    raise SystemExit(f"node {n['id']} is still running (kill it first)")
                launch(c, i)
        if args.cmd == "restart":
            # Every running node must list every running node (a lone restarted node of three
            # cannot elect a controller: `--node all` brings the quorum back together).
            running = [j for j, m in enumerate(c["nodes"]) if alive(m["pid"])]
            wait_ready(c, running)


if __name__ == "__main__":
    main()
