"""A BitTorrent Mainline DHT node (libtorrent), and a BEP44 client, for duet's NAT tests.

Usage:
  dht_node.py serve --bind IP:PORT [--link IP:PORT]...
  dht_node.py put --bind IP:PORT --node IP:PORT... --seed HEX64 --salt TEXT --value TEXT
                  [--timeout SECONDS]
  dht_node.py get --bind IP:PORT --node IP:PORT... --key HEX64 --salt TEXT
                  [--timeout SECONDS]

serve prints `dht node ready on IP:PORT` once its node ID is final, then
`dht routing table: N nodes` whenever that number changes. Each line `link IP:PORT` on
standard input adds a node to it; it exits when standard input ends.

put prints `dht public key HEX` and, once stored, `dht put done seq N on K nodes` (libtorrent
looks up the item first and puts the next sequence number).
get prints `dht got seq N value TEXT` (retrying until the item shows up; TEXT is the value as
UTF-8 when it is a bencoded string, else Python's rendering of the decoded value). Both
wait for a reply from every --node first, and exit 1 with a reason after the timeout.

Why a node settles before it links (the trap this works around): libtorrent starts the DHT
with a random node ID and replaces it by one derived from its external address (BEP42) as
soon as a reply tells it that address. Nodes that linked before that keep the old ID, evict
the node when its ID "changes", and relearn it only on a later refresh, 5 to 25 s on. So a
node first asks itself (its own reply carries its address), then asks itself again (which
evicts the stale entry of itself), and only then reports ready: nodes that link to ready
nodes see final IDs, and put/get work within a fraction of a second.

Every address stays inside the test's namespaces: the default bootstrap routers, local
peer discovery, UPnP and NAT-PMP are all off.
"""

import argparse
import os
import select
import sys
import time

import libtorrent as lt

import ed25519_keys


def endpoint(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def session(bind):
    return lt.session(
        {
            "listen_interfaces": bind,
            "enable_dht": True,
            "dht_bootstrap_nodes": "",
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            # All nodes share one /24: libtorrent's defaults would keep only one per subnet.
            "dht_restrict_routing_ips": False,
            "dht_restrict_search_ips": False,
            "dht_ignore_dark_internet": False,
            "alert_mask": lt.alert.category_t.dht_notification
            | lt.alert.category_t.status_notification
            | lt.alert.category_t.dht_operation_notification,
        }
    )


class Node:
    """A session and the few facts the commands wait for."""

    def __init__(self, bind):
        self.ses = session(bind)
        self.bound = None
        self.external = None
        self.table = None
        self.handlers = []

    def pump(self, wait_ms):
        """Handle the alerts that arrive within wait_ms."""
        if self.ses.wait_for_alert(wait_ms) is None:
            return
        for a in self.ses.pop_alerts():
            if isinstance(a, lt.listen_succeeded_alert) and a.socket_type in (
                lt.socket_type_t.udp,
                lt.socket_type_t.utp,
            ):
                self.bound = "%s:%d" % (a.address, a.port)
            elif isinstance(a, lt.external_ip_alert):
                self.external = str(a.external_address)
            elif isinstance(a, lt.dht_stats_alert):
                self.table = sum(b["num_nodes"] for b in a.routing_table)
            for handler in self.handlers:
                handler(a)

    def table_size(self):
        """The number of nodes in the routing table, asked for and waited on."""
        self.table = None
        self.ses.post_dht_stats()
        for _ in range(50):
            self.pump(100)
            if self.table is not None:
                return self.table
        raise SystemExit("dht: no routing table statistics from libtorrent")

    def until(self, what, deadline, check):
        while not check():
            if time.monotonic() > deadline:
                raise SystemExit("dht: timed out waiting for " + what)
            self.pump(100)


def serve(args):
    node = Node(args.bind)
    deadline = time.monotonic() + 30
    node.until("the listening socket", deadline, lambda: node.bound)
    me = endpoint(node.bound)
    # Settle the node ID (see the module's doc): learn the external address from a reply
    # to ourselves, then evict the entry our own first reply left under the old ID.
    node.ses.add_dht_node(me)
    node.until("our external address", deadline, lambda: node.external)
    node.ses.add_dht_node(me)
    node.until("our stale entry to go", deadline, lambda: node.table_size() == 0)
    for link in args.link:
        node.ses.add_dht_node(endpoint(link))
    print("dht node ready on %s" % node.bound, flush=True)
    last, pending, stdin = None, b"", sys.stdin.fileno()
    while True:
        readable, _, _ = select.select([stdin], [], [], 0.2)
        if readable:
            # Raw reads: a buffered readline would hide lines from select.
            chunk = os.read(stdin, 4096)
            if not chunk:
                return
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                words = line.decode().split()
                if len(words) == 2 and words[0] == "link":
                    node.ses.add_dht_node(endpoint(words[1]))
        size = node.table_size()
        if size != last:
            print("dht routing table: %d nodes" % size, flush=True)
            last = size


def wait_for_nodes(node, nodes, deadline):
    for n in nodes:
        node.ses.add_dht_node(endpoint(n))
    node.until(
        "replies from the DHT nodes",
        deadline,
        lambda: node.table_size() >= len(nodes),
    )


def put(args):
    public, secret = ed25519_keys.keypair(bytes.fromhex(args.seed))
    print("dht public key %s" % public.hex(), flush=True)
    deadline = time.monotonic() + args.timeout
    node = Node(args.bind)
    wait_for_nodes(node, args.node, deadline)
    done = []

    def on_alert(a):
        if isinstance(a, lt.dht_put_alert):
            done.append((a.seq, a.num_success))

    node.handlers.append(on_alert)
    node.ses.dht_put_mutable_item(
        secret, public, lt.bencode(args.value.encode()), args.salt.encode()
    )
    node.until("the put to complete", deadline, lambda: done)
    seq, stored = done[0]
    if stored == 0:
        raise SystemExit("dht put failed: no node stored the item")
    print("dht put done seq %d on %d nodes" % (seq, stored), flush=True)


def get(args):
    key = bytes.fromhex(args.key)
    deadline = time.monotonic() + args.timeout
    node = Node(args.bind)
    wait_for_nodes(node, args.node, deadline)
    found = []
    finished = []

    def on_alert(a):
        if isinstance(a, lt.dht_mutable_item_alert):
            item = a.item if isinstance(a.item, dict) else {}
            if item.get("key") == key and item.get("value"):
                found.append((item["seq"], lt.bdecode(item["value"])))
            if a.authoritative:
                finished.append(True)

    node.handlers.append(on_alert)
    while not found:
        finished.clear()
        node.ses.dht_get_mutable_item(key, args.salt.encode())
        # A lookup that found nothing ends authoritatively; then ask again.
        node.until("the item", deadline, lambda: found or finished)
    seq, value = found[0]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    print("dht got seq %d value %s" % (seq, value), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve")
    p.add_argument("--bind", required=True)
    p.add_argument("--link", action="append", default=[])
    for name in ("put", "get"):
        p = sub.add_parser(name)
        p.add_argument("--bind", required=True)
        p.add_argument("--node", action="append", required=True)
        p.add_argument("--salt", default="")
        p.add_argument("--timeout", type=float, default=20)
        if name == "put":
            p.add_argument("--seed", required=True)
            p.add_argument("--value", required=True)
        else:
            p.add_argument("--key", required=True)
    args = parser.parse_args()
    {"serve": serve, "put": put, "get": get}[args.command](args)


if __name__ == "__main__":
    main()
