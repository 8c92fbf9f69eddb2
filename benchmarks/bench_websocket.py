"""(c) Websockets per daphne process: fan-out time, idle sockets, memory.

Two daphne processes serve the portal: the product (its configured channel
layer) and the naive baseline (Channels' stock in-memory layer). Each holds the
same number of signed-in sockets, one per cardholder, from its own browser
stand-in. A tick pushes one job update to every cardholder from inside the
server, the way the poller does; it is timed from the first push to the last
frame parsed by the stand-in. Ticks alternate product/naive.

Then the naive server is stopped and the product server is filled up to the
idle target in batches of 50, held, pinged, and its RSS read.
"""

from __future__ import annotations

import time

from benchmarks import common, data

FULL = {"fanout": 1000, "idle": 10_000, "reps": 5, "hold": 20}
SMOKE = {"fanout": 20, "idle": 60, "reps": 1, "hold": 0.5}


def _fanout_tick(server: common.Child, client: common.Child, count: int, seq: int):
    client.call(cmd="expect", count=count)
    cpu_before = common.cpu_seconds(server.pid)
    sent = server.call(cmd="fanout", seq=seq)
    got = client.call(cmd="wait", timeout=60)
    cpu_ms = (common.cpu_seconds(server.pid) - cpu_before) * 1000
    if got["received"] < count:
        raise RuntimeError(f"only {got['received']} of {count} frames arrived")
    return {
        "last_frame_ms": (got["last_ns"] - sent["started_ns"]) / 1e6,
        "server_cpu_ms": cpu_ms,
        "send_cpu_ms": sent["send_cpu_ms"],
    }


def run(smoke: bool) -> dict:
    size = SMOKE if smoke else FULL
    fanout, reps = size["fanout"], size["reps"]
    idle_target = size["idle"]
    limit = common.fd_limit()
    if idle_target + 200 > limit:
        idle_target = limit - 200

    product_holders = data.cardholders("wsp", max(fanout, idle_target), 1_000_000)
    naive_holders = data.cardholders("wsn", fanout, 2_000_000)
    product_sessions = data.sessions(product_holders)
    naive_sessions = data.sessions(naive_holders)

    product = common.Child("benchmarks.portal_proc")
    naive = common.Child("benchmarks.portal_proc", env={"BENCH_NAIVE_LAYER": "1"})
    product_client = common.Child("benchmarks.wsclient")
    naive_client = common.Child("benchmarks.wsclient")
    result: dict = {}
    with common.children(product, naive, product_client, naive_client):
        ports = {"product": product.read(60)["port"], "naive": naive.read(60)["port"]}
        product_client.read(30)
        naive_client.read(30)
        rss_empty = product.call(cmd="rss")["rss_kib"]

        pairs = {
            "product": (product, product_client, product_holders, product_sessions),
            "naive": (naive, naive_client, naive_holders, naive_sessions),
        }
        for name, (server, client, holders, sessions) in pairs.items():
            port = ports[name]
            opened = client.call(
                cmd="open",
                url=f"ws://127.0.0.1:{port}/ws/jobs/",
                origin=f"http://127.0.0.1:{port}",
                sessions=sessions[:fanout],
                timeout=600,
            )
            if opened["open"] < fanout:
                raise RuntimeError(f"{name}: only {opened} sockets opened")
            server.call(
                cmd="prepare_fanout",
                updates=[
                    [h.pk, data.sample_payload(1_000_000 + h.pk, h.pk)]
                    for h in holders[:fanout]
                ],
            )
            # One tick before measuring: lazy imports and first-use caches.
            _fanout_tick(server, client, fanout, 0)

        ticks: dict[str, list[dict]] = {"product": [], "naive": []}
        for rep in range(reps):
            for name in ("product", "naive"):
                server, client, _, _ = pairs[name]
                ticks[name].append(_fanout_tick(server, client, fanout, rep + 1))
        naive_client.call(cmd="close", timeout=120)
        naive.stop()

        # Idle sockets: fill the product server up to the target.
        rss_at_fanout = product.call(cmd="rss")["rss_kib"]
        opened = product_client.call(
            cmd="open",
            url=f"ws://127.0.0.1:{ports['product']}/ws/jobs/",
            origin=f"http://127.0.0.1:{ports['product']}",
            sessions=product_sessions[fanout:idle_target],
            timeout=1200,
        )
        time.sleep(size["hold"])
        alive = product_client.call(cmd="alive", timeout=300)["alive"]
        server_state = product.call(cmd="rss")
        rss_full = server_state["rss_kib"]
        open_count = alive
        per_socket = (rss_full - rss_at_fanout) / max(1, opened["open"] - fanout)

    for name in ticks:
        result[name] = {
            "fanout_ms": common.median(t["last_frame_ms"] for t in ticks[name]),
            "server_cpu_ms": common.median(t["server_cpu_ms"] for t in ticks[name]),
            "send_cpu_ms": common.median(t["send_cpu_ms"] for t in ticks[name]),
            "ticks": ticks[name],
        }
    return {
        "websocket.idle_sockets": open_count,
        "websocket.idle_target": idle_target,
        "websocket.rss_mib_at_idle": round(rss_full / 1024, 1),
        "websocket.rss_mib_empty": round(rss_empty / 1024, 1),
        "websocket.rss_kib_per_socket": round(per_socket, 1),
        "websocket.open_seconds": round(opened["seconds"], 1),
        "websocket.open_failed": opened["failed"],
        "websocket.fanout_sockets": fanout,
        "websocket.fanout_1000_ms": round(result["product"]["fanout_ms"], 1),
        "websocket.naive_fanout_1000_ms": round(result["naive"]["fanout_ms"], 1),
        "websocket.fanout_server_cpu_ms": round(result["product"]["server_cpu_ms"], 1),
        "websocket.naive_fanout_server_cpu_ms": round(
            result["naive"]["server_cpu_ms"], 1
        ),
        "websocket._ticks": result,
    }
